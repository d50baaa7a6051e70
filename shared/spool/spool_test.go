package spool

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"
)

func newSpool(t *testing.T, o Options) *Spool {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "spool")
	if err != nil {
		t.Fatal(err)
	}
	// Something before the body, as the dir store's header and meta.
	if _, err := f.Write([]byte("head")); err != nil {
		t.Fatal(err)
	}
	if o.Closed == nil {
		o.Closed = func() { f.Close() }
	}
	return New(f, 4, o)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return b
}

// waitForWaiters returns once n readers wait for bytes.
func waitForWaiters(t *testing.T, s *Spool, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		w := s.waiting
		s.mu.Unlock()
		if w == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d readers waiting, want %d", w, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A read of bytes not yet written waits, and the append that brings them
// wakes it.
func TestReadWaitsForAppend(t *testing.T) {
	ctx := context.Background()
	s := newSpool(t, Options{})
	defer s.Release()
	r, err := s.NewReader(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := make(chan []byte)
	go func() {
		b := make([]byte, 10)
		n, err := r.Read(b)
		if err != nil {
			t.Errorf("read: %v", err)
		}
		got <- b[:n]
	}()
	waitForWaiters(t, s, 1)
	if err := s.Append(ctx, []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if b := <-got; string(b) != "abc" {
		t.Errorf("read %q after the append, want abc", b)
	}
}

// Readers at their own pace (fast, slow, one that starts after the end)
// each get every byte; none holds the writer back.
func TestReadersAtTheirOwnPace(t *testing.T) {
	ctx := context.Background()
	s := newSpool(t, Options{})
	defer s.Release()
	body := randomBytes(1 << 20)
	var wg sync.WaitGroup
	results := make([][]byte, 2)
	for i := range results {
		r, err := s.NewReader(ctx, int64(len(body)))
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			defer r.Close()
			var out bytes.Buffer
			buf := make([]byte, 7000)
			for {
				n, err := r.Read(buf)
				out.Write(buf[:n])
				if i == 1 {
					time.Sleep(100 * time.Microsecond)
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Errorf("reader %d: %v", i, err)
					break
				}
			}
			results[i] = out.Bytes()
		})
	}
	for off := 0; off < len(body); off += 4096 {
		if err := s.Append(ctx, body[off:min(off+4096, len(body))]); err != nil {
			t.Fatal(err)
		}
	}
	s.Finish(nil)
	wg.Wait()
	late, err := s.NewReader(ctx, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	lateBody, err := io.ReadAll(late)
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range append(results, lateBody) {
		if !bytes.Equal(b, body) {
			t.Errorf("reader %d got %d bytes, not the %d written", i, len(b), len(body))
		}
	}
}

// A body that breaks gives every reader the bytes written, then the
// break, never a clean end.
func TestBrokenBodyEndsEveryReader(t *testing.T) {
	ctx := context.Background()
	s := newSpool(t, Options{})
	defer s.Release()
	r, _ := s.NewReader(ctx, 1000)
	defer r.Close()
	s.Append(ctx, []byte("0123456789"))
	boom := errors.New("origin cut")
	s.Finish(boom)
	late, _ := s.NewReader(ctx, 1000)
	defer late.Close()
	for _, rd := range []*Reader{r, late} {
		b, err := io.ReadAll(rd)
		if string(b) != "0123456789" || !errors.Is(err, boom) || !errors.Is(rd.Err(), boom) {
			t.Errorf("read %q, %v (Err %v); want the 10 bytes, then the break", b, err, rd.Err())
		}
	}
	if _, err := late.Seek(0, io.SeekEnd); err != nil {
		t.Errorf("seek to a declared end: %v", err)
	}
}

// Seek's end is the declared length at once; for a body of unknown
// length, where it ends, once it has.
func TestSeekEnd(t *testing.T) {
	ctx := context.Background()
	s := newSpool(t, Options{})
	defer s.Release()
	known, _ := s.NewReader(ctx, 500)
	defer known.Close()
	if n, err := known.Seek(0, io.SeekEnd); n != 500 || err != nil {
		t.Errorf("declared end: %d, %v", n, err)
	}
	unknown, _ := s.NewReader(ctx, -1)
	defer unknown.Close()
	end := make(chan int64)
	go func() {
		n, err := unknown.Seek(-2, io.SeekEnd)
		if err != nil {
			t.Errorf("seek: %v", err)
		}
		end <- n
	}()
	waitForWaiters(t, s, 1)
	s.Append(ctx, []byte("hello"))
	waitForWaiters(t, s, 1)
	s.Finish(nil)
	if n := <-end; n != 3 {
		t.Errorf("seek to 2 before the end of 5 bytes: %d", n)
	}
	b := make([]byte, 2)
	if _, err := io.ReadFull(unknown, b); err != nil || string(b) != "lo" {
		t.Errorf("read after the seek: %q, %v", b, err)
	}
}

// A reader whose context ends while it waits returns at once, and says
// why.
func TestReaderContext(t *testing.T) {
	s := newSpool(t, Options{})
	defer s.Release()
	ctx, cancel := context.WithCancel(context.Background())
	r, _ := s.NewReader(ctx, 10)
	defer r.Close()
	done := make(chan error)
	go func() {
		_, err := r.Read(make([]byte, 1))
		done <- err
	}()
	waitForWaiters(t, s, 1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) || !errors.Is(r.Err(), context.Canceled) {
		t.Errorf("read: %v, Err %v", err, r.Err())
	}
}

// The file is closed once, by the last holder, whoever it is.
func TestClosedByTheLastHolder(t *testing.T) {
	closed := 0
	s := newSpool(t, Options{Closed: func() { closed++ }})
	r, _ := s.NewReader(context.Background(), -1)
	s.Release()
	if closed != 0 {
		t.Fatal("closed while a reader holds it")
	}
	r.Close()
	r.Close()
	if closed != 1 {
		t.Errorf("closed %d times, want once", closed)
	}
	if _, err := s.NewReader(context.Background(), -1); !errors.Is(err, ErrClosed) {
		t.Errorf("a reader of a closed spool: %v", err)
	}
}

// Room on disk is reserved before bytes are written; an append that finds
// none writes nothing.
func TestAppendReservesRoom(t *testing.T) {
	ctx := context.Background()
	var asked []int64
	full := false
	s := newSpool(t, Options{Reserve: func(_ context.Context, n int64) error {
		if full {
			return errors.New("no room")
		}
		asked = append(asked, n)
		return nil
	}})
	defer s.Release()
	if err := s.Append(ctx, []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, make([]byte, reserveStep)); err != nil {
		t.Fatal(err)
	}
	// A step at a time: 3 bytes, then 3 past the first step.
	if len(asked) != 2 || asked[0] != reserveStep || asked[1] != reserveStep {
		t.Errorf("reserved %v, want two steps of %d", asked, reserveStep)
	}
	full = true
	if err := s.Append(ctx, make([]byte, reserveStep)); err == nil {
		t.Error("an append past the room succeeded without reserving")
	}
	if size, _ := s.State(); size != reserveStep+3 {
		t.Errorf("%d bytes written, want %d", size, reserveStep+3)
	}
	f, base := s.File()
	if fi, err := f.Stat(); err != nil || fi.Size() != base+reserveStep+3 {
		t.Errorf("the file has %d bytes (%v)", fi.Size(), err)
	}
}
