package main

// These tests run the real bootstrap binary under the AWS Lambda Runtime
// Interface Emulator, with a real S3-compatible server and a loopback
// origin, and post Function URL events to it as Lambda would.

import (
	"bytes"
	"context"
	"encoding/base64"
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

func (e s3Env) createBucket(t *testing.T) string {
	t.Helper()
	client := s3.New(s3.Options{
		Region:       e.region,
		BaseEndpoint: aws.String(e.endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(e.access, e.secret, ""),
	})
	bucket := fmt.Sprintf("lambda-test-%d", time.Now().UnixNano())
	if _, err := client.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	return bucket
}

// emulator is the proxy's bootstrap under the Lambda runtime emulator.
type emulator struct{ *lambdatest.Emulator }

func startEmulator(t *testing.T, env map[string]string) emulator {
	t.Helper()
	rie := standin(t, "MEDIA_PROXY_TEST_RIE")
	var vars []string
	for k, v := range env {
		vars = append(vars, k+"="+v)
	}
	return emulator{lambdatest.Start(t, rie, "", lambdatest.Build(t, "."), vars)}
}

// invoke posts a Function URL event and returns the decoded response and
// the size of the raw payload Lambda would have carried.
func (e emulator) invoke(t *testing.T, method, path, query string, headers map[string]string) (events.LambdaFunctionURLResponse, []byte, int) {
	t.Helper()
	if headers == nil {
		headers = map[string]string{}
	}
	ev := events.LambdaFunctionURLRequest{
		Version: "2.0", RawPath: path, RawQueryString: query, Headers: headers,
		RequestContext: events.LambdaFunctionURLRequestContext{
			RequestID:  fmt.Sprintf("test-%d", time.Now().UnixNano()),
			DomainName: "example.lambda-url.us-east-1.on.aws",
			HTTP:       events.LambdaFunctionURLRequestContextHTTPDescription{Method: method, Path: path, SourceIP: "192.0.2.10"},
		},
	}
	var out events.LambdaFunctionURLResponse
	raw := e.InvokeJSON(t, ev, &out)
	if len(raw) > maxPayload {
		t.Errorf("%s %s?%s: payload of %d bytes exceeds Lambda's limit", method, path, query, len(raw))
	}
	body := []byte(out.Body)
	if out.IsBase64Encoded {
		var err error
		if body, err = base64.StdEncoding.DecodeString(out.Body); err != nil {
			t.Fatal(err)
		}
	}
	return out, body, len(raw)
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
	emu := startEmulator(t, map[string]string{
		"MEDIA_PROXY_STORE":                    "s3://" + bucket + "/cache/",
		"MEDIA_PROXY_S3_PATH_STYLE":            "true",
		"MEDIA_PROXY_QUEUE":                    "none",
		"MEDIA_PROXY_ALLOWED_PRIVATE_NETWORKS": "127.0.0.0/8",
		"MEDIA_PROXY_ALLOWED_PORTS":            "1-65535", // origins on random loopback ports
		"AWS_ENDPOINT_URL_S3":                  s3env.endpoint,
		"AWS_ACCESS_KEY_ID":                    s3env.access,
		"AWS_SECRET_ACCESS_KEY":                s3env.secret,
		"AWS_REGION":                           s3env.region,
	})

	t.Run("miss then hit", func(t *testing.T) {
		first, body, _ := emu.invoke(t, "GET", "/emoji.webp", q(o.URL+"/anim.gif", "emoji=1"), nil)
		if first.StatusCode != 200 || first.Headers["content-type"] != "image/webp" || !first.IsBase64Encoded {
			t.Fatalf("miss: %d %v", first.StatusCode, first.Headers)
		}
		im, err := vips.Header(body, true)
		if err != nil {
			t.Fatal(err)
		}
		if im.PageHeight() != 128 || im.Pages() != 6 {
			t.Errorf("inline emoji is %dx%d x %d", im.Width(), im.PageHeight(), im.Pages())
		}
		im.Close()

		second, _, _ := emu.invoke(t, "GET", "/emoji.webp", q(o.URL+"/anim.gif", "emoji=1"), nil)
		loc := second.Headers["location"]
		if second.StatusCode != http.StatusFound || !strings.Contains(loc, "X-Amz-Signature=") {
			t.Fatalf("hit: %d %v", second.StatusCode, second.Headers)
		}
		if cc := second.Headers["cache-control"]; !strings.HasPrefix(cc, "max-age=") || cc == "max-age=0" {
			t.Errorf("redirect Cache-Control %q", cc)
		}
		resp, stored := fetchRedirect(t, loc)
		if resp.StatusCode != 200 || !bytes.Equal(stored, body) {
			t.Fatalf("presigned URL: %d, %d bytes, equal=%v", resp.StatusCode, len(stored), bytes.Equal(stored, body))
		}
		for _, h := range []string{"Content-Type", "Content-Disposition", "Cache-Control"} {
			if got, want := resp.Header.Get(h), first.Headers[strings.ToLower(h)]; got != want {
				t.Errorf("S3 %s = %q, proxy said %q", h, got, want)
			}
		}
		if n := o.hitCount("/anim.gif"); n != 1 {
			t.Errorf("origin fetched %d times", n)
		}
	})

	t.Run("20 MB video by redirect", func(t *testing.T) {
		resp, _, size := emu.invoke(t, "GET", "/video.mp4", q(o.URL+"/video.mp4", ""), nil)
		if resp.StatusCode != http.StatusFound || size > 4096 {
			t.Fatalf("video: %d, payload %d bytes", resp.StatusCode, size)
		}
		got, b := fetchRedirect(t, resp.Headers["location"])
		if got.StatusCode != 200 || got.Header.Get("Content-Type") != "video/mp4" || !bytes.Equal(b, video) {
			t.Fatalf("video from S3: %d %s, %d bytes, equal=%v", got.StatusCode, got.Header.Get("Content-Type"), len(b), bytes.Equal(b, video))
		}
	})

	t.Run("payload limit", func(t *testing.T) {
		resp, body, _ := emu.invoke(t, "GET", "/u.png", q(o.URL+"/under.png", ""), nil)
		if resp.StatusCode != 200 || !bytes.Equal(body, under) {
			t.Errorf("just under the limit: %d, %d bytes", resp.StatusCode, len(body))
		}
		resp, _, _ = emu.invoke(t, "GET", "/o.png", q(o.URL+"/over.png", ""), nil)
		if resp.StatusCode != http.StatusFound {
			t.Fatalf("just over the limit: %d", resp.StatusCode)
		}
		if _, b := fetchRedirect(t, resp.Headers["location"]); !bytes.Equal(b, over) {
			t.Error("redirected body differs")
		}
	})

	t.Run("range on an inline body", func(t *testing.T) {
		resp, body, _ := emu.invoke(t, "GET", "/r.png", q(o.URL+"/range.png", ""), map[string]string{"range": "bytes=0-9"})
		if resp.StatusCode != http.StatusPartialContent || len(body) != 10 || resp.Headers["content-range"] != "bytes 0-9/100000" {
			t.Errorf("range: %d, %d bytes, Content-Range %q", resp.StatusCode, len(body), resp.Headers["content-range"])
		}
	})

	t.Run("HEAD and OPTIONS", func(t *testing.T) {
		resp, body, _ := emu.invoke(t, "HEAD", "/u.png", q(o.URL+"/under.png", ""), nil)
		if len(body) != 0 || resp.StatusCode >= 400 {
			t.Errorf("HEAD: %d with %d bytes", resp.StatusCode, len(body))
		}
		resp, _, _ = emu.invoke(t, "OPTIONS", "/e.webp", q(o.URL+"/anim.gif", "emoji=1"), map[string]string{"origin": "https://misskey.example", "access-control-request-method": "GET"})
		if resp.StatusCode != http.StatusNoContent || resp.Headers["access-control-allow-origin"] != "*" || resp.Headers["access-control-allow-methods"] == "" {
			t.Errorf("OPTIONS: %d %v", resp.StatusCode, resp.Headers)
		}
		resp, body, _ = emu.invoke(t, "GET", "/", "", nil)
		if resp.StatusCode != 200 || len(body) == 0 {
			t.Errorf("health: %d %q", resp.StatusCode, body)
		}
	})

	t.Run("failure memory", func(t *testing.T) {
		for range 3 {
			resp, _, _ := emu.invoke(t, "GET", "/d.webp", q(o.URL+"/dead.png", "emoji=1"), nil)
			if resp.StatusCode != http.StatusNotFound || resp.Headers["cache-control"] != "max-age=300" {
				t.Fatalf("dead link: %d %v", resp.StatusCode, resp.Headers)
			}
		}
		if n := o.hitCount("/dead.png"); n != 1 {
			t.Errorf("dead link fetched %d times, want 1", n)
		}
	})
}

func TestLambdaWithS3Down(t *testing.T) {
	s3env := s3FromEnv(t)
	closed := "http://" + lambdatest.FreeAddr(t)
	o := newLambdaOrigin(t, map[string][]byte{"/e.png": testmedia.PNG(300, 300)})
	emu := startEmulator(t, map[string]string{
		"MEDIA_PROXY_STORE":                    "s3://nowhere/",
		"MEDIA_PROXY_S3_PATH_STYLE":            "true",
		"MEDIA_PROXY_QUEUE":                    "none",
		"MEDIA_PROXY_ALLOWED_PRIVATE_NETWORKS": "127.0.0.0/8",
		"MEDIA_PROXY_ALLOWED_PORTS":            "1-65535", // origins on random loopback ports
		"AWS_ENDPOINT_URL_S3":                  closed,
		"AWS_ACCESS_KEY_ID":                    s3env.access,
		"AWS_SECRET_ACCESS_KEY":                s3env.secret,
		"AWS_REGION":                           s3env.region,
	})
	start := time.Now()
	resp, body, _ := emu.invoke(t, "GET", "/e.webp", q(o.URL+"/e.png", "emoji=1"), nil)
	if resp.StatusCode != 200 || resp.Headers["content-type"] != "image/webp" || len(body) == 0 {
		t.Fatalf("with S3 down: %d %v", resp.StatusCode, resp.Headers)
	}
	t.Logf("answered without S3 in %v", time.Since(start))
}
