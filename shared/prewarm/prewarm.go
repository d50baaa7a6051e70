// Package prewarm pre-computes the emoji variants of a Misskey instance's
// custom emoji (or of a list of URLs), so that the first timeline showing
// them is served from the store. It checks the store first and queues (or
// runs) only what is missing, so running it again costs only the checks.
package prewarm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/jobs"
	"github.com/misskey-lambda/media-proxy/shared/store"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

// Kinds are the variants made for each emoji: animated for most users,
// static for those who turned animation off.
var Kinds = []variant.Kind{variant.Emoji, variant.EmojiStatic}

// batchSize is how many jobs go to the queue at once (SQS's batch limit).
const batchSize = 10

// Runner executes one job; *jobs.Runner is one.
type Runner interface {
	Run(ctx context.Context, j jobs.Job) (jobs.Report, error)
}

// Options say where the jobs go. Exactly one of Queue and Runner is set,
// unless DryRun.
type Options struct {
	// Store is checked for variants already there.
	Store store.Store
	// Canonical gives the form keys are derived from, as the proxy's.
	Canonical jobs.Canonicalizer
	// Queue receives the missing jobs...
	Queue jobs.Enqueuer
	// ...or Runner runs them here.
	Runner Runner
	// Concurrency is how many store checks, and jobs with Runner, run at
	// once (default 4).
	Concurrency int
	// Rate caps jobs queued or started per second; 0 means no cap.
	Rate float64
	// DryRun lists the missing jobs on Out instead of queueing or running
	// them.
	DryRun bool
	Out    io.Writer
	// Progress receives progress lines and failures (standard error).
	Progress io.Writer
	// ProgressEvery is the interval between progress lines (default 1s).
	ProgressEvery time.Duration
}

// Stats count what a run did.
type Stats struct {
	Sources int   // source URLs
	Jobs    int   // variants considered: Sources * len(Kinds)
	Checked int64 // store checks done
	Stored  int64 // already in the store: nothing to do
	Missing int64 // to queue or run
	Queued  int64 // sent to the queue
	Done    int64 // run here and stored
	Skipped int64 // run here, found stored or failing recently
	Failed  int64 // run here, the source cannot give the variant
	Errors  int64 // checks or jobs that failed and may pass on a re-run
}

func (s *Stats) String() string {
	return fmt.Sprintf("%d/%d checked, %d already stored, %d missing, %d queued, %d done, %d skipped, %d failed, %d errors",
		atomic.LoadInt64(&s.Checked), s.Jobs, atomic.LoadInt64(&s.Stored), atomic.LoadInt64(&s.Missing),
		atomic.LoadInt64(&s.Queued), atomic.LoadInt64(&s.Done), atomic.LoadInt64(&s.Skipped),
		atomic.LoadInt64(&s.Failed), atomic.LoadInt64(&s.Errors))
}

// Run pre-warms Kinds of every URL in urls. The error is the first that
// stopped the run (a refused enqueue, ctx ending), or a summary when some
// jobs ended in errors that a re-run may get past.
func Run(ctx context.Context, opts Options, urls []string) (*Stats, error) {
	if opts.Concurrency <= 0 {
		opts.Concurrency = 4
	}
	if opts.ProgressEvery <= 0 {
		opts.ProgressEvery = time.Second
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if !opts.DryRun && (opts.Queue == nil) == (opts.Runner == nil) {
		return nil, errors.New("prewarm: want exactly one of a queue and a runner")
	}
	var all []jobs.Job
	for _, u := range urls {
		for _, k := range Kinds {
			all = append(all, jobs.Job{URL: u, Variant: k})
		}
	}
	st := &Stats{Sources: len(urls), Jobs: len(all)}

	stop := startProgress(opts.Progress, opts.ProgressEvery, st)
	missing, err := check(ctx, opts, st, all)
	if err == nil {
		err = act(ctx, opts, st, missing)
	}
	stop()
	fmt.Fprintf(opts.Progress, "prewarm: finished: %s\n", st)
	if err == nil && st.Errors > 0 {
		err = fmt.Errorf("prewarm: %d jobs failed in ways a re-run may get past", st.Errors)
	}
	return st, err
}

// check looks every job's key up in the store and returns the jobs whose
// variant is missing, in input order.
func check(ctx context.Context, opts Options, st *Stats, all []jobs.Job) ([]jobs.Job, error) {
	need := make([]bool, len(all))
	idx := make(chan int)
	var wg sync.WaitGroup
	for range opts.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				need[i] = checkOne(ctx, opts, st, all[i])
			}
		}()
	}
	for i := range all {
		if ctx.Err() != nil {
			break
		}
		idx <- i
	}
	close(idx)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var missing []jobs.Job
	for i, j := range all {
		if need[i] {
			missing = append(missing, j)
		}
	}
	return missing, nil
}

func checkOne(ctx context.Context, opts Options, st *Stats, j jobs.Job) bool {
	defer atomic.AddInt64(&st.Checked, 1)
	key, err := j.Key(opts.Canonical)
	if err != nil {
		atomic.AddInt64(&st.Failed, 1)
		fmt.Fprintf(opts.Progress, "prewarm: skipping %s: %v\n", j.URL, err)
		return false
	}
	_, err = opts.Store.Lookup(ctx, key)
	switch {
	case err == nil:
		atomic.AddInt64(&st.Stored, 1)
		return false
	case errors.Is(err, store.ErrNotFound):
		atomic.AddInt64(&st.Missing, 1)
		return true
	}
	atomic.AddInt64(&st.Errors, 1)
	fmt.Fprintf(opts.Progress, "prewarm: checking %s of %s: %v\n", j.Variant, j.URL, err)
	return false
}

// act queues, runs or (dry run) lists the missing jobs.
func act(ctx context.Context, opts Options, st *Stats, missing []jobs.Job) error {
	lim := newLimiter(opts.Rate)
	switch {
	case opts.DryRun:
		verb := "enqueue"
		if opts.Runner != nil {
			verb = "run"
		}
		for _, j := range missing {
			fmt.Fprintf(opts.Out, "would %s %s %s\n", verb, j.Variant, j.URL)
		}
		return nil
	case opts.Queue != nil:
		for len(missing) > 0 {
			n := min(len(missing), batchSize)
			if err := lim.wait(ctx, n); err != nil {
				return err
			}
			if err := opts.Queue.Enqueue(ctx, missing[:n]); err != nil {
				return fmt.Errorf("prewarm: enqueue: %w", err)
			}
			atomic.AddInt64(&st.Queued, int64(n))
			missing = missing[n:]
		}
		return nil
	}
	return runHere(ctx, opts, st, lim, missing)
}

func runHere(ctx context.Context, opts Options, st *Stats, lim *limiter, missing []jobs.Job) error {
	ch := make(chan jobs.Job)
	var wg sync.WaitGroup
	for range opts.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ch {
				rep, err := opts.Runner.Run(ctx, j)
				switch {
				case err != nil:
					atomic.AddInt64(&st.Errors, 1)
					fmt.Fprintf(opts.Progress, "prewarm: %s of %s: %v\n", j.Variant, j.URL, err)
				case rep.Outcome == jobs.Failed:
					atomic.AddInt64(&st.Failed, 1)
					fmt.Fprintf(opts.Progress, "prewarm: %s of %s failed with %d: %v\n", j.Variant, j.URL, rep.Status, rep.Err)
				case rep.Outcome == jobs.Skipped:
					atomic.AddInt64(&st.Skipped, 1)
				default:
					atomic.AddInt64(&st.Done, 1)
				}
			}
		}()
	}
	var err error
	for _, j := range missing {
		if err = lim.wait(ctx, 1); err != nil {
			break
		}
		ch <- j
	}
	close(ch)
	wg.Wait()
	return err
}

// startProgress prints st every interval until the returned func is called.
func startProgress(w io.Writer, every time.Duration, st *Stats) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintf(w, "prewarm: %s\n", st)
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// limiter spaces out work to a rate of events per second.
type limiter struct {
	mu       sync.Mutex
	interval time.Duration
	next     time.Time
}

func newLimiter(rate float64) *limiter {
	l := &limiter{}
	if rate > 0 {
		l.interval = time.Duration(float64(time.Second) / rate)
	}
	return l
}

// wait blocks until n more events fit in the rate.
func (l *limiter) wait(ctx context.Context, n int) error {
	if l.interval == 0 {
		return ctx.Err()
	}
	l.mu.Lock()
	now := time.Now()
	at := l.next
	if at.Before(now) {
		at = now
	}
	l.next = at.Add(time.Duration(n) * l.interval)
	l.mu.Unlock()
	t := time.NewTimer(time.Until(at))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
