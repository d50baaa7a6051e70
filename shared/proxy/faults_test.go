package proxy_test

// Faults around the proxy: the S3 stand-in going down, slow or silent in
// the middle of a run (through a loopback TCP proxy in front of the shared
// versitygw, so the stand-in itself is never killed), and origins that cut
// bodies short. The proxy must keep answering, never store or serve a
// partial object, and recover once the fault is gone.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/misskey-lambda/media-proxy/shared/config"
	"github.com/misskey-lambda/media-proxy/shared/failure"
	"github.com/misskey-lambda/media-proxy/shared/jobs"
	"github.com/misskey-lambda/media-proxy/shared/jobs/jobstest"
	"github.com/misskey-lambda/media-proxy/shared/s3store"
	"github.com/misskey-lambda/media-proxy/shared/service"
	"github.com/misskey-lambda/media-proxy/shared/store"
	"github.com/misskey-lambda/media-proxy/shared/testmedia"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

// faultMode is what a faultProxy does with traffic.
type faultMode int

const (
	faultPass      faultMode = iota // forward
	faultSlow                       // forward, sleeping before each chunk towards the client
	faultDown                       // reset every connection, new and open ones
	faultBlackhole                  // accept, read, never answer
)

// faultProxy is a loopback TCP proxy whose behaviour a test switches at
// any time.
type faultProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	mode   faultMode
	delay  time.Duration
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

func newFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	p := &faultProxy{ln: newListener(t, "127.0.0.1:0"), target: target, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		p.ln.Close()
		p.set(faultDown, 0)
		p.wg.Wait()
	})
	return p
}

func (p *faultProxy) URL() string { return "http://" + p.ln.Addr().String() }

func (p *faultProxy) set(m faultMode, delay time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode, p.delay = m, delay
	if m == faultDown || m == faultBlackhole {
		for c := range p.conns {
			reset(c)
		}
		clear(p.conns)
	}
}

func (p *faultProxy) current() (faultMode, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode, p.delay
}

func (p *faultProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == faultDown {
		return false
	}
	p.conns[c] = true
	return true
}

func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

func (p *faultProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			reset(c)
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.handle(c)
		}()
	}
}

func (p *faultProxy) handle(c net.Conn) {
	defer c.Close()
	if m, _ := p.current(); m == faultBlackhole {
		io.Copy(io.Discard, c)
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() {
		io.Copy(up, c)
		done <- struct{}{}
	}()
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := up.Read(buf)
			if n > 0 {
				switch m, d := p.current(); m {
				case faultSlow:
					time.Sleep(d)
				case faultDown, faultBlackhole:
					reset(c)
					done <- struct{}{}
					return
				}
				if _, werr := c.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		done <- struct{}{}
	}()
	<-done
}

// s3Standin is the S3 stand-in scripts/lib/standins.sh started.
type s3Standin struct{ endpoint, access, secret, region string }

func s3StandinFromEnv(t *testing.T) s3Standin {
	t.Helper()
	e := s3Standin{
		endpoint: os.Getenv("MEDIA_PROXY_TEST_S3_ENDPOINT"),
		access:   os.Getenv("MEDIA_PROXY_TEST_S3_ACCESS_KEY"),
		secret:   os.Getenv("MEDIA_PROXY_TEST_S3_SECRET_KEY"),
		region:   os.Getenv("MEDIA_PROXY_TEST_S3_REGION"),
	}
	if e.endpoint == "" || e.access == "" || e.secret == "" || e.region == "" {
		msg := "MEDIA_PROXY_TEST_S3_* not set: start the S3 stand-in (scripts/lib/standins.sh s3_start)"
		if os.Getenv("MEDIA_PROXY_TEST_REQUIRE_STANDINS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return e
}

func (e s3Standin) client(endpoint string) *s3.Client {
	return s3.New(s3.Options{
		Region: e.region,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: e.access, SecretAccessKey: e.secret, Source: "test"}, nil
		}),
		BaseEndpoint: aws.String(endpoint),
		UsePathStyle: true,
	})
}

// bucket creates a bucket removed after the test.
func (e s3Standin) bucket(t *testing.T) string {
	t.Helper()
	c := e.client(e.endpoint)
	var b [6]byte
	rand.Read(b[:])
	name := "media-proxy-faults-" + hex.EncodeToString(b[:])
	if _, err := c.CreateBucket(t.Context(), &s3.CreateBucketInput{Bucket: &name}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: &name})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return
			}
			for _, o := range page.Contents {
				c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &name, Key: o.Key})
			}
		}
		if ups, err := c.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &name}); err == nil {
			for _, u := range ups.Uploads {
				c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &name, Key: u.Key, UploadId: u.UploadId})
			}
		}
		c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: &name})
	})
	return name
}

// logBuffer collects log lines from several goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

func (l *logBuffer) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), `"msg":"`+msg+`"`)
}

// failedRequests counts the request lines that carry a failure's cause.
func (l *logBuffer) failedRequests() int {
	n := 0
	for _, line := range strings.Split(string(l.bytes()), "\n") {
		if strings.Contains(line, `"msg":"request"`) && strings.Contains(line, `"err":`) {
			n++
		}
	}
	return n
}

// newService wires the real service from env (plus test defaults) with a
// logger the test can read.
func newService(t *testing.T, env map[string]string) (*httptest.Server, *logBuffer, *service.Service) {
	t.Helper()
	vars := map[string]string{
		"MEDIA_PROXY_STORE":                    "dir:" + t.TempDir(),
		"MEDIA_PROXY_ALLOWED_PRIVATE_NETWORKS": "127.0.0.0/8,::1/128",
		"MEDIA_PROXY_ALLOWED_PORTS":            "1-65535", // origins on random loopback ports
		"MEDIA_PROXY_QUEUE":                    "none",
	}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := config.Load(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	var w io.Writer = logs
	if testing.Verbose() {
		w = io.MultiWriter(logs, testWriter{t})
	}
	svc, err := service.New(context.Background(), cfg, slog.New(slog.NewJSONHandler(w, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close(context.Background()) })
	srv := httptest.NewServer(svc.Handler)
	t.Cleanup(srv.Close)
	return srv, logs, svc
}

// setAWSEnv points the SDK at endpoint, away from the machine's own AWS
// configuration.
func setAWSEnv(t *testing.T, e s3Standin, endpoint string) {
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL_S3":         endpoint,
		"AWS_ACCESS_KEY_ID":           e.access,
		"AWS_SECRET_ACCESS_KEY":       e.secret,
		"AWS_SESSION_TOKEN":           "",
		"AWS_REGION":                  e.region,
		"AWS_PROFILE":                 "",
		"AWS_CONFIG_FILE":             filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_DISABLED":   "true",
	} {
		t.Setenv(k, v)
	}
}

func keysOf(t *testing.T, src string, k variant.Kind) (key, failKey string) {
	t.Helper()
	return jobstest.KeysOf(t, src, k)
}

// timedGet is get with its duration.
func timedGet(t *testing.T, p *httptest.Server, src, flags string) (response, time.Duration) {
	t.Helper()
	start := time.Now()
	r := getWithin(t, p.URL, src, flags)
	return r, time.Since(start)
}

// storedBytes reads key from st: the bytes, or ErrNotFound.
func storedBytes(t *testing.T, st store.Store, key string) ([]byte, error) {
	t.Helper()
	e, err := st.Lookup(t.Context(), key)
	if err != nil {
		return nil, err
	}
	rc, err := e.Open(t.Context())
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// TestS3Faults takes the S3 stand-in down and slows it in the middle of a
// run of the real wiring. Misses keep being answered (without the cache),
// nothing partial is stored, and caching resumes when S3 is back.
func TestS3Faults(t *testing.T) {
	e := s3StandinFromEnv(t)
	bucket := e.bucket(t)
	fp := newFaultProxy(t, strings.TrimPrefix(e.endpoint, "http://"))
	setAWSEnv(t, e, fp.URL())
	p, logs, _ := newService(t, map[string]string{
		"MEDIA_PROXY_STORE":         "s3://" + bucket + "/faults",
		"MEDIA_PROXY_S3_PATH_STYLE": "true",
	})
	direct := s3store.New(e.client(e.endpoint), nil, s3store.Config{Bucket: bucket, Prefix: "faults/"})
	o := newOrigin(t)
	srcs := make([]string, 6)
	for i := range srcs {
		srcs[i] = o.add(fmt.Sprintf("/s3/%d.png", i), testmedia.PNG(400+i, 300))
	}
	// An answer is complete: the variant, never a partial one, whatever S3 does.
	fresh := func(step string, src string, limit time.Duration) []byte {
		t.Helper()
		r, took := timedGet(t, p, src, "emoji=1")
		checkSuccess(t, r, "image/webp")
		if d := decode(t, r.body); d.height != 128 {
			t.Errorf("%s: %dx%d", step, d.width, d.height)
		}
		if took > limit {
			t.Errorf("%s: answered in %v, over %v", step, took, limit)
		}
		t.Logf("%s: 200 in %v", step, took.Round(time.Millisecond))
		return r.body
	}
	hit := func(step string, src string, want []byte) {
		t.Helper()
		r := request(t, http.MethodGet, p.URL+"/e.webp?emoji=1&url="+url.QueryEscape(src))
		if r.status != http.StatusFound {
			t.Fatalf("%s: %d, want a 302 to the stored object", step, r.status)
		}
		obj := request(t, http.MethodGet, r.header.Get("Location"))
		if obj.status != http.StatusOK || !bytes.Equal(obj.body, want) {
			t.Errorf("%s: stored object %d, %d bytes, equal=%v", step, obj.status, len(obj.body), bytes.Equal(obj.body, want))
		}
	}
	stored := func(step, src string, want []byte) {
		t.Helper()
		key, _ := keysOf(t, src, variant.Emoji)
		got, err := storedBytes(t, direct, key)
		switch {
		case want == nil && !errors.Is(err, store.ErrNotFound):
			t.Errorf("%s: %s is stored (%d bytes, %v), want nothing", step, key, len(got), err)
		case want != nil && (err != nil || !bytes.Equal(got, want)):
			t.Errorf("%s: stored %d bytes, %v; want the %d bytes served", step, len(got), err, len(want))
		}
	}

	// Healthy: a miss is stored, then served from S3.
	b0 := fresh("healthy miss", srcs[0], 5*time.Second)
	stored("healthy miss", srcs[0], b0)
	hit("healthy hit", srcs[0], b0)

	// Down: connections are reset. Misses are answered without the cache,
	// fast; a stored variant is produced again rather than refused.
	fp.set(faultDown, 0)
	b1 := fresh("S3 down, miss", srcs[1], 8*time.Second)
	fresh("S3 down, stored variant", srcs[0], 8*time.Second)
	if logs.count("store lookup failed; answering without the cache") < 2 || logs.count("store write failed; answering without caching") < 1 {
		t.Errorf("S3 down: the failed lookups and writes were not logged")
	}

	// Slow: every chunk S3 sends is late, yet within the handler's bounds.
	fp.set(faultSlow, 300*time.Millisecond)
	b2 := fresh("S3 slow, miss", srcs[2], 8*time.Second)

	// Back: caching resumes; what failed to be stored is a miss again.
	fp.set(faultPass, 0)
	stored("after S3 was down", srcs[1], nil)
	stored("after S3 was slow", srcs[2], b2)
	if again := fresh("S3 back, earlier miss", srcs[1], 5*time.Second); !bytes.Equal(again, b1) {
		t.Error("the variant changed between two productions")
	}
	stored("S3 back", srcs[1], b1)
	hit("S3 back, hit", srcs[1], b1)
	fresh("S3 back, new miss", srcs[4], 5*time.Second)
	hit("S3 back, slow-phase object", srcs[2], b2)
}

// TestS3Silent: S3 accepts connections and never answers. A miss is still
// answered, once the 2 s lookup and 5 s write bounds have run out; nothing
// is stored, and caching resumes when S3 answers again. The silent request
// is started before t.Parallel, so its 7 s of waiting overlap the
// package's sequential tests; it uses a stack built around the S3 store
// (no process environment, which parallel tests cannot set).
func TestS3Silent(t *testing.T) {
	e := s3StandinFromEnv(t)
	bucket := e.bucket(t)
	fp := newFaultProxy(t, strings.TrimPrefix(e.endpoint, "http://"))
	cfg := s3store.Config{Bucket: bucket, Prefix: "silent/"}
	st := s3store.New(e.client(fp.URL()), nil, cfg)
	direct := s3store.New(e.client(e.endpoint), nil, cfg)
	p := newStack(t, stackOptions{allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, store: st})
	o := newOrigin(t)
	src := o.add("/silent.png", testmedia.PNG(500, 400))
	key, _ := keysOf(t, src, variant.Emoji)

	fp.set(faultBlackhole, 0)
	type result struct {
		r    response
		err  error
		took time.Duration
	}
	silent := make(chan result, 1)
	go func() {
		start := time.Now()
		r, err := fetchWithin(p.URL, src, "emoji=1", 30*time.Second)
		silent <- result{r, err, time.Since(start)}
	}()
	t.Parallel()
	res := <-silent
	if res.err != nil {
		t.Fatalf("S3 silent: %v", res.err)
	}
	checkSuccess(t, res.r, "image/webp")
	t.Logf("S3 silent, miss: 200 in %v", res.took.Round(time.Millisecond))
	// The bound is 7 s; the margin is for a busy machine, since this runs
	// alongside the sequential tests.
	if res.took > 15*time.Second {
		t.Errorf("S3 silent: answered in %v, well over the 2 s lookup + 5 s write bound", res.took)
	}
	if _, err := storedBytes(t, direct, key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("S3 silent: the key holds something: %v", err)
	}

	fp.set(faultPass, 0)
	r2, took2 := timedGet(t, p, src, "emoji=1")
	checkSuccess(t, r2, "image/webp")
	if got, err := storedBytes(t, direct, key); err != nil || !bytes.Equal(got, r2.body) {
		t.Errorf("S3 back: stored %d bytes, %v", len(got), err)
	}
	if r3 := request(t, http.MethodGet, p.URL+"/e.webp?emoji=1&url="+url.QueryEscape(src)); r3.status != http.StatusFound {
		t.Errorf("S3 back: a stored variant answered %d, want 302", r3.status)
	}
	t.Logf("S3 back: 200 in %v, then a hit", took2.Round(time.Millisecond))
}

// cutOrigin serves bodies that stop halfway: RST ("reset") or a clean
// close short of Content-Length ("close"), or whole ("ok").
type cutOrigin struct {
	*httptest.Server
	mu    sync.Mutex
	mode  map[string]string
	body  map[string][]byte
	rate  map[string]time.Duration // pause between 256 KiB chunks
	hits  atomic.Int64
	cuts  atomic.Int64
	wrote atomic.Int64
}

func newCutOrigin(t *testing.T) *cutOrigin {
	o := &cutOrigin{mode: map[string]string{}, body: map[string][]byte{}, rate: map[string]time.Duration{}}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.hits.Add(1)
		o.mu.Lock()
		mode, body, rate := o.mode[r.URL.Path], o.body[r.URL.Path], o.rate[r.URL.Path]
		o.mu.Unlock()
		if body == nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		send := body
		if mode != "ok" {
			send = body[:len(body)/2]
		}
		rc := http.NewResponseController(w)
		for len(send) > 0 {
			n := min(len(send), 256<<10)
			if _, err := w.Write(send[:n]); err != nil {
				return
			}
			o.wrote.Add(int64(n))
			rc.Flush()
			send = send[n:]
			time.Sleep(rate)
		}
		if mode == "ok" {
			return
		}
		o.cuts.Add(1)
		conn, _, err := rc.Hijack()
		if err != nil {
			return
		}
		if mode == "reset" {
			reset(conn)
			return
		}
		conn.Close()
	}))
	t.Cleanup(o.Close)
	return o
}

func (o *cutOrigin) set(path, mode string, body []byte, rate time.Duration) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.mode[path], o.rate[path] = mode, rate
	if body != nil {
		o.body[path] = body
	}
	return o.URL + path
}

// TestOriginCutMidBody: an origin that resets (or closes) the connection
// halfway through a body gets a 502 (or, for a body streamed to the client
// as it arrives, a broken transfer), nothing is stored under the key
// however the body was headed for the store, the failure is remembered for
// a while, and once it expires a good answer is fetched and stored. Runs
// against the directory store and the S3 stand-in.
func TestOriginCutMidBody(t *testing.T) {
	type storeCase struct {
		name string
		open func(t *testing.T) (env map[string]string, st store.Store, expire func(failKey string))
	}
	stores := []storeCase{
		{"dir", func(t *testing.T) (map[string]string, store.Store, func(string)) {
			root := t.TempDir()
			st, err := store.NewDir(root, store.DirOptions{})
			if err != nil {
				t.Fatal(err)
			}
			expire := func(failKey string) {
				old := time.Now().Add(-failure.PermanentTTL - time.Minute)
				err := os.Chtimes(filepath.Join(root, filepath.FromSlash(failKey)), old, old)
				if err != nil && !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("ageing the failure marker: %v", err)
				}
			}
			return map[string]string{"MEDIA_PROXY_STORE": "dir:" + root}, st, expire
		}},
		{"s3", func(t *testing.T) (map[string]string, store.Store, func(string)) {
			e := s3StandinFromEnv(t)
			bucket := e.bucket(t)
			setAWSEnv(t, e, e.endpoint)
			c := e.client(e.endpoint)
			st := s3store.New(c, nil, s3store.Config{Bucket: bucket, Prefix: "cut/"})
			expire := func(failKey string) {
				// A lifecycle rule would expire it; deleting is the same.
				k := "cut/" + failKey
				if _, err := c.DeleteObject(t.Context(), &s3.DeleteObjectInput{Bucket: &bucket, Key: &k}); err != nil {
					t.Fatal(err)
				}
			}
			t.Cleanup(func() {
				ups, err := c.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: &bucket})
				if err == nil && len(ups.Uploads) != 0 {
					t.Errorf("%d multipart upload(s) left behind", len(ups.Uploads))
				}
			})
			return map[string]string{"MEDIA_PROXY_STORE": "s3://" + bucket + "/cut", "MEDIA_PROXY_S3_PATH_STYLE": "true"}, st, expire
		}},
	}
	image := testmedia.PNGOpaque(1200, 900) // converted: read whole, then transformed
	small := testmedia.Get("jpeg")          // passthrough held in memory
	video := testmedia.MP4(20 << 20)        // passthrough streamed into the store (over 8 MB)
	for _, sc := range stores {
		t.Run(sc.name, func(t *testing.T) {
			env, st, expireMarker := sc.open(t)
			p, logs, svc := newService(t, env)
			mem := svc.Runner.Failures
			// A cut found fast is remembered by the process, a slow one
			// in the store too (failure.Stored); expiring it is both.
			var later time.Duration
			expire := func(failKey string) {
				expireMarker(failKey)
				later += failure.PermanentTTL + time.Minute
				shift := later
				mem.SetClock(func() time.Time { return time.Now().Add(shift) })
			}
			remembered := func(failKey string) (int, error) {
				if status, _, ok := mem.Recall(failKey); ok {
					return status, nil
				}
				status, _, err := st.Failure(t.Context(), failKey)
				return status, err
			}
			o := newCutOrigin(t)
			for _, c := range []struct {
				name, flags string
				body        []byte
				kind        variant.Kind
				mime        string
			}{
				{"converted image", "emoji=1", image, variant.Emoji, "image/webp"},
				{"small passthrough", "", small, variant.Original, "image/jpeg"},
				{"large streamed passthrough", "", video, variant.Original, "video/mp4"},
			} {
				for _, mode := range []string{"reset", "close"} {
					t.Run(c.name+"/"+mode, func(t *testing.T) {
						path := "/" + strings.ReplaceAll(c.name, " ", "-") + "-" + mode
						src := o.set(path, mode, c.body, 2*time.Millisecond)
						key, failKey := keysOf(t, src, c.kind)

						// Watch the store while the cut body is on its way.
						var seen atomic.Int64
						stop := make(chan struct{})
						watched := make(chan struct{})
						go func() {
							defer close(watched)
							for {
								if _, err := st.Lookup(context.Background(), key); err == nil {
									seen.Add(1)
								}
								select {
								case <-stop:
									return
								case <-time.After(5 * time.Millisecond):
								}
							}
						}()
						if len(c.body) > 8<<20 {
							// Streamed to the client as it arrives: the
							// cut reaches it as a broken transfer.
							s := streamGet(t, p.URL, src, 0, 0, nil)
							if s.status != http.StatusOK || s.err == nil {
								t.Fatalf("a streamed body cut halfway answered %d with %d bytes and err %v, want a broken 200", s.status, len(s.body), s.err)
							}
							// The download has failed the store write by
							// the time the client sees the break; the
							// marker follows it.
							deadline := time.Now().Add(5 * time.Second)
							for _, err := remembered(failKey); err != nil && time.Now().Before(deadline); _, err = remembered(failKey) {
								time.Sleep(10 * time.Millisecond)
							}
						} else {
							r := getWithin(t, p.URL, src, c.flags)
							if r.status != http.StatusBadGateway {
								t.Fatalf("a body cut halfway answered %d (%s, %d bytes), want 502", r.status, r.header.Get("Content-Type"), len(r.body))
							}
							checkError(t, r, http.StatusBadGateway)
						}
						close(stop)
						<-watched
						if n := seen.Load(); n != 0 {
							t.Errorf("the key was visible %d time(s) while the body was being cut", n)
						}
						if got, err := storedBytes(t, st, key); !errors.Is(err, store.ErrNotFound) {
							t.Fatalf("after a cut body the key holds %d bytes (%v), want nothing", len(got), err)
						}
						if status, err := remembered(failKey); err != nil || status != http.StatusBadGateway {
							t.Errorf("remembered failure: %d, %v", status, err)
						}

						// The origin recovers; the failure is remembered for a
						// while (no refetch), then the good body is served and
						// stored.
						o.set(path, "ok", nil, 0)
						hits := o.hits.Load()
						if r := getWithin(t, p.URL, src, c.flags); r.status != http.StatusBadGateway {
							t.Errorf("a remembered failure answered %d, want 502", r.status)
						}
						if o.hits.Load() != hits {
							t.Error("a remembered failure went back to the origin")
						}
						expire(failKey)
						r := getWithin(t, p.URL, src, c.flags)
						checkCommon(t, r)
						served := r.body
						if r.status == http.StatusFound && sc.name == "s3" && len(c.body) > 8<<20 {
							// Large bodies are answered from S3 itself.
							obj := request(t, http.MethodGet, r.header.Get("Location"))
							r.status, served = obj.status, obj.body
						}
						if r.status != http.StatusOK || (r.header.Get("Content-Type") != c.mime && len(c.body) <= 8<<20) {
							t.Fatalf("after recovery: %d %s", r.status, r.header.Get("Content-Type"))
						}
						if c.kind == variant.Original && !bytes.Equal(served, c.body) {
							t.Errorf("served %d bytes, want the origin's %d", len(served), len(c.body))
						}
						if len(c.body) > 8<<20 {
							// Stored as the client is served: maybe just
							// after its last byte.
							waitStored(t, st, key, served)
						} else if got, err := storedBytes(t, st, key); err != nil || !bytes.Equal(got, served) {
							t.Errorf("stored %d bytes (%v), served %d", len(got), err, len(served))
						}
					})
				}
			}
			if n := logs.failedRequests(); n < 6 {
				t.Errorf("%d failures logged, want at least 6", n)
			}
			if sc.name == "dir" {
				checkNoTempFiles(t, env["MEDIA_PROXY_STORE"][len("dir:"):])
			}
			t.Logf("%s: %d bodies cut after %d bytes sent in all", sc.name, o.cuts.Load(), o.wrote.Load())
		})
	}
}

func checkNoTempFiles(t *testing.T, root string) {
	t.Helper()
	filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", path)
		}
		return nil
	})
}

// TestSQSOutageMidRun takes the SQS stand-in away between two requests
// and brings it back (TestProxyRequestSurvivesQueueOutage in sqsqueue
// covers a queue that is down or hanging from the start). The request
// whose sibling jobs cannot be queued is still answered, the failure is
// logged, the lost job only means the sibling is made on its first
// request, and jobs flow again once SQS is back.
func TestSQSOutageMidRun(t *testing.T) {
	c := jobstest.SQSClient(t)
	q := jobstest.NewQueue(t, c, 30, 3)
	jobstest.UseStandins(t, false)
	fp := newFaultProxy(t, strings.TrimPrefix(jobstest.SQSEndpoint(t), "http://"))
	t.Setenv("AWS_ENDPOINT_URL_SQS", fp.URL())
	p, logs, _ := newService(t, map[string]string{"MEDIA_PROXY_QUEUE": q.URL})
	o := newOrigin(t)
	queued := func(step, src string) {
		t.Helper()
		msgs := q.Receive(t, q.URL, 10, 3*time.Second)
		if len(msgs) != 1 {
			t.Fatalf("%s: %d messages queued, want 1", step, len(msgs))
		}
		j, err := jobs.Decode([]byte(msgs[0].Body))
		if err != nil || j.URL != src || j.Variant != variant.EmojiStatic {
			t.Errorf("%s: queued %+v (%v), want the emoji-static job for %s", step, j, err, src)
		}
		q.Settle(t, msgs, events.SQSEventResponse{})
	}

	a := o.add("/sqs/a.gif", testmedia.GIF(64, 64, 3))
	checkSuccess(t, getWithin(t, p.URL, a, "emoji=1"), "image/webp")
	queued("SQS up", a)

	fp.set(faultDown, 0)
	b := o.add("/sqs/b.gif", testmedia.GIF(64, 64, 4))
	// Answered, whatever the SDK's retries make of the resets: the 1 s
	// enqueue bound itself is TestProxyRequestSurvivesQueueOutage's (in
	// sqsqueue), against a queue that never answers.
	r, took := timedGet(t, p, b, "emoji=1")
	checkSuccess(t, r, "image/webp")
	if n := logs.count("precompute enqueue failed"); n != 1 {
		t.Errorf("SQS down: %d enqueue failures logged, want 1", n)
	}
	// The sibling that was not queued is made when asked for.
	checkSuccess(t, getWithin(t, p.URL, b, "emoji=1&static=1"), "image/webp")

	fp.set(faultPass, 0)
	c2 := o.add("/sqs/c.gif", testmedia.GIF(64, 64, 5))
	checkSuccess(t, getWithin(t, p.URL, c2, "emoji=1"), "image/webp")
	queued("SQS back", c2)
	t.Logf("SQS down: the request answered in %v; jobs flowed before and after", took.Round(time.Millisecond))
}
