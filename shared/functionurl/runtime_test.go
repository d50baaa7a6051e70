package functionurl

// These tests run a small function built on Handler (testdata/fn) with
// aws-lambda-go's real runtime client against lambdatest's runtime API
// stand-in, which, unlike the emulator, passes each chunk on as it comes
// and keeps the trailers.

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/misskey-lambda/media-proxy/shared/lambdatest"
)

func urlEvent(path, query string) events.LambdaFunctionURLRequest {
	return events.LambdaFunctionURLRequest{
		Version: "2.0", RawPath: path, RawQueryString: query, Headers: map[string]string{},
		RequestContext: events.LambdaFunctionURLRequestContext{
			RequestID: "rt-test", DomainName: "example.lambda-url.us-east-1.on.aws",
			HTTP: events.LambdaFunctionURLRequestContextHTTPDescription{Method: "GET", Path: path, SourceIP: "192.0.2.1"},
		},
	}
}

func TestThroughRuntimeAPI(t *testing.T) {
	rt := lambdatest.StartRuntime(t, lambdatest.Build(t, "testdata/fn"), nil)

	const size, head = 2 << 20, 64 << 10
	payload := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	gate := make(chan struct{})
	var done atomic.Bool
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/trickle", "/broken":
			w.Header().Set("Content-Length", fmt.Sprint(size))
			w.Write(payload[:head])
			w.(http.Flusher).Flush()
			if r.URL.Path == "/broken" {
				panic(http.ErrAbortHandler) // the connection drops mid-body
			}
			<-gate
			w.Write(payload[head:])
		case "/done":
			done.Store(true)
		}
	}))
	defer origin.Close()
	relay := func(path string) string {
		return "from=" + url.QueryEscape(origin.URL+path) + "&done=" + url.QueryEscape(origin.URL+"/done")
	}

	t.Run("streams as the origin sends", func(t *testing.T) {
		s := rt.Invoke(t, urlEvent("/relay", relay("/trickle")))
		if s.Failed || s.ContentType != "application/vnd.awslambda.http-integration-response" {
			t.Fatalf("posted as %q (failed %v)", s.ContentType, s.Failed)
		}
		r := bufio.NewReader(s.Body)
		p, err := lambdatest.ReadPrelude(r)
		if err != nil {
			t.Fatal(err)
		}
		if p.StatusCode != 200 || p.Headers["content-type"] != "video/mp4" || p.Headers["content-length"] != fmt.Sprint(size) ||
			p.Headers["cache-control"] != "max-age=31536000, immutable" || p.Headers["x-content-type-options"] != "nosniff" || p.Headers["access-control-allow-origin"] != "*" {
			t.Errorf("prelude %+v", p)
		}
		// The origin holds the rest back until the first bytes are here.
		first := make([]byte, head)
		if _, err := io.ReadFull(r, first); err != nil || !bytes.Equal(first, payload[:head]) {
			t.Fatalf("first %d bytes: %v", head, err)
		}
		close(gate)
		rest, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(rest, payload[head:]) {
			t.Fatalf("rest: %d bytes, %v", len(rest), err)
		}
		if !done.Load() {
			t.Error("the response ended before the handler's work after its last byte")
		}
		if tr := s.Trailer(); tr.Get("Lambda-Runtime-Function-Error-Type") != "" {
			t.Errorf("clean response with error trailers %v", tr)
		}
	})

	t.Run("aborted when the origin breaks", func(t *testing.T) {
		s := rt.Invoke(t, urlEvent("/relay", relay("/broken")))
		r := bufio.NewReader(s.Body)
		p, err := lambdatest.ReadPrelude(r)
		if err != nil || p.StatusCode != 200 {
			t.Fatalf("prelude %+v, %v", p, err)
		}
		body, _ := io.ReadAll(r)
		if len(body) >= size {
			t.Errorf("%d bytes of a broken %d-byte body", len(body), size)
		}
		tr := s.Trailer()
		msg, _ := base64.StdEncoding.DecodeString(tr.Get("Lambda-Runtime-Function-Error-Body"))
		if tr.Get("Lambda-Runtime-Function-Error-Type") != "ResponseAborted" || !strings.Contains(string(msg), "aborted") {
			t.Errorf("trailers %v (body %q)", tr, msg)
		}
	})

	// Past the buffered mode's 6 MB, and the process survived the abort.
	t.Run("over 6 MB", func(t *testing.T) {
		s := rt.Invoke(t, urlEvent("/big", ""))
		r := bufio.NewReader(s.Body)
		if p, err := lambdatest.ReadPrelude(r); err != nil || p.StatusCode != 200 {
			t.Fatalf("prelude %+v, %v", p, err)
		}
		body, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(body, bytes.Repeat([]byte{0xa5}, 9<<20)) {
			t.Errorf("%d bytes, %v", len(body), err)
		}
	})
}
