package proxy_test

// What failure memory costs on S3: a flood of distinct URLs whose server
// answers at once must not write an object per URL (a PUT is the dearest
// S3 request), while a failure that took long to find is stored for the
// other instances.

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/variant"
)

// s3Counter stands in front of the S3 stand-in and counts its requests by
// method (a CopyObject or an upload part counts as the PUT it is billed as).
type s3Counter struct {
	*httptest.Server
	mu     sync.Mutex
	counts map[string]int
}

func newS3Counter(t *testing.T, endpoint string) *s3Counter {
	t.Helper()
	target, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	c := &s3Counter{counts: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(target)
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.counts[r.Method]++
		c.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *s3Counter) count(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[method]
}

func (c *s3Counter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.counts)
}

// s3Service is the real wiring on the S3 stand-in, through a counter.
func s3Service(t *testing.T, e s3Standin, counter *s3Counter, bucket string, env map[string]string) (*httptest.Server, *logBuffer) {
	t.Helper()
	setAWSEnv(t, e, counter.URL)
	vars := map[string]string{
		"MEDIA_PROXY_STORE":         "s3://" + bucket + "/flood",
		"MEDIA_PROXY_S3_PATH_STYLE": "true",
	}
	for k, v := range env {
		vars[k] = v
	}
	p, logs, _ := newService(t, vars)
	return p, logs
}

// TestFailureFloodWritesNoMarkers asks for 1,000 distinct URLs whose
// server answers 404 at once, as a flood would: each is fetched once and
// refused, and none writes anything to S3. Asked again, each is answered
// from the process's memory, with no fetch and no S3 request at all.
func TestFailureFloodWritesNoMarkers(t *testing.T) {
	e := s3StandinFromEnv(t)
	bucket := e.bucket(t)
	counter := newS3Counter(t, e.endpoint)
	p, _ := s3Service(t, e, counter, bucket, nil)
	o := newOrigin(t)

	const n = 1000
	urls := make([]string, n)
	for i := range urls {
		urls[i] = fmt.Sprintf("%s/flood/%d.png", o.URL, i)
	}
	run := func() (statuses map[int]int) {
		statuses = map[int]int{}
		var mu sync.Mutex
		work := make(chan string)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for src := range work {
					r := get(t, p, src, "emoji=1")
					mu.Lock()
					statuses[r.status]++
					mu.Unlock()
				}
			})
		}
		for _, u := range urls {
			work <- u
		}
		close(work)
		wg.Wait()
		return statuses
	}
	start := time.Now()
	if got := run(); got[http.StatusNotFound] != n {
		t.Fatalf("statuses %v, want %d × 404", got, n)
	}
	puts, heads, gets := counter.count(http.MethodPut), counter.count(http.MethodHead), counter.count(http.MethodGet)
	t.Logf("%d distinct 404 URLs in %v: %d PUT, %d HEAD, %d GET on S3", n, time.Since(start).Round(time.Millisecond), puts, heads, gets)
	if puts != 0 {
		t.Errorf("%d PUTs for %d URLs that failed at once, want none", puts, n)
	}
	fetched := int64(0)
	for i := range n {
		fetched += o.hitCount(fmt.Sprintf("/flood/%d.png", i))
	}
	if fetched != n {
		t.Errorf("%d fetches for %d URLs", fetched, n)
	}

	// Again: the process remembers every one of them.
	counter.reset()
	if got := run(); got[http.StatusNotFound] != n {
		t.Fatalf("again: statuses %v, want %d × 404", got, n)
	}
	again := int64(0)
	for i := range n {
		again += o.hitCount(fmt.Sprintf("/flood/%d.png", i))
	}
	if again != fetched {
		t.Errorf("asked again, the origin was fetched %d more times, want 0", again-fetched)
	}
	if c := counter.count(http.MethodHead) + counter.count(http.MethodPut) + counter.count(http.MethodGet); c != 0 {
		t.Errorf("asked again: %d S3 requests, want none (the process remembers)", c)
	}
}

// maxAge reads a Cache-Control max-age.
func maxAge(t *testing.T, cc string) int {
	t.Helper()
	v, ok := strings.CutPrefix(cc, "max-age=")
	n, err := strconv.Atoi(v)
	if !ok || err != nil {
		t.Fatalf("Cache-Control %q has no max-age", cc)
	}
	return n
}

// TestExpensiveFailureIsStored: a failure that took the fetch's whole
// timeout to find is stored, so another instance (a new process on the
// same bucket) answers it without fetching, for the time it has left.
func TestExpensiveFailureIsStored(t *testing.T) {
	e := s3StandinFromEnv(t)
	bucket := e.bucket(t)
	counter := newS3Counter(t, e.endpoint)
	env := map[string]string{"MEDIA_PROXY_FETCH_TIMEOUT": "1500ms", "MEDIA_PROXY_RESPONSE_TIMEOUT": "1500ms"}
	p, _ := s3Service(t, e, counter, bucket, env)
	o := newOrigin(t)
	hang := o.hang(t, "/hang.png")

	r := get(t, p, hang, "emoji=1")
	if r.status != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504", r.status)
	}
	if puts := counter.count(http.MethodPut); puts != 1 {
		t.Errorf("%d PUTs for a failure found by a timeout, want 1 (its marker)", puts)
	}
	_, failKey := keysOf(t, hang, variant.Emoji)
	t.Logf("marker %s", failKey)

	// Another instance: nothing in its memory, the marker in S3.
	other, _ := s3Service(t, e, counter, bucket, env)
	r = get(t, other, hang, "emoji=1")
	if r.status != http.StatusGatewayTimeout {
		t.Fatalf("other instance: status %d, want the remembered 504", r.status)
	}
	if n := o.hitCount("/hang.png"); n != 1 {
		t.Errorf("the origin was asked %d times, want 1", n)
	}
	// The marker lives 10 s from when it was written; what the answer
	// may be cached for is what is left of it.
	if age := maxAge(t, r.header.Get("Cache-Control")); age > 10 || age < 1 {
		t.Errorf("max-age %d, want what is left of 10 s", age)
	}
}

// hang makes path answer nothing until the test ends (each request
// still counts as a hit).
func (o *origin) hang(t *testing.T, path string) string {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	next := o.Config.Handler
	o.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != path {
			next.ServeHTTP(w, r)
			return
		}
		o.mu.Lock()
		if o.hits[path] == nil {
			o.hits[path] = new(atomic.Int64)
		}
		o.hits[path].Add(1)
		o.mu.Unlock()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	return o.URL + path
}
