package failure

import (
	"testing"
	"time"
)

func TestTTL(t *testing.T) {
	for _, tt := range []struct {
		status    int
		ttl       time.Duration
		permanent bool
	}{
		{400, PermanentTTL, true},
		{403, PermanentTTL, true},
		{404, PermanentTTL, true},
		{408, 0, false},
		{410, PermanentTTL, true},
		{413, PermanentTTL, true},
		{422, PermanentTTL, true},
		{429, 0, false},
		{500, TransientTTL, false},
		{502, TransientTTL, false},
		{503, TransientTTL, false},
		{504, TransientTTL, false},
		{200, 0, false},
		{302, 0, false},
	} {
		if got := TTL(tt.status); got != tt.ttl {
			t.Errorf("TTL(%d) = %v, want %v", tt.status, got, tt.ttl)
		}
		if got := Permanent(tt.status); got != tt.permanent {
			t.Errorf("Permanent(%d) = %v, want %v", tt.status, got, tt.permanent)
		}
	}
	if TransientTTL >= time.Minute {
		t.Errorf("transient failures are remembered %v; the README promises seconds", TransientTTL)
	}
}

func TestMemory(t *testing.T) {
	now := time.Unix(1700000000, 0)
	m := NewMemory(3)
	m.SetClock(func() time.Time { return now })
	m.Remember("a", 404, PermanentTTL)
	m.Remember("b", 502, TransientTTL)
	now = now.Add(4 * time.Second)
	if status, left, ok := m.Recall("a"); !ok || status != 404 || left != PermanentTTL-4*time.Second {
		t.Errorf("a: %d, %v left, %v; want 404 with what is left of %v", status, left, ok, PermanentTTL)
	}
	if _, left, ok := m.Recall("b"); !ok || left != 6*time.Second {
		t.Errorf("b: %v left, %v; want 6s", left, ok)
	}
	now = now.Add(6 * time.Second)
	if _, _, ok := m.Recall("b"); ok {
		t.Error("b is recalled past its TTL")
	}
	// Bounded: the least recently used goes first.
	m.Remember("c", 404, PermanentTTL)
	m.Remember("d", 404, PermanentTTL)
	m.Recall("a")
	m.Remember("e", 404, PermanentTTL)
	if m.Len() != 3 {
		t.Errorf("%d kept, want 3", m.Len())
	}
	for key, want := range map[string]bool{"a": true, "c": false, "d": true, "e": true} {
		if _, _, ok := m.Recall(key); ok != want {
			t.Errorf("%s recalled %v, want %v", key, ok, want)
		}
	}
	// Nothing for ttl 0, and a nil memory remembers nothing.
	m.Remember("f", 429, 0)
	if _, _, ok := m.Recall("f"); ok {
		t.Error("remembered with ttl 0")
	}
	var none *Memory
	none.Remember("a", 404, PermanentTTL)
	if _, _, ok := none.Recall("a"); ok {
		t.Error("a nil memory recalled something")
	}
}

func TestStored(t *testing.T) {
	if Stored(50*time.Millisecond) || !Stored(ExpensiveAfter) || !Stored(30*time.Second) {
		t.Error("only failures that took ExpensiveAfter or more are stored")
	}
}
