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
