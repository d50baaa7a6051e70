package proxy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/misskey-lambda/media-proxy/shared/proxy"
	"github.com/misskey-lambda/media-proxy/shared/testmedia"
	"github.com/misskey-lambda/media-proxy/shared/worker"
)

// requestLines reads the request lines a service logged.
func requestLines(t *testing.T, logs *logBuffer) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, raw := range bytes.Split(bytes.TrimSpace(logs.bytes()), []byte("\n")) {
		var line map[string]any
		if err := json.Unmarshal(raw, &line); err != nil {
			t.Fatalf("log line %q: %v", raw, err)
		}
		if line["msg"] == "request" {
			lines = append(lines, line)
		}
	}
	return lines
}

func TestRequestLogLineIsEMF(t *testing.T) {
	o := newOrigin(t)
	src := o.add("/m.png", testmedia.PNG(300, 300))
	for _, c := range []struct {
		mode, dims string
		variant    bool
	}{
		{"emf", "[[Function]]", false},
		{"emf-variant", "[[Function] [Function Variant]]", true},
	} {
		t.Run(c.mode, func(t *testing.T) {
			p, logs, _ := newService(t, map[string]string{"MEDIA_PROXY_METRICS": c.mode})
			checkSuccess(t, get(t, p, src, "emoji=1"), "image/webp")
			checkSuccess(t, get(t, p, src, "emoji=1"), "image/webp")
			p.Close() // waits for the handlers, which log after answering

			lines := requestLines(t, logs)
			if len(lines) != 2 {
				t.Fatalf("%d request lines", len(lines))
			}
			miss, hit := lines[0], lines[1]
			if miss["_aws"] == nil || miss["Function"] != "proxy" || miss["Requests"] != 1.0 || miss["CacheMiss"] != 1.0 || miss["CacheHit"] != 0.0 {
				t.Errorf("miss line: %v", miss)
			}
			if _, ok := miss["Variant"]; ok != c.variant {
				t.Errorf("Variant field %v, want one: %v", miss["Variant"], c.variant)
			}
			if hit["CacheHit"] != 1.0 || hit["BytesOut"].(float64) <= 0 || hit["cache"] != "hit" {
				t.Errorf("hit line: %v", hit)
			}
			cw := miss["_aws"].(map[string]any)["CloudWatchMetrics"].([]any)[0].(map[string]any)
			if got := fmt.Sprint(cw["Dimensions"]); got != c.dims {
				t.Errorf("dimensions %s, want %s", got, c.dims)
			}
			// The cost model counts what the code emits.
			if n := len(cw["Metrics"].([]any)); n != proxy.RequestMetrics {
				t.Errorf("%d metrics per line, proxy.RequestMetrics says %d", n, proxy.RequestMetrics)
			}
		})
	}
	// The cost model counts what the code emits.
	doc, err := os.ReadFile("../../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	n := proxy.RequestMetrics + worker.JobMetrics
	if want := fmt.Sprintf("`Metrics=emf` emits %d metrics (%d from the\nproxy, %d from the worker", n, proxy.RequestMetrics, worker.JobMetrics); !strings.Contains(string(doc), want) {
		t.Errorf("docs/deploy.md does not count the metrics the code emits: want %q", want)
	}

	// The default: plain lines, no custom metric to pay for.
	p, logs, _ := newService(t, nil)
	checkSuccess(t, get(t, p, src, "emoji=1"), "image/webp")
	p.Close()
	for _, l := range requestLines(t, logs) {
		if l["_aws"] != nil || l["Requests"] != nil {
			t.Errorf("default line carries metrics: %v", l)
		}
	}
}
