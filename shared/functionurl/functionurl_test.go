package functionurl

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"
)

func event(method, path, query string) events.LambdaFunctionURLRequest {
	return events.LambdaFunctionURLRequest{
		Version:        "2.0",
		RawPath:        path,
		RawQueryString: query,
		Headers:        map[string]string{"accept": "image/webp", "if-none-match": `"x"`},
		RequestContext: events.LambdaFunctionURLRequestContext{
			RequestID:  "req-1",
			DomainName: "abc.lambda-url.us-east-1.on.aws",
			HTTP:       events.LambdaFunctionURLRequestContextHTTPDescription{Method: method, Path: path, SourceIP: "192.0.2.1"},
		},
	}
}

func TestRequestAndBinaryResponse(t *testing.T) {
	payload := []byte{0x89, 'P', 'N', 'G', 0, 0xff}
	var seen *http.Request
	h := Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r
		w.Header().Set("Content-Type", "image/png")
		w.Header().Add("Set-Cookie", "a=1")
		w.Write(payload)
	}), slog.New(slog.NewTextHandler(io.Discard, nil)), common)
	resp, err := h(context.Background(), event("GET", "/e.webp", "url=https%3A%2F%2Fx%2Fa.png&emoji=1"))
	if err != nil {
		t.Fatal(err)
	}
	if seen.Method != "GET" || seen.URL.Path != "/e.webp" || seen.URL.Query().Get("url") != "https://x/a.png" || seen.URL.Query().Has("emoji") != true {
		t.Errorf("request %s %s", seen.Method, seen.URL)
	}
	if seen.Header.Get("If-None-Match") != `"x"` || seen.Header.Get("X-Amzn-Request-Id") != "req-1" || seen.RemoteAddr != "192.0.2.1" {
		t.Errorf("headers not carried: %v %s", seen.Header, seen.RemoteAddr)
	}
	if resp.StatusCode != 200 || !resp.IsBase64Encoded || resp.Headers["content-type"] != "image/png" || len(resp.Cookies) != 1 {
		t.Fatalf("response %+v", resp)
	}
	got, _ := base64.StdEncoding.DecodeString(resp.Body)
	if !bytes.Equal(got, payload) {
		t.Errorf("body %x", got)
	}
}

func TestTextAndHead(t *testing.T) {
	h := Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Length", "3")
		w.WriteHeader(http.StatusTeapot)
		if r.Method != http.MethodHead {
			w.Write([]byte("ok\n"))
		}
	}), slog.New(slog.NewTextHandler(io.Discard, nil)), common)
	resp, _ := h(context.Background(), event("GET", "/", ""))
	if resp.StatusCode != http.StatusTeapot || resp.IsBase64Encoded || resp.Body != "ok\n" {
		t.Errorf("GET: %+v", resp)
	}
	resp, _ = h(context.Background(), event("HEAD", "/", ""))
	if resp.Body != "" || resp.Headers["content-length"] != "3" {
		t.Errorf("HEAD: %+v", resp)
	}
}

func TestOversizedBodyNeverLeaves(t *testing.T) {
	h := Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "video/mp4")
		w.Write(make([]byte, MaxBody+1))
	}), slog.New(slog.NewTextHandler(io.Discard, nil)), common)
	resp, _ := h(context.Background(), event("GET", "/v.mp4", "url=x"))
	if resp.StatusCode != http.StatusBadGateway || len(resp.Body) > 100 {
		t.Errorf("oversized body answered %d with %d bytes", resp.StatusCode, len(resp.Body))
	}
	checkCommon(t, resp)
}

// common stands for the proxy's headers on every response.
var common = http.Header{
	"Content-Security-Policy":     {"default-src 'none'"},
	"Access-Control-Allow-Origin": {"*"},
	"X-Content-Type-Options":      {"nosniff"},
}

// checkCommon: the adapter's own errors carry the common headers too, and
// are not cached.
func checkCommon(t *testing.T, resp events.LambdaFunctionURLResponse) {
	t.Helper()
	for k, v := range common {
		if got := resp.Headers[strings.ToLower(k)]; got != v[0] {
			t.Errorf("%s = %q, want %q", k, got, v[0])
		}
	}
	if cc := resp.Headers["cache-control"]; cc != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", cc)
	}
}

func TestBase64RequestBody(t *testing.T) {
	var got []byte
	h := Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.ReadAll(r.Body)
	}), slog.New(slog.NewTextHandler(io.Discard, nil)), common)
	ev := event("POST", "/", "")
	ev.Body = base64.StdEncoding.EncodeToString([]byte{1, 2, 3})
	ev.IsBase64Encoded = true
	h(context.Background(), ev)
	if !bytes.Equal(got, []byte{1, 2, 3}) {
		t.Errorf("body %v", got)
	}
	ev.Body = "%%%"
	resp, _ := h(context.Background(), ev)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad base64 answered %d", resp.StatusCode)
	}
	checkCommon(t, resp)
}
