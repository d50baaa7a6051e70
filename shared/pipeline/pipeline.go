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
	"github.com/misskey-lambda/media-proxy/shared/sniff"
	"github.com/misskey-lambda/media-proxy/shared/store"
	"github.com/misskey-lambda/media-proxy/shared/transform"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

// BusyRetryAfter is what a client is told when the memory budget has no
// room: most work finishes within a couple of seconds.
const BusyRetryAfter = 2 * time.Second

// Error is a failure with the HTTP status the client should get.
type Error struct {
	Status int
	// RetryAfter, when set, is when to come back: the origin said so (429
	// or 503 with Retry-After), or the proxy is out of memory budget.
	RetryAfter time.Duration
	// Source is set when fetching or converting the source failed, which
	// says something about the URL (see package failure); otherwise the
	// proxy could not do the work just now and nothing is to be remembered.
	Source bool
	Err    error
}

func (e *Error) Error() string { return fmt.Sprintf("%d: %v", e.Status, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

// StatusOf gives the HTTP status for an error from Produce.
func StatusOf(err error) int {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Status
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// RetryAfterOf gives the Retry-After of an error from Produce, or 0.
func RetryAfterOf(err error) time.Duration {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.RetryAfter
	}
	return 0
}

// IsSourceFailure reports whether err is a failure of the source itself.
func IsSourceFailure(err error) bool {
	var pe *Error
	return errors.As(err, &pe) && pe.Source
}

// Remember is how long a failure of Produce is to be remembered (0: not
// at all), the same for requests and jobs: only failures of the source,
// for as long as package failure says, and never when the origin asked
// to be asked again later (Retry-After).
func Remember(err error) time.Duration {
	if !IsSourceFailure(err) || RetryAfterOf(err) > 0 {
		return 0
	}
	return failure.TTL(StatusOf(err))
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

// Produce fetches src, which must be in the fetcher's canonical form, and
// makes kind k of it.
func (p *Pipeline) Produce(ctx context.Context, src *url.URL, k variant.Kind) (*Result, error) {
	start := time.Now()
	resp, err := p.fetcher.Get(ctx, src.String())
	if err != nil {
		return nil, FetchError(ctx, err)
	}
	buf := p.opts.Budget.Buffer(resp.ContentLength)
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
			return nil, &Error{Status: http.StatusForbidden, Source: true, Err: fmt.Errorf("type %s is not allowed", typ.MIME)}
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
		return nil, &Error{Status: http.StatusNotFound, Source: true, Err: fmt.Errorf("type %s cannot be converted", typ.MIME)}
	}
	if err := resp.LimitTo(p.opts.MaxConvertSize); err != nil { // an SVG asked for unchanged
		return nil, FetchError(ctx, err)
	}
	if err := buf.Fill(ctx, resp.Body); err != nil {
		return nil, readError(ctx, err)
	}
	resp.Body.Close()
	fetched := time.Now()
	out, err := p.transformer.Apply(ctx, buf.Bytes(), typ, k)
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

// FetchError gives a failure of the origin (the fetch, or reading its
// body) its status and Retry-After. A failure while the work's own
// context is done (every client gone) says nothing about the source.
func FetchError(ctx context.Context, err error) error {
	status := fetch.StatusOf(err)
	if status == 0 {
		status = StatusOf(err)
	}
	var retry time.Duration
	var fe *fetch.Error
	if errors.As(err, &fe) {
		retry = fe.RetryAfter
	}
	return &Error{Status: status, RetryAfter: retry, Source: ctx.Err() == nil, Err: err}
}

// readError is FetchError for errors while buffering the body, which may
// also be the memory budget's.
func readError(ctx context.Context, err error) error {
	if errors.Is(err, budget.ErrBusy) {
		return &Error{Status: http.StatusServiceUnavailable, RetryAfter: BusyRetryAfter, Err: err}
	}
	return FetchError(ctx, err)
}

func transformError(ctx context.Context, err error) error {
	status := http.StatusUnprocessableEntity
	switch {
	case errors.Is(err, budget.ErrBusy):
		return &Error{Status: http.StatusServiceUnavailable, RetryAfter: BusyRetryAfter, Err: err}
	case errors.Is(err, transform.ErrNotConvertible), errors.Is(err, transform.ErrNoEntropy):
		status = http.StatusNotFound
	case ctx.Err() != nil:
		return &Error{Status: http.StatusGatewayTimeout, Err: err}
	}
	return &Error{Status: status, Source: true, Err: err}
}
