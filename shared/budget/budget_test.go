package budget

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAcquireWaitsThenRefuses(t *testing.T) {
	// No wait runs out during the test: a refusal can only be the queue's.
	b := New(Options{Bytes: 100, MaxWaiting: 1, MaxWait: time.Hour})
	ctx := context.Background()
	if got, err := b.Acquire(ctx, 80); err != nil || got != 80 {
		t.Fatalf("Acquire(80) = %d, %v", got, err)
	}
	// One may wait; it is served when bytes come back.
	done := make(chan error, 1)
	go func() {
		_, err := b.Acquire(ctx, 50)
		done <- err
	}()
	waitFor(t, func() bool { return len(b.slots) == 1 })
	// The queue is full: the next is refused while the bytes it would
	// wait for are still held (waiting for them would take an hour).
	refused := make(chan error, 1)
	go func() {
		_, err := b.Acquire(ctx, 50)
		refused <- err
	}()
	select {
	case err := <-refused:
		if !errors.Is(err, ErrBusy) {
			t.Fatalf("third Acquire: %v, want ErrBusy", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("third Acquire is still waiting after 30 s, want ErrBusy at once")
	}
	b.Release(80)
	if err := <-done; err != nil {
		t.Fatalf("waiter: %v", err)
	}
	if b.Held() != 50 || b.Peak() != 80 {
		t.Errorf("held %d, peak %d; want 50 and 80", b.Held(), b.Peak())
	}
	// A wait longer than MaxWait gives up with ErrBusy.
	short := New(Options{Bytes: 100, MaxWait: 50 * time.Millisecond})
	short.Acquire(ctx, 100)
	if _, err := short.Acquire(ctx, 60); !errors.Is(err, ErrBusy) {
		t.Fatalf("Acquire past MaxWait: %v, want ErrBusy", err)
	}
	// The caller's cancellation is not ErrBusy.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.Acquire(cctx, 60); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Acquire: %v", err)
	}
}

func TestAcquireLargerThanBudgetRunsAlone(t *testing.T) {
	b := New(Options{Bytes: 100})
	got, err := b.Acquire(context.Background(), 1000)
	if err != nil || got != 100 {
		t.Fatalf("Acquire(1000) = %d, %v; want the whole budget", got, err)
	}
	b.Release(got)
	if b.Held() != 0 {
		t.Errorf("held %d after release", b.Held())
	}
}

// waitFor waits for cond, which an event makes true; the deadline is only
// there to fail a test in which it never comes.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition still false after 30 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// trickle returns its data a few bytes at a time, then blocks until
// released, as a stalled origin does.
type trickle struct {
	data  []byte
	stall chan struct{}
}

func (r *trickle) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		if r.stall == nil {
			return 0, io.EOF
		}
		<-r.stall
		return 0, errors.New("connection closed")
	}
	n := copy(p[:min(len(p), 1000)], r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestBufferHoldsWhatArrivedNotWhatWasClaimed(t *testing.T) {
	b := New(Options{Bytes: 64 << 20})
	stall := make(chan struct{})
	var wg sync.WaitGroup
	bufs := make([]*Buffer, 24)
	for i := range bufs {
		// Each claims 250 MB, sends 4 KiB and stalls.
		bufs[i] = b.Buffer(250 << 20)
		wg.Add(1)
		go func() {
			defer wg.Done()
			bufs[i].Fill(context.Background(), &trickle{data: make([]byte, 4096), stall: stall})
		}()
	}
	waitFor(t, func() bool { return b.Held() == 24*firstGrowth })
	// Not even for a moment was a claim taken.
	if b.Peak() != 24*firstGrowth {
		t.Errorf("peak %d, want %d: each buffer's first growth", b.Peak(), 24*firstGrowth)
	}
	close(stall)
	wg.Wait()
	for _, x := range bufs {
		if x.Len() != 4096 {
			t.Errorf("buffer holds %d bytes, want 4096", x.Len())
		}
		x.Release()
	}
	if b.Held() != 0 {
		t.Errorf("held %d after release", b.Held())
	}
}

func TestBufferGrowsToTheDeclaredLength(t *testing.T) {
	b := New(Options{Bytes: 64 << 20})
	data := bytes.Repeat([]byte("abcdefgh"), 300_000) // 2.4 MB
	x := b.Buffer(int64(len(data)))
	if err := x.Fill(context.Background(), &trickle{data: data}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x.Bytes(), data) {
		t.Fatal("bytes differ")
	}
	// Doubling stops at the declared length: no step past it.
	if held := b.Held(); held != int64(len(data))+probe {
		t.Errorf("held %d for %d bytes, want %d", held, len(data), len(data)+probe)
	}
	// Without a declared length, doubling bounds the slack by 2x.
	y := b.Buffer(-1)
	if err := y.Fill(context.Background(), &trickle{data: data}); err != nil {
		t.Fatal(err)
	}
	if h := b.Held() - int64(len(data)) - probe; h < int64(len(data)) || h > 2*int64(len(data)) {
		t.Errorf("unknown length: held %d for %d bytes", h, len(data))
	}
	x.Release()
	y.Release()
}

func TestBufferWaitsForBudget(t *testing.T) {
	b := New(Options{Bytes: 1 << 20, MaxWait: 100 * time.Millisecond})
	big := b.Buffer(-1)
	if err := big.Reserve(context.Background(), 1<<20); err != nil {
		t.Fatal(err)
	}
	x := b.Buffer(-1)
	err := x.Fill(context.Background(), &trickle{data: make([]byte, 10)})
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("Fill with the budget taken: %v, want ErrBusy", err)
	}
	big.Release()
	if err := x.Fill(context.Background(), &trickle{data: make([]byte, 10)}); err != nil {
		t.Fatalf("Fill once freed: %v", err)
	}
}

func TestProcessMemory(t *testing.T) {
	files := map[string]string{
		"/proc/meminfo":             "MemTotal:       24568320 kB\nMemFree: 1 kB\n",
		"/sys/fs/cgroup/memory.max": "max\n",
		"/sys/fs/cgroup/memory/x":   "",
	}
	read := func(name string) ([]byte, error) {
		if s, ok := files[name]; ok {
			return []byte(s), nil
		}
		return nil, fs.ErrNotExist
	}
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }

	if n, from := processMemory(getenv, read, 1<<62); n != 24568320<<10 || from != "MemTotal" {
		t.Errorf("RAM only: %d from %q", n, from)
	}
	if n, from := processMemory(getenv, read, 2<<30); n != 2<<30 || from != "GOMEMLIMIT" {
		t.Errorf("with GOMEMLIMIT: %d from %q", n, from)
	}
	files["/sys/fs/cgroup/memory.max"] = "1073741824\n"
	if n, from := processMemory(getenv, read, 2<<30); n != 1<<30 || !strings.Contains(from, "cgroup") {
		t.Errorf("with a cgroup limit: %d from %q", n, from)
	}
	env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] = "512"
	if n, from := processMemory(getenv, read, 2<<30); n != 512<<20 || from != "AWS_LAMBDA_FUNCTION_MEMORY_SIZE" {
		t.Errorf("on Lambda: %d from %q", n, from)
	}
	delete(files, "/sys/fs/cgroup/memory.max")
	files["/sys/fs/cgroup/memory/memory.limit_in_bytes"] = "9223372036854771712\n" // v1: no limit
	delete(env, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
	if n, from := processMemory(getenv, read, 1<<62); from != "MemTotal" {
		t.Errorf("cgroup v1 without a limit: %d from %q", n, from)
	}
}

// TestBufferGrowsWithWhatArrives: a sender that declares 50 MiB, sends
// over an eighth of it and stalls holds what it sent (doubling leaves at
// most twice that), not the 50 MiB it declared.
func TestBufferGrowsWithWhatArrives(t *testing.T) {
	b := New(Options{Bytes: 256 << 20})
	const declared = 50 << 20
	sent := 8<<20 + 1 // fills an 8 MiB buffer: the next growth is due
	x := b.Buffer(declared)
	stall := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- x.Fill(context.Background(), &trickle{data: make([]byte, sent), stall: stall}) }()
	// The growth past 8 MiB comes before the read that stalls.
	waitFor(t, func() bool { return b.Held() >= int64(sent) })
	held := b.Held()
	close(stall)
	<-done
	t.Logf("declared %d MiB, sent %d KiB, stalled: %d KiB held", declared>>20, sent>>10, held>>10)
	if held > 2*int64(sent) {
		t.Errorf("declared %d MiB, sent %d KiB and stalled: %d KiB held, want at most twice what was sent", declared>>20, sent>>10, held>>10)
	}
	x.Release()
}

// TestTryReserveNeverWaits: with the budget taken, a buffer's TryReserve
// fails at once with ErrWouldWait and takes nothing; with room, it takes
// what it asked for. Bytes prepaid are used before the budget is asked.
func TestTryReserveNeverWaits(t *testing.T) {
	b := New(Options{Bytes: 1 << 20, MaxWait: time.Minute})
	x := b.Buffer(-1)
	if err := x.Fill(context.Background(), &trickle{data: make([]byte, 1000)}); err != nil {
		t.Fatal(err)
	}
	other := b.Buffer(-1)
	if err := other.Reserve(context.Background(), b.Total()-x.Held()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := x.TryReserve(1000)
	var short *ShortError
	if !errors.Is(err, ErrWouldWait) || !errors.As(err, &short) || time.Since(start) > time.Second {
		t.Fatalf("TryReserve with the budget taken: %v after %v, want ErrWouldWait at once", err, time.Since(start))
	}
	if short.Need != firstGrowth+1000 {
		t.Errorf("short by %d in all, want %d (the bytes' buffer and the reservation)", short.Need, firstGrowth+1000)
	}
	if x.Held() != firstGrowth {
		t.Errorf("a failed TryReserve left %d held, want %d", x.Held(), firstGrowth)
	}
	other.Release()
	if err := x.TryReserve(1000); err != nil || x.Held() != firstGrowth+1000 {
		t.Errorf("TryReserve with room: %v, %d held", err, x.Held())
	}
	x.Release()

	y := b.Buffer(5000)
	if err := y.Prepay(context.Background(), 100_000); err != nil {
		t.Fatal(err)
	}
	if err := y.Fill(context.Background(), &trickle{data: make([]byte, 5000)}); err != nil {
		t.Fatal(err)
	}
	if err := y.TryReserve(50_000); err != nil || y.Held() != 100_000 || b.Held() != 100_000 {
		t.Errorf("within what was prepaid: %v, buffer holds %d, budget %d; want 100000", err, y.Held(), b.Held())
	}
	if _, ok := b.TryAcquire(b.Total()); ok {
		t.Error("TryAcquire of the whole budget succeeded while some is held")
	}
	y.Release()
	if b.Held() != 0 {
		t.Errorf("held %d after release", b.Held())
	}
}

// TestPrepaidBufferGrowsOnce: a buffer prepaid for its whole declared
// length (a source fetched again) takes it in one allocation, leaving no
// doubling's garbage behind.
func TestPrepaidBufferGrowsOnce(t *testing.T) {
	b := New(Options{Bytes: 64 << 20})
	const n = 1 << 20
	x := b.Buffer(n)
	if err := x.Prepay(context.Background(), 2*n); err != nil {
		t.Fatal(err)
	}
	caps := map[int]bool{}
	src := &trickle{data: make([]byte, n)}
	if err := x.Fill(context.Background(), readFunc(func(p []byte) (int, error) {
		caps[cap(x.buf)] = true
		return src.Read(p)
	})); err != nil {
		t.Fatal(err)
	}
	if len(caps) != 1 || !caps[n+probe] || b.Held() != 2*n {
		t.Errorf("capacities %v, %d held; want one allocation of %d within the %d prepaid", caps, b.Held(), n+probe, 2*n)
	}
	x.Release()
}

type readFunc func([]byte) (int, error)

func (f readFunc) Read(p []byte) (int, error) { return f(p) }
