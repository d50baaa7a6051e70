package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/misskey-lambda/media-proxy/shared/functionurl"
)

// TestFailureLogsOnce: a failed request writes exactly one log line, the
// request line, carrying the failure's cause, at a level that follows the
// status (a warning for the 5xx the proxy answers, information for the
// rest).
func TestFailureLogsOnce(t *testing.T) {
	o := newOrigin(t)
	gone := o.addFile("/gone.png", originFile{status: http.StatusNotFound})
	broken := o.addFile("/broken.png", originFile{status: http.StatusInternalServerError})
	garbage := o.add("/garbage.png", []byte("\x89PNG\r\n\x1a\n but not really a PNG at all"))
	p, logs, _ := newService(t, nil)

	cases := []struct {
		id, src, flags string
		status         int
		level, cause   string
	}{
		{"gone", gone, "emoji=1", http.StatusNotFound, "INFO", "remote returned 404"},
		{"broken", broken, "emoji=1", http.StatusBadGateway, "WARN", "remote returned 500"},
		{"garbage", garbage, "emoji=1", http.StatusUnprocessableEntity, "INFO", "422: transform"},
		{"fallback", broken + "?x", "emoji=1&fallback=1", http.StatusOK, "INFO", "remote returned 500"},
	}
	for _, tt := range cases {
		req, _ := http.NewRequest(http.MethodGet, p.URL+"/x.webp?url="+url.QueryEscape(tt.src)+"&"+tt.flags, nil)
		req.Header.Set("X-Request-Id", "log-once-"+tt.id)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("%s: status %d, want %d", tt.id, resp.StatusCode, tt.status)
		}
	}
	p.Close() // waits for the handlers, which log after answering

	// The client's id names the request line; the proxy's own id, every
	// line the request wrote.
	byID := map[string][]map[string]any{}
	ids := map[string]string{}
	for _, line := range logLines(t, logs.bytes()) {
		id, _ := line["request_id"].(string)
		byID[id] = append(byID[id], line)
		if c, ok := line["client_request_id"].(string); ok {
			ids[c] = id
		}
	}
	for _, tt := range cases {
		lines := byID[ids["log-once-"+tt.id]]
		if len(lines) != 1 {
			t.Errorf("%s: %d log lines, want 1: %v", tt.id, len(lines), lines)
			continue
		}
		l := lines[0]
		if l["msg"] != "request" || l["level"] != tt.level {
			t.Errorf("%s: %v, want the request line at %s", tt.id, l, tt.level)
		}
		if e, _ := l["err"].(string); !strings.Contains(e, tt.cause) {
			t.Errorf("%s: err %q, want the cause (%q)", tt.id, e, tt.cause)
		}
	}
}

func logLines(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, raw := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var line map[string]any
		if err := json.Unmarshal(raw, &line); err != nil {
			t.Fatalf("log line %q: %v", raw, err)
		}
		lines = append(lines, line)
	}
	return lines
}

// TestClientRequestIDIsItsOwnField: the request_id of a log line is the
// proxy's (on Lambda, the invocation's, as Lambda's own lines carry it);
// a client's X-Request-Id, or an X-Amzn-Request-Id it makes up, never
// takes its place. The client's X-Request-Id is logged beside it.
func TestClientRequestIDIsItsOwnField(t *testing.T) {
	p, logs, svc := newService(t, nil)
	request(t, http.MethodGet, p.URL+"/", "X-Request-Id", "client-local", "X-Amzn-Request-Id", "made-up-local")

	lambda := functionurl.Handler(svc.Handler, slog.New(slog.NewJSONHandler(io.Discard, nil)), svc.Handler.CommonHeaders())
	ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: "invocation-1"})
	resp, err := lambda(ctx, &events.LambdaFunctionURLRequest{
		RawPath: "/",
		Headers: map[string]string{"x-request-id": "client-lambda", "x-amzn-request-id": "made-up-lambda"},
		RequestContext: events.LambdaFunctionURLRequestContext{
			RequestID: "invocation-1", DomainName: "example.lambda-url.us-east-1.on.aws",
			HTTP: events.LambdaFunctionURLRequestContextHTTPDescription{Method: http.MethodGet, SourceIP: "192.0.2.1"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	p.Close()

	got := map[string]string{}
	for _, line := range logLines(t, logs.bytes()) {
		if c, ok := line["client_request_id"].(string); ok && line["msg"] == "request" {
			got[c], _ = line["request_id"].(string)
		}
	}
	if id, ok := got["client-local"]; !ok || id == "" || strings.Contains(id, "local") {
		t.Errorf("local server: request_id %q for X-Request-Id client-local (found %v)", id, ok)
	}
	if id := got["client-lambda"]; id != "invocation-1" {
		t.Errorf("Lambda: request_id %q, want the invocation's (invocation-1)", id)
	}
}
