package soak

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/config"
	"github.com/misskey-lambda/media-proxy/shared/service"
	"github.com/misskey-lambda/media-proxy/shared/testmedia"
)

const (
	serveEnv = "MEDIA_PROXY_SOAK_SERVE"
	// leakEnv makes the soak's server keep that many KiB for every
	// request it serves: the leak TestSoakCatchesLeak injects. Only the
	// test's server reads it.
	leakEnv = "MEDIA_PROXY_SOAK_LEAK_KIB"
)

// TestSoakServer is the child process: the local server, wired as
// functions/proxy wires it, on a loopback port it prints, until SIGTERM.
func TestSoakServer(t *testing.T) {
	if os.Getenv(serveEnv) != "1" {
		t.Skip("the soak test's server process; started by TestSoak")
	}
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	svc, err := service.New(ctx, cfg, service.NewLogger(cfg.LogLevel))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var handler http.Handler = svc.Handler
	if v := os.Getenv(leakEnv); v != "" {
		kib, err := strconv.Atoi(v)
		if err != nil || kib < 1 {
			t.Fatalf("%s: want a positive number of KiB, got %q", leakEnv, v)
		}
		handler = leaky(handler, kib<<10)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	go srv.Serve(ln)
	fmt.Printf("SOAK-LISTEN %s\n", ln.Addr())
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	if err := svc.Close(sctx); err != nil {
		t.Fatal(err)
	}
}

// leaky keeps size bytes for every request h serves, touched so that they
// are resident: a leak of size bytes per request.
func leaky(h http.Handler, size int) http.Handler {
	var mu sync.Mutex
	var kept [][]byte
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, size)
		for i := 0; i < len(b); i += 512 {
			b[i] = 1
		}
		mu.Lock()
		kept = append(kept, b)
		mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

// class is one kind of request in the mix.
type class struct {
	name   string
	weight int
	status int // what every request of the class must get
	valid  bool
	url    func(n int64) string
}

type sample struct {
	class  int
	status int
	took   time.Duration
	end    time.Duration // since the run started
	err    error
}

type rssSample struct {
	at  time.Duration
	rss int64
}

// Report is what a soak run measured.
type Report struct {
	Duration    string                 `json:"duration"`
	Concurrency int                    `json:"concurrency"`
	Requests    int                    `json:"requests"`
	PerSecond   float64                `json:"requests_per_second"`
	Wrong       int                    `json:"wrong_status"`
	Errors      int                    `json:"transport_errors"`
	Valid5xx    int                    `json:"valid_5xx"`
	Latency     map[string]Percentiles `json:"latency_ms"`
	Counts      map[string]int         `json:"counts"`
	RSS         RSSReport              `json:"rss_mib"`
	Statuses    map[string]map[int]int `json:"statuses"`
}

type Percentiles struct {
	P50, P90, P99, Max float64
}

type RSSReport struct {
	Start, Min, Max, Final float64
	// Slope is the trend of resident memory after warm-up (MiB/s), fitted
	// by least squares; Rate is the requests answered per second over the
	// same window, and PerRequest the growth per request (bytes): Slope
	// divided by Rate, what the check holds to maxLeak.
	Slope      float64 `json:"slope_mib_per_s"`
	Rate       float64 `json:"requests_per_s_after_warm_up"`
	PerRequest float64 `json:"growth_bytes_per_request"`
	Peak       float64 `json:"hwm"`
	// WarmUp is how long memory took to stop climbing (seconds); Samples
	// counts the samples after it.
	WarmUp  float64 `json:"warm_up_s"`
	Samples int
	Flat    bool
	// Why says why memory is not flat.
	Why string `json:",omitempty"`
}

func percentiles(ds []time.Duration) Percentiles {
	if len(ds) == 0 {
		return Percentiles{}
	}
	slices.Sort(ds)
	at := func(q float64) float64 {
		i := int(q * float64(len(ds)-1))
		return float64(ds[i].Microseconds()) / 1000
	}
	return Percentiles{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: at(1)}
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return d
	}
	return def
}

func envInt(t *testing.T, name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("%s: want a positive integer, got %q", name, v)
		}
		return n
	}
	return def
}

func procRSS(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return -1
}

// startServer runs TestSoakServer in a child process and returns its
// base URL and process.
func startServer(t *testing.T, env []string) (string, *exec.Cmd, *strings.Builder) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestSoakServer$", "-test.timeout=0", "-test.count=1")
	cmd.Env = append(env, serveEnv+"=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := &strings.Builder{}
	var logMu sync.Mutex
	cmd.Stderr = writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		if logs.Len() < 64<<10 {
			logs.Write(p)
		}
		return len(p), nil
	})
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			if a, ok := strings.CutPrefix(s.Text(), "SOAK-LISTEN "); ok {
				addr <- a
			}
		}
		close(addr)
	}()
	select {
	case a, ok := <-addr:
		if !ok {
			cmd.Wait()
			t.Fatalf("server exited before listening: %s", logs)
		}
		return "http://" + a, cmd, logs
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("server did not start within 30 s: %s", logs)
	}
	return "", nil, nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestSoak puts a mixed workload on the local server for
// MEDIA_PROXY_SOAK_DURATION and checks that valid requests never get a
// 5xx, every request gets the status its class calls for, and memory is
// flat once warmed up.
func TestSoak(t *testing.T) {
	rep := soak(t, soakOptions{
		duration: envDuration(t, "MEDIA_PROXY_SOAK_DURATION", 10*time.Second),
		conc:     envInt(t, "MEDIA_PROXY_SOAK_CONCURRENCY", 8),
	})
	if path := os.Getenv("MEDIA_PROXY_SOAK_REPORT"); path != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Error(err)
		}
	}
	if !rep.RSS.Flat {
		t.Errorf("memory is not flat: %s", rep.RSS.Why)
	}
}

// TestSoakCatchesLeak: the same soak against the real server made to keep
// leakKiB for every request (leakEnv) fails the memory check, and
// measures about that much per request, however fast this machine serves
// them. Warm-up is cut short (a leak never settles) and the window is
// shorter, to keep the test brief.
func TestSoakCatchesLeak(t *testing.T) {
	const leakKiB = 64
	rep := soak(t, soakOptions{duration: 5 * time.Second, conc: 8, maxWarm: 5 * time.Second, leakKiB: leakKiB})
	t.Logf("with %d KiB kept per request: %.1f KiB per request measured (%.2f MiB/s at %.0f requests/s); flat: %v",
		leakKiB, rep.RSS.PerRequest/1024, rep.RSS.Slope, rep.RSS.Rate, rep.RSS.Flat)
	if rep.RSS.Flat {
		t.Errorf("a leak of %d KiB per request passed the memory check: %+v", leakKiB, rep.RSS)
	}
	if rep.RSS.PerRequest < leakKiB<<10/2 {
		t.Errorf("a leak of %d KiB per request measured as %.1f KiB per request", leakKiB, rep.RSS.PerRequest/1024)
	}
}

type soakOptions struct {
	duration time.Duration // after warm-up
	conc     int
	maxWarm  time.Duration // 0: maxWarm
	leakKiB  int           // kept by the server per request (leakEnv)
}

// soak runs the workload against a fresh server process and returns what
// it measured. It fails t on transport errors, wrong statuses, a class
// that never ran and a panic; the memory verdict is the caller's.
func soak(t *testing.T, opt soakOptions) Report {
	if os.Getenv(serveEnv) == "1" {
		t.Skip("inside the server process")
	}
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("needs /proc to sample the server's memory")
	}
	duration, conc := opt.duration, opt.conc

	// The origin: a few images, media and failures, on loopback.
	files := map[string][]byte{
		"/img/photo.jpg":   testmedia.JPEG(1024, 768, 85),
		"/img/emoji.png":   testmedia.PNG(256, 256),
		"/img/anim.gif":    testmedia.GIF(160, 120, 8),
		"/img/avatar.png":  testmedia.PNGOpaque(640, 640),
		"/img/icon.svg":    testmedia.SVG(400, 300),
		"/media/clip.mp4":  testmedia.MP4(256 << 10),
		"/media/voice.ogg": testmedia.Ogg(),
		"/bad/page.html":   testmedia.HTML(),
		"/bad/bomb.png":    testmedia.PNGBomb(16000, 16000),
		"/bad/cut.png":     testmedia.Truncate(testmedia.PNG(320, 240), 4000),
	}
	var originHits atomic.Int64
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		originHits.Add(1)
		switch r.URL.Path {
		case "/fail/500":
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		case "/fail/404":
			http.NotFound(w, r)
			return
		}
		b, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(b)
	}))
	defer origin.Close()

	store := t.TempDir()
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + t.TempDir(),
		"MEDIA_PROXY_STORE=dir:" + store,
		"MEDIA_PROXY_QUEUE=local",
		"MEDIA_PROXY_ALLOWED_PRIVATE_NETWORKS=127.0.0.0/8",
		"MEDIA_PROXY_ALLOWED_PORTS=1-65535",
		"MEDIA_PROXY_TRANSFORM_CONCURRENCY=2",
		"MEDIA_PROXY_LOG_LEVEL=warn",
	}
	if opt.leakKiB > 0 {
		env = append(env, fmt.Sprintf("%s=%d", leakEnv, opt.leakKiB))
	}
	base, cmd, logs := startServer(t, env)
	pid := cmd.Process.Pid
	var exited atomic.Bool
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait(); exited.Store(true) }()
	defer func() {
		if !exited.Load() {
			cmd.Process.Kill()
		}
	}()

	proxied := func(src, flags string) string {
		u := base + "/m.webp?url=" + url.QueryEscape(src)
		if flags != "" {
			u += "&" + flags
		}
		return u
	}
	o := origin.URL
	hitSet := []string{
		proxied(o+"/img/photo.jpg", "preview=1"), proxied(o+"/img/emoji.png", "emoji=1"),
		proxied(o+"/img/anim.gif", "emoji=1"), proxied(o+"/img/anim.gif", "emoji=1&static=1"),
		proxied(o+"/img/avatar.png", "avatar=1"), proxied(o+"/img/photo.jpg", "static=1"),
		proxied(o+"/img/icon.svg", ""), proxied(o+"/img/emoji.png", "badge=1"),
	}
	missFlags := []string{"emoji=1", "avatar=1", "static=1", "preview=1"}
	missSrc := []string{"/img/emoji.png", "/img/anim.gif", "/img/photo.jpg"}
	classes := []class{
		{"hit", 40, 200, true, func(n int64) string { return hitSet[n%int64(len(hitSet))] }},
		{"miss", 20, 200, true, func(n int64) string {
			return proxied(fmt.Sprintf("%s%s?n=%d", o, missSrc[n%3], n), missFlags[(n/3)%4])
		}},
		{"passthrough", 15, 200, true, func(n int64) string {
			if n%2 == 0 {
				return proxied(fmt.Sprintf("%s/media/clip.mp4?n=%d", o, n%50), "")
			}
			return proxied(o+"/img/photo.jpg", "")
		}},
		{"health", 2, 200, true, func(int64) string { return base + "/" }},
		{"not found", 5, 404, false, func(n int64) string { return proxied(fmt.Sprintf("%s/fail/404?n=%d", o, n), "emoji=1") }},
		{"origin 5xx", 3, 502, false, func(n int64) string { return proxied(fmt.Sprintf("%s/fail/500?n=%d", o, n), "") }},
		{"not media", 4, 403, false, func(n int64) string { return proxied(fmt.Sprintf("%s/bad/page.html?n=%d", o, n%20), "") }},
		{"bomb", 4, 422, false, func(n int64) string { return proxied(fmt.Sprintf("%s/bad/bomb.png?n=%d", o, n), "avatar=1") }},
		{"truncated", 3, 422, false, func(n int64) string { return proxied(fmt.Sprintf("%s/bad/cut.png?n=%d", o, n%20), "preview=1") }},
		{"bad request", 4, 400, false, func(n int64) string {
			return base + []string{"/x.webp", "/x.webp?url=ftp%3A%2F%2Fexample.com%2Fa", "/x.webp?url=http%3A%2F%2Fallowed%40127.0.0.1%3A1%2F", "/x.webp?url=%2Frelative"}[n%4]
		}},
	}
	total := 0
	for _, c := range classes {
		total += c.weight
	}

	// Memory: sampled every 50 ms. The workload runs until memory has
	// warmed up (see warmedUp), then for the given duration: the window
	// the memory check fits its trend to.
	mem := &window{duration: duration, maxWarm: opt.maxWarm}
	start := time.Now()
	stop := make(chan struct{})
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		defer close(stop)
		tick := time.NewTicker(sampleEvery)
		defer tick.Stop()
		for range tick.C {
			if mem.add(procRSS(pid, "VmRSS"), time.Since(start)) {
				return
			}
		}
	}()

	client := &http.Client{
		Timeout:       30 * time.Second,
		Transport:     &http.Transport{MaxIdleConnsPerHost: conc, DisableCompression: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	var seq atomic.Int64
	results := make([][]sample, conc)
	var wg sync.WaitGroup
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 0x50a6))
			for {
				select {
				case <-stop:
					return
				default:
				}
				pick := rng.IntN(total)
				ci := 0
				for ; pick >= classes[ci].weight; ci++ {
					pick -= classes[ci].weight
				}
				n := seq.Add(1)
				t0 := time.Now()
				resp, err := client.Get(classes[ci].url(n))
				s := sample{class: ci, err: err}
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					s.status, s.err = resp.StatusCode, err
				}
				s.took = time.Since(t0)
				s.end = time.Since(start)
				results[w] = append(results[w], s)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	<-samplerDone
	hwm := procRSS(pid, "VmHWM")

	// Graceful shutdown: SIGTERM, the server drains and exits 0.
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-waitErr:
		if err != nil {
			t.Errorf("server exited with %v after SIGTERM; log: %s", err, logs)
		}
	case <-time.After(40 * time.Second):
		t.Errorf("server did not exit within 40 s of SIGTERM")
	}

	// Tally.
	rep := Report{
		Duration: elapsed.Round(time.Millisecond).String(), Concurrency: conc,
		Latency: map[string]Percentiles{}, Counts: map[string]int{}, Statuses: map[string]map[int]int{},
	}
	all, ends := []time.Duration{}, []time.Duration{}
	perClass := map[string][]time.Duration{}
	var firstWrong []string
	for _, rs := range results {
		for _, s := range rs {
			c := classes[s.class]
			rep.Requests++
			rep.Counts[c.name]++
			if rep.Statuses[c.name] == nil {
				rep.Statuses[c.name] = map[int]int{}
			}
			rep.Statuses[c.name][s.status]++
			ends = append(ends, s.end)
			if s.err != nil {
				rep.Errors++
				if len(firstWrong) < 5 {
					firstWrong = append(firstWrong, fmt.Sprintf("%s: %v", c.name, s.err))
				}
				continue
			}
			all = append(all, s.took)
			perClass[c.name] = append(perClass[c.name], s.took)
			if c.valid && s.status >= 500 {
				rep.Valid5xx++
			}
			if s.status != c.status {
				rep.Wrong++
				if len(firstWrong) < 5 {
					firstWrong = append(firstWrong, fmt.Sprintf("%s: %d, want %d", c.name, s.status, c.status))
				}
			}
		}
	}
	rep.PerSecond = float64(rep.Requests) / elapsed.Seconds()
	rep.Latency["all"] = percentiles(all)
	for name, ds := range perClass {
		rep.Latency[name] = percentiles(ds)
	}
	mib := func(b int64) float64 { return float64(b*100>>20) / 100 }
	rep.RSS = flatness(mem.rss, mem.warmEnd, ends)
	rep.RSS.Peak = mib(hwm)

	t.Logf("soak: %d requests in %s with %d clients (%.0f/s); %d transport errors, %d wrong statuses, %d 5xx on valid requests; origin fetched %d times",
		rep.Requests, rep.Duration, conc, rep.PerSecond, rep.Errors, rep.Wrong, rep.Valid5xx, originHits.Load())
	for _, c := range classes {
		p := rep.Latency[c.name]
		t.Logf("  %-12s %6d  p50 %7.1f ms  p90 %7.1f ms  p99 %7.1f ms  max %7.1f ms  statuses %v",
			c.name, rep.Counts[c.name], p.P50, p.P90, p.P99, p.Max, rep.Statuses[c.name])
	}
	p := rep.Latency["all"]
	t.Logf("  %-12s %6d  p50 %7.1f ms  p90 %7.1f ms  p99 %7.1f ms  max %7.1f ms", "all", rep.Requests, p.P50, p.P90, p.P99, p.Max)
	t.Logf("  RSS MiB: start %.1f, min %.1f, max %.1f, final %.1f, peak (VmHWM) %.1f; warm after %.1f s; trend after warm-up %.2f MiB/s over %d samples at %.0f requests/s: %.0f bytes per request; flat: %v",
		rep.RSS.Start, rep.RSS.Min, rep.RSS.Max, rep.RSS.Final, rep.RSS.Peak, rep.RSS.WarmUp, rep.RSS.Slope, rep.RSS.Samples, rep.RSS.Rate, rep.RSS.PerRequest, rep.RSS.Flat)

	if rep.Requests == 0 {
		t.Fatal("no requests were made")
	}
	if rep.Errors != 0 || rep.Wrong != 0 || rep.Valid5xx != 0 {
		t.Errorf("%d transport errors, %d wrong statuses (%d 5xx on valid requests), first: %v", rep.Errors, rep.Wrong, rep.Valid5xx, firstWrong)
	}
	for _, c := range classes {
		// Only where at least 20 were expected, so a slow machine's short
		// run cannot fail by chance.
		if expected := rep.Requests * c.weight / total; rep.Counts[c.name] == 0 && expected >= 20 {
			t.Errorf("class %q never ran (%d expected)", c.name, expected)
		}
	}
	if strings.Contains(logs.String(), "panic") {
		t.Errorf("the server logged a panic: %s", logs)
	}
	return rep
}

// The memory check. A run first warms up: the Go heap, libvips' thread
// pools and malloc arenas grow to their working size, which takes from
// under a second to several on a busy machine, so no fixed share of the
// run can stand for it. Warm-up ends once resident memory has made no new
// high (by more than warmStep) for warmQuiet, or after maxWarm at the
// latest, so a leak that never settles is measured rather than waited
// for. Then the workload runs for the set duration, and memory is flat
// when it grows by at most maxLeak per request answered: the least-squares
// trend over that window (bytes/s) divided by the requests answered per
// second in it. Per request, not per second, so a slow machine (or a busy
// one) needs no larger leak per request to fail than a fast one.
//
// A leak of tens of KiB per request breaks that; the settled noise does
// not: samples swing by +-3 MiB with GC cycles, and a healthy run grows
// by about 1 KiB per request (bounded state such as the store's index;
// 0.8-1.2 KiB measured here at 120-260 requests/s). The noise is spread
// over fewer requests on a slower machine: up to 5.5 KiB per request at
// 90 requests/s with both cores busy, hence the margin.
// At least minSamples samples are needed: a check that saw too little
// cannot pass, nor can one that saw no request.
const (
	warmStep   = 2 << 20 // bytes
	warmQuiet  = 2 * time.Second
	maxWarm    = 20 * time.Second
	maxLeak    = 16 << 10 // bytes per request
	minSamples = 40
)

const sampleEvery = 50 * time.Millisecond

// window collects the memory samples of a run and says when it is over:
// duration after warm-up, which lasts at most maxWarm (0: the constant).
type window struct {
	duration time.Duration
	maxWarm  time.Duration
	rss      []rssSample
	warmEnd  int           // index of the first sample after warm-up
	end      time.Duration // 0 until warm
}

// add records the sample v (0: none) taken at now and reports whether the
// run is over.
func (w *window) add(v int64, now time.Duration) bool {
	if v > 0 {
		w.rss = append(w.rss, rssSample{now, v})
	}
	if w.end == 0 {
		limit := w.maxWarm
		if limit <= 0 {
			limit = maxWarm
		}
		if now >= limit || warmedUp(w.rss, now) {
			w.warmEnd, w.end = len(w.rss), now+w.duration
		}
		return false
	}
	return now >= w.end
}

// warmedUp reports whether memory has stopped climbing by elapsed.
func warmedUp(rss []rssSample, elapsed time.Duration) bool {
	if len(rss) == 0 {
		return false
	}
	high, highAt := rss[0].rss, rss[0].at
	for _, s := range rss[1:] {
		if s.rss > high+warmStep {
			high, highAt = s.rss, s.at
		} else if s.rss > high {
			high = s.rss
		}
	}
	return elapsed-highAt >= warmQuiet
}

// flatness checks the samples from index warmEnd on against the requests
// answered at the times in ends (see above).
func flatness(rss []rssSample, warmEnd int, ends []time.Duration) RSSReport {
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	r := RSSReport{Samples: len(rss) - warmEnd}
	if warmEnd > 0 && warmEnd <= len(rss) {
		r.WarmUp = rss[warmEnd-1].at.Seconds()
	}
	if r.Samples < minSamples {
		r.Why = fmt.Sprintf("only %d memory samples after warm-up, %d needed", r.Samples, minSamples)
		return r
	}
	vals := make([]int64, len(rss))
	for i, s := range rss {
		vals[i] = s.rss
	}
	n := len(vals)
	r.Start, r.Final = mib(vals[0]), mib(vals[n-1])
	r.Min, r.Max = mib(slices.Min(vals)), mib(slices.Max(vals))
	win := rss[warmEnd:]
	r.Slope = slope(win)
	from, to := win[0].at, win[len(win)-1].at
	answered := 0
	for _, e := range ends {
		if e >= from && e <= to {
			answered++
		}
	}
	r.Rate = float64(answered) / (to - from).Seconds()
	if answered == 0 {
		r.Why = "no request was answered after warm-up"
		return r
	}
	r.PerRequest = r.Slope * (1 << 20) / r.Rate
	r.Flat = r.PerRequest <= maxLeak
	if !r.Flat {
		r.Why = fmt.Sprintf("resident memory grows by %.0f bytes per request after warm-up (%.2f MiB/s at %.0f requests/s; at most %d bytes allowed)",
			r.PerRequest, r.Slope, r.Rate, maxLeak)
	}
	return r
}

// slope fits rss = a + b*t by least squares and returns b in MiB/s.
func slope(rss []rssSample) float64 {
	var st, sv, stt, stv float64
	for _, s := range rss {
		t, v := s.at.Seconds(), float64(s.rss)/(1<<20)
		st, sv, stt, stv = st+t, sv+v, stt+t*t, stv+t*v
	}
	n := float64(len(rss))
	den := n*stt - st*st
	if den == 0 {
		return 0
	}
	return (n*stv - st*sv) / den
}

// TestFlatnessCanFail: the memory check passes flat, noisy runs however
// long they take to warm up, and fails a leak of a few KiB per request
// whatever the request rate, a run too short to tell and one that
// answered nothing.
func TestFlatnessCanFail(t *testing.T) {
	// run feeds the window samples of mib(seconds) with +-6 MiB of noise,
	// as the sampler does, until it says the run is over, while requests
	// are answered at rate per second.
	run := func(duration time.Duration, rate float64, mib func(s float64) float64) RSSReport {
		w := &window{duration: duration}
		for i := 0; ; i++ {
			at := time.Duration(i) * sampleEvery
			v := mib(at.Seconds()) + float64((i*7919)%13) - 6
			if w.add(int64(v*(1<<20)), at) {
				var ends []time.Duration
				for j := 1; rate > 0 && float64(j)/rate <= at.Seconds(); j++ {
					ends = append(ends, time.Duration(float64(j)/rate*float64(time.Second)))
				}
				return flatness(w.rss, w.warmEnd, ends)
			}
		}
	}
	warming := func(secs, leak float64) func(float64) float64 {
		return func(s float64) float64 {
			if s < secs {
				return 40 + 40*s/secs
			}
			return 80 + leak*(s-secs)
		}
	}
	if r := run(10*time.Second, 200, warming(1, 0)); !r.Flat || r.WarmUp < 1 {
		t.Errorf("a flat run failed: %+v", r)
	}
	// A busy machine: warm-up takes most of what used to be the run.
	if r := run(5*time.Second, 50, warming(8, 0)); !r.Flat || r.WarmUp < 8 {
		t.Errorf("a flat run with a slow warm-up failed: %+v", r)
	}
	// Bounded growth of 0.1 MiB/s at 200 requests/s: 0.5 KiB per request;
	// a busy machine's noise, 0.5 MiB/s at 90 requests/s: 5.7 KiB.
	if r := run(10*time.Second, 200, warming(1, 0.1)); !r.Flat {
		t.Errorf("bounded growth of 0.1 MiB/s failed: %+v", r)
	}
	if r := run(10*time.Second, 90, warming(1, 0.5)); !r.Flat {
		t.Errorf("a busy machine's noise failed: %+v", r)
	}
	// A leak that starts once warm: 8 MiB/s at 200 requests/s is 41 KiB
	// per request; 1 MiB/s on a machine answering 20 requests/s is 51 KiB
	// per request (a limit in MiB/s let that one pass).
	if r := run(10*time.Second, 200, warming(1, 8)); r.Flat {
		t.Errorf("a leak of 41 KiB per request passed: %+v", r)
	}
	if r := run(10*time.Second, 20, warming(1, 1)); r.Flat {
		t.Errorf("a leak of 51 KiB per request on a slow machine passed: %+v", r)
	}
	if r := run(5*time.Second, 200, func(s float64) float64 { return 40 + 6*s }); r.Flat {
		t.Errorf("a leak of 31 KiB per request from the start passed: %+v", r)
	}
	if r := run(time.Second, 200, warming(1, 0)); r.Flat {
		t.Errorf("a run with %d samples after warm-up passed", r.Samples)
	}
	if r := run(10*time.Second, 0, warming(1, 0)); r.Flat {
		t.Errorf("a run that answered nothing passed: %+v", r)
	}
}
