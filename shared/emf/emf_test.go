package emf

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"
)

func TestLineIsEMF(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	now := time.UnixMilli(1700000000123)
	log.LogAttrs(context.Background(), slog.LevelInfo, "request",
		append([]slog.Attr{slog.String("request_id", "r1")},
			Attrs(now, "Variant", "emoji",
				Metric{"Requests", Count, 1},
				Metric{"BytesOut", Bytes, 4096},
			)...)...)
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if line["Variant"] != "emoji" || line["Requests"] != 1.0 || line["BytesOut"] != 4096.0 || line["request_id"] != "r1" {
		t.Errorf("fields: %v", line)
	}
	aws := line["_aws"].(map[string]any)
	if aws["Timestamp"] != 1700000000123.0 {
		t.Errorf("timestamp %v", aws["Timestamp"])
	}
	cw := aws["CloudWatchMetrics"].([]any)[0].(map[string]any)
	if cw["Namespace"] != Namespace {
		t.Errorf("namespace %v", cw["Namespace"])
	}
	dims := cw["Dimensions"].([]any)[0].([]any)
	if len(dims) != 1 || dims[0] != "Variant" {
		t.Errorf("dimensions %v", dims)
	}
	// Every declared metric must be a top-level number, or CloudWatch
	// drops the record.
	for _, m := range cw["Metrics"].([]any) {
		name := m.(map[string]any)["Name"].(string)
		if _, ok := line[name].(float64); !ok {
			t.Errorf("metric %s has no numeric value", name)
		}
	}
}
