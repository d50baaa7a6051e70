package functionurl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda/messages"

	"github.com/misskey-lambda/media-proxy/shared/lambdatest"
)

func event(method, path, query string) *events.LambdaFunctionURLRequest {
	return &events.LambdaFunctionURLRequest{
		Version:        "2.0",
		RawPath:        path,
		RawQueryString: query,
		Headers:        map[string]string{"accept": "image/webp", "if-none-match": `"x"`},
		Cookies:        []string{"a=1", "b=2"},
		RequestContext: events.LambdaFunctionURLRequestContext{
			RequestID:  "req-1",
			DomainName: "abc.lambda-url.us-east-1.on.aws",
			HTTP:       events.LambdaFunctionURLRequestContextHTTPDescription{Method: method, Path: path, SourceIP: "192.0.2.1"},
		},
	}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// common stands for the proxy's headers on every response.
var common = http.Header{
	"Content-Security-Policy":     {"default-src 'none'"},
	"Access-Control-Allow-Origin": {"*"},
	"X-Content-Type-Options":      {"nosniff"},
}

// invoke runs h for ev and reads the response as the runtime sends it:
// prelude, 8 NUL bytes, body. err is what ended the body (nil for a
// clean end).
func invoke(t *testing.T, h http.Handler, ev *events.LambdaFunctionURLRequest) (lambdatest.Prelude, []byte, error) {
	t.Helper()
	resp, err := Handler(h, quiet, common)(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.ContentType(); ct != "application/vnd.awslambda.http-integration-response" {
		t.Errorf("content type %q", ct)
	}
	r := bufio.NewReader(resp)
	p, err := lambdatest.ReadPrelude(r)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(r)
	resp.Close()
	return p, body, err
}

func TestRequestAndBinaryResponse(t *testing.T) {
	payload := []byte{0x89, 'P', 'N', 'G', 0, 0, 0, 0, 0, 0, 0, 0, 0xff}
	var seen *http.Request
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Cache-Control", "max-age=300")
		w.Header().Add("Vary", "Accept")
		w.Header().Add("Vary", "Origin")
		w.Header().Add("Set-Cookie", "c=1")
		w.Write(payload[:4])
		w.Write(payload[4:])
	})
	p, body, err := invoke(t, h, event("GET", "/e.webp", "url=https%3A%2F%2Fx%2Fa.png&emoji=1"))
	if err != nil {
		t.Fatal(err)
	}
	if seen.Method != "GET" || seen.URL.Path != "/e.webp" || seen.URL.Query().Get("url") != "https://x/a.png" || !seen.URL.Query().Has("emoji") {
		t.Errorf("request %s %s", seen.Method, seen.URL)
	}
	if seen.Header.Get("If-None-Match") != `"x"` || seen.Header.Get("X-Amzn-Request-Id") != "req-1" || seen.RemoteAddr != "192.0.2.1" || seen.Header.Get("Cookie") != "a=1; b=2" {
		t.Errorf("headers not carried: %v %s", seen.Header, seen.RemoteAddr)
	}
	if p.StatusCode != 200 || p.Headers["content-type"] != "image/png" || p.Headers["cache-control"] != "max-age=300" || p.Headers["vary"] != "Accept,Origin" {
		t.Errorf("prelude %+v", p)
	}
	if len(p.Cookies) != 1 || p.Cookies[0] != "c=1" {
		t.Errorf("cookies %v", p.Cookies)
	}
	if !bytes.Equal(body, payload) {
		t.Errorf("body %x", body)
	}
}

func TestStatusAndHead(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Length", "3")
		w.WriteHeader(http.StatusTeapot)
		w.WriteHeader(http.StatusOK) // ignored, as net/http does
		if r.Method != http.MethodHead {
			w.Write([]byte("ok\n"))
		}
	})
	p, body, _ := invoke(t, h, event("GET", "/", ""))
	if p.StatusCode != http.StatusTeapot || string(body) != "ok\n" {
		t.Errorf("GET: %+v %q", p, body)
	}
	p, body, _ = invoke(t, h, event("HEAD", "/", ""))
	if len(body) != 0 || p.Headers["content-length"] != "3" {
		t.Errorf("HEAD: %+v %q", p, body)
	}
	// A handler that writes nothing answers 200 with no body.
	p, body, err := invoke(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), event("GET", "/", ""))
	if p.StatusCode != 200 || len(body) != 0 || err != nil {
		t.Errorf("empty: %+v %q %v", p, body, err)
	}
}

// The prelude and each write reach the runtime while the handler is
// still running.
func TestBodyStreamsAsWritten(t *testing.T) {
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "video/mp4")
		w.Write([]byte("first"))
		<-release
		w.Write([]byte("second"))
	})
	resp, err := Handler(h, quiet, common)(context.Background(), event("GET", "/v.mp4", "url=x"))
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(resp)
	p, err := lambdatest.ReadPrelude(r)
	if err != nil || p.StatusCode != 200 || p.Headers["content-type"] != "video/mp4" {
		t.Fatalf("prelude %+v, %v", p, err)
	}
	first := make([]byte, 5)
	if _, err := io.ReadFull(r, first); err != nil || string(first) != "first" {
		t.Fatalf("first write %q, %v", first, err)
	}
	close(release)
	rest, err := io.ReadAll(r)
	if err != nil || string(rest) != "second" {
		t.Errorf("rest %q, %v", rest, err)
	}
	resp.Close()
}

// A handler that gives up after its headers (the proxy does, with
// http.ErrAbortHandler, when an origin breaks mid-body) ends the body
// with an error, which the runtime turns into error trailers, not with a
// clean end that would pass a short body for a whole one.
func TestAbortAfterHeaders(t *testing.T) {
	for _, p := range []any{http.ErrAbortHandler, "bug"} {
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "video/mp4")
			w.Header().Set("Content-Length", "100")
			w.Write([]byte("partial"))
			panic(p)
		})
		pre, body, err := invoke(t, h, event("GET", "/v.mp4", "url=x"))
		var ie messages.InvokeResponse_Error
		if pre.StatusCode != 200 || string(body) != "partial" || !errors.As(err, &ie) || ie.Type != "ResponseAborted" {
			t.Errorf("panic(%v): %d %q, err %v", p, pre.StatusCode, body, err)
		}
	}
}

// A panic before anything was sent is answered 502, with the common
// headers and none of the handler's.
func TestPanicBeforeHeaders(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "video/mp4")
		w.Header().Set("Cache-Control", "max-age=31536000")
		panic(http.ErrAbortHandler)
	})
	p, body, err := invoke(t, h, event("GET", "/v.mp4", "url=x"))
	if p.StatusCode != http.StatusBadGateway || string(body) != "Bad Gateway\n" || err != nil {
		t.Fatalf("%d %q %v", p.StatusCode, body, err)
	}
	checkCommon(t, p)
}

// checkCommon: the adapter's own errors carry the common headers too, and
// are not cached.
func checkCommon(t *testing.T, p lambdatest.Prelude) {
	t.Helper()
	for k, v := range common {
		if got := p.Headers[strings.ToLower(k)]; got != v[0] {
			t.Errorf("%s = %q, want %q", k, got, v[0])
		}
	}
	if cc := p.Headers["cache-control"]; cc != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", cc)
	}
	if ct := p.Headers["content-type"]; ct != "text/plain; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
}

func TestBase64RequestBody(t *testing.T) {
	var got []byte
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.ReadAll(r.Body)
	})
	ev := event("POST", "/", "")
	ev.Body = base64.StdEncoding.EncodeToString([]byte{1, 2, 3})
	ev.IsBase64Encoded = true
	invoke(t, h, ev)
	if !bytes.Equal(got, []byte{1, 2, 3}) {
		t.Errorf("body %v", got)
	}
	ev.Body = "%%%"
	p, _, _ := invoke(t, h, ev)
	if p.StatusCode != http.StatusBadRequest {
		t.Errorf("bad base64 answered %d", p.StatusCode)
	}
	checkCommon(t, p)
}

// When the runtime stops reading (the viewer is gone), the handler's
// writes fail and Close returns only once the handler has: nothing of it
// may run after the invocation.
// backgroundHandler answers at once and goes on working until released.
type backgroundHandler struct {
	release chan struct{}
	ended   atomic.Bool
}

func (b *backgroundHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Write([]byte("answered"))
}

func (b *backgroundHandler) Wait(ctx context.Context) error {
	<-b.release
	b.ended.Store(true)
	return nil
}

// The viewer's response ends when the handler returns; the invocation
// (Close) only once the handler's background work has ended.
func TestCloseWaitsForBackgroundWork(t *testing.T) {
	h := &backgroundHandler{release: make(chan struct{})}
	resp, err := Handler(h, quiet, common)(context.Background(), event("GET", "/v.mp4", "url=x"))
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(resp)
	if _, err := lambdatest.ReadPrelude(r); err != nil {
		t.Fatal(err)
	}
	// The whole body and its end, while the work goes on.
	if b, err := io.ReadAll(r); err != nil || string(b) != "answered" {
		t.Fatalf("body %q, %v", b, err)
	}
	closed := make(chan struct{})
	go func() {
		resp.Close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Fatal("Close returned while the handler's work went on")
	case <-time.After(20 * time.Millisecond):
	}
	close(h.release)
	<-closed
	if !h.ended.Load() {
		t.Error("Close returned before the work ended")
	}
}

func TestCloseWaitsForHandler(t *testing.T) {
	var finished atomic.Bool
	writeFailed := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("x"))
		_, err := w.Write([]byte("never read"))
		writeFailed <- err
		time.Sleep(50 * time.Millisecond) // a store write finishing
		finished.Store(true)
	})
	resp, err := Handler(h, quiet, common)(context.Background(), event("GET", "/v.mp4", "url=x"))
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(resp)
	if _, err := lambdatest.ReadPrelude(r); err != nil {
		t.Fatal(err)
	}
	if b, _ := r.ReadByte(); b != 'x' {
		t.Fatalf("first byte %q", b)
	}
	resp.Close()
	if !finished.Load() {
		t.Error("Close returned while the handler was still running")
	}
	if err := <-writeFailed; err == nil {
		t.Error("a write after Close succeeded")
	}
}
