package store

import (
	"cmp"
	"container/heap"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// staleTemp is the age past which a temporary file is a crashed write's
// leftover rather than one in progress.
const staleTemp = time.Hour

// stamp tells versions of a file apart: rewriting or touching it changes
// its mtime, and usually its size.
type stamp struct {
	mtime int64 // UnixNano
	size  int64
}

func stampOf(fi fs.FileInfo) stamp {
	return stamp{mtime: fi.ModTime().UnixNano(), size: fi.Size()}
}

// startPassLocked starts the eviction passes unless they are running:
// never two at once.
func (d *Dir) startPassLocked() {
	if d.passing {
		return
	}
	d.passing = true
	d.idle = make(chan struct{})
	go d.passes()
}

// wait returns once no pass is running (for tests).
func (d *Dir) wait() {
	d.mu.Lock()
	idle := d.idle
	d.mu.Unlock()
	if idle != nil {
		<-idle
	}
}

// passes runs eviction passes while the store is nearly full and they
// make progress; when nothing can be removed (every object being read),
// the next write that does not fit tries again.
func (d *Dir) passes() {
	for {
		removed := d.pass()
		d.mu.Lock()
		if removed == 0 || d.total+d.inflight <= d.maxBytes-d.maxBytes/20 {
			d.passing = false
			close(d.idle)
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
	}
}

// pass recounts the store while removing what is of no use (expired
// failure markers, stale temporary files, the old layout, corrupt files),
// then removes the least recently used objects until the store is at 90 %
// of its budget. It returns how many files it removed.
func (d *Dir) pass() int {
	start := time.Now()
	target := d.maxBytes - d.maxBytes/10
	d.mu.Lock()
	d.passCount++
	// Keep just enough candidates to get back to target, with room for
	// writes during the walk: a large store's list would not fit in memory.
	lru := oldest{limit: max(d.total+d.inflight-target, 0) + d.maxBytes - target}
	d.walking, d.walkDelta = true, 0
	d.mu.Unlock()

	counted, files, removed, err := d.walk(&lru)

	d.mu.Lock()
	d.walking = false
	if err == nil {
		// Files changed during the walk may be counted twice or not at
		// all; the next pass corrects that.
		d.total = counted + d.walkDelta
	}
	d.mu.Unlock()
	if err != nil {
		d.log.Warn("store: eviction pass could not read the folder", "dir", d.root, "err", err)
		return removed
	}
	evicted := 0
	for _, c := range lru.oldestFirst() {
		if !d.over(target) {
			break
		}
		if d.removeIf(c.path, c.stamp, false) {
			evicted++
		}
	}
	d.mu.Lock()
	total := d.total
	d.mu.Unlock()
	d.log.Info("store: eviction pass", "dir", d.root, "files", files, "removed", removed, "evicted", evicted,
		"bytes", total, "max_bytes", d.maxBytes, "ms", time.Since(start).Milliseconds())
	return removed + evicted
}

func (d *Dir) over(target int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.total+d.inflight > target
}

// walk counts the store's files and offers each live one to lru, removing
// on the way what is of no use. Files it does not recognise are left
// alone and not counted: the folder may hold someone else's files.
func (d *Dir) walk(lru *oldest) (counted int64, files, removed int, err error) {
	err = filepath.WalkDir(d.root, func(p string, e fs.DirEntry, err error) error {
		switch {
		case err != nil && p == d.root:
			return err
		case err != nil || !e.Type().IsRegular():
			// A folder removed or unreadable meanwhile is skipped.
			return nil
		case strings.HasPrefix(e.Name(), tempPrefix):
			if fi, err := e.Info(); err == nil && d.now().Sub(fi.ModTime()) > staleTemp {
				os.Remove(p)
			}
			return nil
		}
		state, st := d.classify(p)
		switch state {
		case live:
			files++
			counted += blocks(st.size)
			// An object being read cannot be removed: no candidate, or it
			// would take the place of one that can.
			if !d.beingRead(p) {
				lru.add(candidate{path: p, stamp: st})
			}
		case useless:
			if d.removeIf(p, st, true) {
				removed++
			}
		}
		return nil
	})
	return counted, files, removed, err
}

type fileState int

const (
	// skipped: gone meanwhile, unreadable, or not the store's.
	skipped fileState = iota
	live
	// useless: expired, corrupt or in the old layout.
	useless
)

// classify reads the head of the file at p.
func (d *Dir) classify(p string) (fileState, stamp) {
	f, err := os.Open(p)
	if err != nil {
		return skipped, stamp{}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return skipped, stamp{}
	}
	st := stampOf(fi)
	h, raw, err := readHead(f, fi.Size())
	switch {
	case errors.Is(err, errNotStore):
		if isOldLayout(p, f, fi.Size()) {
			return useless, st
		}
		return skipped, st
	case errors.Is(err, errCorrupt):
		return useless, st
	case err != nil:
		return skipped, st
	case h.kind == kindFailure:
		m, err := decodeMarker(raw)
		if err != nil || d.expired(m, fi.ModTime()) {
			return useless, st
		}
	default:
		if _, err := decodeObject(raw, h.bodyLen); err != nil {
			return useless, st
		}
	}
	return live, st
}

func (d *Dir) beingRead(p string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.readers[p] > 0
}

// isOldLayout tells files of the two-file layout: <key> and <key>.meta,
// and failure markers "<status> <ttl>". f is the file at p, without magic.
func isOldLayout(p string, f *os.File, size int64) bool {
	if strings.HasSuffix(p, ".meta") {
		return true
	}
	if _, err := os.Lstat(p + ".meta"); err == nil {
		return true
	}
	if size > 32 {
		return false
	}
	b := make([]byte, size)
	n, _ := f.ReadAt(b, 0)
	return isOldMarker(b[:n])
}

// removeIf removes p if it is still the version seen and nobody is reading
// it, and tells whether it did. byWalk is set for the walk's own removals,
// of files it does not count.
func (d *Dir) removeIf(p string, seen stamp, byWalk bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.readers[p] > 0 {
		return false
	}
	fi, err := os.Lstat(p)
	if err != nil || !fi.Mode().IsRegular() || stampOf(fi) != seen {
		return false
	}
	if err := os.Remove(p); err != nil {
		return false
	}
	if byWalk {
		d.total -= blocks(fi.Size())
	} else {
		d.addLocked(-blocks(fi.Size()))
	}
	return true
}

type candidate struct {
	path  string
	stamp stamp
}

// oldest keeps the oldest candidates whose sizes add up to at least limit.
type oldest struct {
	limit, bytes int64
	h            newestOnTop
}

func (o *oldest) add(c candidate) {
	heap.Push(&o.h, c)
	o.bytes += blocks(c.stamp.size)
	for len(o.h) > 0 && o.bytes-blocks(o.h[0].stamp.size) >= o.limit {
		o.bytes -= blocks(heap.Pop(&o.h).(candidate).stamp.size)
	}
}

func (o *oldest) oldestFirst() []candidate {
	s := []candidate(o.h)
	slices.SortFunc(s, func(a, b candidate) int { return cmp.Compare(a.stamp.mtime, b.stamp.mtime) })
	return s
}

// newestOnTop is a heap of candidates with the newest first, the one to
// drop when the others are enough.
type newestOnTop []candidate

func (h newestOnTop) Len() int           { return len(h) }
func (h newestOnTop) Less(i, j int) bool { return h[i].stamp.mtime > h[j].stamp.mtime }
func (h newestOnTop) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *newestOnTop) Push(x any)        { *h = append(*h, x.(candidate)) }
func (h *newestOnTop) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}
