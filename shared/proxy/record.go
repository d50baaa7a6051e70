package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/misskey-lambda/media-proxy/shared/emf"
)

// record collects what the request's log line reports.
type record struct {
	id, kind, outcome string
	// clientID is the client's X-Request-Id, logged beside id, never as it.
	clientID          string
	status            int
	bytesIn, bytesOut int64
	fetch, transform  time.Duration
	// ttfb is when the response's first byte (its headers) was written,
	// from the request's start; 0 until then.
	ttfb time.Duration
	// source is the URL without user info or query, which may carry tokens.
	source string
	// aborted is set when the body broke off after the headers were sent.
	aborted bool
	// err is why the work failed, for the request's one log line.
	err error
}

// figures copies the work's figures: every request served by one fetch
// reports it, so coalesced requests log what they waited for.
func (rec *record) figures(fetch, transform time.Duration, bytesIn int64) {
	rec.fetch, rec.transform, rec.bytesIn = fetch, transform, bytesIn
}

func (h *Handler) logRequest(r *http.Request, rec *record, took time.Duration) {
	attrs := []slog.Attr{
		slog.String("request_id", rec.id),
		slog.String("method", r.Method),
		slog.String("url", rec.source),
		slog.String("variant", rec.kind),
		slog.String("cache", rec.outcome),
		slog.Int("status", rec.status),
		slog.Int64("bytes_in", rec.bytesIn),
		slog.Int64("bytes_out", rec.bytesOut),
		slog.Int64("fetch_ms", rec.fetch.Milliseconds()),
		slog.Int64("transform_ms", rec.transform.Milliseconds()),
		slog.Int64("ttfb_ms", rec.ttfb.Milliseconds()),
		slog.Int64("duration_ms", took.Milliseconds()),
	}
	if rec.clientID != "" {
		attrs = append(attrs, slog.String("client_request_id", rec.clientID))
	}
	if rec.aborted {
		attrs = append(attrs, slog.Bool("aborted", true))
	}
	if rec.err != nil {
		attrs = append(attrs, slog.String("err", rec.err.Error()))
	}
	if rec.kind != "" { // health checks and preflights are not worth a metric
		attrs = append(attrs, requestMetrics(h.cfg.Metrics, rec)...)
	}
	h.log.LogAttrs(r.Context(), level(rec), "request", attrs...)
}

// level is the request line's: a warning when the proxy failed the client
// (5xx: an origin, a store or the memory budget let it down, or a body
// broke off), otherwise information, refusals included.
func level(rec *record) slog.Level {
	if rec.status >= 500 || rec.aborted {
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

// requestMetrics makes the request's log line a CloudWatch EMF record too,
// as mode says: RequestMetrics names.
func requestMetrics(mode emf.Mode, rec *record) []slog.Attr {
	return emf.Attrs(time.Now(), mode, "proxy", rec.kind,
		emf.Metric{Name: "Requests", Unit: emf.Count, Value: 1},
		emf.Metric{Name: "CacheHit", Unit: emf.Count, Value: emf.Flag(rec.outcome == "hit")},
		emf.Metric{Name: "CacheMiss", Unit: emf.Count, Value: emf.Flag(rec.outcome == "miss")},
		emf.Metric{Name: "FailureMemory", Unit: emf.Count, Value: emf.Flag(rec.outcome == "failure-memory")},
		emf.Metric{Name: "Errors", Unit: emf.Count, Value: emf.Flag(rec.status >= 400)},
		emf.Metric{Name: "BytesOut", Unit: emf.Bytes, Value: float64(rec.bytesOut)},
		emf.Metric{Name: "FetchMs", Unit: emf.Milliseconds, Value: float64(rec.fetch.Milliseconds())},
		emf.Metric{Name: "TransformMs", Unit: emf.Milliseconds, Value: float64(rec.transform.Milliseconds())},
		emf.Metric{Name: "TtfbMs", Unit: emf.Milliseconds, Value: float64(rec.ttfb.Milliseconds())},
	)
}

// RequestMetrics is how many metrics a request line carries; the cost
// model in docs/deploy.md counts them (TestRequestLogLineIsEMF holds both).
const RequestMetrics = 9

// requestID is the request's id in logs: on Lambda, the invocation's (the
// one Lambda's own log lines and metrics carry), else one of our own. A
// header is never it: any client can send any X-Request-Id (or
// X-Amzn-Request-Id), which would then pass for another request's, or
// Lambda's, in the logs.
func requestID(r *http.Request) string {
	if lc, ok := lambdacontext.FromContext(r.Context()); ok && lc.AwsRequestID != "" {
		return lc.AwsRequestID
	}
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// clientRequestID is the client's X-Request-Id (a reverse proxy's, say),
// logged as its own field so the two can be matched; at most 128 bytes.
func clientRequestID(r *http.Request) string {
	if v := r.Header.Get("X-Request-Id"); len(v) <= 128 {
		return v
	}
	return ""
}

// firstByte notes in rec when the response starts, for its ttfb.
type firstByte struct {
	http.ResponseWriter
	start time.Time
	rec   *record
}

func (f *firstByte) mark() {
	if f.rec.ttfb == 0 {
		f.rec.ttfb = max(time.Since(f.start), time.Nanosecond)
	}
}

func (f *firstByte) WriteHeader(status int) {
	f.mark()
	f.ResponseWriter.WriteHeader(status)
}

func (f *firstByte) Write(p []byte) (int, error) {
	f.mark()
	return f.ResponseWriter.Write(p)
}

func (f *firstByte) Unwrap() http.ResponseWriter { return f.ResponseWriter }
