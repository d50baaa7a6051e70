package proxy_test

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/testmedia"
)

// TestBurstOfSlowImagesNotRemembered is the burst of issue 19: many
// distinct URLs of a valid SVG that renders slowly, requested at once
// through two decode slots with a short time limit. Waiting in the queue
// is the proxy's state, not the image's: no request is answered 422, no
// failure is remembered, and every later request is answered 200. (The
// limit used to count the wait, so most of the burst was "too slow" and
// remembered for five minutes.)
//
// The figures adapt to the machine: one request alone takes r; the limit
// is 8r (at least 2 s: a busy machine slows the renders of a burst), and
// the burst is long enough that its last requests wait longer than the
// limit for a slot.
func TestBurstOfSlowImagesNotRemembered(t *testing.T) {
	const flags = "emoji=1"
	o := newOrigin(t)
	svg := testmedia.SVGSlow(4000)
	calib, _, _ := newService(t, nil)
	start := time.Now()
	checkSuccess(t, get(t, calib, o.add("/alone.svg", svg), flags), "image/webp")
	r := time.Since(start)
	limit := max(8*r, 2*time.Second).Round(time.Millisecond)
	n := min(2*int(limit/r)+4, 40)

	p, _, svc := newService(t, map[string]string{
		"MEDIA_PROXY_TRANSFORM_CONCURRENCY": "2",
		"MEDIA_PROXY_TRANSFORM_TIMEOUT":     limit.String(),
	})
	srcs := make([]string, n)
	for i := range srcs {
		srcs[i] = o.add(fmt.Sprintf("/burst-%d.svg", i), svg)
	}
	statuses := make([]int, n)
	var wg sync.WaitGroup
	start = time.Now()
	for i, src := range srcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i], _ = answer(t, p, src, flags)
		}()
	}
	wg.Wait()
	took := time.Since(start)
	counts := map[int]int{}
	for _, s := range statuses {
		counts[s]++
	}
	t.Logf("one render alone %v; %d at once through 2 slots with a limit of %v: %v after %v", r.Round(time.Millisecond), n, limit, counts, took.Round(time.Millisecond))
	for _, s := range statuses {
		if s != http.StatusOK && s != http.StatusServiceUnavailable {
			t.Errorf("burst answered %v, want 200 (or 503 for a slot not free in time)", counts)
			break
		}
	}
	if m := markers(t, storeDir(t, svc.Config.Store)); len(m) != 0 {
		t.Errorf("%d failures remembered after the burst", len(m))
	}
	for i, src := range srcs {
		if r := get(t, p, src, flags); r.status != http.StatusOK {
			t.Errorf("later request for %d: %d (%s)", i, r.status, r.header.Get("Cache-Control"))
		}
	}
}
