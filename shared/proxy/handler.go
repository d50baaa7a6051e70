// Package proxy is the HTTP front of the media proxy: the query API Misskey
// uses, the response headers, the store lookups around the pipeline, and one
// log line per request. It is a plain http.Handler, served by the local
// server and, through functionurl, by a Lambda Function URL.
//
// The files split the work as a request flows: handler.go (methods,
// health, one log line), request.go (the query, parsed once), policy.go
// (lookups, failure memory, coalescing, producing and storing: it decides
// what to answer and never sees the ResponseWriter), respond.go (every
// success response), errors.go (error and fallback responses), record.go
// (the log record and its metrics).
package proxy

import (
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/budget"
	"github.com/misskey-lambda/media-proxy/shared/emf"
	"github.com/misskey-lambda/media-proxy/shared/failure"
	"github.com/misskey-lambda/media-proxy/shared/jobs"
	"github.com/misskey-lambda/media-proxy/shared/pipeline"
	"github.com/misskey-lambda/media-proxy/shared/store"
)

// Headers are the headers sent on every response, errors included; their
// defaults are package config's (MEDIA_PROXY_CSP, MEDIA_PROXY_CORS_*).
type Headers struct {
	ContentSecurityPolicy string
	AllowOrigin           string
	AllowHeaders          string
	AllowMethods          string
}

// Set writes the headers into hd.
func (hs Headers) Set(hd http.Header) {
	hd.Set("Content-Security-Policy", hs.ContentSecurityPolicy)
	hd.Set("Access-Control-Allow-Origin", hs.AllowOrigin)
	hd.Set("Access-Control-Allow-Headers", hs.AllowHeaders)
	hd.Set("Access-Control-Allow-Methods", hs.AllowMethods)
	hd.Set("X-Content-Type-Options", "nosniff")
}

// Config wires a Handler.
type Config struct {
	Pipeline *pipeline.Pipeline
	// Canonical turns the url parameter into the form that is both the
	// store key and exactly what is fetched (fetch.Client.Canonical); an
	// error carries the status to answer (see problem.Status).
	Canonical func(raw string) (*url.URL, error)
	// Store keeps produced variants; store.None{} disables caching.
	Store   store.Store
	Headers Headers
	Logger  *slog.Logger
	// InlineLimit is the largest body held in memory (a converted image,
	// a small passthrough) answered directly; larger ones are stored and
	// answered from the store (a redirect, for S3). 0 means no limit. On
	// Lambda it keeps a buffered response under the payload limit.
	InlineLimit int64
	// StreamLimit decides how a miss too large to hold in memory (a
	// large passthrough, streamed by the pipeline) is answered; each is
	// downloaded once into a spool (see download). 0 answers every one
	// from its spool as it arrives; a positive value only those whose
	// declared length is at most StreamLimit, and answers the others
	// (and those of unknown length) once stored, from the store (a
	// redirect, for S3); negative answers every one from the store.
	StreamLimit int64
	// SpoolDir holds the spools of a store that has none of its own
	// (any but the dir store, which spools in its folder). Default: the
	// system's temporary folder (/tmp on Lambda).
	SpoolDir string
	// SpoolRoom bounds the bytes of the spools in SpoolDir at once; a
	// download that finds no room waits a second, then is refused (503).
	// Default: a quarter of SpoolDir's filesystem, at most 10 GiB.
	SpoolRoom int64
	// Budget, when set, also accounts for the buffers of downloads: the
	// origin's and each reader's chunk, and the store's write buffers.
	Budget *budget.Budget
	// StreamTimeout bounds a store copy (the fetch has its own timeouts;
	// this catches a store that stops answering). Default 2 minutes.
	StreamTimeout time.Duration
	// WriteTimeout is how long a response may go without a write making
	// progress before the client is dropped; 0 means the longest allowed,
	// 10 minutes (a client that stops reading is always dropped).
	WriteTimeout time.Duration
	// InlineHitsBelow answers a stored variant smaller than this many
	// bytes with its bytes instead of a redirect (0: always redirect), so
	// a CDN in front keeps the final bytes and a browser saves a round
	// trip.
	InlineHitsBelow int64
	// Metrics adds CloudWatch Embedded Metric Format fields to each
	// request's log line, as many as the mode says.
	Metrics emf.Mode
	// Precompute, when set, receives jobs for the siblings of a variant
	// produced on a cache miss (see variant.Kind.Siblings).
	Precompute jobs.Enqueuer
	// Failures is the process's failure memory, shared with the jobs it
	// runs; nil gives the handler one of its own.
	Failures *failure.Memory
}

// Handler serves the proxy's query API.
type Handler struct {
	cfg         Config
	noStore     bool
	writeStall  time.Duration
	log         *slog.Logger
	flights     flights
	failures    *failure.Memory
	placeholder []byte
	// Spools of stores without their own, and their room on disk.
	spoolDir  string
	spoolRoom *budget.Budget
	// running counts the downloads in flight (see Wait).
	running  sync.WaitGroup
	counters counters
}

// New returns a Handler.
func New(cfg Config) *Handler {
	if cfg.Store == nil {
		cfg.Store = store.None{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StreamTimeout <= 0 {
		cfg.StreamTimeout = 2 * time.Minute
	}
	if cfg.SpoolDir == "" {
		cfg.SpoolDir = os.TempDir()
	}
	if cfg.SpoolRoom <= 0 {
		fs, _ := store.FilesystemSize(cfg.SpoolDir)
		cfg.SpoolRoom = store.DefaultMaxBytes
		if fs > 0 {
			cfg.SpoolRoom = min(cfg.SpoolRoom, fs/4)
		}
	}
	if cfg.Failures == nil {
		cfg.Failures = failure.NewMemory(0)
	}
	return &Handler{
		cfg:         cfg,
		failures:    cfg.Failures,
		noStore:     !cfg.Store.Keeps(),
		writeStall:  writeStall(cfg.WriteTimeout),
		log:         cfg.Logger,
		placeholder: placeholderPNG(),
		spoolDir:    cfg.SpoolDir,
		spoolRoom:   budget.New(budget.Options{Bytes: cfg.SpoolRoom, MaxWait: spoolRoomWait}),
	}
}

// CommonHeaders are the headers every response carries (CSP, CORS,
// nosniff), for adapters that answer on their own.
func (h *Handler) CommonHeaders() http.Header {
	hd := http.Header{}
	h.cfg.Headers.Set(hd)
	return hd
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &record{id: requestID(r), clientID: clientRequestID(r), outcome: "none"}
	h.cfg.Headers.Set(w.Header())
	dw, extend := h.deadlines(w)
	h.serve(&firstByte{ResponseWriter: dw, start: start, rec: rec}, r, rec)
	extend()
	h.logRequest(r, rec, time.Since(start))
	if rec.aborted {
		// The body broke off after its headers were sent: end the
		// response without the terminating chunk, so neither client nor
		// CDN takes the short body for a complete one.
		panic(http.ErrAbortHandler)
	}
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
		h.writeError(w, r, rec, errorReply(http.StatusMethodNotAllowed), false)
		return
	}
	if r.URL.Path == "/" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		rec.status = http.StatusOK
		rec.bytesOut = writeBody(w, r, []byte("Misskey media proxy is running.\n"))
		return
	}
	req, status := parseRequest(r, h.cfg.Canonical)
	rec.kind, rec.source = string(req.kind), req.logURL
	if status != 0 {
		h.writeError(w, r, rec, errorReply(status), req.fallback)
		return
	}
	rep := h.answer(r.Context(), req, rec)
	defer rep.release()
	h.write(w, r, rec, rep, req.fallback)
}
