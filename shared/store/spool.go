package store

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
)

// Spooler is a store that can hold a body while it downloads, in a file
// that becomes the stored object once complete, so that storing it copies
// nothing: the dir store's temporary file, renamed into place.
type Spooler interface {
	// Spool makes room for a body to be stored under key with meta (its
	// ETag and Size are ignored).
	Spool(ctx context.Context, key string, meta Meta) (Spool, error)
}

// Spool is a file in a store for one body being downloaded.
type Spool interface {
	// File is the file the body is written to, from the offset on; the
	// caller writes and reads it with WriteAt and ReadAt. It stays open
	// until Close.
	File() (*os.File, int64)
	// Reserve takes room on disk for n more bytes of body, waiting for
	// eviction to make it; ErrNoRoom when there is none.
	Reserve(ctx context.Context, n int64) error
	// Keep makes the first size bytes of the body, whose strong ETag is
	// etag, the object stored under the key.
	Keep(size int64, etag string) error
	// Close closes the file; without Keep it also removes it and gives
	// back its room.
	Close() error
}

var _ Spooler = (*Dir)(nil)

// Spool starts a temporary file beside key's path (see Spooler).
func (d *Dir) Spool(ctx context.Context, key string, meta Meta) (Spool, error) {
	p, err := d.path(key)
	if err != nil {
		return nil, err
	}
	// The ETag is known only at the end: reserve its room.
	raw, err := json.Marshal(objectMeta{ContentType: meta.ContentType, Disposition: meta.Disposition, ETag: etagPlaceholder})
	if err != nil {
		return nil, fmt.Errorf("store: spool %s: encode meta: %w", key, err)
	}
	t, err := d.createTemp(ctx, p, kindObject, raw)
	if err != nil {
		return nil, fmt.Errorf("store: spool %s: %w", key, err)
	}
	return &dirSpool{t: t, p: p, meta: meta}, nil
}

type dirSpool struct {
	t        *tempFile
	p        string
	meta     Meta
	bodyRoom int64 // body bytes reserved
}

func (s *dirSpool) File() (*os.File, int64) { return s.t.f, s.t.bodyOffset() }

func (s *dirSpool) Reserve(ctx context.Context, n int64) error {
	if err := s.t.grow(ctx, s.t.bodyOffset()+s.bodyRoom+n); err != nil {
		return err
	}
	s.bodyRoom += n
	return nil
}

// Keep renames the file into place and keeps it from eviction while it is
// still open (readers of the spool are reading it).
func (s *dirSpool) Keep(size int64, etag string) error {
	t := s.t
	t.bodyLen = size
	m := objectMeta{ContentType: s.meta.ContentType, Disposition: s.meta.Disposition, ETag: etag}
	if err := t.rewriteMeta(m); err != nil {
		return err
	}
	if err := t.writeHeader(); err != nil {
		return err
	}
	// Counted as being read before it appears, so no pass evicts it
	// while the spool still reads it.
	t.d.acquire(s.p)
	if err := t.d.commit(t, s.p); err != nil {
		t.d.release(s.p)
		return err
	}
	return nil
}

func (s *dirSpool) Close() error {
	if !s.t.published {
		s.t.discard()
		return nil
	}
	err := s.t.f.Close()
	s.t.d.release(s.p)
	return err
}
