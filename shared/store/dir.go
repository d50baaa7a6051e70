package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// DefaultMaxBytes is the disk budget of a Dir when DirOptions.MaxBytes is 0
// and the filesystem is large enough.
const DefaultMaxBytes = 10 << 30

const (
	// blockSize is what a file is rounded up to when counted: a 1 KiB
	// variant still takes a 4 KiB block.
	blockSize = 4 << 10
	// touchAfter is how stale a hit's mtime may get before Lookup
	// refreshes it; coarse, so hits rarely write.
	touchAfter = time.Minute
	tempPrefix = ".tmp-"
)

// DirOptions configure a Dir.
type DirOptions struct {
	// MaxBytes is the disk budget, counting each file rounded up to 4 KiB.
	// When a write takes the store past it, least recently used objects
	// are removed in the background until it is at 90 %; should writes
	// outrun that and take it 10 % over, they wait for the eviction. 0
	// means DefaultMaxBytes (10 GiB), but at most a quarter of the size of
	// the filesystem holding the folder.
	MaxBytes int64
	// Logger, when set, gets a line per eviction pass.
	Logger *slog.Logger
}

// Dir keeps each key in one file under a root folder (see format.go),
// written to a temporary file beside it and renamed into place, so a key
// is visible only once complete. It stays within a disk budget by evicting
// the least recently used objects; recency is the file's mtime.
type Dir struct {
	root     string
	maxBytes int64
	log      *slog.Logger
	// Tests replace these before writing anything.
	now        func() time.Time
	touchAfter time.Duration

	mu sync.Mutex
	// total is the bytes of the store's files (rounded up to blocks), kept
	// by every write and removal and recounted by each eviction pass.
	total int64
	// walking is set while a pass counts the files; walkDelta collects
	// the changes made meanwhile, to be added to its count.
	walking   bool
	walkDelta int64
	// readers counts the open readers of each path: eviction skips them.
	readers map[string]int
	passing bool
	// idle is closed when no pass is running.
	idle chan struct{}
}

var _ Store = (*Dir)(nil)

// NewDir opens (creating if needed) a store rooted at dir. It counts the
// files already there in the background: the store is usable at once, and
// eviction waits for the count.
func NewDir(dir string, opts DirOptions) (*Dir, error) {
	if opts.MaxBytes < 0 {
		return nil, fmt.Errorf("store: negative size budget %d", opts.MaxBytes)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("store: create %s: %w", dir, err)
	}
	maxBytes := opts.MaxBytes
	if maxBytes == 0 {
		size, err := fsSize(dir)
		if err != nil {
			return nil, fmt.Errorf("store: size of the filesystem of %s: %w", dir, err)
		}
		maxBytes = defaultMaxBytes(size)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Dir{
		root:       filepath.Clean(dir),
		maxBytes:   maxBytes,
		log:        log,
		now:        time.Now,
		touchAfter: touchAfter,
		readers:    map[string]int{},
	}
	d.mu.Lock()
	d.startPassLocked()
	d.mu.Unlock()
	return d, nil
}

// defaultMaxBytes is DefaultMaxBytes capped at a quarter of a filesystem
// of fsSize bytes (0: unknown), so a small disk is not filled.
func defaultMaxBytes(fsSize int64) int64 {
	if fsSize <= 0 {
		return DefaultMaxBytes
	}
	return min(DefaultMaxBytes, fsSize/4)
}

// MaxBytes is the disk budget in effect.
func (d *Dir) MaxBytes() int64 { return d.maxBytes }

func (d *Dir) path(key string) (string, error) {
	// Keys come from the variant package, but never let one escape the
	// root or name the store's own dot files (temporary files).
	bad := key == "" || strings.HasPrefix(key, "/") || strings.Contains(key, `\`)
	for seg := range strings.SplitSeq(key, "/") {
		bad = bad || seg == "" || strings.HasPrefix(seg, ".")
	}
	if bad {
		return "", fmt.Errorf("store: bad key %q", key)
	}
	return filepath.Join(d.root, filepath.FromSlash(key)), nil
}

func (d *Dir) Lookup(_ context.Context, key string) (*Entry, error) {
	p, err := d.path(key)
	if err != nil {
		return nil, err
	}
	f, h, raw, fi, err := openFile(p, kindObject)
	if err != nil {
		return nil, fmt.Errorf("store: look up %s: %w", key, err)
	}
	f.Close()
	m, err := decodeObject(raw, h.bodyLen)
	if err != nil {
		return nil, fmt.Errorf("store: look up %s: %w", key, ErrNotFound)
	}
	if !d.touch(p, fi.ModTime()) {
		return nil, fmt.Errorf("store: look up %s: %w", key, ErrNotFound)
	}
	return &Entry{
		Meta: m,
		Open: func(context.Context) (io.ReadCloser, error) { return d.openBody(p, key, m) },
	}, nil
}

// touch marks p recently used, unless it already is, and tells whether it
// is still there. Under the lock, an eviction pass either sees the new
// mtime or has removed the file before.
func (d *Dir) touch(p string, mtime time.Time) bool {
	now := d.now()
	if now.Sub(mtime) < d.touchAfter {
		return true
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	err := os.Chtimes(p, now, now)
	// Any other failure only costs the object its recency.
	return !errors.Is(err, fs.ErrNotExist)
}

// openBody opens the object at p for reading, as long as it is still the
// one Lookup described; eviction leaves it alone until Close.
func (d *Dir) openBody(p, key string, want Meta) (io.ReadCloser, error) {
	d.acquire(p)
	f, h, err := openObject(p, want)
	if err != nil {
		d.release(p)
		return nil, fmt.Errorf("store: open %s: %w", key, err)
	}
	return &body{
		SectionReader: io.NewSectionReader(f, h.bodyOffset(), int64(h.bodyLen)),
		f:             f,
		release:       func() { d.release(p) },
	}, nil
}

// openObject opens the object at p if its meta is want.
func openObject(p string, want Meta) (*os.File, header, error) {
	f, h, raw, _, err := openFile(p, kindObject)
	if err != nil {
		return nil, header{}, err
	}
	if m, err := decodeObject(raw, h.bodyLen); err != nil || m != want {
		// Rewritten since Lookup, with other bytes (or broken): the
		// caller's headers would not match them.
		f.Close()
		return nil, header{}, fmt.Errorf("changed since it was looked up: %w", ErrNotFound)
	}
	return f, h, nil
}

// body is an object's bytes: seekable, so Range requests can be served
// from it, and kept from eviction until closed.
type body struct {
	*io.SectionReader
	f       *os.File
	once    sync.Once
	release func()
}

func (b *body) Close() error {
	err := b.f.Close()
	b.once.Do(b.release)
	return err
}

func (d *Dir) acquire(p string) {
	d.mu.Lock()
	d.readers[p]++
	d.mu.Unlock()
}

func (d *Dir) release(p string) {
	d.mu.Lock()
	if d.readers[p]--; d.readers[p] <= 0 {
		delete(d.readers, p)
	}
	d.mu.Unlock()
}

// openFile opens p and checks it is a store file of kind k. A file that is
// missing, of another kind, in the old layout or corrupt is ErrNotFound.
func openFile(p string, k fileKind) (*os.File, header, []byte, fs.FileInfo, error) {
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, header{}, nil, nil, ErrNotFound
	}
	if err != nil {
		return nil, header{}, nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, header{}, nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, header{}, nil, nil, ErrNotFound
	}
	h, raw, err := readHead(f, fi.Size())
	switch {
	case errors.Is(err, errNotStore), errors.Is(err, errCorrupt), err == nil && h.kind != k:
		err = ErrNotFound
	}
	if err != nil {
		f.Close()
		return nil, header{}, nil, nil, err
	}
	return f, h, raw, fi, nil
}

// Put stores body under key. When meta.ETag is empty it is computed from
// the bytes as they are written (see ETag). meta.Size is ignored.
func (d *Dir) Put(ctx context.Context, key string, meta Meta, body io.Reader) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if err := d.put(ctx, p, meta, body); err != nil {
		return fmt.Errorf("store: put %s: %w", key, err)
	}
	return nil
}

func (d *Dir) put(ctx context.Context, p string, meta Meta, body io.Reader) error {
	if err := d.waitForRoom(ctx); err != nil {
		return err
	}
	m := objectMeta{ContentType: meta.ContentType, Disposition: meta.Disposition, ETag: meta.ETag}
	var tag *ETagWriter
	if m.ETag == "" {
		// Known only once the body is written: reserve its room.
		tag, m.ETag = new(ETagWriter), etagPlaceholder
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode meta: %w", err)
	}
	t, err := createTemp(p, kindObject, raw)
	if err != nil {
		return err
	}
	defer t.discard()
	if err := t.copyBody(body, tag); err != nil {
		return err
	}
	if tag != nil {
		m.ETag = tag.ETag()
		if err := t.rewriteMeta(m); err != nil {
			return err
		}
	}
	return d.publish(t, p)
}

// Keeps is true: a Dir keeps what is put, up to its size budget.
func (d *Dir) Keeps() bool { return true }

// Fail writes a marker holding status and ttl; its age is its mtime.
func (d *Dir) Fail(ctx context.Context, key string, status int, ttl time.Duration) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if err := d.fail(ctx, p, status, ttl); err != nil {
		return fmt.Errorf("store: fail %s: %w", key, err)
	}
	return nil
}

func (d *Dir) fail(ctx context.Context, p string, status int, ttl time.Duration) error {
	if err := d.waitForRoom(ctx); err != nil {
		return err
	}
	raw, err := json.Marshal(markerMeta{Status: status, TTL: int64(ttl)})
	if err != nil {
		return fmt.Errorf("encode marker: %w", err)
	}
	t, err := createTemp(p, kindFailure, raw)
	if err != nil {
		return err
	}
	defer t.discard()
	return d.publish(t, p)
}

func (d *Dir) Failure(_ context.Context, key string) (int, time.Duration, error) {
	p, err := d.path(key)
	if err != nil {
		return 0, 0, err
	}
	f, _, raw, fi, err := openFile(p, kindFailure)
	if err != nil {
		return 0, 0, fmt.Errorf("store: failure %s: %w", key, err)
	}
	f.Close()
	m, err := decodeMarker(raw)
	if err != nil {
		return 0, 0, fmt.Errorf("store: failure %s: %w", key, ErrNotFound)
	}
	left := d.left(m, fi.ModTime())
	if d.expired(m, fi.ModTime()) {
		// Under the lock, and only if unchanged: a fresh marker written
		// meanwhile stays.
		d.removeIf(p, stampOf(fi), false)
		return 0, 0, ErrNotFound
	}
	return m.Status, left, nil
}

// left is how long a marker written at mtime still holds.
func (d *Dir) left(m markerMeta, mtime time.Time) time.Duration {
	return time.Duration(m.TTL) - d.now().Sub(mtime)
}

func (d *Dir) expired(m markerMeta, mtime time.Time) bool {
	return d.left(m, mtime) <= 0
}

// waitForRoom holds a write back while the store is well over budget, for
// the running eviction pass to finish: a pass walks every file, and
// writes faster than that must not outrun it. One pass at most, so a
// store whose objects are all being read still takes writes.
func (d *Dir) waitForRoom(ctx context.Context) error {
	d.mu.Lock()
	if d.total <= d.maxBytes+d.maxBytes/10 {
		d.mu.Unlock()
		return nil
	}
	d.startPassLocked()
	idle := d.idle
	d.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("store: over budget, waiting for eviction: %w", ctx.Err())
	}
}

// tempFile is a store file being written beside its final path.
type tempFile struct {
	f         *os.File
	kind      fileKind
	metaLen   int
	bodyLen   int64
	published bool
}

// createTemp starts a file of kind k with meta, its header to be filled
// in by publish.
func createTemp(p string, k fileKind, meta []byte) (*tempFile, error) {
	if len(meta) > maxMetaSize {
		return nil, fmt.Errorf("meta of %d bytes", len(meta))
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(filepath.Dir(p), tempPrefix+"*")
	if err != nil {
		return nil, err
	}
	t := &tempFile{f: f, kind: k, metaLen: len(meta)}
	if _, err := f.Write(append(make([]byte, headerSize), meta...)); err != nil {
		t.discard()
		return nil, err
	}
	return t, nil
}

// copyBody appends body, passing it through tag when set.
func (t *tempFile) copyBody(body io.Reader, tag *ETagWriter) error {
	dst := io.Writer(t.f)
	if tag != nil {
		dst = io.MultiWriter(t.f, tag)
	}
	n, err := io.Copy(dst, body)
	t.bodyLen = n
	return err
}

// rewriteMeta writes m over the meta the file was created with.
func (t *tempFile) rewriteMeta(m objectMeta) error {
	raw, err := padMeta(m, t.metaLen)
	if err != nil {
		return err
	}
	_, err = t.f.WriteAt(raw, headerSize)
	return err
}

// discard removes the file unless it was published.
func (t *tempFile) discard() {
	if !t.published {
		t.f.Close()
		os.Remove(t.f.Name())
	}
}

// publish fills in the header and renames the file to p.
func (d *Dir) publish(t *tempFile, p string) error {
	h := header{kind: t.kind, metaLen: uint32(t.metaLen), bodyLen: uint64(t.bodyLen)}
	if _, err := t.f.WriteAt(h.bytes(), 0); err != nil {
		return err
	}
	if err := t.f.Close(); err != nil {
		return err
	}
	if err := d.commit(t.f.Name(), p, h.bodyOffset()+t.bodyLen); err != nil {
		return err
	}
	t.published = true
	return nil
}

// commit renames tmp (of size bytes) over p and counts the difference.
// It holds the lock so that an eviction pass never removes p between the
// size read here and the rename.
func (d *Dir) commit(tmp, p string, size int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var old int64
	if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() {
		old = blocks(fi.Size())
	}
	if err := os.Rename(tmp, p); err != nil {
		return err
	}
	d.addLocked(blocks(size) - old)
	return nil
}

// addLocked counts a change of delta bytes and starts a pass if the store
// went over budget.
func (d *Dir) addLocked(delta int64) {
	d.total += delta
	if d.walking {
		d.walkDelta += delta
	}
	if d.total > d.maxBytes {
		d.startPassLocked()
	}
}

// blocks is size rounded up to whole blocks, roughly what it takes on disk.
func blocks(size int64) int64 {
	return (size + blockSize - 1) / blockSize * blockSize
}
