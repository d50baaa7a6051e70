package failure

import (
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
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
	entries *lru.Cache[string, remembered]
}

type remembered struct {
	status  int
	expires time.Time
}

// NewMemory returns a Memory of size entries (DefaultMemorySize if size
// is not positive).
func NewMemory(size int) *Memory {
	if size <= 0 {
		size = DefaultMemorySize
	}
	entries, err := lru.New[string, remembered](size)
	if err != nil {
		panic(err) // only for a size below 1
	}
	return &Memory{entries: entries}
}

// SetClock makes the memory read the time from clock (tests move it on).
func (m *Memory) SetClock(clock func() time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.clock = clock
}

func (m *Memory) now() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
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
	m.entries.Add(key, remembered{status: status, expires: m.now().Add(ttl)})
}

// Recall returns the status key failed with and how long that still
// holds, or ok false when it is not remembered (or no longer holds).
func (m *Memory) Recall(key string) (status int, left time.Duration, ok bool) {
	if m == nil {
		return 0, 0, false
	}
	r, found := m.entries.Get(key)
	if !found {
		return 0, 0, false
	}
	left = r.expires.Sub(m.now())
	if left <= 0 {
		m.entries.Remove(key)
		return 0, 0, false
	}
	return r.status, left, true
}

// Len is how many failures are kept (expired ones included until they
// are asked for or pushed out).
func (m *Memory) Len() int {
	if m == nil {
		return 0
	}
	return m.entries.Len()
}
