package store

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDirRoundTrip(t *testing.T) {
	ctx := context.Background()
	d, err := NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
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
	rc, err := e.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if b, _ := io.ReadAll(rc); string(b) != "hello" {
		t.Errorf("body %q", b)
	}
}

func TestDirNeverShowsPartialObjects(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	d, _ := NewDir(root)
	boom := errors.New("connection reset")
	err := d.Put(ctx, "v1/original/big", Meta{ContentType: "video/mp4"}, io.MultiReader(strings.NewReader("partial"), errReader{boom}))
	if !errors.Is(err, boom) {
		t.Fatalf("Put = %v, want the reader's error", err)
	}
	if _, err := d.Lookup(ctx, "v1/original/big"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a failed write is visible: %v", err)
	}
	leftovers, _ := filepath.Glob(filepath.Join(root, "v1", "original", "*"))
	if len(leftovers) != 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}
}

func TestDirRejectsEscapingKeys(t *testing.T) {
	d, _ := NewDir(t.TempDir())
	for _, key := range []string{"", "../x", "/etc/passwd", "v1/../../x"} {
		if err := d.Put(context.Background(), key, Meta{}, strings.NewReader("x")); err == nil {
			t.Errorf("key %q accepted", key)
		}
	}
}

func TestDirFailureMemoryExpires(t *testing.T) {
	ctx := context.Background()
	d, _ := NewDir(t.TempDir())
	now := time.Now()
	d.now = func() time.Time { return now }
	if _, err := d.Failure(ctx, "failed/emoji/x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("no failure yet: %v", err)
	}
	if err := d.Fail(ctx, "failed/emoji/x", 404, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	if status, err := d.Failure(ctx, "failed/emoji/x"); err != nil || status != 404 {
		t.Errorf("Failure = %d, %v", status, err)
	}
	now = now.Add(5*time.Minute + time.Second)
	if _, err := d.Failure(ctx, "failed/emoji/x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("failure remembered past its TTL: %v", err)
	}
	os.WriteFile(filepath.Join(d.root, "failed", "emoji", "bad"), []byte("nope"), 0o644)
	now = time.Now()
	if _, err := d.Failure(ctx, "failed/emoji/bad"); err == nil {
		t.Error("a corrupt marker was accepted")
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
