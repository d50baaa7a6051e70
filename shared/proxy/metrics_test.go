package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/misskey-lambda/media-proxy/shared/config"
	"github.com/misskey-lambda/media-proxy/shared/service"
	"github.com/misskey-lambda/media-proxy/shared/testmedia"
)

type syncBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

func TestRequestLogLineIsEMF(t *testing.T) {
	o := newOrigin(t)
	src := o.add("/m.png", testmedia.PNG(300, 300))
	vars := map[string]string{
		"MEDIA_PROXY_STORE":                    "dir:" + t.TempDir(),
		"MEDIA_PROXY_QUEUE":                    "none",
		"MEDIA_PROXY_ALLOWED_PRIVATE_NETWORKS": "127.0.0.0/8",
		"MEDIA_PROXY_METRICS":                  "emf",
	}
	cfg, err := config.Load(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	svc, err := service.New(context.Background(), cfg, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	p := httptest.NewServer(svc.Handler)
	checkSuccess(t, get(t, p, src, "emoji=1"), "image/webp")
	checkSuccess(t, get(t, p, src, "emoji=1"), "image/webp")
	p.Close() // waits for the handlers, which log after answering

	var lines []map[string]any
	for _, raw := range bytes.Split(bytes.TrimSpace(logs.Bytes()), []byte("\n")) {
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
