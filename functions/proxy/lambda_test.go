package main

// These tests run the real bootstrap binary under the AWS Lambda Runtime
// Interface Emulator, with a real S3-compatible server and a loopback
// origin, and post Function URL events to it as Lambda would.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/misskey-lambda/media-proxy/shared/functionurl"
	"github.com/misskey-lambda/media-proxy/shared/lambdatest"
	"github.com/misskey-lambda/media-proxy/shared/proxy/proxytest"
	"github.com/misskey-lambda/media-proxy/shared/testmedia"
	"github.com/misskey-lambda/media-proxy/shared/vips"
)

// maxPayload is Lambda's limit for a buffered response.
const maxPayload = 6 * 1024 * 1024

func standin(t *testing.T, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		if os.Getenv("MEDIA_PROXY_TEST_REQUIRE_STANDINS") == "1" {
			t.Fatalf("%s is not set; run the tests with scripts/test", name)
		}
		t.Skipf("%s is not set; scripts/test starts the stand-ins", name)
	}
	return v
}

type s3Env struct{ endpoint, access, secret, region string }

func s3FromEnv(t *testing.T) s3Env {
	return s3Env{
		endpoint: standin(t, "MEDIA_PROXY_TEST_S3_ENDPOINT"),
		access:   standin(t, "MEDIA_PROXY_TEST_S3_ACCESS_KEY"),
		secret:   standin(t, "MEDIA_PROXY_TEST_S3_SECRET_KEY"),
		region:   standin(t, "MEDIA_PROXY_TEST_S3_REGION"),
	}
}

func (e s3Env) client() *s3.Client {
	return s3.New(s3.Options{
		Region:       e.region,
		BaseEndpoint: aws.String(e.endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(e.access, e.secret, ""),
	})
}

func (e s3Env) createBucket(t *testing.T) string {
	t.Helper()
	bucket := fmt.Sprintf("lambda-test-%d", time.Now().UnixNano())
	if _, err := e.client().CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	return bucket
}

// env is the function's environment for a bucket (or store) and S3
// endpoint, with origins on loopback allowed.
func (e s3Env) env(store, endpoint string) []string {
	return []string{
		"MEDIA_PROXY_STORE=" + store,
		"MEDIA_PROXY_S3_PATH_STYLE=true",
		"MEDIA_PROXY_QUEUE=none",
		"MEDIA_PROXY_ALLOWED_PRIVATE_NETWORKS=127.0.0.0/8",
		"MEDIA_PROXY_ALLOWED_PORTS=1-65535", // origins on random loopback ports
		"AWS_ENDPOINT_URL_S3=" + endpoint,
		"AWS_ACCESS_KEY_ID=" + e.access,
		"AWS_SECRET_ACCESS_KEY=" + e.secret,
		"AWS_REGION=" + e.region,
	}
}

// function is the proxy's bootstrap under a runtime API: AWS's emulator,
// which collects a response whole (at most 6 MB) before answering, or
// lambdatest's stand-in, which passes a streamed response on as it comes
// with the trailers that end it.
type function struct {
	emu *lambdatest.Emulator
	rt  *lambdatest.Runtime
}

func startEmulator(t *testing.T, env []string) function {
	t.Helper()
	rie := standin(t, "MEDIA_PROXY_TEST_RIE")
	return function{emu: lambdatest.Start(t, rie, "", lambdatest.Build(t, "."), env)}
}

func startRuntime(t *testing.T, env []string) function {
	t.Helper()
	return function{rt: lambdatest.StartRuntime(t, lambdatest.Build(t, "."), env)}
}

func urlEvent(method, path, query string, headers map[string]string) events.LambdaFunctionURLRequest {
	if headers == nil {
		headers = map[string]string{}
	}
	return events.LambdaFunctionURLRequest{
		Version: "2.0", RawPath: path, RawQueryString: query, Headers: headers,
		RequestContext: events.LambdaFunctionURLRequestContext{
			RequestID:  fmt.Sprintf("test-%d", time.Now().UnixNano()),
			DomainName: "example.lambda-url.us-east-1.on.aws",
			HTTP:       events.LambdaFunctionURLRequestContextHTTPDescription{Method: method, Path: path, SourceIP: "192.0.2.10"},
		},
	}
}

// reply is a streamed Function URL response, read to its end.
type reply struct {
	lambdatest.Prelude
	body []byte
	// trailer ended the response (stand-in only): error trailers mean
	// Lambda cuts the viewer's response short.
	trailer http.Header
}

func (r reply) header(name string) string { return r.Headers[strings.ToLower(name)] }

func (f function) invoke(t *testing.T, method, path, query string, headers map[string]string) reply {
	t.Helper()
	ev := urlEvent(method, path, query, headers)
	if f.emu != nil {
		p, body := f.emu.InvokeURL(t, ev)
		return reply{Prelude: p, body: body}
	}
	s := f.rt.Invoke(t, ev)
	if s.ContentType != "application/vnd.awslambda.http-integration-response" {
		t.Fatalf("%s %s: response posted as %q", method, path, s.ContentType)
	}
	r := bufio.NewReader(s.Body)
	p, err := lambdatest.ReadPrelude(r)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return reply{Prelude: p, body: body, trailer: s.Trailer()}
}

// checkCommon: every response carries the proxy's common headers.
func checkCommon(t *testing.T, r reply) {
	t.Helper()
	for _, h := range []string{"Content-Security-Policy", "Access-Control-Allow-Origin", "X-Content-Type-Options"} {
		if r.header(h) == "" {
			t.Errorf("no %s in %v", h, r.Headers)
		}
	}
	if r.trailer.Get("Lambda-Runtime-Function-Error-Type") != "" {
		t.Errorf("error trailers %v", r.trailer)
	}
}

type lambdaOrigin struct {
	*httptest.Server
	files map[string][]byte
	hits  sync.Map // path -> *atomic.Int64
}

func newLambdaOrigin(t *testing.T, files map[string][]byte) *lambdaOrigin {
	o := &lambdaOrigin{files: files}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := o.hits.LoadOrStore(r.URL.Path, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		b, ok := o.files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.Write(b)
	}))
	t.Cleanup(o.Close)
	return o
}

func (o *lambdaOrigin) hitCount(path string) int64 {
	if n, ok := o.hits.Load(path); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

func q(src string, flags string) string {
	s := "url=" + url.QueryEscape(src)
	if flags != "" {
		s += "&" + flags
	}
	return s
}

// paddedPNG is a PNG signature and header followed by filler: it sniffs as
// PNG and is passed through byte for byte, so its size is exact.
func paddedPNG(size int) []byte {
	b := testmedia.PNG(4, 4)
	return append(b, bytes.Repeat([]byte{0}, size-len(b))...)
}

func fetchRedirect(t *testing.T, location string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(location)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestLambdaWithS3(t *testing.T) {
	s3env := s3FromEnv(t)
	bucket := s3env.createBucket(t)
	video := testmedia.MP4(20 << 20)
	under, over := paddedPNG(functionurl.MaxBody-1000), paddedPNG(functionurl.MaxBody+1000)
	o := newLambdaOrigin(t, map[string][]byte{
		"/anim.gif":  testmedia.GIF(256, 256, 6),
		"/video.mp4": video,
		"/under.png": under,
		"/over.png":  over,
		"/range.png": paddedPNG(100_000),
	})
	mid := testmedia.MP4(10 << 20)
	o.files["/mid.mp4"] = mid
	// 16 MiB: the 10 MiB video is streamed, the 20 MiB one stored first.
	fn := startRuntime(t, append(s3env.env("s3://"+bucket+"/cache/", s3env.endpoint), "MEDIA_PROXY_LAMBDA_STREAM_LIMIT=16777216"))

	t.Run("miss then hit", func(t *testing.T) {
		first := fn.invoke(t, "GET", "/emoji.webp", q(o.URL+"/anim.gif", "emoji=1"), nil)
		if first.StatusCode != 200 || first.header("Content-Type") != "image/webp" {
			t.Fatalf("miss: %d %v", first.StatusCode, first.Headers)
		}
		checkCommon(t, first)
		if cc := first.header("Cache-Control"); !strings.HasPrefix(cc, "max-age=") {
			t.Errorf("miss Cache-Control %q", cc)
		}
		im, err := vips.Header(first.body, true)
		if err != nil {
			t.Fatal(err)
		}
		if im.PageHeight() != 128 || im.Pages() != 6 {
			t.Errorf("inline emoji is %dx%d x %d", im.Width(), im.PageHeight(), im.Pages())
		}
		im.Close()

		second := fn.invoke(t, "GET", "/emoji.webp", q(o.URL+"/anim.gif", "emoji=1"), nil)
		loc := second.header("Location")
		if second.StatusCode != http.StatusFound || !strings.Contains(loc, "X-Amz-Signature=") {
			t.Fatalf("hit: %d %v", second.StatusCode, second.Headers)
		}
		checkCommon(t, second)
		if cc := second.header("Cache-Control"); !strings.HasPrefix(cc, "max-age=") || cc == "max-age=0" {
			t.Errorf("redirect Cache-Control %q", cc)
		}
		resp, stored := fetchRedirect(t, loc)
		if resp.StatusCode != 200 || !bytes.Equal(stored, first.body) {
			t.Fatalf("presigned URL: %d, %d bytes, equal=%v", resp.StatusCode, len(stored), bytes.Equal(stored, first.body))
		}
		for _, h := range []string{"Content-Type", "Content-Disposition", "Cache-Control"} {
			if got, want := resp.Header.Get(h), first.header(h); got != want {
				t.Errorf("S3 %s = %q, proxy said %q", h, got, want)
			}
		}
		if n := o.hitCount("/anim.gif"); n != 1 {
			t.Errorf("origin fetched %d times", n)
		}
	})

	t.Run("video within the stream limit", func(t *testing.T) {
		resp := fn.invoke(t, "GET", "/mid.mp4", q(o.URL+"/mid.mp4", ""), nil)
		checkCommon(t, resp)
		if resp.StatusCode != 200 || resp.header("Content-Type") != "video/mp4" || !bytes.Equal(resp.body, mid) {
			t.Fatalf("video: %d %v, %d bytes", resp.StatusCode, resp.Headers, len(resp.body))
		}
		hit := fn.invoke(t, "GET", "/mid.mp4", q(o.URL+"/mid.mp4", ""), nil)
		if hit.StatusCode != http.StatusFound {
			t.Fatalf("second view: %d", hit.StatusCode)
		}
		if _, b := fetchRedirect(t, hit.header("Location")); !bytes.Equal(b, mid) {
			t.Error("stored copy differs")
		}
	})

	t.Run("video over the stream limit", func(t *testing.T) {
		resp := fn.invoke(t, "GET", "/video.mp4", q(o.URL+"/video.mp4", ""), nil)
		checkCommon(t, resp)
		if resp.StatusCode != http.StatusFound {
			t.Fatalf("video: %d %v, %d bytes", resp.StatusCode, resp.Headers, len(resp.body))
		}
		got, b := fetchRedirect(t, resp.header("Location"))
		if got.StatusCode != 200 || got.Header.Get("Content-Type") != "video/mp4" || !bytes.Equal(b, video) {
			t.Fatalf("video from S3: %d %s, %d bytes, equal=%v", got.StatusCode, got.Header.Get("Content-Type"), len(b), bytes.Equal(b, video))
		}
	})

	t.Run("either side of the in-memory limit", func(t *testing.T) {
		resp := fn.invoke(t, "GET", "/u.png", q(o.URL+"/under.png", ""), nil)
		if resp.StatusCode != 200 || !bytes.Equal(resp.body, under) {
			t.Errorf("just under the limit: %d, %d bytes", resp.StatusCode, len(resp.body))
		}
		resp = fn.invoke(t, "GET", "/o.png", q(o.URL+"/over.png", ""), nil)
		body := resp.body
		if resp.StatusCode == http.StatusFound {
			_, body = fetchRedirect(t, resp.header("Location"))
		}
		if !bytes.Equal(body, over) {
			t.Errorf("just over the limit: %d, %d bytes", resp.StatusCode, len(body))
		}
	})

	t.Run("range on an inline body", func(t *testing.T) {
		resp := fn.invoke(t, "GET", "/r.png", q(o.URL+"/range.png", ""), map[string]string{"range": "bytes=0-9"})
		if resp.StatusCode != http.StatusPartialContent || len(resp.body) != 10 || resp.header("Content-Range") != "bytes 0-9/100000" {
			t.Errorf("range: %d, %d bytes, Content-Range %q", resp.StatusCode, len(resp.body), resp.header("Content-Range"))
		}
	})

	t.Run("HEAD and OPTIONS", func(t *testing.T) {
		resp := fn.invoke(t, "HEAD", "/u.png", q(o.URL+"/under.png", ""), nil)
		if len(resp.body) != 0 || resp.StatusCode >= 400 {
			t.Errorf("HEAD: %d with %d bytes", resp.StatusCode, len(resp.body))
		}
		resp = fn.invoke(t, "OPTIONS", "/e.webp", q(o.URL+"/anim.gif", "emoji=1"), map[string]string{"origin": "https://misskey.example", "access-control-request-method": "GET"})
		if resp.StatusCode != http.StatusNoContent || resp.header("Access-Control-Allow-Origin") != "*" || resp.header("Access-Control-Allow-Methods") == "" {
			t.Errorf("OPTIONS: %d %v", resp.StatusCode, resp.Headers)
		}
		resp = fn.invoke(t, "GET", "/", "", nil)
		if resp.StatusCode != 200 || len(resp.body) == 0 {
			t.Errorf("health: %d %q", resp.StatusCode, resp.body)
		}
	})

	t.Run("failure memory", func(t *testing.T) {
		for i := range 3 {
			// The first answer is cached for the failure's whole life, the
			// remembered ones for what is left of it (whole seconds).
			resp := fn.invoke(t, "GET", "/d.webp", q(o.URL+"/dead.png", "emoji=1"), nil)
			cc := resp.header("Cache-Control")
			if resp.StatusCode != http.StatusNotFound || cc != "max-age=300" && (i == 0 || cc != "max-age=299") {
				t.Fatalf("dead link: %d %v", resp.StatusCode, resp.Headers)
			}
		}
		if n := o.hitCount("/dead.png"); n != 1 {
			t.Errorf("dead link fetched %d times, want 1", n)
		}
	})
}

// AWS's own emulator takes the streamed responses as Lambda does (it
// collects them whole, so only small ones).
func TestLambdaUnderEmulator(t *testing.T) {
	s3env := s3FromEnv(t)
	bucket := s3env.createBucket(t)
	o := newLambdaOrigin(t, map[string][]byte{"/anim.gif": testmedia.GIF(64, 64, 2)})
	fn := startEmulator(t, s3env.env("s3://"+bucket+"/", s3env.endpoint))
	miss := fn.invoke(t, "GET", "/emoji.webp", q(o.URL+"/anim.gif", "emoji=1"), nil)
	if miss.StatusCode != 200 || miss.header("Content-Type") != "image/webp" || len(miss.body) == 0 {
		t.Fatalf("miss: %d %v", miss.StatusCode, miss.Headers)
	}
	checkCommon(t, miss)
	hit := fn.invoke(t, "GET", "/emoji.webp", q(o.URL+"/anim.gif", "emoji=1"), nil)
	if hit.StatusCode != http.StatusFound || hit.header("Location") == "" {
		t.Fatalf("hit: %d %v", hit.StatusCode, hit.Headers)
	}
	if _, b := fetchRedirect(t, hit.header("Location")); !bytes.Equal(b, miss.body) {
		t.Error("stored variant differs from the one answered")
	}
}

func TestLambdaWithS3Down(t *testing.T) {
	s3env := s3FromEnv(t)
	closed := "http://" + lambdatest.FreeAddr(t)
	o := newLambdaOrigin(t, map[string][]byte{"/e.png": testmedia.PNG(300, 300)})
	fn := startEmulator(t, s3env.env("s3://nowhere/", closed))
	start := time.Now()
	resp := fn.invoke(t, "GET", "/e.webp", q(o.URL+"/e.png", "emoji=1"), nil)
	if resp.StatusCode != 200 || resp.header("Content-Type") != "image/webp" || len(resp.body) == 0 {
		t.Fatalf("with S3 down: %d %v", resp.StatusCode, resp.Headers)
	}
	t.Logf("answered without S3 in %v", time.Since(start))
}

// trickle serves size bytes of MP4, its length declared: the first
// proxytest.Piece at once, then (once gate is let go) the rest over spread.
func trickle(t *testing.T, size int, spread time.Duration) (o *proxytest.Trickle, gate *proxytest.Hold) {
	o = proxytest.StartTrickle(t, testmedia.MP4(size), spread)
	return o, o.HoldAt(proxytest.Piece)
}

// The case: a 20 MB video whose origin trickles it. The viewer
// gets the first bytes while the origin is still sending (the origin
// holds the rest back until they have arrived), the whole body, and the
// next view is a redirect to the stored copy, which the first invocation
// finished before it ended.
func TestLambdaStreamsTrickledMiss(t *testing.T) {
	s3env := s3FromEnv(t)
	bucket := s3env.createBucket(t)
	o, gate := trickle(t, 20<<20, 2*time.Second)
	fn := startRuntime(t, s3env.env("s3://"+bucket+"/", s3env.endpoint))

	start := time.Now()
	s := fn.rt.Invoke(t, urlEvent("GET", "/v.mp4", q(o.URL+"/v.mp4", ""), nil))
	r := bufio.NewReader(s.Body)
	p, err := lambdatest.ReadPrelude(r)
	if err != nil {
		t.Fatal(err)
	}
	resp := reply{Prelude: p}
	if p.StatusCode != 200 || resp.header("Content-Type") != "video/mp4" || !strings.HasPrefix(resp.header("Cache-Control"), "max-age=") {
		t.Fatalf("prelude %+v", p)
	}
	first := make([]byte, proxytest.Piece)
	if _, err := io.ReadFull(r, first); err != nil || !bytes.Equal(first, o.Body[:proxytest.Piece]) {
		t.Fatalf("first %d bytes: %v", len(first), err)
	}
	firstByte := time.Since(start)
	gate.Let()
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	total := time.Since(start)
	resp.body, resp.trailer = append(first, rest...), s.Trailer()
	checkCommon(t, resp)
	if !bytes.Equal(resp.body, o.Body) {
		t.Fatalf("streamed %d bytes, equal=%v", len(resp.body), bytes.Equal(resp.body, o.Body))
	}
	_, lastSent := o.Times()
	t.Logf("20 MiB trickled over 2 s: first bytes after %v, whole body after %v (origin's last byte %v after the request)",
		firstByte.Round(time.Millisecond), total.Round(time.Millisecond), lastSent.Sub(start).Round(time.Millisecond))
	// The request's log line says when its first byte went out.
	if !strings.Contains(fn.rt.Logs(), `"ttfb_ms":`) {
		t.Errorf("no ttfb in the request log:\n%s", fn.rt.Logs())
	}

	hit := fn.invoke(t, "GET", "/v.mp4", q(o.URL+"/v.mp4", ""), nil)
	if hit.StatusCode != http.StatusFound {
		t.Fatalf("second view: %d %v", hit.StatusCode, hit.Headers)
	}
	if got, b := fetchRedirect(t, hit.header("Location")); got.StatusCode != 200 || !bytes.Equal(b, o.Body) {
		t.Fatalf("stored copy: %d, %d bytes", got.StatusCode, len(b))
	}
}

// An origin that breaks after the headers went out: Lambda must cut the
// viewer's response (error trailers), not end it as a clean short 200,
// and nothing partial is stored.
func TestLambdaAbortsBrokenMiss(t *testing.T) {
	s3env := s3FromEnv(t)
	bucket := s3env.createBucket(t)
	o := proxytest.StartTrickle(t, testmedia.MP4(10<<20), 0)
	o.CutAt = proxytest.Piece // the connection drops mid-body
	fn := startRuntime(t, s3env.env("s3://"+bucket+"/", s3env.endpoint))
	for i := range 2 {
		resp := fn.invoke(t, "GET", "/v.mp4", q(o.URL+"/v.mp4", ""), nil)
		if resp.StatusCode == http.StatusFound {
			t.Fatalf("view %d: redirected to a stored copy of a broken body", i)
		}
		if resp.StatusCode != 200 && i > 0 {
			continue // answered before any byte went out (failure memory)
		}
		if resp.StatusCode != 200 || len(resp.body) >= len(o.Body) || resp.trailer.Get("Lambda-Runtime-Function-Error-Type") != "ResponseAborted" {
			t.Errorf("view %d: %d, %d of %d bytes, trailers %v", i, resp.StatusCode, len(resp.body), len(o.Body), resp.trailer)
		}
	}
}

// Safari's first request for a video is "bytes=0-1", and it plays only
// after a 206; a HEAD asks for the length and type. On Lambda the
// invocation that starts the download answers either from the spool as
// soon as it has what it asks for, and its response ends there, while
// the origin still holds the rest back; the invocation itself ends only
// once the body is stored, so the next request (on this instance, once
// it is free) is a redirect to the stored copy.
func TestLambdaAnswersPartsOfAMiss(t *testing.T) {
	s3env := s3FromEnv(t)
	bucket := s3env.createBucket(t)
	fn := startRuntime(t, s3env.env("s3://"+bucket+"/", s3env.endpoint))
	for _, c := range []struct {
		name, method, rangeHeader string
		status                    int
		body                      func(all []byte) []byte
	}{
		{"bytes=0-1", "GET", "bytes=0-1", http.StatusPartialContent, func(all []byte) []byte { return all[:2] }},
		{"HEAD", "HEAD", "", http.StatusOK, func([]byte) []byte { return nil }},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, gate := trickle(t, 20<<20, time.Second)
			var headers map[string]string
			if c.rangeHeader != "" {
				headers = map[string]string{"range": c.rangeHeader}
			}
			start := time.Now()
			r := fn.invoke(t, c.method, "/v.mp4", q(o.URL+"/v.mp4", ""), headers)
			took := time.Since(start)
			// The origin is still held: the gate opens below.
			checkCommon(t, r)
			if r.StatusCode != c.status || !bytes.Equal(r.body, c.body(o.Body)) || r.header("Content-Type") != "video/mp4" {
				t.Fatalf("%d %v, %d bytes", r.StatusCode, r.Headers, len(r.body))
			}
			if c.rangeHeader != "" && r.header("Content-Range") != fmt.Sprintf("bytes 0-1/%d", len(o.Body)) {
				t.Errorf("Content-Range %q", r.header("Content-Range"))
			}
			if c.method == "HEAD" && r.header("Content-Length") != fmt.Sprint(len(o.Body)) {
				t.Errorf("Content-Length %q", r.header("Content-Length"))
			}
			t.Logf("%s of a 20 MiB miss whose origin holds all but its first 256 KiB: answered in %v", c.name, took.Round(time.Millisecond))
			gate.Let()
			next := fn.invoke(t, "GET", "/v.mp4", q(o.URL+"/v.mp4", ""), map[string]string{"range": "bytes=0-"})
			if next.StatusCode != http.StatusFound {
				t.Fatalf("the next request: %d %v", next.StatusCode, next.Headers)
			}
			if _, b := fetchRedirect(t, next.header("Location")); !bytes.Equal(b, o.Body) {
				t.Error("the stored copy differs from the origin's")
			}
		})
	}
}

// A HEAD that starts the download of a body its origin never finishes is
// answered at once; the invocation goes on for the download, and must end
// before the function's timeout (when Lambda would freeze or kill it): the
// download is ended shortly before, cleanly (logged, nothing stored, no
// multipart upload left), and the next invocation is served.
func TestLambdaDownloadEndsWithInvocation(t *testing.T) {
	s3env := s3FromEnv(t)
	bucket := s3env.createBucket(t)
	fn := startRuntime(t, s3env.env("s3://"+bucket+"/", s3env.endpoint))
	const timeout = 6 * time.Second
	fn.rt.SetTimeout(timeout)
	o := proxytest.StartTrickle(t, testmedia.MP4(20<<20), time.Second)
	o.HoldAt(2 * proxytest.Piece) // never let go
	start := time.Now()
	if r := fn.invoke(t, "HEAD", "/v.mp4", q(o.URL+"/v.mp4", ""), nil); r.StatusCode != http.StatusOK {
		t.Fatalf("HEAD: %d %v", r.StatusCode, r.Headers)
	}
	// The function asks for the next invocation once this one has ended.
	next := fn.invoke(t, "GET", "/", "", nil)
	ended := time.Since(start)
	t.Logf("the invocation that started the download ended after %v, its timeout %v", ended.Round(time.Millisecond), timeout)
	if next.StatusCode != http.StatusOK {
		t.Errorf("the next invocation: %d", next.StatusCode)
	}
	if ended >= timeout {
		t.Errorf("the invocation ended %v after it started, past its timeout (%v)", ended, timeout)
	}
	if !o.Held() {
		t.Error("the origin sent its whole body: the download was not ended")
	}
	if !strings.Contains(fn.rt.Logs(), `"msg":"download broke off"`) {
		t.Errorf("no line for the download that was ended:\n%s", fn.rt.Logs())
	}
	ups, err := s3env.client().ListMultipartUploads(t.Context(), &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err != nil || len(ups.Uploads) != 0 {
		t.Errorf("multipart uploads left: %v (%v)", ups, err)
	}
	objs, err := s3env.client().ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	if err != nil || len(objs.Contents) != 0 {
		t.Errorf("objects stored: %v (%v)", objs, err)
	}
}
