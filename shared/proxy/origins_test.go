package proxy_test

// Hostile and slow origins: each defence against an origin (or a client)
// that tries to deny, exhaust or stall the proxy, tested end to end
// against the real handler and a loopback origin.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/config"
	"github.com/misskey-lambda/media-proxy/shared/failure"
	"github.com/misskey-lambda/media-proxy/shared/fetch/fetchtest"
	"github.com/misskey-lambda/media-proxy/shared/jobs"
	"github.com/misskey-lambda/media-proxy/shared/s3store"
	"github.com/misskey-lambda/media-proxy/shared/service"
	"github.com/misskey-lambda/media-proxy/shared/store"
	"github.com/misskey-lambda/media-proxy/shared/testmedia"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

// answer requests a variant from several goroutines at once: the status
// and headers, the body read and dropped (t.Fatal is not safe there).
func answer(t *testing.T, p *httptest.Server, src, flags string) (int, http.Header) {
	resp, err := http.Get(p.URL + "/x?url=" + url.QueryEscape(src) + "&" + flags)
	if err != nil {
		t.Error(err)
		return 0, nil
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header
}

// storeDir is the folder of a service's dir store.
func storeDir(t *testing.T, store config.Store) string {
	t.Helper()
	if store.Kind != config.StoreDir {
		t.Fatalf("not a dir store: %s", store)
	}
	return store.Dir
}

// markers lists the failure markers in a dir store.
// forgotten fails the test if svc remembers any failure, in its process
// or in its dir store.
func forgotten(t *testing.T, svc *service.Service, what string) {
	t.Helper()
	if m := markers(t, storeDir(t, svc.Config.Store)); len(m) != 0 {
		t.Errorf("%s wrote failure markers: %v", what, m)
	}
	if n := svc.Runner.Failures.Len(); n != 0 {
		t.Errorf("%s left %d failures in the process's memory", what, n)
	}
}

func markers(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(filepath.Join(root, "failed"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasPrefix(d.Name(), ".") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// TestRefusedSpellingLeavesCleanURLAlone: a spelling the URL check
// refuses (user info) is answered 400 at the door, however often it is
// sent, and never touches the failure memory of the URL it resembles.
func TestRefusedSpellingLeavesCleanURLAlone(t *testing.T) {
	o := newOrigin(t)
	p, _, svc := newService(t, map[string]string{"MEDIA_PROXY_QUEUE": "local"})
	src := o.add("/e.png", testmedia.PNG(64, 64))
	u, _ := url.Parse(src)
	for _, spelled := range []string{"http://x@" + u.Host + "/e.png", "http://x:y@" + u.Host + "/e.png"} {
		for range 3 {
			checkError(t, get(t, p, spelled, "emoji=1"), http.StatusBadRequest)
		}
	}
	forgotten(t, svc, "refused spellings")
	if n := o.hitCount("/e.png"); n != 0 {
		t.Errorf("a refused spelling reached the origin %d times", n)
	}
	checkSuccess(t, get(t, p, src, "emoji=1"), "image/webp")
	checkSuccess(t, get(t, p, src, "emoji=1&static=1"), "image/webp")
}

// sequenceOrigin answers a path's requests in turn from a list of
// handlers; the last one repeats.
type sequenceOrigin struct {
	*httptest.Server
	mu   sync.Mutex
	seqs map[string][]http.HandlerFunc
	hits map[string]int
}

func newSequenceOrigin(t *testing.T) *sequenceOrigin {
	o := &sequenceOrigin{seqs: map[string][]http.HandlerFunc{}, hits: map[string]int{}}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		seq := o.seqs[r.URL.Path]
		n := o.hits[r.URL.Path]
		o.hits[r.URL.Path]++
		o.mu.Unlock()
		if len(seq) == 0 {
			http.NotFound(w, r)
			return
		}
		seq[min(n, len(seq)-1)](w, r)
	}))
	t.Cleanup(o.Close)
	return o
}

func (o *sequenceOrigin) set(path string, seq ...http.HandlerFunc) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seqs[path] = seq
	return o.URL + path
}

func (o *sequenceOrigin) count(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.hits[path]
}

func status(code int, retryAfter string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		http.Error(w, http.StatusText(code), code)
	}
}

func body(b []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { w.Write(b) }
}

// TestOriginAskingToWaitIsNotRemembered: an origin's 429 (or 503) is the
// origin asking to come back later; answered 503 with its Retry-After (or
// 429 as it came), never cached, never remembered. The next request goes
// to the origin again and succeeds.
func TestOriginAskingToWaitIsNotRemembered(t *testing.T) {
	o := newSequenceOrigin(t)
	p, _, svc := newService(t, nil)
	png := testmedia.PNG(64, 64)
	for _, c := range []struct {
		name       string
		first      http.HandlerFunc
		status     int
		retryAfter string
	}{
		{"429 with Retry-After", status(http.StatusTooManyRequests, "7"), http.StatusServiceUnavailable, "7"},
		{"503 with Retry-After", status(http.StatusServiceUnavailable, "30"), http.StatusServiceUnavailable, "30"},
		{"429 alone", status(http.StatusTooManyRequests, ""), http.StatusTooManyRequests, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := "/" + strings.ReplaceAll(c.name, " ", "-") + ".png"
			src := o.set(path, c.first, body(png))
			r := get(t, p, src, "emoji=1")
			checkCommon(t, r)
			if r.status != c.status || r.header.Get("Retry-After") != c.retryAfter || r.header.Get("Cache-Control") != "no-store" {
				t.Fatalf("first: %d, Retry-After %q, Cache-Control %q; want %d, %q, no-store",
					r.status, r.header.Get("Retry-After"), r.header.Get("Cache-Control"), c.status, c.retryAfter)
			}
			checkSuccess(t, get(t, p, src, "emoji=1"), "image/webp")
			if n := o.count(path); n != 2 {
				t.Errorf("origin asked %d times, want 2", n)
			}
		})
	}
	forgotten(t, svc, "asking to come back later")
}

// TestTransientFailureRememberedForSeconds: a 5xx is remembered for
// failure.TransientTTL (seconds), then the origin is asked again.
func TestTransientFailureRememberedForSeconds(t *testing.T) {
	o := newSequenceOrigin(t)
	p, logs, svc := newService(t, nil)
	src := o.set("/flaky.png", status(http.StatusInternalServerError, ""), body(testmedia.PNG(64, 64)))
	checkError(t, get(t, p, src, "emoji=1"), http.StatusBadGateway)
	checkError(t, get(t, p, src, "emoji=1"), http.StatusBadGateway)
	if n := o.count("/flaky.png"); n != 1 {
		t.Fatalf("origin asked %d times within the transient memory, want 1", n)
	}
	if !strings.Contains(string(logs.bytes()), `"cache":"failure-memory"`) {
		t.Error("the second answer did not come from the failure memory")
	}
	// Remembered by the process for seconds; found at once, it is not
	// worth a marker in the store (failure.Stored).
	_, failKey := keysOf(t, src, variant.Emoji)
	if status, left, ok := svc.Runner.Failures.Recall(failKey); !ok || status != 502 || left <= 0 || left > 30*time.Second {
		t.Errorf("remembered %d for %v (%v), want 502 for seconds", status, left, ok)
	}
	if m := markers(t, storeDir(t, svc.Config.Store)); len(m) != 0 {
		t.Errorf("markers written for a failure found at once: %v", m)
	}
	// Once it has passed, the origin is asked again.
	later := time.Now().Add(failure.TransientTTL)
	svc.Runner.Failures.SetClock(func() time.Time { return later })
	checkSuccess(t, get(t, p, src, "emoji=1"), "image/webp")
}

// recordingQueue is a jobs.Enqueuer that keeps what it was given.
type recordingQueue struct {
	mu   sync.Mutex
	jobs []jobs.Job
}

func (q *recordingQueue) Enqueue(_ context.Context, js []jobs.Job) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.jobs = append(q.jobs, js...)
	return nil
}

func (q *recordingQueue) Close(context.Context) error { return nil }

func (q *recordingQueue) taken() []jobs.Job {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]jobs.Job(nil), q.jobs...)
}

// TestFailingEmojiQueuesNoSibling: siblings are precomputed only for a
// source that converted; a dead or broken emoji costs no extra job.
func TestFailingEmojiQueuesNoSibling(t *testing.T) {
	o := newOrigin(t)
	q := &recordingQueue{}
	p := newStack(t, stackOptions{allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, precompute: q})
	checkError(t, get(t, p, o.URL+"/dead.png", "emoji=1"), http.StatusNotFound)
	checkError(t, get(t, p, o.add("/broken.png", testmedia.Get("truncated-png")), "emoji=1"), http.StatusUnprocessableEntity)
	checkError(t, get(t, p, o.add("/page.html", testmedia.HTML()), "avatar=1"), http.StatusNotFound)
	if js := q.taken(); len(js) != 0 {
		t.Fatalf("failing requests queued %v", js)
	}
	src := o.add("/ok.png", testmedia.PNG(64, 64))
	checkSuccess(t, get(t, p, src, "emoji=1"), "image/webp")
	if js := q.taken(); len(js) != 1 || js[0].Variant != variant.EmojiStatic || js[0].URL != src {
		t.Errorf("a converted emoji queued %v, want its emoji-static", js)
	}
}

// faultyStore fails writes of variants (not of failure markers) while
// broken is set, and counts the markers written.
type faultyStore struct {
	store.Store
	broken atomic.Bool
	fails  atomic.Int64
}

// errInjected is faultyStore's failure.
var errInjected = errors.New("store: injected write failure")

// Put, broken, writes the first MiB of the body through the store below
// and then fails, as an upload whose connection drops does: a check that
// nothing was stored can then fail.
func (s *faultyStore) Put(ctx context.Context, key string, m store.Meta, body io.Reader) error {
	if s.broken.Load() {
		s.Store.Put(ctx, key, m, io.MultiReader(io.LimitReader(body, 1<<20), failingReader{errInjected}))
		return errInjected
	}
	return s.Store.Put(ctx, key, m, body)
}

type failingReader struct{ err error }

func (r failingReader) Read([]byte) (int, error) { return 0, r.err }

func (s *faultyStore) Fail(ctx context.Context, key string, status int, ttl time.Duration) error {
	s.fails.Add(1)
	return s.Store.Fail(ctx, key, status, ttl)
}

// TestStoreFaultIsNotRemembered: a body too large to answer inline must go
// through the store; when the store fails, the answer is a 502 that is
// neither cached nor remembered, and the next request, with the store
// back, succeeds. On the real S3 stand-in and on the dir store.
func TestStoreFaultIsNotRemembered(t *testing.T) {
	for _, name := range []string{"dir", "s3"} {
		t.Run(name, func(t *testing.T) {
			var inner store.Store
			if name == "dir" {
				st, err := store.NewDir(t.TempDir(), store.DirOptions{})
				if err != nil {
					t.Fatal(err)
				}
				inner = st
			} else {
				inner = s3Store(t, "faulty/")
			}
			st := &faultyStore{Store: inner}
			st.broken.Store(true)
			o := newOrigin(t)
			video := testmedia.MP4(2 << 20)
			src := o.add("/v.mp4", video)
			// A Lambda-sized inline limit, far below the body.
			p := newStack(t, stackOptions{allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, store: st, inlineLimit: 64 << 10})
			r := get(t, p, src, "")
			checkCommon(t, r)
			if r.status != http.StatusBadGateway || r.header.Get("Cache-Control") != "no-store" {
				t.Fatalf("store failing: %d, Cache-Control %q; want 502, no-store", r.status, r.header.Get("Cache-Control"))
			}
			if n := st.fails.Load(); n != 0 {
				t.Fatalf("a store fault wrote %d failure markers", n)
			}
			st.broken.Store(false)
			r = get(t, p, src, "")
			if r.status != http.StatusOK && r.status != http.StatusFound {
				t.Fatalf("store back: %d %q", r.status, r.body)
			}
			if o.hitCount("/v.mp4") != 2 {
				t.Errorf("origin fetched %d times, want 2", o.hitCount("/v.mp4"))
			}
		})
	}
}

// s3Store opens the S3 stand-in's store in a fresh bucket.
func s3Store(t *testing.T, prefix string) store.Store {
	t.Helper()
	e := s3StandinFromEnv(t)
	bucket := e.bucket(t)
	return s3store.New(e.client(e.endpoint), nil, s3store.Config{Bucket: bucket, Prefix: prefix})
}

// stallingOrigin declares a length, sends a little and stalls until the
// test ends or the proxy gives up the request. It counts the requests
// that have sent their bytes and stall, and those the proxy let go.
func stallingOrigin(t *testing.T, declared int64, sent []byte) (o *httptest.Server, stalled, gone *atomic.Int64) {
	stop := make(chan struct{})
	stalled, gone = new(atomic.Int64), new(atomic.Int64)
	o = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.FormatInt(declared, 10))
		w.Write(sent)
		http.NewResponseController(w).Flush()
		stalled.Add(1)
		select {
		case <-stop:
		case <-r.Context().Done():
			gone.Add(1)
		}
	}))
	t.Cleanup(func() { close(stop); o.Close() })
	return o, stalled, gone
}

// memPeak is the most memory the process had while sampled: resident
// (what the machine pays), the Go heap's spans in use (what was
// allocated, touched or not: a buffer sized by a claim shows here even
// while the kernel has not backed it yet) and the heap's live bytes at
// the end of a GC cycle (what was still referenced: without the garbage
// the GC has yet to collect).
type memPeak struct{ rss, heap, live int64 }

// heapLive reads the live heap as of the last GC.
func heapLive() int64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64())
}

// sampleMemory samples this process's memory until done is closed.
func sampleMemory(done <-chan struct{}) <-chan memPeak {
	out := make(chan memPeak, 1)
	go func() {
		var peak memPeak
		var ms runtime.MemStats
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			peak.rss = max(peak.rss, procStatus("VmRSS"))
			peak.heap = max(peak.heap, int64(ms.HeapInuse))
			peak.live = max(peak.live, heapLive())
			select {
			case <-done:
				out <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

func memNow() memPeak {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memPeak{rss: procStatus("VmRSS"), heap: int64(ms.HeapInuse), live: heapLive()}
}

// waitCount waits until n() reaches want, which events make it do; the
// deadline only fails a test in which they never come.
func waitCount(t *testing.T, what string, n func() int64, want int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for n() < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d after 30 s", what, n(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStalledClaimsTakeNoMemory: 24 origins each declare a body of 250 MB
// (passthrough) or just under the convert cap (emoji), send 4 KiB and
// stall. The proxy holds what arrived, not what was claimed: once every
// request is in flight (each origin has sent its 4 KiB and stalls),
// memory has grown by far less than the claims (which add up to 7 GB),
// at its peak and after a GC. The requests are then abandoned, and the
// proxy lets go of the origins.
func TestStalledClaimsTakeNoMemory(t *testing.T) {
	if procStatus("VmRSS") < 0 {
		t.Fatal("needs /proc/self/status")
	}
	p, _, _ := newService(t, nil)
	passthrough, stalled1, gone1 := stallingOrigin(t, 250_000_000, make([]byte, 4096))
	emoji, stalled2, gone2 := stallingOrigin(t, 50<<20-1, append(testmedia.PNG(8, 8)[:64], make([]byte, 4032)...))
	base := memNow()
	done := make(chan struct{})
	peak := sampleMemory(done)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range 24 {
		src, flags := fmt.Sprintf("%s/claim-%d.mp4", passthrough.URL, i), ""
		if i%2 == 1 {
			src, flags = fmt.Sprintf("%s/claim-%d.png", emoji.URL, i), "emoji=1"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/x?url="+url.QueryEscape(src)+"&"+flags, nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	waitCount(t, "origin requests stalled after their 4 KiB", func() int64 { return stalled1.Load() + stalled2.Load() }, 24)
	held := memNow()
	close(done)
	pk := <-peak
	pk.rss, pk.heap = max(pk.rss, held.rss), max(pk.heap, held.heap)
	cancel()
	wg.Wait()
	rss, heap, live := pk.rss-base.rss, pk.heap-base.heap, held.live-base.live
	t.Logf("24 stalled claims (12 x 250 MB passthrough, 12 x 50 MB emoji): resident memory grew by %d MiB, Go heap in use by %d MiB at most; live heap with all 24 in flight: %+d KiB",
		rss>>20, heap>>20, live>>10)
	if rss > 128<<20 || heap > 64<<20 || live > 32<<20 {
		t.Errorf("memory grew by %d MiB resident, %d MiB of Go heap (%d MiB live) for 96 KiB received", rss>>20, heap>>20, live>>20)
	}
	// Every client gone: the work is cancelled and the origins let go.
	waitCount(t, "origin requests let go after their clients left", func() int64 { return gone1.Load() + gone2.Load() }, 24)
}

// TestBudgetBoundsConcurrentImages: 100 concurrent requests for distinct
// 10 MB images against a budget of 256 MiB, with a Lambda's settings for
// a 512 MB function (the budget half the memory, GOMEMLIMIT 80 % of it):
// each is answered 200, or 503 with Retry-After when it could not get
// memory in time; never anything else. The budget is what bounds them: it
// filled (the burst asked for 2 GB) and was never exceeded; the Go heap's
// live bytes stayed close to it (1.1-1.2 times it measured; without it
// they pass 1 GiB) and resident memory within the memory it is half of.
func TestBudgetBoundsConcurrentImages(t *testing.T) {
	const budget = 256 << 20
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(2 * budget * 8 / 10))
	p, _, svc := newService(t, map[string]string{"MEDIA_PROXY_MEMORY_BUDGET": strconv.Itoa(budget)})
	img := testmedia.NoisePNG(1600, 1600) // about 10 MB that compresses nowhere
	o := newOrigin(t)
	o.add("/big.png", img)
	base := memNow()
	done := make(chan struct{})
	peak := sampleMemory(done)
	var ok, busy atomic.Int64
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, hd := answer(t, p, fmt.Sprintf("%s/big.png?n=%d", o.URL, i), "emoji=1")
			switch {
			case status == http.StatusOK:
				ok.Add(1)
			case status == http.StatusServiceUnavailable && hd.Get("Retry-After") != "":
				busy.Add(1)
			default:
				t.Errorf("answered %d", status)
			}
		}()
	}
	wg.Wait()
	close(done)
	pk := <-peak
	rss, live, held := pk.rss-base.rss, pk.live-base.live, svc.Budget.Peak()
	t.Logf("100 concurrent 10 MB images, budget %d MiB: %d answered, %d told to retry; budget held %d MiB at most; live heap grew by %d MiB, resident memory by %d MiB at most",
		budget>>20, ok.Load(), busy.Load(), held>>20, live>>20, rss>>20)
	if ok.Load() == 0 {
		t.Error("nothing was answered")
	}
	if held > budget || held < budget*9/10 {
		t.Errorf("the budget held %d MiB at most; want it filled (%d MiB asked for) and never exceeded", held>>20, 100*len(img)>>20)
	}
	// The budget counts every source and decode, so what stays referenced
	// is the budget and a little of what it does not count (requests,
	// responses, outputs, and the buffers a growth has just replaced: what
	// is allocated while the GC marks counts as live in that cycle).
	if live > budget*3/2 {
		t.Errorf("the live heap grew by %d MiB with a %d MiB budget (at most %d MiB allowed)", live>>20, budget>>20, budget*3/2>>20)
	}
	// Resident: that, the GC's slack within GOMEMLIMIT, and libvips'
	// working memory: within the memory the budget is half of.
	if rss > 2*budget {
		t.Errorf("resident memory grew by %d MiB with a %d MiB budget (at most %d MiB allowed)", rss>>20, budget>>20, 2*budget>>20)
	}
}

// TestBlackholedFirstAddress: a name whose first address silently drops
// packets (a broken IPv6 route, in the wild) is fetched through its second.
// Trying the addresses one after another would spend the whole connect
// timeout on the first and answer 504.
func TestBlackholedFirstAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := fetchtest.BlackholePort(t, ln, "127.0.0.2")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(testmedia.PNG(32, 32))
	}))
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	resolver := resolverFunc(func(_ context.Context, _, host string) ([]netip.Addr, error) {
		if host == "dual.test" {
			return []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")}, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	})
	p := newStack(t, stackOptions{allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, resolver: resolver})
	start := time.Now()
	r := get(t, p, "http://dual.test:"+port+"/e.png", "emoji=1")
	checkSuccess(t, r, "image/webp")
	t.Logf("answered through the second address in %v (connect timeout 2 s)", time.Since(start).Round(time.Millisecond))
}

// TestNonReadingClientReleased: a client that asks for a large body and
// never reads it is dropped once a write makes no progress for
// MEDIA_PROXY_WRITE_TIMEOUT, instead of pinning the body in memory.
func TestNonReadingClientReleased(t *testing.T) {
	o := newOrigin(t)
	src := o.add("/big.mp4", testmedia.MP4(8<<20))
	p, logs, _ := newService(t, map[string]string{"MEDIA_PROXY_WRITE_TIMEOUT": "500ms"})
	// Warm the store, so the answer is a hit streamed from disk... and a
	// miss, held in memory: both must let go.
	for _, id := range []string{"stuck-miss", "stuck-hit"} {
		conn, err := net.Dial("tcp", p.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn.(*net.TCPConn).SetReadBuffer(4096)
		fmt.Fprintf(conn, "GET /v.mp4?url=%s HTTP/1.1\r\nHost: proxy\r\nX-Request-Id: %s\r\n\r\n", url.QueryEscape(src), id)
		// Never read. The handler must return (and log) on its own.
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(string(logs.bytes()), `"client_request_id":"`+id+`"`) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the handler is still writing to a client that does not read", id)
			}
			time.Sleep(50 * time.Millisecond)
		}
		conn.Close()
	}
}

// TestPortsRefused: only 80 and 443 by default; a URL naming another port
// is refused at the door and nothing connects to it.
func TestPortsRefused(t *testing.T) {
	o := newOrigin(t)
	src := o.add("/e.png", testmedia.PNG(8, 8))
	p := newProxy(t, map[string]string{"MEDIA_PROXY_ALLOWED_PORTS": ""})
	u, _ := url.Parse(src)
	for _, s := range []string{src, "http://" + u.Hostname() + ":25/e.png", "http://" + u.Hostname() + ":22/"} {
		checkError(t, get(t, p, s, "emoji=1"), http.StatusForbidden)
	}
	if n := o.hitCount("/e.png"); n != 0 {
		t.Errorf("a refused port was connected to %d times", n)
	}
}

// TestBrokenStreamIsNotEnded: a streamed body that breaks off mid-way must
// reach the client as broken (the connection is cut), never as a complete
// chunked response a CDN would keep for a year.
func TestBrokenStreamIsNotEnded(t *testing.T) {
	video := testmedia.MP4(12 << 20) // over the 8 MB held in memory: streamed
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// No Content-Length: chunked, so only the ending tells complete
		// from cut.
		w.Write(video[:10<<20])
		http.NewResponseController(w).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	t.Cleanup(origin.Close)
	p := newProxy(t, map[string]string{"MEDIA_PROXY_STORE": "none"})
	resp, err := http.Get(p.URL + "/v.mp4?url=" + url.QueryEscape(origin.URL+"/v.mp4"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil {
		t.Fatalf("a body cut after %d bytes was ended cleanly (status %d)", n, resp.StatusCode)
	}
	t.Logf("cut after %d bytes: %v", n, err)
}

// TestLogsRedactQueries: URLs in log lines carry no query (tokens) and no
// user info.
func TestLogsRedactQueries(t *testing.T) {
	o := newOrigin(t)
	p, logs, _ := newService(t, nil)
	src := o.add("/e.png", testmedia.PNG(8, 8)) + "?token=s3cr3t-t0k3n"
	checkSuccess(t, get(t, p, src, "emoji=1"), "image/webp")
	checkError(t, get(t, p, o.URL+"/missing.png?sig=s3cr3t-t0k3n", "emoji=1"), http.StatusNotFound)
	checkError(t, get(t, p, strings.Replace(o.URL, "http://", "http://user:s3cr3t-t0k3n@", 1)+"/x.png", ""), http.StatusBadRequest)
	p.Close()
	if b := logs.bytes(); strings.Contains(string(b), "s3cr3t-t0k3n") {
		t.Errorf("a secret reached the logs:\n%s", b)
	}
	if !strings.Contains(string(logs.bytes()), `"url":"`+o.URL+`/e.png"`) {
		t.Errorf("the request line lost its URL:\n%s", logs.bytes())
	}
}

// TestCoalescedRequestsLogTheirFigures: requests that shared one fetch
// each log what it cost, not zeros.
func TestCoalescedRequestsLogTheirFigures(t *testing.T) {
	o := newOrigin(t)
	src := o.addFile("/slow.png", originFile{body: testmedia.PNG(256, 256), delay: 300 * time.Millisecond})
	p, logs, _ := newService(t, nil)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); get(t, p, src, "emoji=1") }()
	}
	wg.Wait()
	p.Close()
	if n := o.hitCount("/slow.png"); n != 1 {
		t.Fatalf("fetched %d times", n)
	}
	sc := bufio.NewScanner(strings.NewReader(string(logs.bytes())))
	lines := 0
	for sc.Scan() {
		if l := sc.Text(); strings.Contains(l, `"msg":"request"`) {
			lines++
			if strings.Contains(l, `"bytes_in":0,`) || !strings.Contains(l, `"cache":"miss"`) {
				t.Errorf("request line without the shared figures: %s", l)
			}
		}
	}
	if lines != 4 {
		t.Errorf("%d request lines, want 4", lines)
	}
}

// TestAbandonedWorkIsCancelled: when every client waiting for a miss has
// gone, the fetch stops; the origin sees its request cancelled at once,
// not when the fetch timeout passes.
func TestAbandonedWorkIsCancelled(t *testing.T) {
	origin, _, gone := stallingOrigin(t, 1<<20, make([]byte, 1024))
	p := newProxy(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	for range 3 { // three clients sharing one fetch
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/v?url="+url.QueryEscape(origin.URL+"/v.mp4"), nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for gone.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if gone.Load() != 1 {
		t.Errorf("the origin's request was let go %d times after every client left, want once", gone.Load())
	}
}

// diskUse is what the files under root take on disk.
func diskUse(t *testing.T, root string) int64 {
	t.Helper()
	var n int64
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}

// TestDirStoreHeldUnderBudget: anyone can name fresh URLs; the on-disk
// store keeps to MEDIA_PROXY_STORE_MAX_SIZE however many are requested,
// evicting the least recently used, and the proxy keeps answering.
func TestDirStoreHeldUnderBudget(t *testing.T) {
	const budget = 1 << 20
	o := newOrigin(t)
	o.add("/e.png", testmedia.PNG(48, 48))
	p, _, svc := newService(t, map[string]string{"MEDIA_PROXY_STORE_MAX_SIZE": strconv.Itoa(budget)})
	root := storeDir(t, svc.Config.Store)
	var peak atomic.Int64
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				// Half of them fail, which writes markers, which count too.
				src := fmt.Sprintf("%s/e.png?n=%d", o.URL, i)
				if i%2 == 1 {
					src = fmt.Sprintf("%s/missing-%d.png", o.URL, i)
				}
				if status, _ := answer(t, p, src, "emoji=1"); status != []int{200, 404}[i%2] {
					t.Errorf("request %d: %d, want %d", i, status, []int{200, 404}[i%2])
				}
				if i%100 == 0 {
					peak.Store(max(peak.Load(), diskUse(t, root)))
				}
			}
		}()
	}
	const n = 2000
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	time.Sleep(500 * time.Millisecond) // the last eviction pass
	final := diskUse(t, root)
	t.Logf("%d distinct URLs (%d variants, %d markers) into a %d KiB store: %d KiB on disk at the end, %d KiB at most during the run",
		n, n/2, n/2, budget>>10, final>>10, max(peak.Load(), final)>>10)
	// The store's own bound: 10% over, plus a block per writer in flight.
	if limit := int64(budget) + budget/10 + 16*4096; final > budget || peak.Load() > limit {
		t.Errorf("store holds %d bytes (at most %d during the run) with a budget of %d", final, peak.Load(), budget)
	}
}

// TestSlowLargeBodyThroughS3: a 20 MB video that takes 12 s to arrive is
// streamed into S3 and answered with a redirect to exactly its bytes. A
// fixed bound on the store write (5 s, once) cut such bodies off: slow
// origins are the norm, and large media through S3 is the point.
func TestSlowLargeBodyThroughS3(t *testing.T) {
	e := s3StandinFromEnv(t)
	bucket := e.bucket(t)
	setAWSEnv(t, e, e.endpoint)
	p, _, _ := newService(t, map[string]string{
		"MEDIA_PROXY_STORE":         "s3://" + bucket + "/slow",
		"MEDIA_PROXY_S3_PATH_STYLE": "true",
	})
	video := testmedia.MP4(20 << 20)
	o := newCutOrigin(t)
	// 80 chunks of 256 KiB, 150 ms apart: 12 s.
	src := o.set("/slow.mp4", "ok", video, 150*time.Millisecond)
	start := time.Now()
	r := get(t, p, src, "")
	took := time.Since(start)
	if r.status != http.StatusOK && r.status != http.StatusFound {
		t.Fatalf("answered %d %q after %v", r.status, r.body, took)
	}
	got := r.body
	if r.status == http.StatusFound {
		resp, err := http.Get(r.header.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if got, err = io.ReadAll(resp.Body); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, video) {
		t.Fatalf("got %d bytes, want the origin's %d", len(got), len(video))
	}
	t.Logf("20 MB over 12 s through S3: answered %d after %v, bytes identical", r.status, took.Round(10*time.Millisecond))
}

// TestSlowSVGStoppedByDeadline: an SVG built to render for minutes holds a
// decode slot only until MEDIA_PROXY_TRANSFORM_TIMEOUT, is answered 422
// and remembered like any source over the limits.
func TestSlowSVGStoppedByDeadline(t *testing.T) {
	o := newOrigin(t)
	src := o.add("/slow.svg", testmedia.SVGSlow(20000))
	p := newProxy(t, map[string]string{"MEDIA_PROXY_TRANSFORM_TIMEOUT": "1s", "MEDIA_PROXY_TRANSFORM_CONCURRENCY": "1"})
	start := time.Now()
	checkError(t, get(t, p, src, ""), http.StatusUnprocessableEntity)
	took := time.Since(start)
	// The one decode slot is free again at once.
	checkSuccess(t, get(t, p, o.add("/small.svg", testmedia.SVG(40, 40)), "emoji=1"), "image/webp")
	checkError(t, get(t, p, src, ""), http.StatusUnprocessableEntity)
	if n := o.hitCount("/slow.svg"); n != 1 {
		t.Errorf("fetched %d times, want 1 (remembered)", n)
	}
	t.Logf("answered 422 after %v", took.Round(time.Millisecond))
	if took > 10*time.Second {
		t.Errorf("the render ran %v past a 1 s limit", took)
	}
}
