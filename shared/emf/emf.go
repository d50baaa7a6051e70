// Package emf turns a structured log line into CloudWatch Embedded Metric
// Format: CloudWatch Logs extracts the named fields of such a line as
// metrics, so a request's one log line is also its metrics, with no
// metrics API calls on the request path.
//
// Each metric name and dimension value is a custom metric CloudWatch
// bills by the month, so the Mode decides how many there are: none,
// one per name and function, or also one per variant.
package emf

import (
	"errors"
	"log/slog"
	"time"
)

// Namespace is where the proxy's metrics appear in CloudWatch.
const Namespace = "MisskeyMediaProxy"

// Units CloudWatch understands.
const (
	Count        = "Count"
	Bytes        = "Bytes"
	Milliseconds = "Milliseconds"
)

// Mode is which metrics log lines carry.
type Mode int

const (
	// Off: plain log lines, no custom metrics.
	Off Mode = iota
	// Totals: each metric once per function (dimension Function).
	Totals
	// ByVariant: as Totals, and again per variant (dimensions Function
	// and Variant): about eight times as many metrics.
	ByVariant
)

// ParseMode reads MEDIA_PROXY_METRICS: none, emf or emf-variant.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "none":
		return Off, nil
	case "emf":
		return Totals, nil
	case "emf-variant":
		return ByVariant, nil
	}
	return Off, errors.New("want none, emf or emf-variant")
}

func (m Mode) String() string {
	switch m {
	case Totals:
		return "emf"
	case ByVariant:
		return "emf-variant"
	}
	return "none"
}

// Metric is one value of a log line.
type Metric struct {
	Name  string
	Unit  string
	Value float64
}

// Attrs are the attributes to add to a JSON log line to make it an EMF
// record with metrics in Namespace for function (proxy, worker) and, in
// ByVariant mode, for variant too. Off gives none.
func Attrs(now time.Time, mode Mode, function, variant string, metrics ...Metric) []slog.Attr {
	if mode == Off {
		return nil
	}
	dims := [][]string{{"Function"}}
	if mode == ByVariant {
		dims = append(dims, []string{"Function", "Variant"})
	}
	defs := make([]map[string]string, len(metrics))
	attrs := make([]slog.Attr, 0, len(metrics)+3)
	for i, m := range metrics {
		defs[i] = map[string]string{"Name": m.Name, "Unit": m.Unit}
		attrs = append(attrs, slog.Float64(m.Name, m.Value))
	}
	meta := map[string]any{
		"Timestamp": now.UnixMilli(),
		"CloudWatchMetrics": []map[string]any{{
			"Namespace":  Namespace,
			"Dimensions": dims,
			"Metrics":    defs,
		}},
	}
	attrs = append(attrs, slog.String("Function", function))
	if mode == ByVariant {
		attrs = append(attrs, slog.String("Variant", variant))
	}
	return append(attrs, slog.Any("_aws", meta))
}

// Flag is 1 when b holds, for counting metrics.
func Flag(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
