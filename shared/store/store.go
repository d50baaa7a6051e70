// Package store defines where finished variants are kept, so that each is
// computed once. Implementations: a directory on disk (the embedded
// default), S3, and none.
package store

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrNotFound means the key holds no object (or no fresh failure).
var ErrNotFound = errors.New("store: not found")

// Meta is what a stored object is served with.
type Meta struct {
	ContentType string
	Disposition string
	// ETag is a strong, quoted entity tag of the bytes.
	ETag string
	Size int64
}

// Entry is a stored object.
type Entry struct {
	Meta
	// RedirectURL, when set, is where clients fetch the bytes themselves
	// (a presigned or CDN URL) and RedirectMaxAge how long it stays valid.
	RedirectURL    string
	RedirectMaxAge time.Duration
	// Open reads the bytes through the proxy when there is no RedirectURL.
	// The reader may also be an io.Seeker over the bytes (Dir's is), to
	// serve Range requests; an object gone since Lookup is ErrNotFound.
	Open func(ctx context.Context) (io.ReadCloser, error)
}

// Store keeps variants by key.
type Store interface {
	// Lookup finds key; ErrNotFound when it is absent.
	Lookup(ctx context.Context, key string) (*Entry, error)
	// Put stores body under key. A reader of the key never sees a partial
	// object: it sees the old state or the complete new one. Storing a key
	// that exists is not an error: variants are deterministic, so the
	// first writer's bytes are as good as the second's.
	Put(ctx context.Context, key string, meta Meta, body io.Reader) error
	// Fail remembers for ttl that producing key failed with an HTTP
	// status (see package failure for which failures and how long).
	Fail(ctx context.Context, key string, status int, ttl time.Duration) error
	// Failure returns a status remembered less than its ttl ago and how
	// much of the ttl is left, or ErrNotFound.
	Failure(ctx context.Context, key string) (status int, left time.Duration, err error)
	// Keeps reports whether what is Put can be looked up again: false for
	// a store that keeps nothing, where a result can reach only the client
	// that asked for it and precomputing is pointless.
	Keeps() bool
}

// WriteBuffer is the memory st holds while a body streams into it (S3's
// part buffers), for the memory budget; 0 when it says none.
func WriteBuffer(st Store) int64 {
	if b, ok := st.(interface{ WriteBuffer() int64 }); ok {
		return b.WriteBuffer()
	}
	return 0
}

// None stores nothing: every request does the work (benchmarks use it).
type None struct{}

func (None) Lookup(context.Context, string) (*Entry, error) { return nil, ErrNotFound }

func (None) Put(_ context.Context, _ string, _ Meta, body io.Reader) error {
	_, err := io.Copy(io.Discard, body)
	return err
}

func (None) Fail(context.Context, string, int, time.Duration) error { return nil }

func (None) Failure(context.Context, string) (int, time.Duration, error) {
	return 0, 0, ErrNotFound
}

func (None) Keeps() bool { return false }
