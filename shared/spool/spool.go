// Package spool holds a body while it downloads: one writer appends it to
// a file, and any number of readers read that file while it grows, each
// at its own offset. A reader that wants bytes not yet written waits for
// them (a broadcast on every append, never a poll), so a slow reader
// falls behind on disk, never in memory, and never holds the writer back.
//
// The file comes from its owner: the dir store's temporary file, which
// becomes the stored object when complete, or an unnamed file in a
// temporary folder (see Temp). The owner's close function runs once the
// writer and every holder have let go.
package spool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// Spool is a body being written to a file and read back while it grows.
type Spool struct {
	f       *os.File
	base    int64 // where the body starts in f
	reserve func(ctx context.Context, n int64) error
	closed  func()

	// Written by the one writer only.
	room int64 // bytes reserved through reserve

	mu   sync.Mutex
	size int64         // bytes of the body written so far
	end  error         // nil while growing, io.EOF once complete, else why it broke
	grew chan struct{} // closed and replaced when size or end changes
	refs int           // holders; f is closed when the last one lets go
	// waiting counts the readers waiting for bytes (for tests).
	waiting int
}

// Options configure a Spool.
type Options struct {
	// Reserve takes room on disk for n more bytes before they are
	// written; an error ends Append (nil: no disk budget).
	Reserve func(ctx context.Context, n int64) error
	// Closed runs once the last holder has let go: it closes the file
	// (removing it unless it was kept) and gives back its room.
	Closed func()
}

// reserveStep is how much room Append asks for at a time when the body
// outgrows what was reserved: fewer calls into the disk budget, at most
// this much reserved and unused.
const reserveStep = 4 << 20

// New returns a spool for a body written to f from offset base on. The
// caller holds it once (see Hold and Release).
func New(f *os.File, base int64, o Options) *Spool {
	return &Spool{f: f, base: base, reserve: o.Reserve, closed: o.Closed, grew: make(chan struct{}), refs: 1}
}

// Reserve takes room for n bytes more than are reserved already (for a
// body of declared length, all of it before the first byte).
func (s *Spool) Reserve(ctx context.Context, n int64) error {
	if s.reserve == nil || n <= 0 {
		return nil
	}
	if err := s.reserve(ctx, n); err != nil {
		return err
	}
	s.room += n
	return nil
}

// Append writes p at the end of the body and wakes the readers waiting
// for it. Only one goroutine may append.
func (s *Spool) Append(ctx context.Context, p []byte) error {
	s.mu.Lock()
	size := s.size
	s.mu.Unlock()
	if s.reserve != nil && size+int64(len(p)) > s.room {
		if err := s.Reserve(ctx, max(size+int64(len(p))-s.room, reserveStep)); err != nil {
			return err
		}
	}
	if _, err := s.f.WriteAt(p, s.base+size); err != nil {
		return fmt.Errorf("spool: write: %w", err)
	}
	s.mu.Lock()
	s.size += int64(len(p))
	s.changedLocked()
	s.mu.Unlock()
	return nil
}

// Finish ends the body: complete when err is nil, broken otherwise.
// Readers get the bytes written, then io.EOF or err.
func (s *Spool) Finish(err error) {
	if err == nil {
		err = io.EOF
	}
	s.mu.Lock()
	if s.end == nil {
		s.end = err
		s.changedLocked()
	}
	s.mu.Unlock()
}

func (s *Spool) changedLocked() {
	close(s.grew)
	s.grew = make(chan struct{})
}

// State is the body's length so far and how it ended (nil: still
// growing; io.EOF: complete).
func (s *Spool) State() (size int64, end error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size, s.end
}

// Wait returns once the body has at least n bytes or has ended, or ctx
// is done.
func (s *Spool) Wait(ctx context.Context, n int64) (size int64, end error, err error) {
	for {
		s.mu.Lock()
		size, end, grew := s.size, s.end, s.grew
		s.mu.Unlock()
		if size >= n || end != nil {
			return size, end, nil
		}
		s.wait(1)
		select {
		case <-grew:
			s.wait(-1)
		case <-ctx.Done():
			s.wait(-1)
			return size, nil, ctx.Err()
		}
	}
}

func (s *Spool) wait(d int) {
	s.mu.Lock()
	s.waiting += d
	s.mu.Unlock()
}

// File is the file and the offset the body starts at, for its owner.
func (s *Spool) File() (*os.File, int64) { return s.f, s.base }

// ErrClosed is returned by Hold once the spool's file is closed.
var ErrClosed = errors.New("spool: closed")

// Hold keeps the file open for one more holder, until its Release.
func (s *Spool) Hold() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refs == 0 {
		return ErrClosed
	}
	s.refs++
	return nil
}

// Release lets go of one hold; the last closes the file.
func (s *Spool) Release() {
	s.mu.Lock()
	s.refs--
	last := s.refs == 0
	s.mu.Unlock()
	if !last {
		return
	}
	if s.closed != nil {
		s.closed()
	} else {
		s.f.Close()
	}
}

// NewReader reads the body from its start as it grows; its reads wait
// for bytes not yet written, until ctx is done. size is the body's
// declared length (-1: unknown), which Seek reports as its end. The
// reader holds the spool until closed.
func (s *Spool) NewReader(ctx context.Context, size int64) (*Reader, error) {
	if err := s.Hold(); err != nil {
		return nil, err
	}
	return &Reader{s: s, ctx: ctx, size: size}, nil
}

// Reader is an io.ReadSeeker over a growing body.
type Reader struct {
	s    *Spool
	ctx  context.Context
	size int64
	off  int64
	once sync.Once

	mu  sync.Mutex
	err error // the first error a read returned, io.EOF aside
}

func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	size, end, err := r.s.Wait(r.ctx, r.off+1)
	if err == nil && r.off >= size {
		err = end
	}
	if err != nil {
		return 0, r.fail(err)
	}
	n := int(min(int64(len(p)), size-r.off))
	n, err = r.s.f.ReadAt(p[:n], r.s.base+r.off)
	r.off += int64(n)
	if err == io.EOF {
		// Written and counted, so there: the file cannot be short.
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return n, r.fail(fmt.Errorf("spool: read: %w", err))
	}
	return n, nil
}

// Ready waits until the body has its byte at off, or has ended; it
// returns why the byte will never come (the break, or the reader's
// context ending). A complete body shorter than off is no error: the
// reads say so.
func (r *Reader) Ready(off int64) error {
	size, end, err := r.s.Wait(r.ctx, off+1)
	switch {
	case err != nil:
		return r.fail(err)
	case size > off, end == io.EOF:
		return nil
	}
	return r.fail(end)
}

// Seek moves the offset; the end is the declared length, or, for a body
// of unknown length, where it ends once complete (Seek waits for that).
func (r *Reader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		size := r.size
		if size < 0 {
			n, end, err := r.s.Wait(r.ctx, 1<<62)
			if err == nil && end != io.EOF {
				err = end
			}
			if err != nil {
				return 0, r.fail(err)
			}
			size = n
		}
		offset += size
	default:
		return 0, errors.New("spool: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("spool: negative offset")
	}
	r.off = offset
	return offset, nil
}

func (r *Reader) fail(err error) error {
	if err != io.EOF {
		r.mu.Lock()
		if r.err == nil {
			r.err = err
		}
		r.mu.Unlock()
	}
	return err
}

// Err is the first error a read met, io.EOF aside: the body broke, or
// the reader's context ended while it waited.
func (r *Reader) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Close lets go of the spool.
func (r *Reader) Close() error {
	r.once.Do(r.s.Release)
	return nil
}
