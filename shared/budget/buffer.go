package budget

import (
	"context"
	"errors"
	"fmt"
	"io"
)

const (
	// firstGrowth is the smallest buffer: most emoji fit in one.
	firstGrowth = 64 << 10
	// probe is room past a declared length, so the read that finds EOF
	// does not double a buffer that is exactly full.
	probe = 512
)

// ErrWouldWait is TryReserve's answer when the budget cannot give the
// bytes at once (as a *ShortError).
var ErrWouldWait = errors.New("budget: no bytes free now")

// ShortError says how much a buffer needed in all, its bytes and
// reservations, when TryReserve could not have it at once: what to Prepay
// to do the same work again without waiting midway.
type ShortError struct{ Need int64 }

func (e *ShortError) Error() string {
	return fmt.Sprintf("%v: %d bytes needed in all", ErrWouldWait, e.Need)
}

func (e *ShortError) Unwrap() error { return ErrWouldWait }

// Buffer collects a body in memory. It takes budget for each growth
// before allocating it and grows by doubling as bytes arrive, so what it
// holds follows what the sender actually sent, never what it claimed: at
// most twice what arrived. A declared length caps the doubling, so the
// last step does not overshoot. (A sender that declares 50 MB, sends an
// eighth and stalls holds about an eighth, not 50 MB.)
//
// Besides the bytes, a buffer accounts for work on them (a decode's
// memory, Reserve), and can be given budget ahead (Prepay), which its
// growth and reservations use before taking more.
type Buffer struct {
	budget *Budget
	buf    []byte
	// held is what the buffer took from the budget; used is what of it
	// the bytes' capacity and the reservations account for.
	held, used int64
	hint       int64
}

// Buffer returns an empty buffer; hint is the declared length, or -1.
func (b *Budget) Buffer(hint int64) *Buffer {
	return &Buffer{budget: b, hint: hint}
}

// Expect sets the declared length (-1: unknown), for a buffer made
// before it was known.
func (x *Buffer) Expect(hint int64) { x.hint = hint }

// Fill reads r to its end. Waiting for budget stops with ctx, or with
// ErrBusy past the budget's bounds; the bytes read so far stay held.
func (x *Buffer) Fill(ctx context.Context, r io.Reader) error {
	for {
		if len(x.buf) == cap(x.buf) {
			if err := x.grow(ctx); err != nil {
				return err
			}
		}
		n, err := r.Read(x.buf[len(x.buf):cap(x.buf)])
		x.buf = x.buf[:len(x.buf)+n]
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (x *Buffer) grow(ctx context.Context) error {
	c := int64(cap(x.buf))
	next := max(2*c, firstGrowth)
	if x.hint >= 0 && c < x.hint+probe {
		next = min(next, x.hint+probe)
		// Budget prepaid for the whole declared length (a source fetched
		// again, see Prepay) takes it in one step: doubling would only
		// leave garbage the budget does not see.
		if x.held-x.used >= x.hint+probe-c {
			next = x.hint + probe
		}
	}
	if err := x.take(ctx, next-c, true); err != nil {
		return err
	}
	nb := make([]byte, len(x.buf), next)
	copy(nb, x.buf)
	x.buf = nb
	return nil
}

// take accounts n more bytes as used, taking from the budget what the
// buffer does not hold yet, waiting for it or not.
func (x *Buffer) take(ctx context.Context, n int64, wait bool) error {
	if short := x.used + n - x.held; short > 0 {
		var got int64
		if wait {
			var err error
			if got, err = x.budget.Acquire(ctx, short); err != nil {
				return err
			}
		} else {
			var ok bool
			if got, ok = x.budget.TryAcquire(short); !ok {
				return &ShortError{Need: x.used + n}
			}
		}
		x.held += got
	}
	x.used += n
	return nil
}

// Reserve takes n more bytes for work on the buffer's contents (a
// decode), released with the rest; it waits for them as Acquire does.
func (x *Buffer) Reserve(ctx context.Context, n int64) error {
	return x.take(ctx, n, true)
}

// TryReserve is Reserve without waiting: a *ShortError (ErrWouldWait)
// when the budget cannot give the bytes now. A caller holding the
// buffer's bytes uses it, so as never to wait for memory sitting on some.
func (x *Buffer) TryReserve(n int64) error {
	return x.take(context.Background(), n, false)
}

// Prepay takes n bytes from the budget ahead of their use (waiting as
// Acquire does), for a buffer about to be filled with a body whose size,
// and the work on it, are known: its growth and reservations then take
// nothing more until they pass n.
func (x *Buffer) Prepay(ctx context.Context, n int64) error {
	got, err := x.budget.Acquire(ctx, n)
	if err != nil {
		return err
	}
	x.held += got
	return nil
}

// Held is what the buffer holds of the budget.
func (x *Buffer) Held() int64 { return x.held }

// Bytes is what has been read; valid until Release.
func (x *Buffer) Bytes() []byte { return x.buf }

// Len is how many bytes have been read.
func (x *Buffer) Len() int { return len(x.buf) }

// Keep drops the bytes read and gives back all but n bytes of budget,
// which stay held (for what was made from the bytes) until Release.
func (x *Buffer) Keep(n int64) {
	x.buf = nil
	if n < x.held {
		x.budget.Release(x.held - n)
		x.held = n
	}
	x.used = x.held
}

// Release gives back everything the buffer took. The bytes must not be
// used afterwards.
func (x *Buffer) Release() {
	x.budget.Release(x.held)
	x.held, x.used = 0, 0
	x.buf = nil
}
