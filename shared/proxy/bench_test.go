package proxy_test

// Benchmarks through the real HTTP handler: the wired service (config.Load,
// service.New) behind a loopback HTTP server, fetching from a loopback
// origin, driven by a keep-alive client at the same concurrency as
// scripts/bench (MEDIA_PROXY_BENCH_CONCURRENCY, default GOMAXPROCS).
//
//	go test -run '^$' -bench . -benchtime 10s ./shared/proxy
//
// Transform and passthrough requests carry a distinct source URL each (the
// origin ignores the query), so neither the store nor the handler's
// coalescing of identical requests can skip work: every request fetches and
// transforms. The cache-hit benchmark asks for one URL over and over.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/misskey-lambda/media-proxy/shared/config"
	"github.com/misskey-lambda/media-proxy/shared/service"
	"github.com/misskey-lambda/media-proxy/shared/testmedia"
)

// benchFixtures are generated on first use, so a benchmark run pays only
// for the inputs it asks for.
var benchFixtures = map[string]func() []byte{
	"/emoji.png":  sync.OnceValue(func() []byte { return testmedia.PNG(512, 512) }),
	"/avatar.jpg": sync.OnceValue(testmedia.JPEGLarge),
	"/anim.gif":   sync.OnceValue(func() []byte { return testmedia.GIF(256, 256, 60) }),
	"/photo.jpg":  sync.OnceValue(func() []byte { return testmedia.JPEGSize(1 << 20) }),
}

// benchOrigin serves the fixtures by path, whatever the query.
var benchOrigin = sync.OnceValue(func() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fixture, ok := benchFixtures[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		body := fixture()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	}))
})

// benchProxy serves the wired service with the given store.
func benchProxy(b *testing.B, store string) *httptest.Server {
	b.Helper()
	vars := map[string]string{
		"MEDIA_PROXY_STORE":                    store,
		"MEDIA_PROXY_ALLOWED_PRIVATE_NETWORKS": "127.0.0.0/8",
		"MEDIA_PROXY_ALLOWED_PORTS":            "1-65535", // origins on random loopback ports
		"MEDIA_PROXY_QUEUE":                    "none",
	}
	cfg, err := config.Load(func(k string) string { return vars[k] })
	if err != nil {
		b.Fatal(err)
	}
	// The production logger's work (one JSON line per request), discarded.
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	svc, err := service.New(context.Background(), cfg, log)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(svc.Handler)
	b.Cleanup(srv.Close)
	return srv
}

func benchConcurrency() int {
	if n, err := strconv.Atoi(os.Getenv("MEDIA_PROXY_BENCH_CONCURRENCY")); err == nil && n > 0 {
		return n
	}
	return runtime.GOMAXPROCS(0)
}

// BenchmarkHTTP: (a)-(c) transforms and (d) passthrough with store none,
// (e) a hit in the dir store.
func BenchmarkHTTP(b *testing.B) {
	cases := []struct {
		name, path, flags string
		unique            bool
	}{
		{"a-emoji-png512", "/emoji.png", "emoji=1", true},
		{"b-avatar-jpeg4000x3000", "/avatar.jpg", "avatar=1", true},
		{"c-emoji-gif256x60", "/anim.gif", "emoji=1", true},
		{"d-passthrough-jpeg1mb", "/photo.jpg", "", true},
		{"e-hit-dir-emoji-png512", "/emoji.png", "emoji=1", false},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			store := "none"
			if !c.unique {
				store = "dir:" + b.TempDir()
			}
			proxy := benchProxy(b, store)
			origin := benchOrigin()
			benchFixtures[c.path]() // generated before the clock runs
			var seq atomic.Int64
			target := func() string {
				src := origin.URL + c.path
				if c.unique {
					src += "?n=" + strconv.FormatInt(seq.Add(1), 10)
				}
				u := proxy.URL + "/image.webp?url=" + url.QueryEscape(src)
				if c.flags != "" {
					u += "&" + c.flags
				}
				return u
			}
			conc := benchConcurrency()
			client := &http.Client{Transport: &http.Transport{
				MaxIdleConnsPerHost: conc,
				DisableCompression:  true,
			}}
			defer client.CloseIdleConnections()

			// One untimed request checks the case and, for the hit, fills
			// the store.
			n, err := benchGet(client, target())
			if err != nil {
				b.Fatal(err)
			}
			procs := runtime.GOMAXPROCS(0)
			b.SetParallelism((conc + procs - 1) / procs)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := benchGet(client, target()); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			if s := b.Elapsed().Seconds(); s > 0 {
				b.ReportMetric(float64(b.N)/s, "req/s")
			}
			b.ReportMetric(float64(n), "out-B")
		})
	}
}

// benchGet fetches u and reads the body; anything but 200 is an error.
func benchGet(c *http.Client, u string) (int64, error) {
	resp, err := c.Get(u)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return n, err
	}
	if resp.StatusCode != http.StatusOK {
		return n, fmt.Errorf("GET %s: status %d", u, resp.StatusCode)
	}
	return n, nil
}
