// Package pipeline produces one variant of one remote URL: fetch, sniff,
// then pass through or transform. The HTTP handler and the precompute
// worker share it; neither knows how the other stores or answers.
//
// Every byte it holds in memory, fetched or decoded, is taken from the
// process's memory budget first (package budget), so the memory a burst
// of requests costs follows what origins really send.
package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/budget"
	"github.com/misskey-lambda/media-proxy/shared/disposition"
	"github.com/misskey-lambda/media-proxy/shared/failure"
	"github.com/misskey-lambda/media-proxy/shared/fetch"
	"github.com/misskey-lambda/media-proxy/shared/problem"
	"github.com/misskey-lambda/media-proxy/shared/sniff"
	"github.com/misskey-lambda/media-proxy/shared/store"
	"github.com/misskey-lambda/media-proxy/shared/transform"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

// BusyRetryAfter is what a client is told when the memory budget has no
// room: most work finishes within a couple of seconds.
const BusyRetryAfter = 2 * time.Second

// Remember is how long a failure of Produce is to be remembered (0: not
// at all), the same for requests and jobs: only failures of the source,
// for as long as package failure says, and never when the origin asked
// to be asked again later (Retry-After).
func Remember(err error) time.Duration {
	if !problem.IsSource(err) || problem.RetryAfter(err) > 0 {
		return 0
	}
	return failure.TTL(problem.Status(err))
}

// Result is a produced variant. Exactly one of Data and Body is set: Data
// holds bodies up to the in-memory size, Body streams larger passthroughs
// (from the first bytes when the origin declared a length over the
// in-memory size, else from past it).
// Close must be called once the result has been used: it gives the
// memory back to the budget.
type Result struct {
	Meta store.Meta
	Data []byte
	Body io.ReadCloser
	// Figures for logs and metrics.
	BytesIn               int64
	Fetch, Transform      time.Duration
	Width, Height, Frames int

	buf *budget.Buffer
}

// Close releases Body, if any, and the result's memory budget.
func (r *Result) Close() error {
	var err error
	if r.Body != nil {
		err = r.Body.Close()
	}
	if r.buf != nil {
		r.buf.Release()
		r.buf = nil
	}
	return err
}

// Options configure a Pipeline.
type Options struct {
	// InMemory is the largest passthrough body read into memory (and
	// given an ETag); larger ones stream.
	InMemory int64
	// MaxConvertSize is the largest source converted (413 above), lower
	// than the fetcher's cap for passthrough: a converted source is held
	// whole in memory.
	MaxConvertSize int64
	// Budget bounds the memory held by fetched bodies and decodes.
	Budget *budget.Budget
}

// Pipeline holds what producing a variant needs.
type Pipeline struct {
	fetcher     *fetch.Client
	transformer *transform.Transformer
	opts        Options
}

// New returns a Pipeline.
func New(f *fetch.Client, t *transform.Transformer, o Options) *Pipeline {
	return &Pipeline{fetcher: f, transformer: t, opts: o}
}

// attempts bounds how often Produce lets go of a source to wait for the
// memory its conversion needs with nothing held: once for the header
// read, once for the decode. Past them the answer is 503.
const attempts = 3

// Produce fetches src, which must be in the fetcher's canonical form, and
// makes kind k of it.
//
// A conversion never waits for memory while it holds its source: when
// the budget cannot give the header read or the decode what they need at
// once, the source is let go, the whole need (source and work) is waited
// for with nothing held, and the source fetched again into it. Waiting
// while holding would let requests that each hold a source, and wait for
// the memory others hold, fill the budget and stall until the wait's
// limit.
func (p *Pipeline) Produce(ctx context.Context, src *url.URL, k variant.Kind) (*Result, error) {
	start := time.Now()
	var prepay int64
	for attempt := 1; ; attempt++ {
		res, err := p.produce(ctx, start, src, k, prepay)
		var short *budget.ShortError
		if !errors.As(err, &short) {
			return res, err
		}
		if attempt == attempts {
			return nil, busy(fmt.Errorf("%d attempts: %w", attempt, err))
		}
		prepay = max(prepay, short.Need)
	}
}

// produce is one attempt of Produce, its buffer given prepay bytes of
// budget before anything is fetched. A *budget.ShortError says what the
// attempt needed in all and could not have at once.
func (p *Pipeline) produce(ctx context.Context, start time.Time, src *url.URL, k variant.Kind, prepay int64) (*Result, error) {
	buf := p.opts.Budget.Buffer(-1)
	if prepay > 0 {
		if err := buf.Prepay(ctx, prepay); err != nil {
			buf.Release()
			return nil, readError(ctx, err)
		}
	}
	resp, err := p.fetcher.Get(ctx, src.String())
	if err != nil {
		buf.Release()
		return nil, FetchError(ctx, err)
	}
	buf.Expect(resp.ContentLength)
	done := false
	defer func() {
		if !done {
			resp.Body.Close()
			buf.Release()
		}
	}()
	if k != variant.Original {
		if err := resp.LimitTo(p.opts.MaxConvertSize); err != nil {
			return nil, FetchError(ctx, err)
		}
	}
	if err := buf.Fill(ctx, io.LimitReader(resp.Body, sniff.HeadSize)); err != nil {
		return nil, readError(ctx, err)
	}
	typ := sniff.Detect(buf.Bytes())
	remoteDisposition := resp.Header.Get("Content-Disposition")

	if k == variant.Original && !typ.IsSVG() {
		if !typ.BrowserSafe() {
			return nil, &problem.Error{Status: http.StatusForbidden, Source: true, Err: fmt.Errorf("type %s is not allowed", typ.MIME)}
		}
		res := &Result{Meta: store.Meta{
			ContentType: typ.MIME,
			Disposition: disposition.Inline(disposition.Filename(remoteDisposition, src, typ.Exts())),
			Size:        -1,
		}, buf: buf}
		if resp.ContentLength > p.opts.InMemory {
			// Declared too large to hold: stream from here, so the first
			// bytes can reach a client as soon as they arrive instead of
			// after the in-memory size has. (A short body is an error of
			// the read, as the length is declared.)
			res.Fetch = time.Since(start)
			res.Meta.Size = resp.ContentLength
			res.BytesIn = res.Meta.Size
			res.Body = readCloser{io.MultiReader(bytes.NewReader(buf.Bytes()), resp.Body), resp.Body}
			done = true
			return res, nil
		}
		// Read up to the in-memory size; past it, stream what is left.
		limited := io.LimitReader(resp.Body, p.opts.InMemory-int64(buf.Len())+1)
		if err := buf.Fill(ctx, limited); err != nil {
			return nil, readError(ctx, err)
		}
		res.Fetch = time.Since(start)
		done = true
		if int64(buf.Len()) <= p.opts.InMemory {
			resp.Body.Close()
			res.Data = buf.Bytes()
			res.Meta.Size = int64(len(res.Data))
			res.Meta.ETag = store.ETag(res.Data)
			res.BytesIn = res.Meta.Size
			return res, nil
		}
		if resp.ContentLength >= 0 {
			res.Meta.Size = resp.ContentLength
		}
		res.BytesIn = res.Meta.Size
		res.Body = readCloser{io.MultiReader(bytes.NewReader(buf.Bytes()), resp.Body), resp.Body}
		return res, nil
	}

	if !typ.Convertible() {
		return nil, &problem.Error{Status: http.StatusNotFound, Source: true, Err: fmt.Errorf("type %s cannot be converted", typ.MIME)}
	}
	if err := resp.LimitTo(p.opts.MaxConvertSize); err != nil { // an SVG asked for unchanged
		return nil, FetchError(ctx, err)
	}
	if err := buf.Fill(ctx, resp.Body); err != nil {
		return nil, readError(ctx, err)
	}
	resp.Body.Close()
	fetched := time.Now()
	// The header read and the decode take their memory without waiting
	// (see Produce).
	plan, err := p.transformer.Plan(buf.Bytes(), typ, k, buf.TryReserve)
	if err == nil {
		err = buf.TryReserve(plan.Memory())
	}
	var out *transform.Output
	if err == nil {
		out, err = p.transformer.Run(ctx, plan)
	}
	if err != nil {
		return nil, transformError(ctx, err)
	}
	done = true
	bytesIn := int64(buf.Len())
	// The source is no longer needed; the output stays accounted until
	// the result is closed.
	buf.Keep(int64(len(out.Data)))
	return &Result{
		Meta: store.Meta{
			ContentType: out.MIME,
			Disposition: disposition.Inline(disposition.Filename(remoteDisposition, src, []string{out.Ext})),
			ETag:        store.ETag(out.Data),
			Size:        int64(len(out.Data)),
		},
		Data:      out.Data,
		BytesIn:   bytesIn,
		Fetch:     fetched.Sub(start),
		Transform: time.Since(fetched),
		Width:     out.Width,
		Height:    out.Height,
		Frames:    out.Frames,
		buf:       buf,
	}, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// FetchError makes a failure of the origin (the fetch, or reading its
// body) a failure of the source, with the fetcher's status and
// Retry-After. A failure while the work's own context is done (every
// client gone) says nothing about the source.
func FetchError(ctx context.Context, err error) error {
	return &problem.Error{Status: problem.Status(err), RetryAfter: problem.RetryAfter(err), Source: ctx.Err() == nil, Err: err}
}

// readError is FetchError for errors while buffering the body, which may
// also be the memory budget's.
func readError(ctx context.Context, err error) error {
	if errors.Is(err, budget.ErrBusy) {
		return busy(err)
	}
	return FetchError(ctx, err)
}

// busy is the proxy's own contention (no memory, no decode slot in time,
// a renderer stopped by a shutdown): 503 with Retry-After, never the
// source's failure.
func busy(err error) error {
	return &problem.Error{Status: http.StatusServiceUnavailable, RetryAfter: BusyRetryAfter, Err: err}
}

// transformError is a failure of the conversion: the image's (422, or 404
// when there is nothing to convert), or the proxy's own (busy, or every
// client gone), which says nothing about the image.
func transformError(ctx context.Context, err error) error {
	var short *budget.ShortError
	switch {
	case errors.As(err, &short):
		return err // Produce waits for the need and tries again
	case errors.Is(err, budget.ErrBusy), errors.Is(err, transform.ErrBusy), errors.Is(err, transform.ErrInterrupted):
		return busy(err)
	case errors.Is(err, transform.ErrNotConvertible), errors.Is(err, transform.ErrNoEntropy):
		return &problem.Error{Status: http.StatusNotFound, Source: true, Err: err}
	case ctx.Err() != nil:
		return &problem.Error{Status: problem.Status(ctx.Err()), Err: err}
	}
	return &problem.Error{Status: http.StatusUnprocessableEntity, Source: true, Err: err}
}
