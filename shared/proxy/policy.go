package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/failure"
	"github.com/misskey-lambda/media-proxy/shared/jobs"
	"github.com/misskey-lambda/media-proxy/shared/pipeline"
	"github.com/misskey-lambda/media-proxy/shared/problem"
	"github.com/misskey-lambda/media-proxy/shared/spool"
	"github.com/misskey-lambda/media-proxy/shared/store"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

const (
	// Store calls on the request path are bounded: a slow or unreachable
	// store degrades caching, never the answer.
	lookupTimeout = 2 * time.Second
	storeTimeout  = 5 * time.Second
	// enqueueTimeout bounds how long a response may wait for its sibling
	// jobs to be queued; a queue that slow loses the jobs, not the answer.
	enqueueTimeout = time.Second
)

// replyKind says how a reply is written.
type replyKind int

const (
	replyError  replyKind = iota
	replyBytes            // an in-memory body
	replyEntry            // a stored object: a redirect or its bytes
	replyStream           // a body streamed from the origin
	replySpool            // a download's spool, read as it grows
)

// reply is what the policy decided to answer; respond.go and errors.go
// write it.
type reply struct {
	kind replyKind
	// Errors: the status, and whether the cause says something about the
	// source (which decides how long the answer may be cached). left,
	// for a remembered failure, is how long it is still remembered.
	status     int
	source     bool
	retryAfter time.Duration
	left       time.Duration
	// Successes.
	meta  store.Meta
	data  []byte
	entry *store.Entry
	body  io.Reader
	spool *spool.Reader
	// done gives back what the reply holds (memory budget, a stream).
	done func()
}

func (rp reply) release() {
	if rp.done != nil {
		rp.done()
	}
}

// errorReply answers status for a reason that belongs to the request
// itself (a bad URL, a refused port, an unknown path).
func errorReply(status int) reply {
	return reply{kind: replyError, status: status, source: true}
}

// failed answers an error from producing a variant. An origin that asked
// to come back later (429 or 503 with Retry-After), and a proxy out of
// memory budget, get 503 with Retry-After.
func failed(err error) reply {
	rp := reply{kind: replyError, status: problem.Status(err), source: problem.IsSource(err)}
	if ra := problem.RetryAfter(err); ra > 0 {
		rp.status, rp.retryAfter = http.StatusServiceUnavailable, ra
	}
	return rp
}

func resultReply(res *pipeline.Result) reply {
	rp := reply{kind: replyBytes, meta: res.Meta, data: res.Data, done: func() { res.Close() }}
	if res.Data == nil {
		rp.kind, rp.body = replyStream, res.Body
	}
	return rp
}

// answer decides the reply to a parsed request: a failure this process
// remembers, a stored variant, a failure another process stored, or the
// result of producing it (shared with identical requests in flight).
func (h *Handler) answer(ctx context.Context, req request, rec *record) reply {
	// The process's own memory first: it costs no store request, so a
	// flood of URLs that failed moments ago costs nothing in the store.
	if status, left, ok := h.failures.Recall(req.failKey); ok {
		rec.outcome = "failure-memory"
		return reply{kind: replyError, status: status, source: true, left: left}
	}
	lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	e, err := h.cfg.Store.Lookup(lctx, req.key)
	cancel()
	if err == nil {
		if rp, ok := h.hit(ctx, e, rec); ok {
			return rp
		}
		err = store.ErrNotFound // gone since the lookup: a miss
	}
	switch {
	case !errors.Is(err, store.ErrNotFound):
		h.log.Warn("store lookup failed; answering without the cache", "request_id", rec.id, "key", req.key, "err", err)
	default:
		lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
		status, left, err := h.cfg.Store.Failure(lctx, req.failKey)
		cancel()
		if err == nil {
			h.failures.Remember(req.failKey, status, left)
			rec.outcome = "failure-memory"
			return reply{kind: replyError, status: status, source: true, left: left}
		}
	}
	rec.outcome = "miss"

	// Without a store a large passthrough can only be streamed to the
	// one client that asked, so it cannot be shared.
	if h.noStore && req.kind == variant.Original && h.cfg.InlineLimit == 0 {
		return h.produceAlone(ctx, req, rec)
	}
	p, release, err := h.flights.do(ctx, req.key, func(ctx context.Context) (*produced, error) {
		return h.produce(ctx, req, rec.id)
	})
	if err != nil {
		rec.err = err
		return failed(err)
	}
	rec.figures(p.fetch, p.transform, p.bytesIn)
	if p.dl != nil {
		return p.dl.reply(ctx, rec, release)
	}
	if p.entry != nil {
		if p.entry.RedirectURL != "" {
			return reply{kind: replyEntry, entry: p.entry, done: release}
		}
		body, err := p.entry.Open(ctx)
		release()
		if err != nil {
			h.log.Warn("store open failed after storing", "request_id", rec.id, "err", err)
			return reply{kind: replyError, status: http.StatusBadGateway}
		}
		return reply{kind: replyEntry, entry: p.entry, body: body, done: func() { body.Close() }}
	}
	return reply{kind: replyBytes, meta: p.res.Meta, data: p.res.Data, done: release}
}

// hit answers from a stored object: its redirect, or its bytes opened now,
// so that an object evicted or unreadable since the lookup is treated as
// a miss instead of failing the request.
func (h *Handler) hit(ctx context.Context, e *store.Entry, rec *record) (reply, bool) {
	if e.RedirectURL != "" {
		rec.outcome = "hit"
		if e.Size >= 0 && e.Size < h.cfg.InlineHitsBelow && e.Open != nil {
			data, err := readSmall(ctx, e)
			if err == nil {
				return reply{kind: replyBytes, meta: e.Meta, data: data}, true
			}
			h.log.Warn("reading a small hit failed; redirecting", "request_id", rec.id, "err", err)
		}
		return reply{kind: replyEntry, entry: e}, true
	}
	body, err := e.Open(ctx)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			h.log.Warn("store open failed; answering without the cache", "request_id", rec.id, "err", err)
		}
		return reply{}, false
	}
	rec.outcome = "hit"
	return reply{kind: replyEntry, entry: e, body: body, done: func() { body.Close() }}, true
}

// readSmall reads a stored object known to be small.
func readSmall(ctx context.Context, e *store.Entry) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	body, err := e.Open(ctx)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	data, err := io.ReadAll(io.LimitReader(body, e.Size+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) != e.Size {
		return nil, fmt.Errorf("stored object is %d bytes, its metadata says %d", len(data), e.Size)
	}
	return data, nil
}

// produced is what identical requests in flight share.
type produced struct {
	res   *pipeline.Result // in-memory result
	entry *store.Entry     // or the stored object, for large bodies in memory
	dl    *download        // or a large body being downloaded
	// Figures for every waiter's log line.
	fetch, transform time.Duration
	bytesIn          int64
}

func (p *produced) release() {
	if p.res != nil {
		p.res.Close()
	}
	if p.dl != nil {
		p.dl.sp.Release()
	}
}

// produce makes the variant and stores it. It runs once for all identical
// requests in flight, with a context that ends when the last of them has
// gone, up to the moment a large body starts downloading (see download):
// from there the fetch runs to its end, bounded by its own timeout. A
// failure of the source is remembered; the proxy's own faults (store,
// memory budget, disk) are not.
func (h *Handler) produce(ctx context.Context, req request, id string) (*produced, error) {
	fctx, fcancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, fcancel)
	res, err := h.cfg.Pipeline.Produce(fctx, req.src, req.kind)
	if err != nil {
		stop()
		fcancel()
		h.remember(ctx, req, id, err)
		return nil, err
	}
	if res.Body != nil {
		if !stop() {
			// Every client left as the headers came: nobody to answer.
			res.Close()
			fcancel()
			return nil, ctx.Err()
		}
		d, err := h.startDownload(fctx, fcancel, req, id, res)
		if err != nil {
			res.Close()
			fcancel()
			return nil, err
		}
		return &produced{dl: d, fetch: res.Fetch, bytesIn: res.BytesIn}, nil
	}
	defer fcancel()
	defer stop()
	// Siblings are worth computing only for a source that converts.
	defer h.enqueueSiblings(ctx, req, id)()
	p := &produced{fetch: res.Fetch, transform: res.Transform, bytesIn: res.BytesIn}
	if res.Data != nil && (h.cfg.InlineLimit == 0 || int64(len(res.Data)) <= h.cfg.InlineLimit) {
		// Stored before answering: on Lambda nothing may run after the
		// response, as the process is frozen.
		sctx, cancel := context.WithTimeout(ctx, storeTimeout)
		defer cancel()
		if err := h.cfg.Store.Put(sctx, req.key, res.Meta, bytes.NewReader(res.Data)); err != nil {
			h.log.Warn("store write failed; answering without caching", "request_id", id, "key", req.key, "err", err)
		}
		p.res = res
		return p, nil
	}
	defer res.Close()
	e, err := h.storeData(ctx, req, res.Meta, res.Data)
	if err != nil {
		h.remember(ctx, req, id, err)
		return nil, err
	}
	p.entry = e
	return p, nil
}

// streams tells whether a miss too large to hold in memory, of declared
// size (-1: unknown), is answered from its spool as it downloads, or
// only once stored (Config.StreamLimit).
func (h *Handler) streams(size int64) bool {
	switch l := h.cfg.StreamLimit; {
	case l < 0:
		return false
	case l == 0:
		return true
	default:
		return size >= 0 && size <= l
	}
}

// storeData stores a body held in memory but too large to answer
// directly, and looks it up again, to be answered from there (a
// redirect, for S3).
func (h *Handler) storeData(ctx context.Context, req request, meta store.Meta, data []byte) (*store.Entry, error) {
	if h.noStore {
		return nil, &problem.Error{Status: http.StatusBadGateway, Err: errors.New("body over the inline limit and no store to serve it from")}
	}
	mem, err := h.acquire(ctx, h.storeWriteBuffer())
	if err != nil {
		return nil, err
	}
	defer h.cfg.Budget.Release(mem)
	pctx, cancel := context.WithTimeout(ctx, h.cfg.StreamTimeout)
	err = h.cfg.Store.Put(pctx, req.key, meta, bytes.NewReader(data))
	cancel()
	if err != nil {
		return nil, &problem.Error{Status: http.StatusBadGateway, Err: fmt.Errorf("store large body: %w", err)}
	}
	lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	e, err := h.cfg.Store.Lookup(lctx, req.key)
	if err != nil {
		return nil, &problem.Error{Status: http.StatusBadGateway, Err: fmt.Errorf("read back large body: %w", err)}
	}
	return e, nil
}

// storeWriteBuffer is the memory the store holds while a body streams
// into it (S3's part buffers), for the memory budget; 0 when it says none.
func (h *Handler) storeWriteBuffer() int64 {
	return store.WriteBuffer(h.cfg.Store)
}

// remember keeps a failure of the source for as long as package failure
// says: in the process's memory, and in the store too when it took long
// to find (failure.Stored), for the other instances.
func (h *Handler) remember(ctx context.Context, req request, id string, err error) {
	ttl := pipeline.Remember(err)
	if ttl == 0 {
		return
	}
	h.failures.Remember(req.failKey, problem.Status(err), ttl)
	if !failure.Stored(time.Since(req.start)) {
		return
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	if serr := h.cfg.Store.Fail(sctx, req.failKey, problem.Status(err), ttl); serr != nil {
		h.log.Warn("store failure marker failed", "request_id", id, "err", serr)
	}
}

// enqueueSiblings queues jobs for the siblings of a variant just produced
// and returns a func that waits for the enqueue: on Lambda nothing may
// run after the response, as the process is frozen. A failed enqueue
// costs only the precompute, never the request.
func (h *Handler) enqueueSiblings(ctx context.Context, req request, id string) (wait func()) {
	siblings := req.kind.Siblings()
	// Without a store a precomputed variant would have nowhere to go.
	if h.cfg.Precompute == nil || h.noStore || len(siblings) == 0 {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		ectx, cancel := context.WithTimeout(ctx, enqueueTimeout)
		defer cancel()
		if err := h.cfg.Precompute.Enqueue(ectx, jobs.For(req.src, siblings)); err != nil {
			h.log.Warn("precompute enqueue failed", "request_id", id, "url", req.logURL, "variant", string(req.kind), "err", err)
		}
	}()
	return func() { <-done }
}
