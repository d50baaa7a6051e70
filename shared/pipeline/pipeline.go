// Package pipeline produces one variant of one remote URL: fetch, sniff,
// then pass through or transform. The HTTP handler and the precompute
// worker share it; neither knows how the other stores or answers.
package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/disposition"
	"github.com/misskey-lambda/media-proxy/shared/fetch"
	"github.com/misskey-lambda/media-proxy/shared/sniff"
	"github.com/misskey-lambda/media-proxy/shared/store"
	"github.com/misskey-lambda/media-proxy/shared/transform"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

// Error is a failure with the HTTP status the client should get.
type Error struct {
	Status int
	// Source is set when fetching or converting the source failed, which
	// says something about the URL (see package failure); otherwise the
	// proxy could not do the work just now and nothing is to be remembered.
	Source bool
	Err    error
}

// IsSourceFailure reports whether err is a failure of the source itself.
func IsSourceFailure(err error) bool {
	var pe *Error
	return errors.As(err, &pe) && pe.Source
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

// Result is a produced variant. Exactly one of Data and Body is set: Data
// holds bodies up to the inline limit, Body streams larger passthroughs.
type Result struct {
	Meta store.Meta
	Data []byte
	// Body must be closed by the caller.
	Body io.ReadCloser
	// Figures for logs and metrics.
	BytesIn               int64
	Fetch, Transform      time.Duration
	Width, Height, Frames int
}

// Close releases Body if any.
func (r *Result) Close() error {
	if r.Body != nil {
		return r.Body.Close()
	}
	return nil
}

// Pipeline holds what producing a variant needs.
type Pipeline struct {
	fetcher     *fetch.Client
	transformer *transform.Transformer
	inlineLimit int64
}

// New returns a Pipeline. Passthrough bodies up to inlineLimit bytes are
// read into memory (and get an ETag); larger ones are streamed.
func New(f *fetch.Client, t *transform.Transformer, inlineLimit int64) *Pipeline {
	return &Pipeline{fetcher: f, transformer: t, inlineLimit: inlineLimit}
}

// Produce fetches src and makes kind k of it.
func (p *Pipeline) Produce(ctx context.Context, src *url.URL, k variant.Kind) (*Result, error) {
	start := time.Now()
	resp, err := p.fetcher.Get(ctx, src.String())
	if err != nil {
		return nil, fetchError(err)
	}
	closeBody := true
	defer func() {
		if closeBody {
			resp.Body.Close()
		}
	}()

	head := make([]byte, sniff.HeadSize)
	n, err := io.ReadFull(resp.Body, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fetchError(err)
	}
	head = head[:n]
	typ := sniff.Detect(head)
	remoteDisposition := resp.Header.Get("Content-Disposition")

	if k == variant.Original && !typ.IsSVG() {
		if !typ.BrowserSafe() {
			return nil, &Error{Status: http.StatusForbidden, Source: true, Err: fmt.Errorf("type %s is not allowed", typ.MIME)}
		}
		res := &Result{Meta: store.Meta{
			ContentType: typ.MIME,
			Disposition: disposition.Inline(disposition.Filename(remoteDisposition, src, typ.Exts())),
			Size:        -1,
		}}
		// Read up to the inline limit; past it, stream what is left.
		limited := io.LimitReader(resp.Body, p.inlineLimit-int64(n)+1)
		var buf bytes.Buffer
		if resp.ContentLength > 0 && resp.ContentLength <= p.inlineLimit {
			buf.Grow(int(resp.ContentLength))
		}
		buf.Write(head)
		if _, err := buf.ReadFrom(limited); err != nil {
			return nil, fetchError(err)
		}
		res.Fetch = time.Since(start)
		if int64(buf.Len()) <= p.inlineLimit {
			res.Data = buf.Bytes()
			res.Meta.Size = int64(len(res.Data))
			res.Meta.ETag = ETag(res.Data)
			res.BytesIn = res.Meta.Size
			return res, nil
		}
		if resp.ContentLength >= 0 {
			res.Meta.Size = resp.ContentLength
		}
		res.BytesIn = res.Meta.Size
		res.Body = readCloser{io.MultiReader(&buf, resp.Body), resp.Body}
		closeBody = false
		return res, nil
	}

	if !typ.Convertible() {
		return nil, &Error{Status: http.StatusNotFound, Source: true, Err: fmt.Errorf("type %s cannot be converted", typ.MIME)}
	}
	// Sized up front: growing by doubling would allocate and zero about
	// twice a large image.
	src2 := bytes.NewBuffer(make([]byte, 0, max(int64(len(head)), resp.ContentLength)+bytes.MinRead))
	src2.Write(head)
	if _, err := src2.ReadFrom(resp.Body); err != nil {
		return nil, fetchError(err)
	}
	fetched := time.Now()
	out, err := p.transformer.Apply(ctx, src2.Bytes(), typ, k)
	if err != nil {
		return nil, transformError(err)
	}
	return &Result{
		Meta: store.Meta{
			ContentType: out.MIME,
			Disposition: disposition.Inline(disposition.Filename(remoteDisposition, src, []string{out.Ext})),
			ETag:        ETag(out.Data),
			Size:        int64(len(out.Data)),
		},
		Data:      out.Data,
		BytesIn:   int64(src2.Len()),
		Fetch:     fetched.Sub(start),
		Transform: time.Since(fetched),
		Width:     out.Width,
		Height:    out.Height,
		Frames:    out.Frames,
	}, nil
}

// ETag is the entity tag of b: its length and CRC-32C. A validator need
// not resist forgery, only change when the bytes do, and CRC-32C runs in
// hardware at several GB/s where SHA-256 cost half a passthrough's CPU.
func ETag(b []byte) string {
	return fmt.Sprintf(`"%x-%08x"`, len(b), crc32.Checksum(b, castagnoli))
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type readCloser struct {
	io.Reader
	io.Closer
}

func fetchError(err error) error {
	status := fetch.StatusOf(err)
	if status == 0 {
		status = StatusOf(err)
	}
	return &Error{Status: status, Source: true, Err: err}
}

func transformError(err error) error {
	status := http.StatusUnprocessableEntity
	switch {
	case errors.Is(err, transform.ErrNotConvertible), errors.Is(err, transform.ErrNoEntropy):
		status = http.StatusNotFound
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		status = http.StatusGatewayTimeout
	}
	return &Error{Status: status, Source: true, Err: err}
}
