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
	// MaxBytes is the disk budget, counting each file rounded up to 4 KiB,
	// temporary files (writes in progress, spools) included: each write
	// reserves its room before it writes. Past 95 % the least recently
	// used objects are removed in the background until the store is at
	// 90 %; a write that does not fit waits for that, and fails with
	// ErrNoRoom when even a whole pass cannot make room (everything left
	// is being written or read). 0 means DefaultMaxBytes (10 GiB), but at
	// most a quarter of the size of the filesystem holding the folder.
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
	// inflight is the room reserved by files being written (temporary
	// files and spools), which total does not count.
	inflight int64
	// walking is set while a pass counts the files; walkDelta collects
	// the changes made meanwhile, to be added to its count.
	walking   bool
	walkDelta int64
	// passCount counts the passes started, so a write that waits for room
	// can tell a pass that began after it asked.
	passCount int
	// readers counts the open readers of each path: eviction skips them.
	readers map[string]int
	passing bool
	// idle is closed when no pass is running.
	idle chan struct{}
}

var _ Store = (*Dir)(nil)

// ErrNoRoom means a write did not fit in the disk budget, even after
// eviction: what is left is being written or read. It says nothing about
// the source.
var ErrNoRoom = errors.New("store: no room within the disk budget")

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
	t, err := d.createTemp(ctx, p, kindObject, raw)
	if err != nil {
		return err
	}
	defer t.discard()
	if l, ok := body.(interface{ Len() int }); ok {
		// Known size (bytes in memory): all its room at once, so a write
		// never holds part of it while it waits for the rest.
		if err := t.grow(ctx, t.bodyOffset()+int64(l.Len())); err != nil {
			return err
		}
	}
	if err := t.copyBody(ctx, body, tag); err != nil {
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
	raw, err := json.Marshal(markerMeta{Status: status, TTL: int64(ttl)})
	if err != nil {
		return fmt.Errorf("encode marker: %w", err)
	}
	t, err := d.createTemp(ctx, p, kindFailure, raw)
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

// reserve takes n bytes of the disk budget for a file being written.
// When they do not fit, it waits for eviction, and fails with ErrNoRoom
// once a pass that started after it asked has ended without making room.
func (d *Dir) reserve(ctx context.Context, n int64) error {
	if n > d.maxBytes {
		return fmt.Errorf("%w: %d bytes, the whole budget is %d", ErrNoRoom, n, d.maxBytes)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	after := -1 // the pass that must have run before giving up
	for {
		if d.total+d.inflight+n <= d.maxBytes {
			d.inflight += n
			d.evictEarlyLocked()
			return nil
		}
		if after < 0 {
			after = d.passCount + 1
		} else if d.passCount >= after && !d.passing {
			return fmt.Errorf("%w: %d bytes wanted, %d stored and %d being written of %d", ErrNoRoom, n, d.total, d.inflight, d.maxBytes)
		}
		d.startPassLocked()
		idle := d.idle
		d.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			d.mu.Lock()
			return fmt.Errorf("store: waiting for room on disk: %w", ctx.Err())
		}
		d.mu.Lock()
	}
}

// unreserveLocked gives back room reserved for a file that was removed.
func (d *Dir) unreserveLocked(n int64) {
	d.inflight -= n
}

// evictEarlyLocked starts a pass once the store is at 95 % of its
// budget, so that writes rarely wait for one.
func (d *Dir) evictEarlyLocked() {
	if d.total+d.inflight > d.maxBytes-d.maxBytes/20 {
		d.startPassLocked()
	}
}

// tempFile is a store file being written beside its final path. Its
// room in the disk budget is reserved before each write.
type tempFile struct {
	d         *Dir
	f         *os.File
	kind      fileKind
	metaLen   int
	bodyLen   int64
	reserved  int64
	published bool
}

// createTemp starts a file of kind k with meta, its header to be filled
// in by publish.
func (d *Dir) createTemp(ctx context.Context, p string, k fileKind, meta []byte) (*tempFile, error) {
	if len(meta) > maxMetaSize {
		return nil, fmt.Errorf("meta of %d bytes", len(meta))
	}
	head := blocks(int64(headerSize + len(meta)))
	if err := d.reserve(ctx, head); err != nil {
		return nil, err
	}
	t := &tempFile{d: d, kind: k, metaLen: len(meta), reserved: head}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.unreserve()
		return nil, err
	}
	f, err := os.CreateTemp(filepath.Dir(p), tempPrefix+"*")
	if err != nil {
		t.unreserve()
		return nil, err
	}
	t.f = f
	if _, err := f.Write(append(make([]byte, headerSize), meta...)); err != nil {
		t.discard()
		return nil, err
	}
	return t, nil
}

// grow reserves the room for a file of size bytes.
func (t *tempFile) grow(ctx context.Context, size int64) error {
	need := blocks(size) - t.reserved
	if need <= 0 {
		return nil
	}
	if err := t.d.reserve(ctx, need); err != nil {
		return err
	}
	t.reserved += need
	return nil
}

// Write appends p to the body, within the room reserved for it.
func (t *tempFile) write(ctx context.Context, p []byte) error {
	if err := t.grow(ctx, t.bodyOffset()+t.bodyLen+int64(len(p))); err != nil {
		return err
	}
	n, err := t.f.Write(p)
	t.bodyLen += int64(n)
	return err
}

func (t *tempFile) bodyOffset() int64 { return headerSize + int64(t.metaLen) }

// copyBody appends body, passing it through tag when set.
func (t *tempFile) copyBody(ctx context.Context, body io.Reader, tag *ETagWriter) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if tag != nil {
				tag.Write(buf[:n])
			}
			if werr := t.write(ctx, buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (t *tempFile) unreserve() {
	t.d.mu.Lock()
	t.d.unreserveLocked(t.reserved)
	t.d.mu.Unlock()
	t.reserved = 0
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

// discard removes the file unless it was published, and gives back its
// room.
func (t *tempFile) discard() {
	if !t.published {
		if t.f != nil {
			t.f.Close()
			os.Remove(t.f.Name())
		}
		t.unreserve()
	}
}

// publish fills in the header and renames the file to p.
func (d *Dir) publish(t *tempFile, p string) error {
	if err := t.writeHeader(); err != nil {
		return err
	}
	if err := t.f.Close(); err != nil {
		return err
	}
	return d.commit(t, p)
}

func (t *tempFile) writeHeader() error {
	h := header{kind: t.kind, metaLen: uint32(t.metaLen), bodyLen: uint64(t.bodyLen)}
	_, err := t.f.WriteAt(h.bytes(), 0)
	return err
}

// commit renames t over p, counts the difference, and gives back t's
// reservation. It holds the lock so that an eviction pass never removes p
// between the size read here and the rename.
func (d *Dir) commit(t *tempFile, p string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var old int64
	if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() {
		old = blocks(fi.Size())
	}
	if err := os.Rename(t.f.Name(), p); err != nil {
		return err
	}
	t.published = true
	d.unreserveLocked(t.reserved)
	t.reserved = 0
	d.addLocked(blocks(t.bodyOffset()+t.bodyLen) - old)
	return nil
}

// addLocked counts a change of delta bytes and starts a pass if the store
// is nearly full.
func (d *Dir) addLocked(delta int64) {
	d.total += delta
	if d.walking {
		d.walkDelta += delta
	}
	d.evictEarlyLocked()
}

// blocks is size rounded up to whole blocks, roughly what it takes on disk.
func blocks(size int64) int64 {
	return (size + blockSize - 1) / blockSize * blockSize
}

// FilesystemSize is the size of the filesystem holding dir (0: unknown).
func FilesystemSize(dir string) (int64, error) { return fsSize(dir) }
