package jobs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/budget"
	"github.com/misskey-lambda/media-proxy/shared/failure"
	"github.com/misskey-lambda/media-proxy/shared/pipeline"
	"github.com/misskey-lambda/media-proxy/shared/problem"
	"github.com/misskey-lambda/media-proxy/shared/store"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

// Outcome is how a job ended.
type Outcome string

const (
	// Done: the variant was produced and stored.
	Done Outcome = "done"
	// Skipped: the variant was already stored, or producing it failed in
	// a way no retry can fix and is still remembered; nothing was fetched.
	Skipped Outcome = "skipped"
	// Failed: the source can never give this variant (gone, refused type,
	// too large, undecodable). The failure is recorded and the job is
	// finished: retrying it would fail the same way.
	Failed Outcome = "failed"
	// Retry: a failure that may pass (remote 5xx, timeout, store error).
	// Run returns an error with it, so the queue delivers the job again.
	Retry Outcome = "retry"
)

// Report is what running a job did, for logs and counters.
type Report struct {
	Outcome Outcome
	// Status is the HTTP status a client would have got (0 when skipped
	// because the variant exists).
	Status int
	// BytesIn is the source's size, Bytes the stored variant's.
	BytesIn, Bytes   int64
	Fetch, Transform time.Duration
	Duration         time.Duration
	// Err is the cause of a Failed or Retry outcome.
	Err error
}

// Producer makes a variant; *pipeline.Pipeline is one.
type Producer interface {
	Produce(ctx context.Context, src *url.URL, k variant.Kind) (*pipeline.Result, error)
}

// Runner executes jobs against a store. It is safe for concurrent use.
type Runner struct {
	Producer Producer
	Store    store.Store
	// Canonical gives the form keys and fetches use, as the proxy's.
	Canonical Canonicalizer
	// Failures is the process's failure memory (the proxy's, when jobs
	// run in its process); nil keeps failures in the store only.
	Failures *failure.Memory
	// Budget, when set, accounts for the buffers the store holds while a
	// large body streams into it (store.WriteBuffer).
	Budget *budget.Budget
}

// Run executes j. The error is non-nil exactly when the outcome is Retry;
// Done, Skipped and Failed jobs are finished. Running a job twice stores
// the same object, since variants are deterministic and a second run
// finds the first one's result and skips.
func (r *Runner) Run(ctx context.Context, j Job) (Report, error) {
	start := time.Now()
	rep, err := r.run(ctx, j)
	rep.Duration = time.Since(start)
	if err != nil {
		rep.Outcome, rep.Err = Retry, err
		if rep.Status == 0 {
			rep.Status = problem.Status(err)
		}
	}
	return rep, err
}

func (r *Runner) run(ctx context.Context, j Job) (Report, error) {
	start := time.Now()
	if err := j.validate(); err != nil {
		// Not reachable through Decode, which checks the same; a bad job
		// built in code is finished, not retried.
		return Report{Outcome: Failed, Status: http.StatusBadRequest, Err: err}, nil
	}
	src, err := r.Canonical(j.URL)
	if err != nil {
		// Refused as the proxy refuses it at the door: nothing fetched,
		// nothing remembered, nothing to retry.
		return Report{Outcome: Failed, Status: problem.Status(err), Err: err}, nil
	}
	c := src.String()
	key := variant.Key(c, j.Variant)
	failKey := variant.FailureKey(c, j.Variant)

	switch e, err := r.Store.Lookup(ctx, key); {
	case err == nil:
		return Report{Outcome: Skipped, Bytes: e.Size}, nil
	case !errors.Is(err, store.ErrNotFound):
		return Report{}, fmt.Errorf("look up %s: %w", key, err)
	}
	// A failure remembered by the proxy or an earlier job: the source was
	// tried moments ago, so do not hit it again. A transient one comes
	// back later, when the queue delivers the job again.
	if status, ok := r.recall(ctx, failKey); ok {
		if failure.Permanent(status) {
			return Report{Outcome: Skipped, Status: status}, nil
		}
		return Report{Status: status}, fmt.Errorf("%s of %s failed with %d moments ago", j.Variant, j.URL, status)
	}

	res, err := r.Producer.Produce(ctx, src, j.Variant)
	if err != nil {
		status := problem.Status(err)
		var ferr error
		if ttl := pipeline.Remember(err); ttl > 0 && ctx.Err() == nil {
			// The marker only saves a later fetch; the job's outcome
			// does not depend on it. As the proxy does, only a failure
			// that took long to find is worth one in the store.
			r.Failures.Remember(failKey, status, ttl)
			if failure.Stored(time.Since(start)) {
				ferr = r.Store.Fail(ctx, failKey, status, ttl)
			}
		}
		if !failure.Permanent(status) || !problem.IsSource(err) || ctx.Err() != nil {
			return Report{Status: status}, fmt.Errorf("produce %s of %s: %w", j.Variant, j.URL, err)
		}
		rep := Report{Outcome: Failed, Status: status, Err: err}
		if ferr != nil {
			rep.Err = fmt.Errorf("%w (and recording the failure: %v)", err, ferr)
		}
		return rep, nil
	}
	defer res.Close()
	rep := Report{
		Outcome:   Done,
		Status:    http.StatusOK,
		BytesIn:   res.BytesIn,
		Bytes:     res.Meta.Size,
		Fetch:     res.Fetch,
		Transform: res.Transform,
	}
	// A bytes.Reader is seekable, which S3 uploads over plain HTTP need;
	// large passthroughs stream, through the store's write buffers.
	body := io.Reader(res.Body)
	if res.Data != nil {
		body = bytes.NewReader(res.Data)
	} else if n := store.WriteBuffer(r.Store); n > 0 && r.Budget != nil {
		// Taken without waiting, as the job holds the fetch meanwhile: a
		// job can come back later at no viewer's expense.
		got, ok := r.Budget.TryAcquire(n)
		if !ok {
			rep.Status = http.StatusServiceUnavailable
			return rep, fmt.Errorf("store %s: %w: no %d bytes free for its write buffers", key, budget.ErrBusy, n)
		}
		defer r.Budget.Release(got)
	}
	if err := r.Store.Put(ctx, key, res.Meta, body); err != nil {
		return rep, fmt.Errorf("store %s: %w", key, err)
	}
	return rep, nil
}

// recall finds a failure remembered by this process or stored by any.
func (r *Runner) recall(ctx context.Context, failKey string) (int, bool) {
	if status, _, ok := r.Failures.Recall(failKey); ok {
		return status, true
	}
	status, left, err := r.Store.Failure(ctx, failKey)
	if err != nil {
		return 0, false
	}
	r.Failures.Remember(failKey, status, left)
	return status, true
}

// Log writes the one line a job gets: id is the queue's message id (or
// another handle on the job), and attrs adds the caller's own fields.
func Log(ctx context.Context, log *slog.Logger, id string, j Job, rep Report, attrs ...slog.Attr) {
	level := slog.LevelInfo
	if rep.Outcome == Retry {
		level = slog.LevelWarn
	}
	all := append(attrs[:len(attrs):len(attrs)],
		slog.String("message_id", id),
		slog.String("url", j.LogURL()),
		slog.String("variant", string(j.Variant)),
		slog.String("outcome", string(rep.Outcome)),
		slog.Int("status", rep.Status),
		slog.Int64("bytes_in", rep.BytesIn),
		slog.Int64("bytes", rep.Bytes),
		slog.Int64("fetch_ms", rep.Fetch.Milliseconds()),
		slog.Int64("transform_ms", rep.Transform.Milliseconds()),
		slog.Int64("duration_ms", rep.Duration.Milliseconds()),
	)
	if rep.Err != nil {
		all = append(all, slog.String("err", rep.Err.Error()))
	}
	log.LogAttrs(ctx, level, "job", all...)
}
