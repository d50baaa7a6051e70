package proxy_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
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

	byID := map[string][]map[string]any{}
	for _, raw := range bytes.Split(bytes.TrimSpace(logs.bytes()), []byte("\n")) {
		var line map[string]any
		if err := json.Unmarshal(raw, &line); err != nil {
			t.Fatalf("log line %q: %v", raw, err)
		}
		id, _ := line["request_id"].(string)
		byID[id] = append(byID[id], line)
	}
	for _, tt := range cases {
		lines := byID["log-once-"+tt.id]
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
