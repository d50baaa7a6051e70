// Package functionurl serves an http.Handler from a Lambda Function URL in
// BUFFERED invoke mode. aws-lambda-go's lambdaurl only supports
// RESPONSE_STREAM; buffered mode needs the whole response in one
// LambdaFunctionURLResponse, which Lambda caps at 6 MB of JSON.
package functionurl

import (
	"bytes"
	"context"
	"encoding/base64"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/aws/aws-lambda-go/events"
)

// MaxBody is the largest binary body answered inline: base64 makes it
// 4/3 larger, and 4.4 MB becomes about 5.9 MB, just under Lambda's 6 MB
// response payload limit with room for headers.
const MaxBody = 4_400_000

// Handler adapts h to buffered Function URL events. A response whose body
// would exceed MaxBody is replaced by a 502, since Lambda would fail it
// anyway; the proxy routes such bodies through S3 before it gets here.
// The adapter's own error responses carry common, the headers h puts on
// every response (CSP, CORS, nosniff).
func Handler(h http.Handler, log *slog.Logger, common http.Header) func(context.Context, events.LambdaFunctionURLRequest) (events.LambdaFunctionURLResponse, error) {
	textResponse := func(status int) events.LambdaFunctionURLResponse {
		return errorResponse(status, common)
	}
	return func(ctx context.Context, ev events.LambdaFunctionURLRequest) (events.LambdaFunctionURLResponse, error) {
		req, err := newRequest(ctx, ev)
		if err != nil {
			log.Warn("bad Function URL event", "err", err)
			return textResponse(http.StatusBadRequest), nil
		}
		w := &responseWriter{header: http.Header{}}
		h.ServeHTTP(w, req)
		if w.status == 0 {
			w.status = http.StatusOK
		}
		if w.body.Len() > MaxBody {
			log.Error("response too large for a buffered Function URL", "bytes", w.body.Len(), "path", ev.RawPath)
			return textResponse(http.StatusBadGateway), nil
		}
		return w.response(), nil
	}
}

func newRequest(ctx context.Context, ev events.LambdaFunctionURLRequest) (*http.Request, error) {
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
	if ev.RequestContext.RequestID != "" && req.Header.Get("X-Amzn-Request-Id") == "" {
		req.Header.Set("X-Amzn-Request-Id", ev.RequestContext.RequestID)
	}
	return req, nil
}

// responseWriter buffers a whole response.
type responseWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *responseWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(p)
}

func (w *responseWriter) response() events.LambdaFunctionURLResponse {
	resp := events.LambdaFunctionURLResponse{StatusCode: w.status, Headers: map[string]string{}}
	for k, v := range w.header {
		if k == "Set-Cookie" {
			resp.Cookies = v
			continue
		}
		resp.Headers[strings.ToLower(k)] = strings.Join(v, ",")
	}
	b := w.body.Bytes()
	// Text goes as is; anything else base64, which Lambda decodes.
	ct := w.header.Get("Content-Type")
	if len(b) > 0 && (!strings.HasPrefix(ct, "text/") || !utf8.Valid(b)) {
		resp.Body = base64.StdEncoding.EncodeToString(b)
		resp.IsBase64Encoded = true
	} else {
		resp.Body = string(b)
	}
	return resp
}

// errorResponse is the adapter's own error: a short status text with the
// common headers, never cached (neither fault says anything lasting about
// the URL).
func errorResponse(status int, common http.Header) events.LambdaFunctionURLResponse {
	body := http.StatusText(status) + "\n"
	hd := map[string]string{}
	for k, v := range common {
		hd[strings.ToLower(k)] = strings.Join(v, ",")
	}
	hd["content-type"] = "text/plain; charset=utf-8"
	hd["content-length"] = strconv.Itoa(len(body))
	hd["cache-control"] = "no-store"
	return events.LambdaFunctionURLResponse{StatusCode: status, Headers: hd, Body: body}
}
