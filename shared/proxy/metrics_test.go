package proxy_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/misskey-lambda/media-proxy/shared/testmedia"
)

func TestRequestLogLineIsEMF(t *testing.T) {
	o := newOrigin(t)
	src := o.add("/m.png", testmedia.PNG(300, 300))
	p, logs, _ := newService(t, map[string]string{"MEDIA_PROXY_METRICS": "emf"})
	checkSuccess(t, get(t, p, src, "emoji=1"), "image/webp")
	checkSuccess(t, get(t, p, src, "emoji=1"), "image/webp")
	p.Close() // waits for the handlers, which log after answering

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
	if len(lines) != 2 {
		t.Fatalf("%d request lines", len(lines))
	}
	miss, hit := lines[0], lines[1]
	if miss["_aws"] == nil || miss["Variant"] != "emoji" || miss["Requests"] != 1.0 || miss["CacheMiss"] != 1.0 || miss["CacheHit"] != 0.0 {
		t.Errorf("miss line: %v", miss)
	}
	if hit["CacheHit"] != 1.0 || hit["BytesOut"].(float64) <= 0 || hit["cache"] != "hit" {
		t.Errorf("hit line: %v", hit)
	}
}
