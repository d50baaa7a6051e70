// Package localqueue runs precompute jobs inside the serving process: a
// bounded buffer and a few workers. It is the embedded server's stand-in
// for SQS and the worker function, so sibling variants are precomputed
// there too. Nothing survives a restart; a lost job only means the
// variant is computed on its first request instead.
package localqueue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/misskey-lambda/media-proxy/shared/jobs"
)

// ErrFull means the buffer had no room: the jobs were dropped.
var ErrFull = errors.New("localqueue: full")

// ErrClosed means the queue no longer accepts jobs.
var ErrClosed = errors.New("localqueue: closed")

// Runner executes one job; *jobs.Runner is one.
type Runner interface {
	Run(ctx context.Context, j jobs.Job) (jobs.Report, error)
}

// Options size a Queue.
type Options struct {
	// Workers run jobs at once (default 2): precompute competes with
	// requests for the same CPUs, so it stays small.
	Workers int
	// Buffer is how many jobs may wait (default 256).
	Buffer int
}

// Queue is an in-process job queue. Enqueue never blocks.
type Queue struct {
	runner Runner
	log    *slog.Logger
	ch     chan jobs.Job

	mu     sync.RWMutex // guards closed against sends on a closed ch
	closed bool

	ctx    context.Context // cancelled when Close gives up waiting
	cancel context.CancelFunc
	wg     sync.WaitGroup
	seq    atomic.Int64
}

// New starts a queue whose workers run jobs with r.
func New(r Runner, opts Options, log *slog.Logger) *Queue {
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	if opts.Buffer <= 0 {
		opts.Buffer = 256
	}
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	q := &Queue{runner: r, log: log, ch: make(chan jobs.Job, opts.Buffer), ctx: ctx, cancel: cancel}
	q.wg.Add(opts.Workers)
	for range opts.Workers {
		go q.work()
	}
	return q
}

// Enqueue adds js without waiting. Jobs that do not fit are dropped and
// reported with ErrFull; the request that caused them must not wait for
// precompute work.
func (q *Queue) Enqueue(_ context.Context, js []jobs.Job) error {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		return ErrClosed
	}
	for i, j := range js {
		select {
		case q.ch <- j:
		default:
			return fmt.Errorf("%w: dropped %d of %d jobs", ErrFull, len(js)-i, len(js))
		}
	}
	return nil
}

// Close stops accepting jobs and lets the workers finish the ones waiting.
// When ctx ends first, running jobs are cancelled, waiting ones dropped,
// and ctx's error returned.
func (q *Queue) Close(ctx context.Context) error {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.ch)
	}
	q.mu.Unlock()

	done := make(chan struct{})
	go func() { q.wg.Wait(); close(done) }()
	select {
	case <-done:
		q.cancel()
		return nil
	case <-ctx.Done():
		q.cancel()
		<-done
		return fmt.Errorf("localqueue: drain: %w", ctx.Err())
	}
}

func (q *Queue) work() {
	defer q.wg.Done()
	for j := range q.ch {
		if q.ctx.Err() != nil {
			q.log.Warn("precompute job dropped at shutdown", "url", j.LogURL(), "variant", string(j.Variant))
			continue
		}
		id := "local-" + strconv.FormatInt(q.seq.Add(1), 10)
		// A transient failure is not retried here: the variant is simply
		// computed when it is first requested.
		rep, _ := q.runner.Run(q.ctx, j)
		jobs.Log(q.ctx, q.log, id, j, rep)
	}
}
