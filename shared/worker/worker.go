// Package worker is the SQS-triggered precompute function: it runs each job
// in a batch and reports the ones to retry, so the rest are deleted.
//
// The event source mapping must enable ReportBatchItemFailures; retries
// are then per message, and after the queue's maxReceiveCount a message
// that keeps failing moves to the dead-letter queue.
package worker

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/misskey-lambda/media-proxy/shared/emf"
	"github.com/misskey-lambda/media-proxy/shared/jobs"
)

// deadlineReserve is kept back from the invocation's deadline so jobs cut
// short still get reported as failures, instead of the whole batch being
// lost to a timeout and retried.
const deadlineReserve = 2 * time.Second

// Runner executes one job; *jobs.Runner is one.
type Runner interface {
	Run(ctx context.Context, j jobs.Job) (jobs.Report, error)
}

// Handler handles SQS batches.
type Handler struct {
	// Metrics makes each job's log line a CloudWatch EMF record too
	// (MEDIA_PROXY_METRICS); off by default.
	Metrics emf.Mode

	runner      Runner
	concurrency int
	log         *slog.Logger
}

// New returns a Handler running up to concurrency jobs at once
// (MEDIA_PROXY_WORKER_CONCURRENCY; at least one).
func New(r Runner, concurrency int, log *slog.Logger) *Handler {
	concurrency = max(concurrency, 1)
	if log == nil {
		log = slog.Default()
	}
	return &Handler{runner: r, concurrency: concurrency, log: log}
}

// Handle runs the batch's jobs and names the messages to deliver again.
// It never returns an error: that would make Lambda retry the whole batch,
// finished jobs included.
func (h *Handler) Handle(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
	requestID := ""
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		requestID = lc.AwsRequestID
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) > 2*deadlineReserve {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-deadlineReserve))
		defer cancel()
	}

	retry := make([]bool, len(ev.Records))
	sem := make(chan struct{}, h.concurrency)
	var wg sync.WaitGroup
	for i, m := range ev.Records {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			// Out of time: what has not started comes back later.
			for k := i; k < len(retry); k++ {
				retry[k] = true
			}
			h.log.Warn("batch cut short by the deadline", "request_id", requestID, "not_started", len(retry)-i)
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			retry[i] = h.handle(ctx, requestID, m)
		}()
	}
	wg.Wait()

	var resp events.SQSEventResponse
	for i, m := range ev.Records {
		if retry[i] {
			resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: m.MessageId})
		}
	}
	return resp, nil
}

// handle runs one message's job and reports whether to deliver it again.
func (h *Handler) handle(ctx context.Context, requestID string, m events.SQSMessage) (retry bool) {
	attrs := []slog.Attr{
		slog.String("request_id", requestID),
		slog.String("receive_count", m.Attributes["ApproximateReceiveCount"]),
	}
	j, err := jobs.Decode([]byte(m.Body))
	if err != nil {
		// Dropped: no number of deliveries will make it readable.
		h.log.LogAttrs(ctx, slog.LevelError, "job", append(attrs,
			slog.String("message_id", m.MessageId),
			slog.String("outcome", "malformed"),
			slog.Int("body_bytes", len(m.Body)),
			slog.String("err", err.Error()))...)
		return false
	}
	defer func() {
		// A bug in one job must not take the batch's other results with it.
		if p := recover(); p != nil {
			jobs.Log(ctx, h.log, m.MessageId, j, jobs.Report{Outcome: jobs.Retry, Err: fmt.Errorf("panic: %v", p)}, attrs...)
			retry = true
		}
	}()
	rep, err := h.runner.Run(ctx, j)
	if err != nil && rep.Err == nil {
		rep.Outcome, rep.Err = jobs.Retry, err
	}
	jobs.Log(ctx, h.log, m.MessageId, j, rep, append(attrs, jobMetrics(h.Metrics, j, rep))...)
	return err != nil
}

// JobMetrics is how many metrics a job line carries (see RequestMetrics
// in package proxy).
const JobMetrics = 6

// jobMetrics makes the job's log line a CloudWatch EMF record too, as
// mode says.
func jobMetrics(mode emf.Mode, j jobs.Job, rep jobs.Report) slog.Attr {
	return slog.Attr{Key: "", Value: slog.GroupValue(emf.Attrs(time.Now(), mode, "worker", string(j.Variant),
		emf.Metric{Name: "Jobs", Unit: emf.Count, Value: 1},
		emf.Metric{Name: "JobRetries", Unit: emf.Count, Value: emf.Flag(rep.Outcome == jobs.Retry)},
		emf.Metric{Name: "JobFailures", Unit: emf.Count, Value: emf.Flag(rep.Outcome == jobs.Failed)},
		emf.Metric{Name: "BytesOut", Unit: emf.Bytes, Value: float64(rep.Bytes)},
		emf.Metric{Name: "FetchMs", Unit: emf.Milliseconds, Value: float64(rep.Fetch.Milliseconds())},
		emf.Metric{Name: "TransformMs", Unit: emf.Milliseconds, Value: float64(rep.Transform.Milliseconds())},
	)...)}
}
