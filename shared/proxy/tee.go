package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/pipeline"
	"github.com/misskey-lambda/media-proxy/shared/store"
)

// A tee answers a miss too large to hold in memory: one pump reads the
// origin's body and hands each chunk both to the client that asked and to
// a store write, so the client gets the first byte as soon as the origin
// sends it and the store gets its copy from the same fetch.
//
// Each side takes the bytes through a spool of at most teeLag bytes, and
// the origin is read as fast as it sends. A side that falls further behind
// is waited for a little (teeGrace, or a tenth of the time the stream has
// taken so far), then let go, so neither can stall the other for long:
//   - the store (slow or failing): its write is aborted, so nothing partial
//     becomes visible, and the client goes on at the origin's pace;
//   - the client (slow, or nobody claimed the stream): once it has read
//     what its spool holds, it waits for the store copy and reads the rest
//     from there.
//
// Once one side has gone (or was let go), the other paces the origin.
// The pump runs on a context of its own, bounded by the fetch's timeout,
// so a client that disconnects does not stop the store copy.
//
// Requests for the same key while the pump runs wait for the stored copy
// and are answered from the store (see teeReply), rather than join the
// stream: joining would need a spool readable while it is written (the
// dir store's temporary file, but S3 has none) and a second path for
// every store, and it keeps one origin fetch per URL all the same. The
// cost is that they wait for the whole download, as every request did
// before the tee existed.
type tee struct {
	h      *Handler
	req    request
	id     string
	res    *pipeline.Result
	meta   store.Meta
	cancel context.CancelFunc // ends the fetch's context once the pump is done
	client *spool
	store  *spool // nil: no store copy
	budget int64  // memory budget held, given back when done
	// putCancel ends the store write's context.
	putCancel context.CancelFunc

	mu      sync.Mutex
	claimed bool

	// Set before done is closed.
	done   chan struct{}
	err    error // the source's failure (a pipeline error), or nil
	stored bool  // the complete body is in the store under req.key
}

// teeLag is how far behind the pump a side of a tee may fall before it is
// let go: each side's spool holds at most this much.
const teeLag = 4 << 20

// teeGrace is how long the pump waits in all for a side whose spool is
// full, at least, before it lets it go (see pump).
const teeGrace = time.Second

// putAbortGrace is how long a store write let go has to notice its
// failed body before its context is cancelled.
const putAbortGrace = 5 * time.Second

// teeBudgetWait bounds the wait for the tee's memory: without it the
// client is still streamed, only not stored.
const teeBudgetWait = time.Second

// chunkSize is what one read of the origin asks for.
const chunkSize = 32 << 10

var (
	errBehind     = errors.New("fell behind the origin")
	errClientGone = errors.New("client gone")
)

// startTee starts streaming res, whose body is read on ctx (already free
// of the clients' cancellation); cancel ends ctx.
func (h *Handler) startTee(ctx context.Context, cancel context.CancelFunc, req request, id string, res *pipeline.Result) *tee {
	t := &tee{h: h, req: req, id: id, res: res, meta: res.Meta, cancel: cancel, done: make(chan struct{})}
	clientLag := int64(teeLag)
	if !h.noStore {
		need := 2*teeLag + h.storeWriteBuffer()
		if h.cfg.Budget != nil {
			bctx, bcancel := context.WithTimeout(ctx, teeBudgetWait)
			got, err := h.cfg.Budget.Acquire(bctx, need)
			bcancel()
			if err != nil {
				h.log.Warn("no memory budget for the store copy; streaming without caching", "request_id", id, "err", err)
				need = -1
			} else {
				t.budget = got
			}
		}
		if need >= 0 {
			t.store = newSpool(teeLag)
		}
	}
	if t.store == nil {
		// Nothing to fall back on: the client paces the origin, through
		// one chunk at a time.
		clientLag = 0
	}
	t.client = newSpool(clientLag)
	putDone := make(chan error, 1)
	if t.store != nil {
		// No fixed bound but a generous one: a slow origin is the norm
		// and the fetch's own timeout ends it; this one catches a silent
		// store.
		pctx, pcancel := context.WithTimeout(ctx, h.cfg.StreamTimeout)
		t.putCancel = pcancel
		go func() {
			defer pcancel()
			err := h.cfg.Store.Put(pctx, req.key, t.meta, t.store)
			// A Put that returns early reads no further.
			t.store.fail(errors.New("store write ended"))
			putDone <- err
		}()
	} else {
		putDone <- errors.New("no store copy")
	}
	go t.pump(ctx, putDone)
	return t
}

// pump copies the origin's body to both sides until it ends or both sides
// have gone.
func (t *tee) pump(ctx context.Context, putDone <-chan error) {
	defer close(t.done)
	defer t.cancel()
	defer t.h.cfg.Budget.Release(t.budget)
	defer t.res.Close()
	clientOn, storeOn := true, t.store != nil
	var n int64
	var srcErr error
	complete, clientGone := false, false
	buf := make([]byte, chunkSize)
	// A side whose spool is full is waited for, within a grace that grows
	// with the stream (teeGrace, or a tenth of the time so far), so one
	// slower than the origin for a moment is kept; past it, it is let go.
	// Alone, a side is waited for as long as it takes.
	start := time.Now()
	var storeWaited, clientWaited time.Duration
	grace := func(waited time.Duration, alone bool) time.Duration {
		if alone {
			return -1
		}
		return max(max(teeGrace, time.Since(start)/10)-waited, 0)
	}
	for clientOn || storeOn {
		k, err := t.res.Body.Read(buf)
		if k > 0 {
			n += int64(k)
			if storeOn {
				waited, werr := t.store.write(buf[:k], grace(storeWaited, !clientOn))
				storeWaited += waited
				if werr != nil {
					storeOn = false
					if errors.Is(werr, errBehind) {
						t.h.log.Warn("store write fell behind the origin; answering without caching", "request_id", t.id, "key", t.req.key)
						t.store.fail(fmt.Errorf("store write %w", errBehind))
						// A write stuck in the store's own calls does not
						// read the failure: end its context too, after a
						// moment (cancelling an S3 upload as it starts
						// would leave it behind, unknown to abort).
						time.AfterFunc(putAbortGrace, t.putCancel)
					}
				}
			}
			if clientOn {
				waited, werr := t.client.write(buf[:k], grace(clientWaited, !storeOn))
				clientWaited += waited
				if werr != nil {
					clientOn = false
					if errors.Is(werr, errBehind) {
						// The client reads the rest from the store.
						t.client.close(errBehind)
					}
				}
			}
		}
		if err == io.EOF {
			if t.meta.Size >= 0 && n != t.meta.Size {
				err = fmt.Errorf("body of %d bytes, %d declared: %w", n, t.meta.Size, io.ErrUnexpectedEOF)
			} else {
				complete = true
				break
			}
		}
		if err != nil {
			srcErr = err
			break
		}
	}
	switch {
	case complete:
		t.client.close(io.EOF)
		if t.store != nil {
			t.store.close(io.EOF)
		}
	case srcErr != nil:
		// The client sees its bytes, then the break; the store write is
		// aborted at once.
		clientGone = t.client.gone()
		t.client.close(srcErr)
		if t.store != nil {
			t.store.fail(srcErr)
		}
	default:
		// Both sides gone: nobody wants the rest.
		t.client.close(errClientGone)
	}
	putErr := <-putDone
	t.stored = complete && storeOn && putErr == nil
	if srcErr != nil {
		t.err = pipeline.FetchError(ctx, srcErr)
		t.h.remember(ctx, t.req, t.id, t.err)
		if clientGone {
			// Otherwise the client's request line carries the break.
			t.h.log.Info("stream broke after its client had gone", "request_id", t.id, "url", t.req.logURL, "variant", string(t.req.kind), "err", t.err)
		}
	} else if complete && storeOn && putErr != nil {
		t.h.log.Warn("store write failed; answering without caching", "request_id", t.id, "key", t.req.key, "err", putErr)
	}
}

// ended tells whether the pump is done.
func (t *tee) ended() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// claim takes the stream for one client; only the first caller gets it.
func (t *tee) claim(ctx context.Context) (io.ReadCloser, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.claimed {
		return nil, false
	}
	t.claimed = true
	return &teeReader{t: t, ctx: ctx}, true
}

// unclaim frees the client's spool if no client took it.
func (t *tee) unclaim() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.claimed {
		t.claimed = true
		t.client.fail(errClientGone)
	}
}

// teeReader is the client's side: the spool, then, if the client fell
// behind, the rest from the stored copy.
type teeReader struct {
	t    *tee
	ctx  context.Context
	n    int64
	rest io.ReadCloser
}

func (r *teeReader) Read(p []byte) (int, error) {
	if r.rest != nil {
		return r.rest.Read(p)
	}
	n, err := r.t.client.Read(p)
	r.n += int64(n)
	if errors.Is(err, errBehind) {
		if err = r.resume(); err == nil && n == 0 {
			return r.rest.Read(p)
		}
	}
	return n, err
}

// resume opens the stored copy past what the client has had.
func (r *teeReader) resume() error {
	select {
	case <-r.t.done:
	case <-r.ctx.Done():
		return r.ctx.Err()
	}
	if !r.t.stored {
		if r.t.err != nil {
			return r.t.err
		}
		return errors.New("client fell behind the origin and the store copy failed")
	}
	e, err := r.t.h.cfg.Store.Lookup(r.ctx, r.t.req.key)
	if err != nil {
		return fmt.Errorf("resume from the store: %w", err)
	}
	if e.Open == nil {
		return errors.New("resume from the store: no way to read it")
	}
	body, err := e.Open(r.ctx)
	if err != nil {
		return fmt.Errorf("resume from the store: %w", err)
	}
	if s, ok := body.(io.Seeker); ok {
		_, err = s.Seek(r.n, io.SeekStart)
	} else {
		_, err = io.CopyN(io.Discard, body, r.n)
	}
	if err != nil {
		body.Close()
		return fmt.Errorf("resume from the store at %d: %w", r.n, err)
	}
	r.rest = body
	return nil
}

// Close lets the pump know the client has gone (a no-op after the end).
func (r *teeReader) Close() error {
	r.t.client.fail(errClientGone)
	if r.rest != nil {
		return r.rest.Close()
	}
	return nil
}

// teeReply answers a request that shares the produced tee t: the first to
// claim it streams; the others wait for the stored copy.
func (h *Handler) teeReply(ctx context.Context, req request, rec *record, t *tee, release func()) reply {
	if body, ok := t.claim(ctx); ok {
		return reply{kind: replyStream, meta: t.meta, body: body, done: func() {
			body.Close()
			// The store copy finishes before the handler returns: on
			// Lambda nothing runs after the response.
			<-t.done
			release()
		}}
	}
	release()
	select {
	case <-t.done:
	case <-ctx.Done():
		return failed(ctx.Err())
	}
	if t.err != nil {
		rec.err = t.err
		return failed(t.err)
	}
	if t.stored {
		lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
		e, err := h.cfg.Store.Lookup(lctx, req.key)
		cancel()
		if err == nil {
			if rp, ok := h.hit(ctx, e, rec); ok {
				rec.outcome = "miss"
				return rp
			}
		}
	}
	// Streamed but not stored: this request fetches for itself.
	return h.produceAlone(ctx, req, rec)
}

// produceAlone produces without coalescing or storing, for the one client
// that asked: a large passthrough streams to it.
func (h *Handler) produceAlone(ctx context.Context, req request, rec *record) reply {
	res, err := h.cfg.Pipeline.Produce(ctx, req.src, req.kind)
	if err != nil {
		rec.err = err
		return failed(err)
	}
	rec.figures(res.Fetch, res.Transform, res.BytesIn)
	if res.Data != nil && h.cfg.InlineLimit > 0 && int64(len(res.Data)) > h.cfg.InlineLimit {
		res.Close()
		return reply{kind: replyError, status: http.StatusBadGateway}
	}
	return resultReply(res)
}

// spool is a bounded queue of bytes from a tee's pump to one reader.
type spool struct {
	mu     sync.Mutex
	wake   chan struct{} // closed and replaced on every change
	chunks [][]byte
	queued int64
	limit  int64
	end    error // set by close: returned once the queue is drained
	failed error // set by fail: returned at once, to both ends
}

func newSpool(limit int64) *spool {
	return &spool{limit: limit, wake: make(chan struct{})}
}

func (s *spool) changedLocked() {
	close(s.wake)
	s.wake = make(chan struct{})
}

// write queues a copy of p, waiting for room at most maxWait (negative:
// as long as it takes) before it fails with errBehind. One chunk always
// fits in an empty spool. It returns how long it waited.
func (s *spool) write(p []byte, maxWait time.Duration) (time.Duration, error) {
	var timeout <-chan time.Time
	var start time.Time
	for {
		s.mu.Lock()
		if s.failed != nil {
			s.mu.Unlock()
			return waitedSince(start), s.failed
		}
		if s.queued == 0 || s.queued+int64(len(p)) <= s.limit {
			s.chunks = append(s.chunks, append([]byte(nil), p...))
			s.queued += int64(len(p))
			s.changedLocked()
			s.mu.Unlock()
			return waitedSince(start), nil
		}
		wake := s.wake
		s.mu.Unlock()
		if start.IsZero() {
			start = time.Now()
			if maxWait >= 0 {
				tm := time.NewTimer(maxWait)
				defer tm.Stop()
				timeout = tm.C
			}
		}
		select {
		case <-wake:
		case <-timeout:
			return waitedSince(start), errBehind
		}
	}
}

func waitedSince(start time.Time) time.Duration {
	if start.IsZero() {
		return 0
	}
	return time.Since(start)
}

// gone tells whether the stream was failed (for the client's spool: the
// client went away).
func (s *spool) gone() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed != nil
}

// close ends the stream: the reader gets what is queued, then err.
func (s *spool) close(err error) {
	s.mu.Lock()
	if s.end == nil {
		s.end = err
		s.changedLocked()
	}
	s.mu.Unlock()
}

// fail ends the stream at once for both ends, dropping what is queued.
func (s *spool) fail(err error) {
	s.mu.Lock()
	if s.failed == nil {
		s.failed = err
		s.chunks, s.queued = nil, 0
		s.changedLocked()
	}
	s.mu.Unlock()
}

func (s *spool) Read(p []byte) (int, error) {
	for {
		s.mu.Lock()
		switch {
		case s.failed != nil:
			s.mu.Unlock()
			return 0, s.failed
		case len(s.chunks) > 0:
			n := copy(p, s.chunks[0])
			if n == len(s.chunks[0]) {
				s.chunks[0] = nil
				s.chunks = s.chunks[1:]
			} else {
				s.chunks[0] = s.chunks[0][n:]
			}
			s.queued -= int64(n)
			s.changedLocked()
			s.mu.Unlock()
			return n, nil
		case s.end != nil:
			s.mu.Unlock()
			return 0, s.end
		}
		wake := s.wake
		s.mu.Unlock()
		<-wake
	}
}
