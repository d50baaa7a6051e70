// Package proxy is the HTTP front of the media proxy: the query API Misskey
// uses, the response headers, the store lookups around the pipeline, and one
// log line per request. It is a plain http.Handler, served by the local
// server and, through lambdaurl, by a Lambda Function URL.
package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/misskey-lambda/media-proxy/shared/emf"
	"github.com/misskey-lambda/media-proxy/shared/failure"
	"github.com/misskey-lambda/media-proxy/shared/jobs"
	"github.com/misskey-lambda/media-proxy/shared/pipeline"
	"github.com/misskey-lambda/media-proxy/shared/store"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

// Headers are the headers sent on every response, errors included.
type Headers struct {
	ContentSecurityPolicy string
	AllowOrigin           string
	AllowHeaders          string
	AllowMethods          string
}

// DefaultHeaders match the reference proxy.
var DefaultHeaders = Headers{
	ContentSecurityPolicy: "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'",
	AllowOrigin:           "*",
	AllowHeaders:          "*",
	AllowMethods:          "GET, HEAD, OPTIONS",
}

const (
	cacheSuccess = "max-age=31536000, immutable"
	cacheError   = "max-age=300"
	// Store calls on the request path are bounded: a slow or unreachable
	// store degrades caching, never the answer.
	lookupTimeout = 2 * time.Second
	storeTimeout  = 5 * time.Second
	// enqueueTimeout bounds how long a response may wait for its sibling
	// jobs to be queued; a queue that slow loses the jobs, not the answer.
	enqueueTimeout = time.Second
)

// Config wires a Handler.
type Config struct {
	Pipeline *pipeline.Pipeline
	// Store keeps produced variants; store.None{} disables caching.
	Store   store.Store
	Headers Headers
	Logger  *slog.Logger
	// InlineLimit is the largest body answered directly; larger ones are
	// stored and answered from the store (a redirect, for S3). 0 means no
	// limit. On Lambda it keeps every response under the payload limit.
	InlineLimit int64
	// Metrics adds CloudWatch Embedded Metric Format fields to each
	// request's log line.
	Metrics bool
	// Precompute, when set, receives jobs for the siblings of a variant
	// produced on a cache miss (see variant.Kind.Siblings).
	Precompute jobs.Enqueuer
}

// Handler serves the proxy's query API.
type Handler struct {
	pipeline    *pipeline.Pipeline
	store       store.Store
	noStore     bool
	headers     Headers
	log         *slog.Logger
	group       singleflight.Group
	placeholder []byte
	inlineLimit int64
	precompute  jobs.Enqueuer
	metrics     bool
}

// New returns a Handler.
func New(cfg Config) *Handler {
	h := &Handler{
		pipeline:    cfg.Pipeline,
		store:       cfg.Store,
		headers:     cfg.Headers,
		log:         cfg.Logger,
		placeholder: placeholderPNG(),
		inlineLimit: cfg.InlineLimit,
		precompute:  cfg.Precompute,
		metrics:     cfg.Metrics,
	}
	if h.store == nil {
		h.store = store.None{}
	}
	_, h.noStore = h.store.(store.None)
	if h.log == nil {
		h.log = slog.Default()
	}
	return h
}

// record collects what the request's log line reports.
type record struct {
	id, kind, outcome string
	status            int
	bytesIn, bytesOut int64
	fetch, transform  time.Duration
	source            string
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &record{id: requestID(r), outcome: "none"}
	h.setCommon(w.Header())
	h.serve(w, r, rec)
	attrs := []slog.Attr{
		slog.String("request_id", rec.id),
		slog.String("method", r.Method),
		slog.String("url", rec.source),
		slog.String("variant", rec.kind),
		slog.String("cache", rec.outcome),
		slog.Int("status", rec.status),
		slog.Int64("bytes_in", rec.bytesIn),
		slog.Int64("bytes_out", rec.bytesOut),
		slog.Int64("fetch_ms", rec.fetch.Milliseconds()),
		slog.Int64("transform_ms", rec.transform.Milliseconds()),
		slog.Int64("duration_ms", time.Since(start).Milliseconds()),
	}
	if h.metrics && rec.kind != "" { // health checks and preflights are not worth a metric
		attrs = append(attrs, requestMetrics(rec)...)
	}
	h.log.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
}

// requestMetrics makes the request's log line a CloudWatch EMF record too.
func requestMetrics(rec *record) []slog.Attr {
	return emf.Attrs(time.Now(), "Variant", rec.kind,
		emf.Metric{Name: "Requests", Unit: emf.Count, Value: 1},
		emf.Metric{Name: "CacheHit", Unit: emf.Count, Value: emf.Flag(rec.outcome == "hit")},
		emf.Metric{Name: "CacheMiss", Unit: emf.Count, Value: emf.Flag(rec.outcome == "miss")},
		emf.Metric{Name: "FailureMemory", Unit: emf.Count, Value: emf.Flag(rec.outcome == "failure-memory")},
		emf.Metric{Name: "Errors", Unit: emf.Count, Value: emf.Flag(rec.status >= 400)},
		emf.Metric{Name: "BytesOut", Unit: emf.Bytes, Value: float64(rec.bytesOut)},
		emf.Metric{Name: "FetchMs", Unit: emf.Milliseconds, Value: float64(rec.fetch.Milliseconds())},
		emf.Metric{Name: "TransformMs", Unit: emf.Milliseconds, Value: float64(rec.transform.Milliseconds())},
	)
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, rec *record) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodOptions:
		// A CORS preflight: the common headers already say it all.
		w.Header().Set("Access-Control-Max-Age", "86400")
		w.Header().Set("Cache-Control", cacheSuccess)
		rec.status = http.StatusNoContent
		w.WriteHeader(rec.status)
		return
	default:
		w.Header().Set("Allow", "GET, HEAD, OPTIONS")
		h.writeError(w, r, rec, http.StatusMethodNotAllowed, false)
		return
	}
	if r.URL.Path == "/" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		rec.status = http.StatusOK
		rec.bytesOut = writeBody(w, r, []byte("Misskey media proxy is running.\n"))
		return
	}
	if !routable(r.URL.Path) {
		h.writeError(w, r, rec, http.StatusNotFound, false)
		return
	}
	q, qerr := url.ParseQuery(r.URL.RawQuery)
	_, fallback := q["fallback"]
	kind := variant.FromQuery(q)
	rec.kind = string(kind)
	src, err := sourceURL(q)
	if qerr != nil || err != nil {
		h.writeError(w, r, rec, http.StatusBadRequest, fallback)
		return
	}
	rec.source = src.String()
	h.proxy(w, r, rec, src, kind, fallback)
}

// routable accepts "/<name>" and "/proxy/<name>" with a non-empty name.
func routable(path string) bool {
	name := strings.TrimPrefix(path, "/proxy/")
	if name == path {
		name = strings.TrimPrefix(path, "/")
	}
	return name != "" && !strings.Contains(name, "/")
}

// sourceURL reads the one url parameter, which must be absolute http(s).
func sourceURL(q url.Values) (*url.URL, error) {
	vals := q["url"]
	if len(vals) != 1 {
		return nil, errors.New("want exactly one url parameter")
	}
	u, err := url.Parse(vals[0])
	if err != nil {
		return nil, err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("url must be absolute http or https")
	}
	return u, nil
}

// produced is what concurrent identical requests share.
type produced struct {
	res   *pipeline.Result // in-memory result
	entry *store.Entry     // or the stored object, for large bodies
}

func (h *Handler) proxy(w http.ResponseWriter, r *http.Request, rec *record, src *url.URL, kind variant.Kind, fallback bool) {
	ctx := r.Context()
	norm := variant.NormalizeURL(src)
	key := variant.Key(norm, kind)
	failKey := variant.FailureKey(norm, kind)

	lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	e, err := h.store.Lookup(lctx, key)
	cancel()
	switch {
	case err == nil:
		rec.outcome = "hit"
		h.writeEntry(w, r, rec, e)
		return
	case !errors.Is(err, store.ErrNotFound):
		h.log.Warn("store lookup failed; answering without the cache", "request_id", rec.id, "key", key, "err", err)
	default:
		lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
		status, err := h.store.Failure(lctx, failKey)
		cancel()
		if err == nil {
			rec.outcome = "failure-memory"
			h.writeError(w, r, rec, status, fallback)
			return
		}
	}
	rec.outcome = "miss"

	// Without a store a large passthrough can only be streamed to the
	// one client that asked, so it cannot be shared.
	if h.noStore && kind == variant.Original && h.inlineLimit == 0 {
		res, err := h.pipeline.Produce(ctx, src, kind)
		if err != nil {
			h.fail(w, r, rec, failKey, err, fallback)
			return
		}
		defer res.Close()
		h.writeResult(w, r, rec, res)
		return
	}
	// The work runs detached from the first caller's context, since others
	// may be waiting on it; the fetcher's own timeouts bound it.
	v, err, _ := h.group.Do(key, func() (any, error) {
		return h.produce(context.WithoutCancel(ctx), rec, src, kind, key)
	})
	if err != nil {
		h.fail(w, r, rec, failKey, err, fallback)
		return
	}
	p := v.(*produced)
	if p.entry != nil {
		h.writeEntry(w, r, rec, p.entry)
		return
	}
	h.writeResult(w, r, rec, p.res)
}

func (h *Handler) produce(ctx context.Context, rec *record, src *url.URL, kind variant.Kind, key string) (*produced, error) {
	defer h.enqueueSiblings(ctx, rec, src, kind)()
	res, err := h.pipeline.Produce(ctx, src, kind)
	if err != nil {
		return nil, err
	}
	rec.fetch, rec.transform, rec.bytesIn = res.Fetch, res.Transform, res.BytesIn
	sctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	if res.Data != nil && (h.inlineLimit == 0 || int64(len(res.Data)) <= h.inlineLimit) {
		// Stored before answering: on Lambda nothing may run after the
		// response, as the process is frozen.
		if err := h.store.Put(sctx, key, res.Meta, bytes.NewReader(res.Data)); err != nil {
			h.log.Warn("store write failed; answering without caching", "request_id", rec.id, "key", key, "err", err)
		}
		return &produced{res: res}, nil
	}
	// Too large to answer directly: it goes into the store and is served
	// from there.
	body := io.Reader(bytes.NewReader(res.Data))
	if res.Data == nil {
		defer res.Close()
		body = res.Body
	}
	if h.noStore {
		return nil, &pipeline.Error{Status: http.StatusBadGateway, Err: errors.New("body over the inline limit and no store to serve it from")}
	}
	if err := h.store.Put(ctx, key, res.Meta, body); err != nil {
		return nil, &pipeline.Error{Status: http.StatusBadGateway, Err: fmt.Errorf("store large body: %w", err)}
	}
	e, err := h.store.Lookup(sctx, key)
	if err != nil {
		return nil, &pipeline.Error{Status: http.StatusBadGateway, Err: fmt.Errorf("read back large body: %w", err)}
	}
	return &produced{entry: e}, nil
}

// enqueueSiblings queues jobs for kind's siblings while the variant itself
// is produced, and returns a func that waits for the enqueue: on Lambda
// nothing may run after the response, as the process is frozen. A failed
// enqueue costs only the precompute, never the request.
func (h *Handler) enqueueSiblings(ctx context.Context, rec *record, src *url.URL, kind variant.Kind) (wait func()) {
	siblings := kind.Siblings()
	// Without a store a precomputed variant would have nowhere to go.
	if h.precompute == nil || h.noStore || len(siblings) == 0 {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		ectx, cancel := context.WithTimeout(ctx, enqueueTimeout)
		defer cancel()
		if err := h.precompute.Enqueue(ectx, jobs.For(src, siblings)); err != nil {
			h.log.Warn("precompute enqueue failed", "request_id", rec.id, "url", rec.source, "variant", rec.kind, "err", err)
		}
	}()
	return func() { <-done }
}

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, rec *record, failKey string, err error, fallback bool) {
	status := pipeline.StatusOf(err)
	h.log.Info("produce failed", "request_id", rec.id, "url", rec.source, "variant", rec.kind, "status", status, "err", err)
	if ttl := failure.TTL(status); ttl > 0 && pipeline.IsSourceFailure(err) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), storeTimeout)
		defer cancel()
		if serr := h.store.Fail(ctx, failKey, status, ttl); serr != nil {
			h.log.Warn("store failure marker failed", "request_id", rec.id, "err", serr)
		}
	}
	h.writeError(w, r, rec, status, fallback)
}

func (h *Handler) setCommon(hd http.Header) {
	hd.Set("Content-Security-Policy", h.headers.ContentSecurityPolicy)
	hd.Set("Access-Control-Allow-Origin", h.headers.AllowOrigin)
	hd.Set("Access-Control-Allow-Headers", h.headers.AllowHeaders)
	hd.Set("Access-Control-Allow-Methods", h.headers.AllowMethods)
	hd.Set("X-Content-Type-Options", "nosniff")
}

func setSuccess(hd http.Header, m store.Meta) {
	hd.Set("Cache-Control", cacheSuccess)
	hd.Set("Content-Type", m.ContentType)
	hd.Set("Content-Disposition", m.Disposition)
	if m.ETag != "" {
		hd.Set("ETag", m.ETag)
	}
	if m.Size >= 0 {
		hd.Set("Content-Length", strconv.FormatInt(m.Size, 10))
	}
}

func (h *Handler) writeResult(w http.ResponseWriter, r *http.Request, rec *record, res *pipeline.Result) {
	if notModified(w, r, rec, res.Meta.ETag) {
		return
	}
	setSuccess(w.Header(), res.Meta)
	rec.status = http.StatusOK
	if res.Data != nil {
		rec.bytesOut = writeBody(w, r, res.Data)
		return
	}
	w.WriteHeader(rec.status)
	if r.Method != http.MethodHead {
		n, err := io.Copy(w, res.Body)
		rec.bytesOut = n
		if err != nil {
			// Headers are gone; a short body with a Content-Length tells the
			// client the response is incomplete.
			h.log.Warn("streaming body failed", "request_id", rec.id, "err", err)
		}
	}
}

func (h *Handler) writeEntry(w http.ResponseWriter, r *http.Request, rec *record, e *store.Entry) {
	if e.RedirectURL != "" {
		w.Header().Set("Location", e.RedirectURL)
		w.Header().Set("Cache-Control", "max-age="+strconv.Itoa(int(e.RedirectMaxAge.Seconds())))
		rec.status = http.StatusFound
		w.WriteHeader(rec.status)
		return
	}
	if notModified(w, r, rec, e.ETag) {
		return
	}
	body, err := e.Open(r.Context())
	if err != nil {
		h.log.Warn("store open failed", "request_id", rec.id, "err", err)
		h.writeError(w, r, rec, http.StatusBadGateway, false)
		return
	}
	defer body.Close()
	setSuccess(w.Header(), e.Meta)
	rec.status = http.StatusOK
	w.WriteHeader(rec.status)
	if r.Method != http.MethodHead {
		rec.bytesOut, _ = io.Copy(w, body)
	}
}

// notModified answers 304 when If-None-Match names etag.
func notModified(w http.ResponseWriter, r *http.Request, rec *record, etag string) bool {
	inm := r.Header.Get("If-None-Match")
	if etag == "" || inm == "" {
		return false
	}
	for _, t := range strings.Split(inm, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			w.Header().Set("ETag", etag)
			w.Header().Set("Cache-Control", cacheSuccess)
			rec.status = http.StatusNotModified
			w.WriteHeader(rec.status)
			return true
		}
	}
	return false
}

func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, rec *record, status int, fallback bool) {
	hd := w.Header()
	hd.Set("Cache-Control", cacheError)
	if fallback {
		hd.Set("Content-Type", "image/png")
		hd.Set("Content-Disposition", `inline; filename="fallback.png"`)
		hd.Set("Content-Length", strconv.Itoa(len(h.placeholder)))
		rec.status = http.StatusOK
		rec.bytesOut = writeBody(w, r, h.placeholder)
		return
	}
	body := []byte(http.StatusText(status) + "\n")
	hd.Set("Content-Type", "text/plain; charset=utf-8")
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	rec.status = status
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(body)
		rec.bytesOut = int64(len(body))
	}
}

// writeBody writes a complete in-memory body (none for HEAD).
func writeBody(w http.ResponseWriter, r *http.Request, b []byte) int64 {
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return 0
	}
	n, _ := w.Write(b)
	return int64(n)
}

func requestID(r *http.Request) string {
	for _, h := range []string{"X-Amzn-Request-Id", "X-Request-Id"} {
		if v := r.Header.Get(h); v != "" && len(v) <= 128 {
			return v
		}
	}
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
