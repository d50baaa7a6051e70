// Package config reads the proxy's settings from environment variables. The
// README's configuration table documents each of them (a test holds the two
// together); names are fixed because deployment templates and scripts rely
// on them.
//
// Every variable is one entry of settings: its name, its default and how
// it is parsed. Load reads them all and reports every bad one at once,
// one line each, before anything starts.
package config

import (
	"errors"
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
	"github.com/misskey-lambda/media-proxy/shared/emf"
	"github.com/misskey-lambda/media-proxy/shared/fetch"
	"github.com/misskey-lambda/media-proxy/shared/s3store"
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
	// WriteTimeout drops a client whose response makes no progress (0:
	// after 10 minutes, the longest allowed).
	WriteTimeout time.Duration
	// Store is where variants are kept.
	Store Store
	// Queue is where sibling precompute jobs go.
	Queue Queue
	// WorkerConcurrency is how many jobs of one SQS batch the worker
	// function runs at once.
	WorkerConcurrency int
	PublicBaseURL     string
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
	// VipsConcurrency is libvips' threads per image (0: libvips' default).
	VipsConcurrency int
	// WebPSmartSubsample is libwebp's sharp RGB to YUV conversion, as the
	// reference encodes (off: cheaper, colour edges bleed).
	WebPSmartSubsample bool

	ContentSecurityPolicy string
	AllowOrigin           string
	AllowHeaders          string
	AllowMethods          string

	LogLevel slog.Level
	// Metrics adds CloudWatch EMF fields to log lines: none, one metric
	// per name and function (emf), or also per variant (emf-variant).
	Metrics emf.Mode
}

// StoreKind is the kind of store MEDIA_PROXY_STORE names.
type StoreKind string

const (
	StoreDir  StoreKind = "dir"
	StoreS3   StoreKind = "s3"
	StoreNone StoreKind = "none"
)

// Store is MEDIA_PROXY_STORE, parsed.
type Store struct {
	Kind StoreKind
	// Dir is a dir: store's folder.
	Dir string
	// Bucket and Prefix are an s3:// store's (the prefix empty or ending
	// in a slash).
	Bucket, Prefix string
}

func (s Store) String() string {
	switch s.Kind {
	case StoreDir:
		return "dir:" + s.Dir
	case StoreS3:
		return "s3://" + s.Bucket + "/" + s.Prefix
	}
	return string(s.Kind)
}

// QueueKind is the kind of queue MEDIA_PROXY_QUEUE names.
type QueueKind string

const (
	// QueueLocal runs jobs in this process.
	QueueLocal QueueKind = "local"
	// QueueSQS sends jobs to an SQS queue, for the worker function.
	QueueSQS QueueKind = "sqs"
	// QueueNone drops them.
	QueueNone QueueKind = "none"
)

// Queue is MEDIA_PROXY_QUEUE, parsed.
type Queue struct {
	Kind QueueKind
	// URL is an SQS queue's URL.
	URL string
}

func (q Queue) String() string {
	if q.Kind == QueueSQS {
		return q.URL
	}
	return string(q.Kind)
}

// MaxWorkerConcurrency is the most jobs of a batch the worker runs at
// once by default. Jobs mostly wait on remote servers; the transformer
// bounds the CPU-heavy part.
const MaxWorkerConcurrency = 4

// setting is one environment variable.
type setting struct {
	name string
	// def is the value parsed when the variable is unset, as the README
	// writes it; "" when there is none or it is worked out at start, as
	// auto says (in the README's words).
	def, auto string
	// lower: the lower-case spelling is read too, as net/http does.
	lower bool
	// parse reads a set (or default) value into c; its error says what
	// is accepted.
	parse func(c *Config, v string) error
}

// settings lists every variable Load reads, in the README's order.
func settings() []setting {
	return []setting{
		{name: "PORT", def: "3000", parse: func(c *Config, v string) error {
			if n, err := strconv.Atoi(v); err != nil || n < 0 || n > 65535 {
				return errors.New("want a port number, 0 to 65535")
			}
			c.Port = v
			return nil
		}},
		{name: "MEDIA_PROXY_BIND_ADDRESS", auto: "all interfaces", parse: text(func(c *Config) *string { return &c.BindAddress })},
		{name: "MEDIA_PROXY_MAX_CONNECTIONS", def: "1024", parse: integer(func(c *Config) *int { return &c.MaxConnections }, 1)},
		{name: "MEDIA_PROXY_WRITE_TIMEOUT", def: "30s", parse: duration(func(c *Config) *time.Duration { return &c.WriteTimeout }, 0)},
		{name: "MEDIA_PROXY_STORE", auto: "`dir:<user cache dir>/misskey-media-proxy`", parse: func(c *Config, v string) (err error) {
			c.Store, err = parseStore(v)
			return err
		}},
		{name: "MEDIA_PROXY_STORE_MAX_SIZE", auto: "10 GiB, at most a quarter of the filesystem", parse: integer(func(c *Config) *int64 { return &c.StoreMaxSize }, 0)},
		{name: "MEDIA_PROXY_QUEUE", auto: "`local` (`none` on Lambda)", parse: func(c *Config, v string) (err error) {
			c.Queue, err = parseQueue(v)
			return err
		}},
		{name: "MEDIA_PROXY_WORKER_CONCURRENCY", auto: fmt.Sprintf("the memory budget divided by `MEDIA_PROXY_MAX_CONVERT_SIZE`, 1 to %d", MaxWorkerConcurrency),
			parse: integer(func(c *Config) *int { return &c.WorkerConcurrency }, 1)},
		{name: "MEDIA_PROXY_PUBLIC_BASE_URL", parse: func(c *Config, v string) error {
			if u, err := url.Parse(v); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" {
				return errors.New("want an http(s) URL such as https://cdn.example.com")
			}
			c.PublicBaseURL = strings.TrimRight(v, "/")
			return nil
		}},
		{name: "MEDIA_PROXY_LAMBDA_STREAM_LIMIT", def: strconv.Itoa(DefaultLambdaStreamLimit), parse: func(c *Config, v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n == 0 || n > lambdaStreamMax {
				return fmt.Errorf("want 1 to %d bytes (a streamed Function URL response carries at most 200 MB), or negative to store every large miss first", lambdaStreamMax)
			}
			c.LambdaStreamLimit = n
			return nil
		}},
		{name: "MEDIA_PROXY_INLINE_HITS_BELOW", def: "0", parse: integer(func(c *Config) *int64 { return &c.InlineHitsBelow }, 0)},
		{name: "MEDIA_PROXY_PRESIGN_TTL", def: durationText(s3store.DefaultPresignTTL), parse: duration(func(c *Config) *time.Duration { return &c.PresignTTL }, 1)},
		{name: "MEDIA_PROXY_S3_PATH_STYLE", def: "false", parse: boolean(func(c *Config) *bool { return &c.S3PathStyle })},
		{name: "MEDIA_PROXY_S3_LIFECYCLE_DAYS", auto: "unknown", parse: integer(func(c *Config) *int { return &c.S3LifecycleDays }, 0)},
		{name: "MEDIA_PROXY_ALLOWED_PRIVATE_NETWORKS", parse: func(c *Config, v string) (err error) {
			if c.AllowedPrivate, err = fetch.ParsePrefixes(v); err != nil {
				return fmt.Errorf("want CIDRs separated by commas, such as 10.0.0.0/8,fd00::/8 (%v)", err)
			}
			return nil
		}},
		{name: "MEDIA_PROXY_ALLOWED_PORTS", def: fetch.DefaultPorts, parse: func(c *Config, v string) (err error) {
			if c.AllowedPorts, err = fetch.ParsePorts(v); err != nil {
				return fmt.Errorf("want ports and ranges separated by commas, such as 80,443,8000-8999 (%v)", err)
			}
			return nil
		}},
		{name: "MEDIA_PROXY_MAX_SIZE", def: strconv.Itoa(fetch.DefaultMaxSize), parse: integer(func(c *Config) *int64 { return &c.MaxSize }, 1)},
		{name: "MEDIA_PROXY_MAX_CONVERT_SIZE", def: strconv.Itoa(50 << 20), parse: integer(func(c *Config) *int64 { return &c.MaxConvertSize }, 1)},
		{name: "MEDIA_PROXY_MEMORY_BUDGET", auto: "half of the process's memory", parse: integer(func(c *Config) *int64 { return &c.MemoryBudget }, 1)},
		{name: "MEDIA_PROXY_USER_AGENT", def: fetch.DefaultUserAgent, parse: text(func(c *Config) *string { return &c.UserAgent })},
		{name: "MEDIA_PROXY_CONNECT_TIMEOUT", def: durationText(fetch.DefaultConnectTimeout), parse: duration(func(c *Config) *time.Duration { return &c.ConnectTimeout }, 1)},
		{name: "MEDIA_PROXY_RESPONSE_TIMEOUT", def: durationText(fetch.DefaultResponseTimeout), parse: duration(func(c *Config) *time.Duration { return &c.ResponseTimeout }, 1)},
		{name: "MEDIA_PROXY_FETCH_TIMEOUT", def: durationText(fetch.DefaultTimeout), parse: duration(func(c *Config) *time.Duration { return &c.FetchTimeout }, 1)},
		{name: "MEDIA_PROXY_MAX_PIXELS", def: "100000000", parse: integer(func(c *Config) *int64 { return &c.MaxPixels }, 1)},
		{name: "MEDIA_PROXY_MAX_FRAMES", def: "1000", parse: integer(func(c *Config) *int { return &c.MaxFrames }, 1)},
		{name: "MEDIA_PROXY_TRANSFORM_CONCURRENCY", auto: "number of CPUs", parse: integer(func(c *Config) *int { return &c.TransformConcurrency }, 1)},
		{name: "MEDIA_PROXY_TRANSFORM_TIMEOUT", def: "20s", parse: duration(func(c *Config) *time.Duration { return &c.TransformTimeout }, 1)},
		{name: "MEDIA_PROXY_VIPS_CONCURRENCY", auto: "libvips' default", parse: integer(func(c *Config) *int { return &c.VipsConcurrency }, 0)},
		{name: "MEDIA_PROXY_WEBP_SMART_SUBSAMPLE", def: "true", parse: boolean(func(c *Config) *bool { return &c.WebPSmartSubsample })},
		{name: "MEDIA_PROXY_CSP", def: "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'", parse: text(func(c *Config) *string { return &c.ContentSecurityPolicy })},
		{name: "MEDIA_PROXY_CORS_ALLOW_ORIGIN", def: "*", parse: text(func(c *Config) *string { return &c.AllowOrigin })},
		{name: "MEDIA_PROXY_CORS_ALLOW_HEADERS", def: "*", parse: text(func(c *Config) *string { return &c.AllowHeaders })},
		{name: "MEDIA_PROXY_CORS_ALLOW_METHODS", def: "GET, HEAD, OPTIONS", parse: text(func(c *Config) *string { return &c.AllowMethods })},
		{name: "MEDIA_PROXY_LOG_LEVEL", def: "info", parse: func(c *Config, v string) error {
			switch strings.ToLower(v) {
			case "debug", "info", "warn", "error":
				return c.LogLevel.UnmarshalText([]byte(v))
			}
			return errors.New("want debug, info, warn or error")
		}},
		{name: "MEDIA_PROXY_METRICS", def: "none", parse: func(c *Config, v string) (err error) {
			c.Metrics, err = emf.ParseMode(v)
			return err
		}},
		{name: "HTTP_PROXY", lower: true, parse: text(func(c *Config) *string { return &c.OutgoingProxy.HTTPProxy })},
		{name: "HTTPS_PROXY", lower: true, parse: text(func(c *Config) *string { return &c.OutgoingProxy.HTTPSProxy })},
		{name: "NO_PROXY", lower: true, parse: text(func(c *Config) *string { return &c.OutgoingProxy.NoProxy })},
		{name: "MEDIA_PROXY_TRUST_OUTGOING_PROXY", def: "false", parse: boolean(func(c *Config) *bool { return &c.TrustOutgoingProxy })},
	}
}

// DefaultLambdaStreamLimit is where streaming a miss past Lambda's 6 MB
// burst (then 2 MB/s) stops paying against storing it first and
// redirecting; README, "Streaming on Lambda", has the figures.
const DefaultLambdaStreamLimit = 32 << 20

// lambdaStreamMax is the most a streamed Function URL response carries.
const lambdaStreamMax = 200 << 20

// Load reads the configuration through getenv (os.Getenv in production).
// The error names every variable that is wrong, one line each, with what
// it accepts.
func Load(getenv func(string) string) (Config, error) {
	var c Config
	var errs []error
	set := map[string]bool{}
	for _, s := range settings() {
		v := strings.TrimSpace(getenv(s.name))
		if v == "" && s.lower {
			v = strings.TrimSpace(getenv(strings.ToLower(s.name)))
		}
		set[s.name] = v != ""
		if v == "" {
			v = s.def
		}
		if v == "" {
			continue
		}
		if err := s.parse(&c, v); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", s.name, v, err))
		}
	}
	c.OnLambda = getenv("AWS_LAMBDA_RUNTIME_API") != ""

	// An outgoing proxy resolves target names again, after the address
	// check: DNS rebinding could then reach the proxy's own network. Only
	// an admin who makes the proxy enforce egress rules may use one.
	if (c.OutgoingProxy.HTTPProxy != "" || c.OutgoingProxy.HTTPSProxy != "") && !c.TrustOutgoingProxy {
		errs = append(errs, errors.New("HTTP_PROXY or HTTPS_PROXY is set: an outgoing proxy resolves names itself, so the proxy's address checks cannot cover DNS rebinding; unset it, or set MEDIA_PROXY_TRUST_OUTGOING_PROXY=true if that proxy refuses private and internal destinations itself"))
	}
	if !set["MEDIA_PROXY_MEMORY_BUDGET"] {
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
	if !set["MEDIA_PROXY_STORE"] {
		if c.OnLambda {
			errs = append(errs, errors.New(`MEDIA_PROXY_STORE: must be set on Lambda: want s3://<bucket>/<prefix> or none`))
		}
		c.Store = Store{Kind: StoreDir, Dir: defaultStoreDir()}
	}
	if !set["MEDIA_PROXY_QUEUE"] {
		c.Queue = Queue{Kind: QueueLocal}
		if c.OnLambda {
			c.Queue = Queue{Kind: QueueNone}
		}
	}
	if !set["MEDIA_PROXY_TRANSFORM_CONCURRENCY"] {
		c.TransformConcurrency = runtime.GOMAXPROCS(0)
	}
	if !set["MEDIA_PROXY_WORKER_CONCURRENCY"] {
		c.WorkerConcurrency = workerConcurrency(c.MemoryBudget, c.MaxConvertSize)
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	return c, nil
}

// workerConcurrency is the default batch concurrency for a memory budget:
// as many jobs as can each hold a source of perJob bytes, from 1 to
// MaxWorkerConcurrency. A job that still finds the budget full waits, or
// comes back later.
func workerConcurrency(budget, perJob int64) int {
	if perJob <= 0 {
		return MaxWorkerConcurrency
	}
	return int(max(1, min(MaxWorkerConcurrency, budget/perJob)))
}

func parseStore(v string) (Store, error) {
	const want = "want dir:<path>, s3://<bucket>/<prefix> or none"
	switch {
	case v == "none":
		return Store{Kind: StoreNone}, nil
	case strings.HasPrefix(v, "dir:") && len(v) > len("dir:"):
		return Store{Kind: StoreDir, Dir: strings.TrimPrefix(v, "dir:")}, nil
	case strings.HasPrefix(v, "s3://"):
		bucket, prefix, err := s3store.ParseURL(v)
		if err != nil {
			return Store{}, fmt.Errorf("%s (%v)", want, err)
		}
		return Store{Kind: StoreS3, Bucket: bucket, Prefix: prefix}, nil
	}
	return Store{}, errors.New(want)
}

func parseQueue(v string) (Queue, error) {
	switch v {
	case "local":
		return Queue{Kind: QueueLocal}, nil
	case "none":
		return Queue{Kind: QueueNone}, nil
	}
	if u, err := url.Parse(v); err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" && strings.Trim(u.Path, "/") != "" {
		return Queue{Kind: QueueSQS, URL: v}, nil
	}
	return Queue{}, errors.New("want local, none or an SQS queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>)")
}

// defaultStoreDir is under the user's cache folder, or the temp folder
// where there is none (a service user without a home).
func defaultStoreDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "misskey-media-proxy")
	}
	return filepath.Join(os.TempDir(), "misskey-media-proxy")
}

// ProxyFunc chooses the outgoing proxy for a request, from OutgoingProxy.
func (c Config) ProxyFunc() func(*http.Request) (*url.URL, error) {
	f := c.OutgoingProxy.ProxyFunc()
	return func(r *http.Request) (*url.URL, error) { return f(r.URL) }
}

// durationText writes a default duration as the README does: 30s, 1h.
func durationText(d time.Duration) string {
	if d%time.Hour == 0 {
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	}
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
}

func text(field func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error {
		*field(c) = v
		return nil
	}
}

func integer[T int | int64](field func(*Config) *T, least int64) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < least || int64(T(n)) != n {
			return fmt.Errorf("want a whole number, %d or more", least)
		}
		*field(c) = T(n)
		return nil
	}
}

// duration reads a duration of at least least (0 or 1: positive).
func duration(field func(*Config) *time.Duration, least time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < least {
			if least > 0 {
				return errors.New("want a duration above 0, such as 30s or 2m")
			}
			return errors.New("want a duration such as 30s or 2m, or 0")
		}
		*field(c) = d
		return nil
	}
}

func boolean(field func(*Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return errors.New("want true or false")
		}
		*field(c) = b
		return nil
	}
}
