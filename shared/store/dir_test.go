package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"
)

// newDir opens a store in a fresh folder once its first count is done, so
// tests may set its fields.
func newDir(t *testing.T, opts DirOptions) *Dir {
	t.Helper()
	d, err := NewDir(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	d.wait()
	return d
}

func TestDirRoundTrip(t *testing.T) {
	ctx := context.Background()
	d := newDir(t, DirOptions{})
	if _, err := d.Lookup(ctx, "v1/emoji/abc"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing key: %v", err)
	}
	meta := Meta{ContentType: "image/webp", Disposition: `inline; filename="a.webp"`, ETag: `"e"`, Size: -1}
	if err := d.Put(ctx, "v1/emoji/abc", meta, strings.NewReader("hello")); err != nil {
		t.Fatal(err)
	}
	e, err := d.Lookup(ctx, "v1/emoji/abc")
	if err != nil {
		t.Fatal(err)
	}
	if e.ContentType != meta.ContentType || e.Disposition != meta.Disposition || e.ETag != meta.ETag || e.Size != 5 || e.RedirectURL != "" {
		t.Errorf("entry %+v", e)
	}
	if got := readAll(t, e); got != "hello" {
		t.Errorf("body %q", got)
	}
	// Storing a key again replaces it.
	if err := d.Put(ctx, "v1/emoji/abc", Meta{ContentType: "image/png"}, strings.NewReader("hello again")); err != nil {
		t.Fatal(err)
	}
	if e, err = d.Lookup(ctx, "v1/emoji/abc"); err != nil || e.ContentType != "image/png" || readAll(t, e) != "hello again" {
		t.Errorf("after a second Put: %+v, %v", e, err)
	}
}

func readAll(t *testing.T, e *Entry) string {
	t.Helper()
	rc, err := e.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDirNeverShowsPartialObjects(t *testing.T) {
	ctx := context.Background()
	d := newDir(t, DirOptions{})
	boom := errors.New("connection reset")
	err := d.Put(ctx, "v1/original/big", Meta{ContentType: "video/mp4"}, io.MultiReader(strings.NewReader("partial"), errReader{boom}))
	if !errors.Is(err, boom) {
		t.Fatalf("Put = %v, want the reader's error", err)
	}
	if _, err := d.Lookup(ctx, "v1/original/big"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a failed write is visible: %v", err)
	}
	leftovers, _ := filepath.Glob(filepath.Join(d.root, "v1", "original", "*"))
	if len(leftovers) != 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}
}

func TestDirRejectsEscapingKeys(t *testing.T) {
	d := newDir(t, DirOptions{})
	for _, key := range []string{"", "../x", "/etc/passwd", "v1/../../x", "v1/./x", "v1//x", "v1/", ".tmp-123", "v1/.tmp-x", `v1\..\x`} {
		if err := d.Put(context.Background(), key, Meta{}, strings.NewReader("x")); err == nil {
			t.Errorf("Put of key %q accepted", key)
		}
		if _, err := d.Lookup(context.Background(), key); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("Lookup of key %q = %v, want a bad key", key, err)
		}
	}
}

func TestDirFailureMemoryExpires(t *testing.T) {
	ctx := context.Background()
	d := newDir(t, DirOptions{})
	now := time.Now()
	d.now = func() time.Time { return now }
	if _, _, err := d.Failure(ctx, "failed/emoji/x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("no failure yet: %v", err)
	}
	if err := d.Fail(ctx, "failed/emoji/x", 404, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	if status, _, err := d.Failure(ctx, "failed/emoji/x"); err != nil || status != 404 {
		t.Errorf("Failure = %d, %v", status, err)
	}
	// What is left of the TTL, from the marker's age.
	fi, err := os.Stat(filepath.Join(d.root, "failed", "emoji", "x"))
	if err != nil {
		t.Fatal(err)
	}
	now = fi.ModTime().Add(2 * time.Minute)
	if _, left, err := d.Failure(ctx, "failed/emoji/x"); err != nil || left != 3*time.Minute {
		t.Errorf("Failure two minutes on: %v left, %v; want 3m0s", left, err)
	}
	if _, err := d.Lookup(ctx, "failed/emoji/x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a marker looked up as an object: %v", err)
	}
	now = now.Add(5*time.Minute + time.Second)
	if _, _, err := d.Failure(ctx, "failed/emoji/x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("failure remembered past its TTL: %v", err)
	}
	if _, err := os.Stat(filepath.Join(d.root, "failed", "emoji", "x")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Failure left the expired marker behind: %v", err)
	}
	os.WriteFile(filepath.Join(d.root, "failed", "emoji", "bad"), []byte("nope"), 0o644)
	if _, _, err := d.Failure(ctx, "failed/emoji/bad"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a corrupt marker: %v, want a miss", err)
	}
	if err := d.Put(ctx, "failed/emoji/obj", Meta{}, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Failure(ctx, "failed/emoji/obj"); !errors.Is(err, ErrNotFound) {
		t.Errorf("an object read as a marker: %v", err)
	}
}

func TestDirComputesETagOfStreamedBodies(t *testing.T) {
	ctx := context.Background()
	d := newDir(t, DirOptions{})
	body := bytes.Repeat([]byte{0, 1, 2, 3, 250}, 100_000)
	// One byte at a time, with a long Disposition: the reserved meta must
	// still be rewritten in place.
	meta := Meta{ContentType: "video/mp4", Disposition: `inline; filename="` + strings.Repeat("é", 300) + `.mp4"`}
	if err := d.Put(ctx, "v1/original/v", meta, iotest.OneByteReader(bytes.NewReader(body))); err != nil {
		t.Fatal(err)
	}
	e, err := d.Lookup(ctx, "v1/original/v")
	if err != nil {
		t.Fatal(err)
	}
	if e.ETag != ETag(body) || e.Size != int64(len(body)) || e.Disposition != meta.Disposition {
		t.Errorf("entry %+v, want ETag %s and size %d", e.Meta, ETag(body), len(body))
	}
	if got := readAll(t, e); got != string(body) {
		t.Errorf("body of %d bytes differs", len(got))
	}
}

func TestDirBodyServesRanges(t *testing.T) {
	ctx := context.Background()
	d := newDir(t, DirOptions{})
	body := []byte("0123456789abcdefghij")
	if err := d.Put(ctx, "v1/original/r", Meta{ContentType: "video/mp4", ETag: ETag(body)}, bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	e, err := d.Lookup(ctx, "v1/original/r")
	if err != nil {
		t.Fatal(err)
	}
	rc, err := e.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	rs, ok := rc.(io.ReadSeeker)
	if !ok {
		t.Fatalf("%T is not an io.ReadSeeker", rc)
	}
	if end, err := rs.Seek(0, io.SeekEnd); err != nil || end != int64(len(body)) {
		t.Errorf("Seek to the end = %d, %v; want the body's length %d", end, err, len(body))
	}
	rs.Seek(0, io.SeekStart)
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Range", "bytes=5-9")
	http.ServeContent(w, r, "", time.Time{}, rs)
	if w.Code != http.StatusPartialContent || w.Body.String() != "56789" || w.Header().Get("Content-Range") != "bytes 5-9/20" {
		t.Errorf("range answer %d %q %q", w.Code, w.Body, w.Header().Get("Content-Range"))
	}
}

// Two writers of one key must never leave one's meta with the other's
// bytes, which the old layout (bytes and meta renamed separately) did.
func TestDirConcurrentPutsStayPaired(t *testing.T) {
	ctx := context.Background()
	d := newDir(t, DirOptions{})
	const key = "v1/static/same"
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 100)
	for w := range 8 {
		wg.Go(func() {
			for i := range 100 {
				// The content type is in the body: it must be paired.
				ct := fmt.Sprintf("image/x-%d-%d", w, i)
				b := append([]byte(ct), bytes.Repeat([]byte{byte(w)}, rand.IntN(20_000))...)
				m := Meta{ContentType: ct}
				if i%2 == 0 {
					m.ETag = ETag(b)
				}
				if err := d.Put(ctx, key, m, bytes.NewReader(b)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var readers sync.WaitGroup
	for range 4 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := checkPaired(ctx, d, key); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := checkPaired(ctx, d, key); err != nil {
		t.Error(err)
	}
}

func checkPaired(ctx context.Context, d *Dir, key string) error {
	e, err := d.Lookup(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	rc, err := e.Open(ctx)
	if errors.Is(err, ErrNotFound) {
		return nil // replaced since Lookup, with other bytes: refused
	}
	if err != nil {
		return err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	if ETag(b) != e.ETag || int64(len(b)) != e.Size || !bytes.HasPrefix(b, []byte(e.ContentType)) {
		return fmt.Errorf("meta %+v paired with %d bytes starting %q (ETag %s)", e.Meta, len(b), b[:min(len(b), 20)], ETag(b))
	}
	return nil
}

// A disk error (a crash cannot: the rename publishes whole files) may
// leave a file short or garbled: it must read as a miss, and a pass
// removes it.
func TestDirDamagedFilesAreMisses(t *testing.T) {
	ctx := context.Background()
	d := newDir(t, DirOptions{})
	damage := map[string]func(b []byte) []byte{
		"body cut short":   func(b []byte) []byte { return b[:len(b)-1] },
		"meta cut short":   func(b []byte) []byte { return b[:headerSize+3] },
		"header cut short": func(b []byte) []byte { return b[:headerSize-1] },
		"only the magic":   func(b []byte) []byte { return b[:4] },
		"bytes appended":   func(b []byte) []byte { return append(b, 0) },
		"bad version":      func(b []byte) []byte { b[5] = 9; return b },
		"bad kind":         func(b []byte) []byte { b[7] = 9; return b },
		"huge meta length": func(b []byte) []byte { b[8] = 0xff; return b },
		"huge body length": func(b []byte) []byte { b[12] = 0xff; return b },
		"garbled meta":     func(b []byte) []byte { b[headerSize] = '!'; return b },
	}
	var paths []string
	for name, f := range damage {
		key := "v1/emoji/" + strings.ReplaceAll(name, " ", "-")
		if err := d.Put(ctx, key, Meta{ContentType: "image/png"}, strings.NewReader("some bytes")); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(d.root, key)
		b, _ := os.ReadFile(p)
		if err := os.WriteFile(p, f(b), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Lookup(ctx, key); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: Lookup = %v, want a miss", name, err)
		}
		paths = append(paths, p)
	}
	runPass(d)
	for _, p := range paths {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: not removed by a pass (%v)", filepath.Base(p), err)
		}
	}
}

// Files of the old layout are misses; a pass removes them, but not files
// the store does not know.
func TestDirOldLayout(t *testing.T) {
	ctx := context.Background()
	files := map[string]string{
		"v1/emoji/old":      "\x89PNG...",
		"v1/emoji/old.meta": `{"ContentType":"image/png","ETag":"\"e\"","Size":7}`,
		"failed/emoji/x":    "404 300",
		"failed/emoji/y":    "502 10",
	}
	d := newDir(t, DirOptions{})
	for name, content := range files {
		p := filepath.Join(d.root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	foreign := filepath.Join(d.root, "README.txt")
	os.WriteFile(foreign, []byte("not the store's"), 0o644)
	if _, err := d.Lookup(ctx, "v1/emoji/old"); !errors.Is(err, ErrNotFound) {
		t.Errorf("old object: %v, want a miss", err)
	}
	if _, _, err := d.Failure(ctx, "failed/emoji/x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("old marker: %v, want a miss", err)
	}
	runPass(d)
	for name := range files {
		if _, err := os.Stat(filepath.Join(d.root, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s not removed: %v", name, err)
		}
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("a file the store does not know was removed: %v", err)
	}
	if d.total != 0 {
		t.Errorf("total %d, want 0: only the store's files count", d.total)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
