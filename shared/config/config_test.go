package config

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func load(vars map[string]string) (Config, error) {
	return Load(func(k string) string { return vars[k] })
}

func TestDefaults(t *testing.T) {
	c, err := load(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != "3000" || c.Store.Kind != StoreDir || c.Store.Dir == "" || c.Queue.Kind != QueueLocal || c.MaxSize != 250<<20 ||
		c.FetchTimeout != 60*time.Second || c.MaxPixels != 100_000_000 || c.AllowOrigin != "*" || c.OnLambda {
		t.Errorf("defaults: %+v", c)
	}
	if !strings.HasPrefix(c.ContentSecurityPolicy, "default-src 'none'") {
		t.Errorf("CSP %q", c.ContentSecurityPolicy)
	}
}

func TestLambdaDefaults(t *testing.T) {
	if _, err := load(map[string]string{"AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001"}); err == nil {
		t.Error("Lambda without a store configured was accepted")
	}
	c, err := load(map[string]string{"AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001", "MEDIA_PROXY_STORE": "s3://bucket/prefix/"})
	if err != nil {
		t.Fatal(err)
	}
	if !c.OnLambda || c.Queue.Kind != QueueNone || c.Store != (Store{Kind: StoreS3, Bucket: "bucket", Prefix: "prefix/"}) || c.LambdaStreamLimit != 32<<20 {
		t.Errorf("on Lambda: %+v", c)
	}
	c, err = load(map[string]string{"MEDIA_PROXY_LAMBDA_STREAM_LIMIT": "-1"})
	if err != nil || c.LambdaStreamLimit != -1 {
		t.Errorf("never streaming: %v, %d", err, c.LambdaStreamLimit)
	}
}

func TestParsing(t *testing.T) {
	c, err := load(map[string]string{
		"PORT":                                 "8080",
		"MEDIA_PROXY_STORE":                    "none",
		"MEDIA_PROXY_ALLOWED_PRIVATE_NETWORKS": "10.0.0.0/8, fd00::/8",
		"MEDIA_PROXY_MAX_SIZE":                 "1000",
		"MEDIA_PROXY_FETCH_TIMEOUT":            "5s",
		"MEDIA_PROXY_S3_PATH_STYLE":            "true",
		"MEDIA_PROXY_LOG_LEVEL":                "debug",
		"MEDIA_PROXY_PUBLIC_BASE_URL":          "https://cdn.example/",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != "8080" || c.Store.Kind != StoreNone || len(c.AllowedPrivate) != 2 || c.MaxSize != 1000 ||
		c.FetchTimeout != 5*time.Second || !c.S3PathStyle || c.LogLevel.String() != "DEBUG" || c.PublicBaseURL != "https://cdn.example" {
		t.Errorf("parsed: %+v", c)
	}
}

func TestErrors(t *testing.T) {
	for name, vars := range map[string]map[string]string{
		"store":    {"MEDIA_PROXY_STORE": "ftp://x"},
		"empty s3": {"MEDIA_PROXY_STORE": "s3://"},
		"size":     {"MEDIA_PROXY_MAX_SIZE": "big"},
		"negative": {"MEDIA_PROXY_MAX_SIZE": "-1"},
		"cidr":     {"MEDIA_PROXY_ALLOWED_PRIVATE_NETWORKS": "10.0.0.0/99"},
		"timeout":  {"MEDIA_PROXY_FETCH_TIMEOUT": "soon"},
		"bool":     {"MEDIA_PROXY_S3_PATH_STYLE": "maybe"},
		"level":    {"MEDIA_PROXY_LOG_LEVEL": "loud"},
		// 0 would stream a miss of any length, past the 200 MB a
		// streamed response carries.
		"stream 0":     {"MEDIA_PROXY_LAMBDA_STREAM_LIMIT": "0"},
		"stream large": {"MEDIA_PROXY_LAMBDA_STREAM_LIMIT": "209715201"},
	} {
		if _, err := load(vars); err == nil {
			t.Errorf("%s: accepted %v", name, vars)
		}
	}
}

func TestOutgoingProxyNeedsConsent(t *testing.T) {
	for _, v := range []string{"HTTPS_PROXY", "http_proxy"} {
		_, err := load(map[string]string{v: "http://proxy.internal:3128"})
		if err == nil || !strings.Contains(err.Error(), "MEDIA_PROXY_TRUST_OUTGOING_PROXY") {
			t.Errorf("%s set without consent: %v, want a refusal naming the setting", v, err)
		}
		c, err := load(map[string]string{v: "http://proxy.internal:3128", "MEDIA_PROXY_TRUST_OUTGOING_PROXY": "true"})
		if err != nil {
			t.Errorf("%s with consent: %v", v, err)
			continue
		}
		// The fetcher uses exactly the proxy Load read, for the scheme it
		// was given for.
		req, _ := http.NewRequest("GET", "http://media.example/a.png", nil)
		if strings.HasPrefix(v, "HTTPS") {
			req, _ = http.NewRequest("GET", "https://media.example/a.png", nil)
		}
		if u, err := c.ProxyFunc()(req); err != nil || u == nil || u.Host != "proxy.internal:3128" {
			t.Errorf("%s: proxy for %s is %v, %v", v, req.URL, u, err)
		}
	}
}

func TestLimitsAndBudget(t *testing.T) {
	c, err := load(map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024"})
	if err != nil {
		t.Fatal(err)
	}
	// The default budget is half of what the process may use (at most
	// the Lambda memory size here).
	if c.MemoryBudget > 512<<20 || c.MemoryBudget <= 0 || !strings.HasPrefix(c.MemoryFrom, "half of") {
		t.Errorf("default budget %d (%s), want at most 512 MiB", c.MemoryBudget, c.MemoryFrom)
	}
	if c.MaxConvertSize >= c.MaxSize || len(c.AllowedPorts) != 2 || c.BindAddress != "" ||
		c.MaxConnections <= 0 || c.WriteTimeout <= 0 || c.TransformTimeout <= 0 {
		t.Errorf("defaults: %+v", c)
	}
	c, err = load(map[string]string{
		"MEDIA_PROXY_MEMORY_BUDGET":     "100000000",
		"MEDIA_PROXY_MAX_CONVERT_SIZE":  "1000",
		"MEDIA_PROXY_ALLOWED_PORTS":     "80,443,8000-8999",
		"MEDIA_PROXY_BIND_ADDRESS":      "127.0.0.1",
		"MEDIA_PROXY_MAX_CONNECTIONS":   "10",
		"MEDIA_PROXY_WRITE_TIMEOUT":     "5s",
		"MEDIA_PROXY_TRANSFORM_TIMEOUT": "3s",
		"MEDIA_PROXY_STORE_MAX_SIZE":    "1048576",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.MemoryBudget != 100000000 || c.MaxConvertSize != 1000 || len(c.AllowedPorts) != 3 || c.BindAddress != "127.0.0.1" ||
		c.MaxConnections != 10 || c.WriteTimeout != 5*time.Second || c.TransformTimeout != 3*time.Second || c.StoreMaxSize != 1<<20 {
		t.Errorf("parsed: %+v", c)
	}
	for name, vars := range map[string]map[string]string{
		"ports":  {"MEDIA_PROXY_ALLOWED_PORTS": "80,http"},
		"budget": {"MEDIA_PROXY_MEMORY_BUDGET": "-5"},
		"conns":  {"MEDIA_PROXY_MAX_CONNECTIONS": "0"},
	} {
		if _, err := load(vars); err == nil {
			t.Errorf("%s: accepted %v", name, vars)
		}
	}
}

// TestEveryBadVariable: every wrong variable gets its own line naming it
// and what it accepts, all in one error.
func TestEveryBadVariable(t *testing.T) {
	_, err := load(map[string]string{
		"MEDIA_PROXY_MAX_SIZE":        "-1",
		"MEDIA_PROXY_FETCH_TIMEOUT":   "-5s",
		"MEDIA_PROXY_QUEUE":           "redis://x",
		"MEDIA_PROXY_STORE":           "ftp://x",
		"MEDIA_PROXY_LOG_LEVEL":       "loud",
		"MEDIA_PROXY_MAX_CONNECTIONS": "0",
	})
	if err == nil {
		t.Fatal("accepted")
	}
	lines := strings.Split(err.Error(), "\n")
	for _, want := range []string{
		`MEDIA_PROXY_MAX_SIZE="-1": want a whole number, 1 or more`,
		`MEDIA_PROXY_FETCH_TIMEOUT="-5s": want a duration above 0`,
		`MEDIA_PROXY_QUEUE="redis://x": want local, none or an SQS queue URL`,
		`MEDIA_PROXY_STORE="ftp://x": want dir:<path>, s3://<bucket>/<prefix> or none`,
		`MEDIA_PROXY_LOG_LEVEL="loud": want debug, info, warn or error`,
		`MEDIA_PROXY_MAX_CONNECTIONS="0": want a whole number, 1 or more`,
	} {
		n := 0
		for _, l := range lines {
			if strings.HasPrefix(l, want) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d lines start with %q in:\n%v", n, want, err)
		}
	}
	if len(lines) != 6 {
		t.Errorf("%d lines for 6 bad variables:\n%v", len(lines), err)
	}
}

// TestNegativeDurations: a negative duration is refused, not replaced by
// a default further down.
func TestNegativeDurations(t *testing.T) {
	for _, s := range settings() {
		if !strings.HasSuffix(s.name, "_TIMEOUT") && !strings.HasSuffix(s.name, "_TTL") {
			continue
		}
		if _, err := load(map[string]string{s.name: "-1s"}); err == nil || !strings.Contains(err.Error(), s.name) {
			t.Errorf("%s=-1s: %v", s.name, err)
		}
	}
}

func TestWorkerConcurrency(t *testing.T) {
	// A 1 GiB Lambda (512 MiB budget) runs the usual 4 jobs of up to 50
	// MiB at once; a 256 MiB one runs 2, and a budget below one job
	// still runs one.
	for _, tt := range []struct {
		budget, perJob string
		want           int
	}{
		{"536870912", "52428800", 4},
		{"134217728", "52428800", 2},
		{"10485760", "52428800", 1},
	} {
		c, err := load(map[string]string{"MEDIA_PROXY_MEMORY_BUDGET": tt.budget, "MEDIA_PROXY_MAX_CONVERT_SIZE": tt.perJob})
		if err != nil || c.WorkerConcurrency != tt.want {
			t.Errorf("budget %s, per job %s: %d, %v; want %d", tt.budget, tt.perJob, c.WorkerConcurrency, err, tt.want)
		}
	}
	c, err := load(map[string]string{"MEDIA_PROXY_WORKER_CONCURRENCY": "8"})
	if err != nil || c.WorkerConcurrency != 8 {
		t.Errorf("set to 8: %d, %v", c.WorkerConcurrency, err)
	}
	for _, v := range []string{"0", "-1", "many"} {
		if _, err := load(map[string]string{"MEDIA_PROXY_WORKER_CONCURRENCY": v}); err == nil {
			t.Errorf("%q accepted", v)
		}
	}
}
