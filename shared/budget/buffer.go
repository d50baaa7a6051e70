package budget

import (
	"context"
	"io"
)

const (
	// firstGrowth is the smallest buffer: most emoji fit in one.
	firstGrowth = 64 << 10
	// trustShare: once len >= hint/trustShare, grow to the hint.
	trustShare = 8
	// probe is room past a declared length, so the read that finds EOF
	// does not double a buffer that is exactly full.
	probe = 512
)

// Buffer collects a body in memory. It takes budget for each growth
// before allocating it and grows by doubling as bytes arrive, so what it
// holds follows what the sender actually sent, never what it claimed. A
// declared length caps the doubling, so the last step does not overshoot,
// and once an eighth of it has arrived (the claim is backed by bytes) the
// buffer grows to it at once: every doubling leaves the old buffer as
// garbage, which the budget does not see.
type Buffer struct {
	budget *Budget
	buf    []byte
	held   int64
	hint   int64
}

// Buffer returns an empty buffer; hint is the declared length, or -1.
func (b *Budget) Buffer(hint int64) *Buffer {
	return &Buffer{budget: b, hint: hint}
}

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
		if int64(len(x.buf)) >= x.hint/trustShare {
			next = x.hint + probe
		}
	}
	got, err := x.budget.Acquire(ctx, next-c)
	if err != nil {
		return err
	}
	x.held += got
	nb := make([]byte, len(x.buf), next)
	copy(nb, x.buf)
	x.buf = nb
	return nil
}

// Reserve takes n more bytes for work on the buffer's contents (a
// decode), released with the rest.
func (x *Buffer) Reserve(ctx context.Context, n int64) error {
	got, err := x.budget.Acquire(ctx, n)
	if err != nil {
		return err
	}
	x.held += got
	return nil
}

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
}

// Release gives back everything the buffer took. The bytes must not be
// used afterwards.
func (x *Buffer) Release() {
	x.budget.Release(x.held)
	x.held = 0
	x.buf = nil
}
