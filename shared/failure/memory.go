package failure

import (
	"container/list"
	"sync"
	"time"
)

// DefaultMemorySize is how many failures a Memory keeps: at about 200
// bytes each, 2 MB.
const DefaultMemorySize = 10000

// Memory is a process's own failure memory: the failures it found (or read
// from the store) and until when they hold. Answering from it costs no
// store request, so a dead URL asked for by every viewer costs one fetch
// per process and its TTL, and a flood of distinct failing URLs costs
// nothing in the store. It keeps at most its size, the least recently
// used going first. A nil *Memory remembers nothing. Safe for concurrent
// use.
type Memory struct {
	mu      sync.Mutex
	clock   func() time.Time // nil: time.Now
	size    int
	entries map[string]*list.Element
	order   list.List // front: most recently used
}

type remembered struct {
	key     string
	status  int
	expires time.Time
}

// NewMemory returns a Memory of size entries (DefaultMemorySize if size
// is not positive).
func NewMemory(size int) *Memory {
	if size <= 0 {
		size = DefaultMemorySize
	}
	return &Memory{size: size, entries: map[string]*list.Element{}}
}

// SetClock makes the memory read the time from clock (tests move it on).
func (m *Memory) SetClock(clock func() time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.clock = clock
}

// now is the time; m.mu is held.
func (m *Memory) now() time.Time {
	if m.clock != nil {
		return m.clock()
	}
	return time.Now()
}

// Remember keeps that key failed with status for ttl from now.
func (m *Memory) Remember(key string, status int, ttl time.Duration) {
	if m == nil || ttl <= 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r := remembered{key: key, status: status, expires: m.now().Add(ttl)}
	if el, ok := m.entries[key]; ok {
		el.Value = r
		m.order.MoveToFront(el)
		return
	}
	m.entries[key] = m.order.PushFront(r)
	for m.order.Len() > m.size {
		oldest := m.order.Back()
		m.order.Remove(oldest)
		delete(m.entries, oldest.Value.(remembered).key)
	}
}

// Recall returns the status key failed with and how long that still
// holds, or ok false when it is not remembered (or no longer holds).
func (m *Memory) Recall(key string) (status int, left time.Duration, ok bool) {
	if m == nil {
		return 0, 0, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	el, found := m.entries[key]
	if !found {
		return 0, 0, false
	}
	r := el.Value.(remembered)
	left = r.expires.Sub(m.now())
	if left <= 0 {
		m.order.Remove(el)
		delete(m.entries, key)
		return 0, 0, false
	}
	m.order.MoveToFront(el)
	return r.status, left, true
}

// Len is how many failures are kept (expired ones included until they
// are asked for or pushed out).
func (m *Memory) Len() int {
	if m == nil {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.order.Len()
}
