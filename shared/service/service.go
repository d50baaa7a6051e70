// Package service wires the proxy's parts from a Config, so every entry
// point (local server, Lambda handler, worker) builds them the same way.
package service

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/budget"
	"github.com/misskey-lambda/media-proxy/shared/config"
	"github.com/misskey-lambda/media-proxy/shared/failure"
	"github.com/misskey-lambda/media-proxy/shared/fetch"
	"github.com/misskey-lambda/media-proxy/shared/functionurl"
	"github.com/misskey-lambda/media-proxy/shared/jobs"
	"github.com/misskey-lambda/media-proxy/shared/pipeline"
	"github.com/misskey-lambda/media-proxy/shared/proxy"
	"github.com/misskey-lambda/media-proxy/shared/s3store"
	"github.com/misskey-lambda/media-proxy/shared/store"
	"github.com/misskey-lambda/media-proxy/shared/transform"
	"github.com/misskey-lambda/media-proxy/shared/vips"
)

// passthroughInMemory is the largest passthrough body held in memory (and
// given an ETag); larger ones stream.
const passthroughInMemory = 8 << 20

// Service is the wired proxy.
type Service struct {
	Config   config.Config
	Store    store.Store
	Pipeline *pipeline.Pipeline
	Handler  *proxy.Handler
	Logger   *slog.Logger
	// Budget bounds the memory of fetches and decodes, process-wide.
	Budget *budget.Budget
	// Runner executes precompute jobs; Queue receives them (nil when
	// MEDIA_PROXY_QUEUE is none). See queue.go.
	Runner *jobs.Runner
	Queue  jobs.Enqueuer
}

// PrintError writes err to w as lines prefixed with the command's name:
// config.Load's error names each bad variable on a line of its own.
func PrintError(w io.Writer, command string, err error) {
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintln(w, command+":", line)
	}
}

// NewLogger returns the JSON logger every entry point uses: one line per
// event, on standard error (CloudWatch collects both streams on Lambda).
func NewLogger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// New builds the service.
func New(ctx context.Context, cfg config.Config, log *slog.Logger) (*Service, error) {
	if err := vips.Start(vips.Options{Concurrency: cfg.VipsConcurrency}); err != nil {
		return nil, err
	}
	log.Info("libvips started", "threads_per_image", cfg.VipsConcurrency)
	st, err := OpenStore(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	fetcher := NewFetcher(cfg)
	mem := budget.New(budget.Options{Bytes: cfg.MemoryBudget})
	tr := transform.New(transform.Limits{MaxPixels: cfg.MaxPixels, MaxFrames: cfg.MaxFrames, Timeout: cfg.TransformTimeout}, cfg.TransformConcurrency, mem)
	tr.SetSmartSubsample(cfg.WebPSmartSubsample)
	// On Lambda a body held in memory stays within the 6 MB a streamed
	// response carries at full speed, and a larger miss is streamed only
	// while the 2 MB/s past them beats storing it first (config's
	// LambdaStreamLimit); elsewhere any size may be answered directly.
	var inline, stream, spoolRoom int64
	inMemory := int64(passthroughInMemory)
	if cfg.OnLambda {
		inline = functionurl.MaxBody
		inMemory = functionurl.MaxBody
		stream = cfg.LambdaStreamLimit
		// One request at a time per instance: its spool may take /tmp
		// (the stack's ephemeral storage), but for a margin.
		if size, err := store.FilesystemSize(os.TempDir()); err == nil && size > 0 {
			spoolRoom = size - size/10
		}
	}
	pl := pipeline.New(fetcher, tr, pipeline.Options{InMemory: inMemory, MaxConvertSize: cfg.MaxConvertSize, Budget: mem})
	// One failure memory for the requests and the jobs of this process.
	failures := failure.NewMemory(0)
	runner := &jobs.Runner{Producer: pl, Store: st, Canonical: fetcher.Canonical, Budget: mem, Failures: failures}
	queue, err := OpenQueue(ctx, cfg, runner, log)
	if err != nil {
		return nil, err
	}
	h := proxy.New(proxy.Config{
		Precompute:  queue,
		InlineLimit: inline,
		StreamLimit: stream,
		SpoolRoom:   spoolRoom,
		Pipeline:    pl,
		Canonical:   fetcher.Canonical,
		Budget:      mem,
		// A body takes at most the fetch's own time to arrive; past that
		// and a margin, the store copy is what hangs.
		StreamTimeout: cfg.FetchTimeout + time.Minute,
		WriteTimeout:  cfg.WriteTimeout,
		// Never more than a Lambda response can carry.
		InlineHitsBelow: min(cfg.InlineHitsBelow, functionurl.MaxBody),
		Store:           st,
		Headers: proxy.Headers{
			ContentSecurityPolicy: cfg.ContentSecurityPolicy,
			AllowOrigin:           cfg.AllowOrigin,
			AllowHeaders:          cfg.AllowHeaders,
			AllowMethods:          cfg.AllowMethods,
		},
		Logger:   log,
		Metrics:  cfg.Metrics,
		Failures: failures,
	})
	log.Debug("memory budget", "bytes", cfg.MemoryBudget, "from", cfg.MemoryFrom)
	return &Service{Config: cfg, Store: st, Pipeline: pl, Handler: h, Logger: log, Runner: runner, Queue: queue, Budget: mem}, nil
}

// NewFetcher builds the fetcher every entry point uses, from cfg.
func NewFetcher(cfg config.Config) *fetch.Client {
	return fetch.New(fetch.Config{
		UserAgent:       cfg.UserAgent,
		MaxSize:         cfg.MaxSize,
		ConnectTimeout:  cfg.ConnectTimeout,
		ResponseTimeout: cfg.ResponseTimeout,
		Timeout:         cfg.FetchTimeout,
		AllowedPrivate:  cfg.AllowedPrivate,
		AllowedPorts:    cfg.AllowedPorts,
		Proxy:           cfg.ProxyFunc(),
	})
}

// OpenStore opens the store MEDIA_PROXY_STORE names.
func OpenStore(ctx context.Context, cfg config.Config, log *slog.Logger) (store.Store, error) {
	switch cfg.Store.Kind {
	case config.StoreNone:
		return store.None{}, nil
	case config.StoreDir:
		return store.NewDir(cfg.Store.Dir, store.DirOptions{MaxBytes: cfg.StoreMaxSize, Logger: log})
	case config.StoreS3:
		return s3store.Open(ctx, s3store.Config{
			Bucket:        cfg.Store.Bucket,
			Prefix:        cfg.Store.Prefix,
			PublicBaseURL: cfg.PublicBaseURL,
			PathStyle:     cfg.S3PathStyle,
			PresignTTL:    cfg.PresignTTL,
			Lifetime:      time.Duration(cfg.S3LifecycleDays) * 24 * time.Hour,
		})
	}
	return nil, fmt.Errorf("store %q: not a config.Store from config.Load", cfg.Store)
}
