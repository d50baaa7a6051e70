package emf

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"
)

func line(t *testing.T, mode Mode) map[string]any {
	t.Helper()
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	now := time.UnixMilli(1700000000123)
	log.LogAttrs(context.Background(), slog.LevelInfo, "request",
		append([]slog.Attr{slog.String("request_id", "r1")},
			Attrs(now, mode, "proxy", "emoji",
				Metric{"Requests", Count, 1},
				Metric{"BytesOut", Bytes, 4096},
			)...)...)
	var l map[string]any
	if err := json.Unmarshal(buf.Bytes(), &l); err != nil {
		t.Fatal(err)
	}
	return l
}

func TestLineIsEMF(t *testing.T) {
	for mode, wantDims := range map[Mode]string{
		Totals:    "[[Function]]",
		ByVariant: "[[Function] [Function Variant]]",
	} {
		l := line(t, mode)
		if l["Function"] != "proxy" || l["Requests"] != 1.0 || l["BytesOut"] != 4096.0 || l["request_id"] != "r1" {
			t.Errorf("%v: fields %v", mode, l)
		}
		if _, ok := l["Variant"]; ok != (mode == ByVariant) {
			t.Errorf("%v: Variant field %v", mode, l["Variant"])
		}
		aws := l["_aws"].(map[string]any)
		if aws["Timestamp"] != 1700000000123.0 {
			t.Errorf("timestamp %v", aws["Timestamp"])
		}
		cw := aws["CloudWatchMetrics"].([]any)[0].(map[string]any)
		if cw["Namespace"] != Namespace {
			t.Errorf("namespace %v", cw["Namespace"])
		}
		if got := fmt.Sprint(cw["Dimensions"]); got != wantDims {
			t.Errorf("%v: dimensions %s, want %s", mode, got, wantDims)
		}
		// Every declared metric must be a top-level number, and every
		// dimension a top-level string, or CloudWatch drops the record.
		for _, m := range cw["Metrics"].([]any) {
			name := m.(map[string]any)["Name"].(string)
			if _, ok := l[name].(float64); !ok {
				t.Errorf("metric %s has no numeric value", name)
			}
		}
		for _, set := range cw["Dimensions"].([]any) {
			for _, d := range set.([]any) {
				if _, ok := l[d.(string)].(string); !ok {
					t.Errorf("dimension %s has no value", d)
				}
			}
		}
	}
	if l := line(t, Off); l["_aws"] != nil || l["Requests"] != nil {
		t.Errorf("Off: %v, want a plain line", l)
	}
}

func TestParseMode(t *testing.T) {
	for _, m := range []Mode{Off, Totals, ByVariant} {
		if got, err := ParseMode(m.String()); err != nil || got != m {
			t.Errorf("ParseMode(%q) = %v, %v", m.String(), got, err)
		}
	}
	if _, err := ParseMode("emf-all"); err == nil {
		t.Error("ParseMode accepts emf-all")
	}
}
