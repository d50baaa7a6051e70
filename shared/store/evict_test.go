package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// runPass runs an eviction pass and waits for it.
func runPass(d *Dir) {
	d.wait()
	d.mu.Lock()
	d.startPassLocked()
	d.mu.Unlock()
	d.wait()
}

// onDisk is what the files under root take on disk, temporary files
// included.
func onDisk(root string) int64 {
	var n int64
	filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			if fi, err := e.Info(); err == nil {
				n += diskBytes(fi)
			}
		}
		return nil
	})
	return n
}

// apparent is what every file under root adds up to as Dir counts a file
// (its size in whole blocks), temporary files included.
func apparent(root string) int64 {
	var n int64
	filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			if fi, err := e.Info(); err == nil {
				n += blocks(fi.Size())
			}
		}
		return nil
	})
	return n
}

// sampleApparent notes the peak of apparent(d.root) until the returned
// function is called, which returns it. Each sample holds d's lock, so
// that no room changes hands while it walks (a file removed and its room
// taken by another would be counted twice); files may still grow, as far
// as their room allows.
func sampleApparent(d *Dir) (stop func() int64) {
	var peak atomic.Int64
	done, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			d.mu.Lock()
			n := apparent(d.root)
			d.mu.Unlock()
			if n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-done:
				return
			default:
			}
		}
	}()
	return func() int64 {
		close(done)
		<-sampled
		return peak.Load()
	}
}

// counted is what the store's own files add up to, as Dir counts them.
func counted(root string) int64 {
	var n int64
	filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() && !strings.HasPrefix(e.Name(), tempPrefix) {
			if fi, err := e.Info(); err == nil {
				n += blocks(fi.Size())
			}
		}
		return nil
	})
	return n
}

func put(t *testing.T, d *Dir, key string, size int) []byte {
	t.Helper()
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	if err := d.Put(context.Background(), key, Meta{ContentType: "image/webp"}, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	return b
}

func exists(d *Dir, key string) bool {
	_, err := d.Lookup(context.Background(), key)
	return err == nil
}

// age sets the mtime of key's file, which is its recency.
func age(t *testing.T, d *Dir, key string, mtime time.Time) {
	t.Helper()
	if err := os.Chtimes(filepath.Join(d.root, key), mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// Anyone naming fresh URLs makes the proxy write fresh keys: the store
// must stay within its budget however many there are.
func TestDirStaysUnderBudget(t *testing.T) {
	const (
		budget  = 1 << 20
		keys    = 3000
		writers = 4
		size    = 1000 // one block each: 256 fit
	)
	d := newDir(t, DirOptions{MaxBytes: budget})

	stop := sampleApparent(d)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < keys; i = next.Add(1) - 1 {
				put(t, d, fmt.Sprintf("v1/emoji/%05d", i), size)
			}
		})
	}
	wg.Wait()
	peak := stop()
	d.wait()

	final := onDisk(d.root)
	t.Logf("budget %d, peak %d, final on disk %d, counted %d", budget, peak, final, d.total)
	if final > budget {
		t.Errorf("%d bytes on disk after the writes, over the budget of %d", final, budget)
	}
	// Each write reserves its room before it writes, temporary files
	// included: never a byte over.
	if peak > budget {
		t.Errorf("%d bytes at a peak, temporary files included, over the budget %d", peak, budget)
	}
	// A file written while a pass walks may be counted twice until the
	// next pass, never missed: the store may think itself fuller than it
	// is, by no more than what is written during a walk.
	if got := counted(d.root); d.total < got || d.total > got+budget/10+writers*blockSize {
		t.Errorf("the store counts %d bytes, its files take %d", d.total, got)
	}
	for i := keys - 10; i < keys; i++ {
		if key := fmt.Sprintf("v1/emoji/%05d", i); !exists(d, key) {
			t.Errorf("%s, among the newest, was evicted", key)
		}
	}
}

// Large writes in parallel (bodies put from memory, and spools of a
// declared length) stay within the budget, temporary files included: each
// reserves its room before it writes, and one that cannot fit because the
// rest is being written is refused, never written past the budget.
func TestDirCountsWritesInProgress(t *testing.T) {
	const (
		budget = 8 << 20
		size   = 3 << 20
	)
	ctx := context.Background()
	d := newDir(t, DirOptions{MaxBytes: budget})
	stop := sampleApparent(d)
	var wg sync.WaitGroup
	var refused, stored atomic.Int64
	bodies := make([][]byte, 8)
	for i := range bodies {
		bodies[i] = make([]byte, size)
		for j := range bodies[i] {
			bodies[i][j] = byte(rand.Uint32())
		}
	}
	count := func(err error) {
		switch {
		case err == nil:
			stored.Add(1)
		case errors.Is(err, ErrNoRoom):
			refused.Add(1)
		default:
			t.Errorf("write: %v", err)
		}
	}
	for i, b := range bodies {
		key := fmt.Sprintf("v1/original/%d", i)
		if i%2 == 0 {
			wg.Go(func() { count(d.Put(ctx, key, Meta{ContentType: "video/mp4"}, slowReader{bytes.NewReader(b)})) })
			continue
		}
		wg.Go(func() { count(writeSpool(ctx, d, key, b)) })
	}
	wg.Wait()
	peak := stop()
	d.wait()
	t.Logf("budget %d: peak %d, %d stored, %d refused", budget, peak, stored.Load(), refused.Load())
	if peak > budget {
		t.Errorf("%d bytes at a peak, temporary files included, over the budget %d", peak, budget)
	}
	if stored.Load() == 0 || refused.Load() == 0 {
		t.Errorf("%d stored and %d refused; want some of each (two fit at once)", stored.Load(), refused.Load())
	}
	for i, b := range bodies {
		e, err := d.Lookup(ctx, fmt.Sprintf("v1/original/%d", i))
		if err == nil && readAll(t, e) != string(b) {
			t.Errorf("object %d holds other bytes", i)
		}
	}
	if n := countTemp(d.root); n != 0 {
		t.Errorf("%d temporary files left", n)
	}
	if d.inflight != 0 {
		t.Errorf("%d bytes still reserved", d.inflight)
	}
}

// slowReader hands its bytes out 64 KiB at a time, with a pause, so
// that writes overlap.
type slowReader struct{ *bytes.Reader }

func (s slowReader) Read(p []byte) (int, error) {
	time.Sleep(time.Millisecond)
	return s.Reader.Read(p[:min(len(p), 64<<10)])
}

// writeSpool stores b through a spool, as the proxy downloads.
func writeSpool(ctx context.Context, d *Dir, key string, b []byte) error {
	sp, err := d.Spool(ctx, key, Meta{ContentType: "video/mp4"})
	if err != nil {
		return err
	}
	defer sp.Close()
	// Its declared length at once, as the proxy reserves it.
	if err := sp.Reserve(ctx, int64(len(b))); err != nil {
		return err
	}
	f, base := sp.File()
	var tag ETagWriter
	for off := 0; off < len(b); off += 64 << 10 {
		chunk := b[off:min(off+64<<10, len(b))]
		if _, err := f.WriteAt(chunk, base+int64(off)); err != nil {
			return err
		}
		tag.Write(chunk)
		time.Sleep(time.Millisecond)
	}
	return sp.Keep(int64(len(b)), tag.ETag())
}

func countTemp(root string) int {
	n := 0
	filepath.WalkDir(root, func(_ string, e fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(e.Name(), tempPrefix) {
			n++
		}
		return nil
	})
	return n
}

// An object read recently survives a pass that removes older unread ones.
func TestDirEvictsLeastRecentlyUsed(t *testing.T) {
	const budget = 40 * blockSize
	d := newDir(t, DirOptions{MaxBytes: budget})
	key := func(i int) string { return fmt.Sprintf("v1/emoji/%02d", i) }
	old := time.Now().Add(-time.Hour)
	for i := range 30 {
		put(t, d, key(i), 100)
		age(t, d, key(i), old.Add(time.Duration(i)*time.Second))
	}
	// The oldest is read: a hit makes it the most recent.
	if !exists(d, key(0)) {
		t.Fatal("key 0 missing")
	}
	for i := 30; i < 45; i++ {
		put(t, d, key(i), 100)
	}
	d.wait()
	if !exists(d, key(0)) {
		t.Error("the object read recently was evicted")
	}
	evicted := 0
	for i := 1; i < 45; i++ {
		switch {
		case !exists(d, key(i)) && evicted == i-1:
			evicted++
		case !exists(d, key(i)):
			t.Errorf("key %d evicted, but key %d, older and unread, was not", i, evicted+1)
		}
	}
	if evicted == 0 || evicted >= 30 {
		t.Errorf("%d objects evicted, want the oldest few", evicted)
	}
	if d.total > budget || counted(d.root) > budget {
		t.Errorf("%d bytes counted, %d on disk, over the budget %d", d.total, counted(d.root), budget)
	}
}

// An object held open by a reader survives eviction and reads back whole.
func TestDirKeepsObjectsBeingRead(t *testing.T) {
	ctx := context.Background()
	const budget = 40 * blockSize
	d := newDir(t, DirOptions{MaxBytes: budget})
	want := put(t, d, "v1/original/held", 64<<10)
	e, err := d.Lookup(ctx, "v1/original/held")
	if err != nil {
		t.Fatal(err)
	}
	rc, err := e.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 10)
	if _, err := io.ReadFull(rc, head); err != nil {
		t.Fatal(err)
	}
	// Oldest of all, and many newer objects to make room for.
	age(t, d, "v1/original/held", time.Now().Add(-time.Hour))
	for i := range 60 {
		put(t, d, fmt.Sprintf("v1/emoji/%02d", i), 100)
	}
	d.wait()
	if exists(d, "v1/emoji/00") {
		t.Error("no eviction happened")
	}
	if !exists(d, "v1/original/held") {
		t.Fatal("an object being read was evicted")
	}
	rest, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if got := append(head, rest...); !bytes.Equal(got, want) {
		t.Errorf("read back %d bytes, different from the %d written", len(got), len(want))
	}
	rc.Close()
	rc.Close() // a second Close must not release twice
	if len(d.readers) != 0 {
		t.Errorf("readers left: %v", d.readers)
	}
	// Closed, it is the oldest again and goes first.
	age(t, d, "v1/original/held", time.Now().Add(-time.Hour))
	for i := 60; i < 80; i++ {
		put(t, d, fmt.Sprintf("v1/emoji/%02d", i), 100)
	}
	d.wait()
	if exists(d, "v1/original/held") {
		t.Error("an object no longer read was not evicted")
	}
}

func TestDirPassRemovesExpiredMarkers(t *testing.T) {
	ctx := context.Background()
	d := newDir(t, DirOptions{MaxBytes: 1 << 30})
	now := time.Now()
	d.now = func() time.Time { return now }
	ttls := map[string]time.Duration{"failed/emoji/a": time.Minute, "failed/emoji/b": 10 * time.Second, "failed/emoji/c": time.Hour}
	for key, ttl := range ttls {
		if err := d.Fail(ctx, key, 404, ttl); err != nil {
			t.Fatal(err)
		}
	}
	if d.total != 3*blockSize {
		t.Errorf("markers count %d, want %d", d.total, 3*blockSize)
	}
	now = now.Add(2 * time.Minute)
	runPass(d)
	for _, key := range []string{"failed/emoji/a", "failed/emoji/b"} {
		if _, err := os.Stat(filepath.Join(d.root, key)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("expired marker %s not removed: %v", key, err)
		}
	}
	if status, _, err := d.Failure(ctx, "failed/emoji/c"); err != nil || status != 404 {
		t.Errorf("fresh marker: %d, %v", status, err)
	}
	if d.total != blockSize {
		t.Errorf("total %d, want %d", d.total, blockSize)
	}
}

func TestDirPassRemovesStaleTempFiles(t *testing.T) {
	d := newDir(t, DirOptions{})
	os.MkdirAll(filepath.Join(d.root, "v1", "emoji"), 0o755)
	stale, fresh := filepath.Join(d.root, "v1", "emoji", tempPrefix+"1"), filepath.Join(d.root, "v1", "emoji", tempPrefix+"2")
	for _, p := range []string{stale, fresh} {
		os.WriteFile(p, []byte("half a write"), 0o600)
	}
	old := time.Now().Add(-staleTemp - time.Minute)
	os.Chtimes(stale, old, old)
	runPass(d)
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale temporary file kept: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("a write in progress lost its file: %v", err)
	}
}

// The files already there are counted at open, in the background, and
// evicted if they are over the budget.
func TestDirCountsFilesAtOpen(t *testing.T) {
	first := newDir(t, DirOptions{MaxBytes: 1 << 30})
	for i := range 10 {
		put(t, first, fmt.Sprintf("v1/emoji/%02d", i), 100)
	}
	var log bytes.Buffer
	second, err := NewDir(first.root, DirOptions{MaxBytes: 1 << 30, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	second.wait()
	if second.total != 10*blockSize {
		t.Errorf("counted %d at open, want %d", second.total, 10*blockSize)
	}
	if !strings.Contains(log.String(), "files=10 ") {
		t.Errorf("log of the count at open: %q", log.String())
	}
	small, err := NewDir(first.root, DirOptions{MaxBytes: 5 * blockSize})
	if err != nil {
		t.Fatal(err)
	}
	small.wait()
	if got := counted(first.root); got != 4*blockSize || small.total != got {
		t.Errorf("a store opened over its budget holds %d bytes (counted %d), want %d", got, small.total, 4*blockSize)
	}
}

func TestDirDefaultMaxBytes(t *testing.T) {
	for fsSize, want := range map[int64]int64{
		0:        DefaultMaxBytes, // unknown
		8 << 30:  2 << 30,
		40 << 30: DefaultMaxBytes,
		1 << 40:  DefaultMaxBytes,
	} {
		if got := defaultMaxBytes(fsSize); got != want {
			t.Errorf("filesystem of %d bytes: budget %d, want %d", fsSize, got, want)
		}
	}
	if _, err := NewDir(t.TempDir(), DirOptions{MaxBytes: -1}); err == nil {
		t.Error("a negative budget was accepted")
	}
	if d := newDir(t, DirOptions{MaxBytes: 12345}); d.MaxBytes() != 12345 {
		t.Errorf("MaxBytes() = %d", d.MaxBytes())
	}
}
