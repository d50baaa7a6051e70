package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/budget"
	"github.com/misskey-lambda/media-proxy/shared/pipeline"
	"github.com/misskey-lambda/media-proxy/shared/problem"
	"github.com/misskey-lambda/media-proxy/shared/spool"
	"github.com/misskey-lambda/media-proxy/shared/store"
)

// A download answers a miss too large to hold in memory: fetch → spool →
// readers. The origin's body is read once, as fast as it comes, into a
// spool (the dir store's temporary file, else an unnamed file in a
// temporary folder), and every request for the key while it downloads
// reads that file at its own offset as it grows (see package spool): a
// GET streams from the first byte, a HEAD is answered once the headers
// are known, a Range as soon as its bytes are there. A reader slower than
// the origin falls behind on disk and is dropped by its own write
// deadline; nothing it does reaches the origin or the other readers.
//
// The store copy is one more reader: the dir store renames its spool into
// place once complete; any other store gets a Put that reads the spool at
// its own pace (S3: a multipart upload), which a slow or failing store
// can only fail for itself. A body that breaks off ends every reader with
// the break, stores nothing and removes the spool.
type download struct {
	h    *Handler
	req  request
	id   string
	meta store.Meta // Size: the declared length, or -1
	sp   *spool.Spool

	// etag is the strong ETag of the complete body, set before the spool
	// is finished (so a reader that sees it complete sees the tag).
	etag string
	// readers counts the requests reading the spool now.
	readers atomic.Int64
	// Set before done is closed.
	done   chan struct{} // the body and its store copy have ended
	err    error         // why the body broke, or nil
	stored bool          // the complete body is in the store under req.key
}

// chunkSize is what one read of the origin asks for, and what a reader's
// copy holds.
const chunkSize = 32 << 10

// roomWait bounds how long a download waits for the dir store's eviction
// to make room (a pass walks the whole store) before it is refused.
const roomWait = 10 * time.Second

// spoolRoomWait bounds how long a download waits for room in the
// temporary folder, which only downloads ending give back: one about to
// end may, but most take as long as their origins do.
const spoolRoomWait = time.Second

// Stats count the downloads' work, for tests and operators: each defence
// of the streaming path shows in one of them.
type Stats struct {
	// Downloads is how many are in flight (their fetch or store copy).
	Downloads int64
	// Readers is how many requests are reading a spool now.
	Readers int64
	// Spooled is the body bytes written to spools, in all.
	Spooled int64
	// Stored and StoreFailed count the store copies that completed, and
	// those that failed or were not made (no memory for the store's
	// buffers); a body that broke off counts in neither.
	Stored, StoreFailed int64
}

type counters struct {
	downloads, readers, spooled, stored, storeFailed atomic.Int64
}

// Stats returns the streaming path's counters.
func (h *Handler) Stats() Stats {
	c := &h.counters
	return Stats{
		Downloads:   c.downloads.Load(),
		Readers:     c.readers.Load(),
		Spooled:     c.spooled.Load(),
		Stored:      c.stored.Load(),
		StoreFailed: c.storeFailed.Load(),
	}
}

// Wait returns once every download in flight has ended (its store copy
// included), or ctx is done: a stopping server lets them finish, and a
// Lambda invocation (see functionurl) ends only after them, as nothing
// runs once it has.
func (h *Handler) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		h.running.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// startDownload starts spooling res, whose body is read on ctx (already
// free of the clients' cancellation); cancel ends ctx once the download
// is over. On error the caller still owns res.
func (h *Handler) startDownload(ctx context.Context, cancel context.CancelFunc, req request, id string, res *pipeline.Result) (*download, error) {
	// res holds memory (the bytes sniffed): take more only if it is free
	// now, never wait holding it.
	mem, ok := h.tryAcquire(chunkSize)
	if !ok {
		return nil, &problem.Error{Status: http.StatusServiceUnavailable, RetryAfter: pipeline.BusyRetryAfter, Err: budget.ErrBusy}
	}
	sp, kept, err := h.openSpool(ctx, req.key, res.Meta)
	if err != nil {
		h.cfg.Budget.Release(mem)
		return nil, err
	}
	if size := res.Meta.Size; size >= 0 {
		// Room for the whole body now, so a body that cannot fit is
		// refused before anyone gets its first byte.
		if err := sp.Reserve(ctx, size); err != nil {
			sp.Release()
			h.cfg.Budget.Release(mem)
			return nil, noRoom(err)
		}
	}
	d := &download{h: h, req: req, id: id, meta: res.Meta, sp: sp, done: make(chan struct{})}
	var putDone chan error
	if kept == nil {
		putDone = d.startPut(ctx)
	}
	sp.Hold() // the pump's, released when it ends
	h.running.Add(1)
	h.counters.downloads.Add(1)
	go func() {
		defer h.running.Done()
		defer h.counters.downloads.Add(-1)
		defer cancel()
		defer h.cfg.Budget.Release(mem)
		d.pump(ctx, res, kept, putDone)
	}()
	return d, nil
}

// openSpool makes the spool of key: the store's own (kept when complete)
// or an unnamed file in the temporary folder, its room taken from
// Config.SpoolRoom.
func (h *Handler) openSpool(ctx context.Context, key string, meta store.Meta) (*spool.Spool, store.Spool, error) {
	if s, ok := h.cfg.Store.(store.Spooler); ok {
		rctx, cancel := context.WithTimeout(ctx, roomWait)
		ss, err := s.Spool(rctx, key, meta)
		cancel()
		if err != nil {
			return nil, nil, noRoom(err)
		}
		f, base := ss.File()
		reserve := func(ctx context.Context, n int64) error {
			ctx, cancel := context.WithTimeout(ctx, roomWait)
			defer cancel()
			return ss.Reserve(ctx, n)
		}
		return spool.New(f, base, spool.Options{Reserve: reserve, Closed: func() { ss.Close() }}), ss, nil
	}
	f, err := os.CreateTemp(h.spoolDir, ".spool-*")
	if err != nil {
		return nil, nil, &problem.Error{Status: http.StatusServiceUnavailable, RetryAfter: pipeline.BusyRetryAfter, Err: fmt.Errorf("spool: %w", err)}
	}
	// Unnamed from the start: nothing is left behind, however the
	// process ends.
	os.Remove(f.Name())
	var taken atomic.Int64
	room := h.spoolRoom
	return spool.New(f, 0, spool.Options{
		Reserve: func(ctx context.Context, n int64) error {
			if taken.Load()+n > room.Total() {
				return fmt.Errorf("%w: a body of over %d bytes, the temporary folder's room is %d", store.ErrNoRoom, taken.Load()+n, room.Total())
			}
			got, err := room.Acquire(ctx, n) // waits spoolRoomWait at most
			if err != nil {
				return fmt.Errorf("%w: %w", store.ErrNoRoom, err)
			}
			taken.Add(got)
			return nil
		},
		Closed: func() {
			f.Close()
			room.Release(taken.Load())
		},
	}), nil, nil
}

// noRoom is the answer to a download that found no room on disk: the
// proxy's own state, so 503 and nothing remembered.
func noRoom(err error) error {
	return &problem.Error{Status: http.StatusServiceUnavailable, RetryAfter: pipeline.BusyRetryAfter, Err: err}
}

// startPut starts the store copy of a store without a spool of its own:
// a Put that reads the spool as it grows. It reports its outcome on the
// returned channel.
func (d *download) startPut(ctx context.Context) chan error {
	h := d.h
	done := make(chan error, 1)
	// The store's write buffers (S3's parts) if they are free now (the
	// download holds memory already), or no store copy.
	mem, ok := h.tryAcquire(h.storeWriteBuffer())
	if !ok {
		h.log.Warn("no memory budget for the store copy; answering without caching", "request_id", d.id, "key", d.req.key)
		done <- fmt.Errorf("no store copy: %w", budget.ErrBusy)
		return done
	}
	// No fixed bound but a generous one: the fetch has its own timeout,
	// so past it and a margin the store is what hangs.
	pctx, pcancel := context.WithTimeout(ctx, h.cfg.StreamTimeout)
	r, err := d.sp.NewReader(pctx, d.meta.Size)
	if err != nil {
		pcancel()
		h.cfg.Budget.Release(mem)
		done <- err
		return done
	}
	go func() {
		defer pcancel()
		defer h.cfg.Budget.Release(mem)
		defer r.Close()
		meta := d.meta
		meta.ETag = "" // known only at the end
		// Only a reader: the store must not take the spool for a file.
		done <- h.cfg.Store.Put(pctx, d.req.key, meta, struct{ io.Reader }{r})
	}()
	return done
}

// pump reads the origin's body into the spool until it ends, then waits
// for the store copy.
func (d *download) pump(ctx context.Context, res *pipeline.Result, kept store.Spool, putDone <-chan error) {
	h := d.h
	defer d.sp.Release()
	buf := make([]byte, chunkSize)
	var tag store.ETagWriter
	var n int64
	var srcErr, ownErr error
	for {
		k, err := res.Body.Read(buf)
		if k > 0 {
			tag.Write(buf[:k])
			if ownErr = d.sp.Append(ctx, buf[:k]); ownErr != nil {
				break
			}
			n += int64(k)
			h.counters.spooled.Add(int64(k))
		}
		if err == io.EOF && d.meta.Size >= 0 && n != d.meta.Size {
			err = fmt.Errorf("body of %d bytes, %d declared: %w", n, d.meta.Size, io.ErrUnexpectedEOF)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			srcErr = err
			break
		}
	}
	// The fetch and its memory are no longer needed.
	res.Close()
	switch {
	case srcErr != nil:
		d.err = pipeline.FetchError(ctx, srcErr)
	case ownErr != nil:
		d.err = noRoom(ownErr)
	default:
		d.etag = tag.ETag()
	}
	d.sp.Finish(d.err)

	complete := d.err == nil
	var storeErr error
	switch {
	case kept != nil && complete:
		storeErr = kept.Keep(n, d.etag)
	case putDone != nil:
		storeErr = <-putDone
	}
	d.stored = complete && storeErr == nil
	switch {
	case d.stored:
		h.counters.stored.Add(1)
	case complete:
		h.counters.storeFailed.Add(1)
		h.log.Warn("store write failed; answering without caching", "request_id", d.id, "key", d.req.key, "err", storeErr)
	}
	if srcErr != nil {
		h.remember(ctx, d.req, d.id, d.err)
	}
	if d.err != nil && d.readers.Load() == 0 {
		// Otherwise the readers' request lines carry the break.
		h.log.Info("download broke off", "request_id", d.id, "url", d.req.logURL, "variant", string(d.req.kind), "bytes", n, "err", d.err)
	}
	close(d.done)
}

// ended tells whether the download and its store copy are over.
func (d *download) ended() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// reply answers a request that shares download d (release gives back its
// share). A miss the handler streams is read from the spool; any other
// (over Config.StreamLimit) waits for the store copy and is answered from
// the store (a redirect, for S3).
func (d *download) reply(ctx context.Context, rec *record, release func()) reply {
	h := d.h
	if !h.streams(d.meta.Size) {
		return d.storedReply(ctx, rec, release)
	}
	if _, end := d.sp.State(); end != nil && end != io.EOF {
		release()
		rec.err = d.err
		return failed(d.err)
	}
	mem, err := h.acquire(ctx, chunkSize)
	if err != nil {
		release()
		rec.err = err
		return failed(err)
	}
	meta := d.meta
	if size, end := d.sp.State(); end == io.EOF {
		// Complete already: its ETag is known.
		meta.ETag, meta.Size = d.etag, size
	}
	r, err := d.sp.NewReader(ctx, meta.Size)
	if err != nil {
		h.cfg.Budget.Release(mem)
		release()
		rec.err = err
		return reply{kind: replyError, status: http.StatusBadGateway}
	}
	h.counters.readers.Add(1)
	d.readers.Add(1)
	return reply{kind: replySpool, meta: meta, spool: r, done: func() {
		r.Close()
		d.readers.Add(-1)
		h.counters.readers.Add(-1)
		h.cfg.Budget.Release(mem)
		release()
	}}
}

// storedReply waits for d's store copy and answers from the store.
func (d *download) storedReply(ctx context.Context, rec *record, release func()) reply {
	defer release()
	select {
	case <-d.done:
	case <-ctx.Done():
		return failed(ctx.Err())
	}
	if d.err != nil {
		rec.err = d.err
		return failed(d.err)
	}
	h := d.h
	if d.stored {
		lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
		e, err := h.cfg.Store.Lookup(lctx, d.req.key)
		cancel()
		if err == nil {
			if rp, ok := h.hit(ctx, e, rec); ok {
				rec.outcome = "miss"
				return rp
			}
		}
	}
	rec.err = errors.New("large body not stored, and too large to answer directly")
	return reply{kind: replyError, status: http.StatusBadGateway}
}

// acquire takes n bytes of the memory budget, if there is one; a budget
// with no room is the proxy's own state (503).
func (h *Handler) acquire(ctx context.Context, n int64) (int64, error) {
	if h.cfg.Budget == nil {
		return 0, nil
	}
	got, err := h.cfg.Budget.Acquire(ctx, n)
	if err != nil {
		if errors.Is(err, budget.ErrBusy) {
			return 0, &problem.Error{Status: http.StatusServiceUnavailable, RetryAfter: pipeline.BusyRetryAfter, Err: err}
		}
		return 0, err
	}
	return got, nil
}

// tryAcquire takes n bytes of the memory budget if they are free now.
func (h *Handler) tryAcquire(n int64) (int64, bool) {
	if h.cfg.Budget == nil {
		return 0, true
	}
	return h.cfg.Budget.TryAcquire(n)
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
