// Package config reads the proxy's settings from environment variables. The
// README's configuration table documents each of them; names are fixed
// because deployment templates and scripts rely on them.
package config

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/fetch"
)

// Config is every setting, parsed.
type Config struct {
	// OnLambda is set when AWS Lambda started the process.
	OnLambda bool
	Port     string
	// Store is "dir:<path>", "s3://<bucket>/<prefix>" or "none".
	Store string
	// Queue is "local", an SQS queue URL, or "none".
	Queue          string
	PublicBaseURL  string
	S3PathStyle    bool
	PresignTTL     time.Duration
	AllowedPrivate []netip.Prefix
	MaxSize        int64
	UserAgent      string

	ConnectTimeout  time.Duration
	ResponseTimeout time.Duration
	FetchTimeout    time.Duration

	MaxPixels            int64
	MaxFrames            int
	TransformConcurrency int
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

// Load reads the configuration through getenv (os.Getenv in production).
func Load(getenv func(string) string) (Config, error) {
	e := env{getenv: getenv}
	c := Config{
		Port:                  e.str("PORT", "3000"),
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
	if e.err != nil {
		return Config{}, e.err
	}
	c.OnLambda = getenv("AWS_LAMBDA_RUNTIME_API") != ""
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
	switch {
	case c.Store == "none", strings.HasPrefix(c.Store, "dir:") && len(c.Store) > 4, strings.HasPrefix(c.Store, "s3://") && len(c.Store) > 5:
	default:
		return fmt.Errorf("MEDIA_PROXY_STORE: want dir:<path>, s3://<bucket>/<prefix> or none, got %q", c.Store)
	}
	if c.MaxSize <= 0 || c.MaxPixels <= 0 || c.MaxFrames <= 0 || c.TransformConcurrency <= 0 {
		return fmt.Errorf("size, pixel, frame and concurrency limits must be positive")
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
