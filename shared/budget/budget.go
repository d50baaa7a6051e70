// Package budget bounds the memory the whole process holds for fetched
// bodies and decodes. Every request and job takes bytes from one Budget
// before it buffers or decodes them, and gives them back when done, so a
// burst of large (or large-claiming) sources waits or is turned away
// instead of exhausting the machine.
package budget

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// ErrBusy means the budget had no room within the wait allowed, or too
// many were already waiting. It says nothing about the source: the proxy
// answers 503 with Retry-After and remembers nothing.
var ErrBusy = errors.New("budget: memory budget exhausted")

// Defaults for Options.
const (
	DefaultMaxWaiting = 128
	DefaultMaxWait    = 10 * time.Second
)

// Options size a Budget.
type Options struct {
	// Bytes is the whole budget.
	Bytes int64
	// MaxWaiting is how many acquisitions may wait at once; one more is
	// refused at once (default DefaultMaxWaiting).
	MaxWaiting int
	// MaxWait is the longest one acquisition waits (default DefaultMaxWait).
	MaxWait time.Duration
}

// Budget is a process-wide count of bytes, handed out first come, first
// served (a large request at the head of the queue is not starved by
// smaller ones behind it).
type Budget struct {
	total   int64
	sem     *semaphore.Weighted
	maxWait time.Duration
	slots   chan struct{} // one per waiting acquisition
	held    atomic.Int64
	peak    atomic.Int64
}

// New returns a Budget.
func New(o Options) *Budget {
	if o.Bytes <= 0 {
		panic("budget: no bytes")
	}
	if o.MaxWaiting <= 0 {
		o.MaxWaiting = DefaultMaxWaiting
	}
	if o.MaxWait <= 0 {
		o.MaxWait = DefaultMaxWait
	}
	return &Budget{
		total:   o.Bytes,
		sem:     semaphore.NewWeighted(o.Bytes),
		maxWait: o.MaxWait,
		slots:   make(chan struct{}, o.MaxWaiting),
	}
}

// Total is the whole budget.
func (b *Budget) Total() int64 { return b.total }

// Held is how much is taken now.
func (b *Budget) Held() int64 { return b.held.Load() }

// Waiting is how many acquisitions are waiting now.
func (b *Budget) Waiting() int { return len(b.slots) }

// Peak is the most that was taken at once: with Held, what shows (in
// tests and figures) that the budget, not luck, bounded a burst.
func (b *Budget) Peak() int64 { return b.peak.Load() }

// take counts n more bytes as held.
func (b *Budget) take(n int64) {
	h := b.held.Add(n)
	for p := b.peak.Load(); h > p && !b.peak.CompareAndSwap(p, h); p = b.peak.Load() {
	}
}

// Acquire takes n bytes, waiting in the bounded queue if they are not free.
// It returns how many it took: n, or the whole budget when n is larger, so
// one source bigger than the budget runs alone rather than never. The
// caller gives exactly that back with Release.
func (b *Budget) Acquire(ctx context.Context, n int64) (int64, error) {
	if n <= 0 {
		return 0, nil
	}
	n = min(n, b.total)
	if b.sem.TryAcquire(n) {
		b.take(n)
		return n, nil
	}
	select {
	case b.slots <- struct{}{}:
		defer func() { <-b.slots }()
	default:
		return 0, fmt.Errorf("%w: %d waiting already", ErrBusy, cap(b.slots))
	}
	wctx, cancel := context.WithTimeout(ctx, b.maxWait)
	defer cancel()
	if err := b.sem.Acquire(wctx, n); err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, fmt.Errorf("%w: no %d bytes free within %v", ErrBusy, n, b.maxWait)
	}
	b.take(n)
	return n, nil
}

// TryAcquire takes n bytes if they are free now and nobody is waiting
// before it, and reports whether it did; it never waits. As Acquire, it
// takes at most the whole budget and returns how much it took.
func (b *Budget) TryAcquire(n int64) (int64, bool) {
	if n <= 0 {
		return 0, true
	}
	n = min(n, b.total)
	if !b.sem.TryAcquire(n) {
		return 0, false
	}
	b.take(n)
	return n, true
}

// Release gives back n bytes taken by Acquire.
func (b *Budget) Release(n int64) {
	if n <= 0 {
		return
	}
	b.held.Add(-n)
	b.sem.Release(n)
}
