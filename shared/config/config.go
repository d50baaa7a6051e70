// Package config reads the proxy's settings from environment variables. The
// README's configuration table documents each of them; names are fixed
// because deployment templates and scripts rely on them.
package config

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/budget"
	"github.com/misskey-lambda/media-proxy/shared/fetch"
	"golang.org/x/net/http/httpproxy"
)

// Config is every setting, parsed.
type Config struct {
	// OnLambda is set when AWS Lambda started the process.
	OnLambda bool
	Port     string
	// BindAddress is the local server's listening address ("" = all
	// interfaces).
	BindAddress string
	// MaxConnections caps the local server's open connections.
	MaxConnections int
	// WriteTimeout drops a client whose response makes no progress.
	WriteTimeout time.Duration
	// Store is "dir:<path>", "s3://<bucket>/<prefix>" or "none".
	Store string
	// Queue is "local", an SQS queue URL, or "none".
	Queue         string
	PublicBaseURL string
	// InlineHitsBelow answers stored variants smaller than this directly
	// instead of redirecting (0: always redirect).
	InlineHitsBelow int64
	// LambdaStreamLimit: on Lambda, a large miss whose origin declares at
	// most this many bytes is streamed while it is stored; larger ones
	// (and those of unknown length) are stored first and redirected.
	// Negative: every one is stored first.
	LambdaStreamLimit int64
	S3PathStyle       bool
	PresignTTL        time.Duration
	// S3LifecycleDays is how long after its last write the bucket's
	// lifecycle rule deletes a variant (0: unknown), so redirects to it
	// never outlive it.
	S3LifecycleDays int
	// StoreMaxSize is the on-disk store's budget (0: its default).
	StoreMaxSize   int64
	AllowedPrivate []netip.Prefix
	AllowedPorts   []fetch.PortRange
	// OutgoingProxy is HTTP_PROXY, HTTPS_PROXY and NO_PROXY (either
	// case), read here so that every setting comes through Load.
	OutgoingProxy httpproxy.Config
	// TrustOutgoingProxy accepts an outgoing proxy (see Load).
	TrustOutgoingProxy bool
	MaxSize            int64
	// MaxConvertSize caps sources that are converted, held whole in memory.
	MaxConvertSize int64
	UserAgent      string
	// MemoryBudget bounds the bytes held by fetches and decodes at once;
	// MemoryFrom says where its default came from.
	MemoryBudget int64
	MemoryFrom   string

	ConnectTimeout  time.Duration
	ResponseTimeout time.Duration
	FetchTimeout    time.Duration

	MaxPixels            int64
	MaxFrames            int
	TransformConcurrency int
	TransformTimeout     time.Duration
	VipsConcurrency      int

	ContentSecurityPolicy string
	AllowOrigin           string
	AllowHeaders          string
	AllowMethods          string

	LogLevel slog.Level
	// Metrics adds CloudWatch EMF fields to log lines ("emf" or "none").
	Metrics bool
}

// DefaultUserAgent identifies the proxy to remote servers.
const DefaultUserAgent = "MisskeyMediaProxy/1.0 (+https://github.com/misskey-lambda/media-proxy)"

// DefaultLambdaStreamLimit is where streaming a miss past Lambda's 6 MB
// burst (then 2 MB/s) stops paying against storing it first and
// redirecting; README, "Streaming on Lambda", has the figures.
const DefaultLambdaStreamLimit = 32 << 20

// lambdaStreamMax is the most a streamed Function URL response carries.
const lambdaStreamMax = 200 << 20

// Load reads the configuration through getenv (os.Getenv in production).
func Load(getenv func(string) string) (Config, error) {
	e := env{getenv: getenv}
	c := Config{
		Port:                  e.str("PORT", "3000"),
		BindAddress:           e.str("MEDIA_PROXY_BIND_ADDRESS", ""),
		MaxConnections:        int(e.integer("MEDIA_PROXY_MAX_CONNECTIONS", 1024)),
		WriteTimeout:          e.duration("MEDIA_PROXY_WRITE_TIMEOUT", 30*time.Second),
		StoreMaxSize:          e.integer("MEDIA_PROXY_STORE_MAX_SIZE", 0),
		S3LifecycleDays:       int(e.integer("MEDIA_PROXY_S3_LIFECYCLE_DAYS", 0)),
		InlineHitsBelow:       e.integer("MEDIA_PROXY_INLINE_HITS_BELOW", 0),
		LambdaStreamLimit:     e.integer("MEDIA_PROXY_LAMBDA_STREAM_LIMIT", DefaultLambdaStreamLimit),
		TrustOutgoingProxy:    e.boolean("MEDIA_PROXY_TRUST_OUTGOING_PROXY", false),
		MaxConvertSize:        e.integer("MEDIA_PROXY_MAX_CONVERT_SIZE", 50<<20),
		MemoryBudget:          e.integer("MEDIA_PROXY_MEMORY_BUDGET", 0),
		TransformTimeout:      e.duration("MEDIA_PROXY_TRANSFORM_TIMEOUT", 20*time.Second),
		Store:                 e.str("MEDIA_PROXY_STORE", ""),
		Queue:                 e.str("MEDIA_PROXY_QUEUE", ""),
		PublicBaseURL:         strings.TrimRight(e.str("MEDIA_PROXY_PUBLIC_BASE_URL", ""), "/"),
		S3PathStyle:           e.boolean("MEDIA_PROXY_S3_PATH_STYLE", false),
		PresignTTL:            e.duration("MEDIA_PROXY_PRESIGN_TTL", time.Hour),
		MaxSize:               e.integer("MEDIA_PROXY_MAX_SIZE", 250<<20),
		UserAgent:             e.str("MEDIA_PROXY_USER_AGENT", DefaultUserAgent),
		ConnectTimeout:        e.duration("MEDIA_PROXY_CONNECT_TIMEOUT", 30*time.Second),
		ResponseTimeout:       e.duration("MEDIA_PROXY_RESPONSE_TIMEOUT", 30*time.Second),
		FetchTimeout:          e.duration("MEDIA_PROXY_FETCH_TIMEOUT", 60*time.Second),
		MaxPixels:             e.integer("MEDIA_PROXY_MAX_PIXELS", 100_000_000),
		MaxFrames:             int(e.integer("MEDIA_PROXY_MAX_FRAMES", 1000)),
		TransformConcurrency:  int(e.integer("MEDIA_PROXY_TRANSFORM_CONCURRENCY", int64(runtime.GOMAXPROCS(0)))),
		VipsConcurrency:       int(e.integer("MEDIA_PROXY_VIPS_CONCURRENCY", 0)),
		ContentSecurityPolicy: e.str("MEDIA_PROXY_CSP", "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'"),
		AllowOrigin:           e.str("MEDIA_PROXY_CORS_ALLOW_ORIGIN", "*"),
		AllowHeaders:          e.str("MEDIA_PROXY_CORS_ALLOW_HEADERS", "*"),
		AllowMethods:          e.str("MEDIA_PROXY_CORS_ALLOW_METHODS", "GET, HEAD, OPTIONS"),
	}
	if lvl := e.str("MEDIA_PROXY_LOG_LEVEL", "info"); e.err == nil {
		if err := c.LogLevel.UnmarshalText([]byte(lvl)); err != nil {
			e.err = fmt.Errorf("MEDIA_PROXY_LOG_LEVEL: %w", err)
		}
	}
	if raw := e.str("MEDIA_PROXY_ALLOWED_PRIVATE_NETWORKS", ""); raw != "" && e.err == nil {
		p, err := fetch.ParsePrefixes(raw)
		if err != nil {
			e.err = fmt.Errorf("MEDIA_PROXY_ALLOWED_PRIVATE_NETWORKS: %w", err)
		}
		c.AllowedPrivate = p
	}
	if raw := e.str("MEDIA_PROXY_ALLOWED_PORTS", ""); raw != "" && e.err == nil {
		p, err := fetch.ParsePorts(raw)
		if err != nil {
			e.err = fmt.Errorf("MEDIA_PROXY_ALLOWED_PORTS: %w", err)
		}
		c.AllowedPorts = p
	}
	if e.err != nil {
		return Config{}, e.err
	}
	c.OnLambda = getenv("AWS_LAMBDA_RUNTIME_API") != ""
	// An outgoing proxy resolves target names again, after the address
	// check: DNS rebinding could then reach the proxy's own network. Only
	// an admin who makes the proxy enforce egress rules may use one.
	c.OutgoingProxy = httpproxy.Config{
		HTTPProxy:  either(getenv, "HTTP_PROXY"),
		HTTPSProxy: either(getenv, "HTTPS_PROXY"),
		NoProxy:    either(getenv, "NO_PROXY"),
	}
	if (c.OutgoingProxy.HTTPProxy != "" || c.OutgoingProxy.HTTPSProxy != "") && !c.TrustOutgoingProxy {
		return Config{}, fmt.Errorf("HTTP_PROXY or HTTPS_PROXY is set: an outgoing proxy resolves names itself, so the proxy's address checks cannot cover DNS rebinding; unset it, or set MEDIA_PROXY_TRUST_OUTGOING_PROXY=true if that proxy refuses private and internal destinations itself")
	}
	if c.MemoryBudget == 0 {
		// Half of what the process may use: the rest is the runtime,
		// libvips' threads and output buffers.
		mem, from := budget.ProcessMemory(getenv)
		c.MemoryBudget, c.MemoryFrom = mem/2, "half of "+from
		if mem == 0 {
			c.MemoryBudget, c.MemoryFrom = 1<<30, "fixed default"
		}
	} else {
		c.MemoryFrom = "MEDIA_PROXY_MEMORY_BUDGET"
	}
	if c.Store == "" {
		if c.OnLambda {
			return Config{}, fmt.Errorf("MEDIA_PROXY_STORE must be set on Lambda (s3://bucket/prefix or none)")
		}
		c.Store = "dir:" + defaultStoreDir()
	}
	switch e.str("MEDIA_PROXY_METRICS", "") {
	case "emf":
		c.Metrics = true
	case "none":
	case "":
		c.Metrics = c.OnLambda
	default:
		return Config{}, fmt.Errorf("MEDIA_PROXY_METRICS: want emf or none")
	}
	if c.Queue == "" {
		c.Queue = "local"
		if c.OnLambda {
			c.Queue = "none"
		}
	}
	if err := c.validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

func (c Config) validate() error {
	if c.LambdaStreamLimit == 0 || c.LambdaStreamLimit > lambdaStreamMax {
		return fmt.Errorf("MEDIA_PROXY_LAMBDA_STREAM_LIMIT: want 1 to %d bytes (a streamed Function URL response carries at most 200 MB), or negative to store every large miss first", lambdaStreamMax)
	}
	switch {
	case c.Store == "none", strings.HasPrefix(c.Store, "dir:") && len(c.Store) > 4, strings.HasPrefix(c.Store, "s3://") && len(c.Store) > 5:
	default:
		return fmt.Errorf("MEDIA_PROXY_STORE: want dir:<path>, s3://<bucket>/<prefix> or none, got %q", c.Store)
	}
	if c.MaxSize <= 0 || c.MaxConvertSize <= 0 || c.MaxPixels <= 0 || c.MaxFrames <= 0 || c.TransformConcurrency <= 0 ||
		c.MemoryBudget <= 0 || c.MaxConnections <= 0 || c.TransformTimeout <= 0 || c.StoreMaxSize < 0 || c.WriteTimeout < 0 || c.S3LifecycleDays < 0 || c.InlineHitsBelow < 0 {
		return fmt.Errorf("size, pixel, frame, memory, connection, time and concurrency limits must be positive")
	}
	return nil
}

// defaultStoreDir is under the user's cache folder, or the temp folder
// where there is none (a service user without a home).
func defaultStoreDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "misskey-media-proxy")
	}
	return filepath.Join(os.TempDir(), "misskey-media-proxy")
}

// either reads an upper-case variable or, unset, its lower-case spelling,
// as net/http does.
func either(getenv func(string) string, name string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return getenv(strings.ToLower(name))
}

// ProxyFunc chooses the outgoing proxy for a request, from OutgoingProxy.
func (c Config) ProxyFunc() func(*http.Request) (*url.URL, error) {
	f := c.OutgoingProxy.ProxyFunc()
	return func(r *http.Request) (*url.URL, error) { return f(r.URL) }
}

// env reads variables and keeps the first parse error.
type env struct {
	getenv func(string) string
	err    error
}

func (e *env) str(name, def string) string {
	if v := strings.TrimSpace(e.getenv(name)); v != "" {
		return v
	}
	return def
}

func (e *env) integer(name string, def int64) int64 {
	v := e.str(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil && e.err == nil {
		e.err = fmt.Errorf("%s: want an integer, got %q", name, v)
	}
	return n
}

func (e *env) boolean(name string, def bool) bool {
	v := e.str(name, "")
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil && e.err == nil {
		e.err = fmt.Errorf("%s: want true or false, got %q", name, v)
	}
	return b
}

func (e *env) duration(name string, def time.Duration) time.Duration {
	v := e.str(name, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil && e.err == nil {
		e.err = fmt.Errorf("%s: want a duration such as 30s, got %q", name, v)
	}
	return d
}
