// Package functionurl serves an http.Handler from a Lambda Function URL in
// RESPONSE_STREAM invoke mode: the status and headers leave as soon as the
// handler commits them and each body write reaches the runtime API as it
// happens, so a viewer gets the first bytes of a large miss while the
// proxy is still fetching (and storing) it.
//
// It is built on aws-lambda-go's streaming response type rather than its
// lambdaurl package, which runs the handler in a goroutine without
// recovering: the proxy's panic(http.ErrAbortHandler) after a broken
// origin would kill the process, and a recovered one would end as a clean
// short 200. Here a panic after the headers aborts the stream (the
// runtime sends Lambda-Runtime-Function-Error-* trailers and the viewer
// sees a cut response), and one before them is a 502.
//
// aws-lambda-go posts the response chunked, with trailers, but without a
// Lambda-Runtime-Function-Response-Mode header: Lambda streams by the
// invocation's mode, the header being optional (so in AWS's runtime
// emulator source, internal/lambda/core/directinvoke).
package functionurl

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda/messages"
)

// MaxBody is the largest body the proxy holds in memory and answers
// inline on Lambda: well inside the first 6 MB of a streamed response,
// which Lambda sends at full speed (past them it caps the rate at 2 MB/s).
const MaxBody = 4_400_000

// ErrAborted ends a stream whose handler failed after its headers were
// sent; the runtime sends its Type and Message as the error trailers
// (Lambda-Runtime-Function-Error-Type: ResponseAborted).
var ErrAborted error = messages.InvokeResponse_Error{Type: "ResponseAborted", Message: "response aborted after its headers were sent"}

// Handler adapts h to streaming Function URL invocations (start it with
// lambda.Start). The adapter's own error responses carry common, the
// headers h puts on every response (CSP, CORS, nosniff).
//
// The viewer's response ends when h returns; the invocation ends later,
// when the runtime closes the returned body (after posting the whole
// response, before it asks for the next invocation, until which the
// process is not frozen). Close waits for h to return and, if h has a
// Wait method, for the work h runs past its responses (a download's store
// copy), so that work completes without holding the viewer's response
// open.
func Handler(h http.Handler, log *slog.Logger, common http.Header) func(context.Context, *events.LambdaFunctionURLRequest) (*events.LambdaFunctionURLStreamingResponse, error) {
	return func(ctx context.Context, ev *events.LambdaFunctionURLRequest) (*events.LambdaFunctionURLStreamingResponse, error) {
		req, err := newRequest(ctx, ev)
		if err != nil {
			log.Warn("bad Function URL event", "err", err)
			return errorResponse(http.StatusBadRequest, common), nil
		}
		pr, pw := io.Pipe()
		w := &responseWriter{header: http.Header{}, body: pw, committed: make(chan struct{})}
		done := make(chan struct{})
		go func() {
			defer close(done)
			defer func() {
				p := recover()
				if p == nil {
					w.commit(http.StatusOK)
					pw.Close()
					return
				}
				if p != http.ErrAbortHandler {
					log.Error("handler panicked", "panic", fmt.Sprint(p), "path", ev.RawPath)
				}
				if w.fail(common) {
					return
				}
				// Headers are out: only an error trailer tells the
				// viewer (and a CDN) that the body is short.
				pw.CloseWithError(ErrAborted)
			}()
			h.ServeHTTP(w, req)
		}()
		<-w.committed
		b := &body{r: pr, done: done}
		if bg, ok := h.(background); ok {
			b.wait = func() { bg.Wait(ctx) }
		}
		return &events.LambdaFunctionURLStreamingResponse{
			StatusCode: w.status,
			Headers:    w.headers,
			Cookies:    w.cookies,
			Body:       b,
		}, nil
	}
}

// background is a handler whose work may outlast its responses.
type background interface {
	// Wait returns once the work in progress has ended, or ctx has.
	Wait(ctx context.Context) error
}

func newRequest(ctx context.Context, ev *events.LambdaFunctionURLRequest) (*http.Request, error) {
	body := []byte(ev.Body)
	if ev.IsBase64Encoded {
		var err error
		if body, err = base64.StdEncoding.DecodeString(ev.Body); err != nil {
			return nil, err
		}
	}
	u := "https://" + ev.RequestContext.DomainName + ev.RawPath
	if ev.RawQueryString != "" {
		u += "?" + ev.RawQueryString
	}
	method := ev.RequestContext.HTTP.Method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.RemoteAddr = ev.RequestContext.HTTP.SourceIP
	for k, v := range ev.Headers {
		req.Header.Set(k, v)
	}
	if len(ev.Cookies) > 0 {
		req.Header.Set("Cookie", strings.Join(ev.Cookies, "; "))
	}
	// The request's own id, never one a viewer sent in its place.
	req.Header.Del("X-Amzn-Request-Id")
	if ev.RequestContext.RequestID != "" {
		req.Header.Set("X-Amzn-Request-Id", ev.RequestContext.RequestID)
	}
	return req, nil
}

// responseWriter hands the status and headers over once, at the first
// WriteHeader, Write or Flush, and pipes the body to the runtime API. A
// Write returns once the runtime's client has taken the bytes, so there
// is nothing to flush.
type responseWriter struct {
	header http.Header
	body   *io.PipeWriter

	once      sync.Once
	committed chan struct{} // closed once status, headers and cookies are set
	status    int
	headers   map[string]string
	cookies   []string
}

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(status int) {
	if status >= 100 && status < 200 {
		return // informational: nothing to forward
	}
	w.commit(status)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	w.commit(http.StatusOK)
	return w.body.Write(p)
}

// Flush commits the headers, as net/http's does; the body needs none.
func (w *responseWriter) Flush() { w.commit(http.StatusOK) }

func (w *responseWriter) commit(status int) {
	w.once.Do(func() {
		w.status = status
		w.headers, w.cookies = flatten(w.header)
		close(w.committed)
	})
}

// fail answers 502 with the common headers (and ends the body) if
// nothing was committed yet, and reports whether it did.
func (w *responseWriter) fail(common http.Header) bool {
	answered := false
	w.once.Do(func() {
		e := errorResponse(http.StatusBadGateway, common)
		w.status, w.headers = e.StatusCode, e.Headers
		go func() {
			io.Copy(w.body, e.Body)
			w.body.Close()
		}()
		answered = true
		close(w.committed)
	})
	return answered
}

// flatten turns hd into the prelude's single-valued, lower-case headers
// and its cookies.
func flatten(hd http.Header) (map[string]string, []string) {
	out := make(map[string]string, len(hd))
	var cookies []string
	for k, v := range hd {
		if k == "Set-Cookie" {
			cookies = v
			continue
		}
		out[strings.ToLower(k)] = strings.Join(v, ",")
	}
	return out, cookies
}

// body is what the runtime reads after the prelude. Close, which the
// runtime calls once the invocation's response is over (or has failed,
// for a viewer gone), stops the handler's writes and waits for it to
// return and for its background work, so nothing of it runs after the
// invocation.
type body struct {
	r    *io.PipeReader
	done <-chan struct{}
	wait func() // nil: no background work
}

func (b *body) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *body) Close() error {
	b.r.CloseWithError(errors.New("the runtime stopped reading the response"))
	<-b.done
	if b.wait != nil {
		b.wait()
	}
	return nil
}

// errorResponse is the adapter's own error: a short status text with the
// common headers, never cached (neither fault says anything lasting about
// the URL).
func errorResponse(status int, common http.Header) *events.LambdaFunctionURLStreamingResponse {
	text := http.StatusText(status) + "\n"
	hd, _ := flatten(common)
	hd["content-type"] = "text/plain; charset=utf-8"
	hd["content-length"] = strconv.Itoa(len(text))
	hd["cache-control"] = "no-store"
	return &events.LambdaFunctionURLStreamingResponse{StatusCode: status, Headers: hd, Body: strings.NewReader(text)}
}
