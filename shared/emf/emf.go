// Package emf turns a structured log line into CloudWatch Embedded Metric
// Format: CloudWatch Logs extracts the named fields of such a line as
// metrics, so a request's one log line is also its metrics, with no
// metrics API calls on the request path.
package emf

import (
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

// Metric is one value of a log line.
type Metric struct {
	Name  string
	Unit  string
	Value float64
}

// Attrs are the attributes to add to a JSON log line to make it an EMF
// record with metrics in Namespace under one dimension.
func Attrs(now time.Time, dimension, value string, metrics ...Metric) []slog.Attr {
	defs := make([]map[string]string, len(metrics))
	attrs := make([]slog.Attr, 0, len(metrics)+2)
	for i, m := range metrics {
		defs[i] = map[string]string{"Name": m.Name, "Unit": m.Unit}
		attrs = append(attrs, slog.Float64(m.Name, m.Value))
	}
	meta := map[string]any{
		"Timestamp": now.UnixMilli(),
		"CloudWatchMetrics": []map[string]any{{
			"Namespace":  Namespace,
			"Dimensions": [][]string{{dimension}},
			"Metrics":    defs,
		}},
	}
	return append(attrs, slog.String(dimension, value), slog.Any("_aws", meta))
}

// Flag is 1 when b holds, for counting metrics.
func Flag(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
