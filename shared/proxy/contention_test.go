package proxy_test

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/store"
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

// TestAnswersThatWaitedAreDelivered: the write deadline moves with every
// header, write and flush, so an answer that waited longer than
// MEDIA_PROXY_WRITE_TIMEOUT for its origin (here 1.5 s against 300 ms)
// still leaves: a HEAD's headers, a 304, a 302 to a stored copy (S3) and
// a large body streamed as it arrives (its first flush).
// The deadline used to be set once from the request's start: the answer
// was then dropped without a byte.
func TestAnswersThatWaitedAreDelivered(t *testing.T) {
	const wait, timeout = 1500 * time.Millisecond, 300 * time.Millisecond
	o := newOrigin(t)
	img := testmedia.NoisePNG(64, 64)
	slow := func(name string) string { return o.addFile("/"+name, originFile{body: img, delay: wait}) }
	p, _, _ := newService(t, map[string]string{"MEDIA_PROXY_WRITE_TIMEOUT": timeout.String()})

	t.Run("HEAD", func(t *testing.T) {
		r := request(t, http.MethodHead, p.URL+"/e.webp?url="+url.QueryEscape(slow("head.png"))+"&emoji=1")
		if r.status != http.StatusOK || r.header.Get("Content-Type") != "image/webp" {
			t.Errorf("HEAD after waiting %v: %d %s", wait, r.status, r.header.Get("Content-Type"))
		}
	})
	t.Run("304", func(t *testing.T) {
		r := request(t, http.MethodGet, p.URL+"/a.png?url="+url.QueryEscape(slow("etag.png")), "If-None-Match", store.ETag(img))
		if r.status != http.StatusNotModified {
			t.Errorf("If-None-Match after waiting %v: %d", wait, r.status)
		}
	})
	t.Run("stream", func(t *testing.T) {
		big := testmedia.NoisePNG(1600, 1600) // about 10 MB: over the 8 MB held in memory
		src := o.addFile("/big.png", originFile{body: big, delay: wait})
		r := request(t, http.MethodGet, p.URL+"/a.png?url="+url.QueryEscape(src))
		if r.status != http.StatusOK || len(r.body) != len(big) {
			t.Errorf("large body after waiting %v: %d, %d of %d bytes", wait, r.status, len(r.body), len(big))
		}
	})
	t.Run("302", func(t *testing.T) {
		// As on Lambda: a body over the inline limit is stored, then
		// redirected to.
		s3 := newStack(t, stackOptions{allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, store: s3Store(t, "waited/"), inlineLimit: 1000, writeTimeout: timeout})
		r := request(t, http.MethodGet, s3.URL+"/a.png?url="+url.QueryEscape(slow("s3.png")))
		if r.status != http.StatusFound || r.header.Get("Location") == "" {
			t.Errorf("miss stored in S3 after waiting %v: %d, Location %q", wait, r.status, r.header.Get("Location"))
		}
	})
}

// emptyIDATs is issue 19's APNG: 1x1, its one frame the default image,
// whose data is followed by n empty IDAT chunks (12 bytes each).
func emptyIDATs(n int) []byte {
	b := testmedia.APNG(1, 1, 1)
	// Past the first IDAT chunk: the chunk walk starts after the signature.
	p := 8
	for string(b[p+4:p+8]) != "IDAT" {
		p += 12 + int(binary.BigEndian.Uint32(b[p:]))
	}
	p += 12 + int(binary.BigEndian.Uint32(b[p:]))
	empty := binary.BigEndian.AppendUint32([]byte("\x00\x00\x00\x00IDAT"), crc32.ChecksumIEEE([]byte("IDAT")))
	out := make([]byte, 0, len(b)+n*len(empty))
	out = append(out, b[:p]...)
	for range n {
		out = append(out, empty...)
	}
	return append(out, b[p:]...)
}

// TestEmptyChunkAPNGMemory: the 52 MB APNG of 4.3 million empty IDAT
// chunks, asked for as an emoji, is answered 422 (and remembered as any
// undecodable image) while resident memory grows by the source the
// request holds and less than 100 MiB besides. Its chunk bookkeeping
// used to take 2.3 GiB, outside the memory budget.
func TestEmptyChunkAPNGMemory(t *testing.T) {
	if procStatus("VmRSS") < 0 {
		t.Fatal("needs /proc/self/status")
	}
	apng := emptyIDATs(4_300_000)
	o := newOrigin(t)
	src := o.add("/empty-idat.png", apng)
	p, _, _ := newService(t, nil)
	checkSuccess(t, get(t, p, o.add("/warm.png", testmedia.PNG(8, 8)), "emoji=1"), "image/webp")
	base := memNow()
	done := make(chan struct{})
	peak := sampleMemory(done)
	r := get(t, p, src, "emoji=1")
	close(done)
	grew := (<-peak).rss - base.rss
	t.Logf("%d MB of empty IDAT chunks as an emoji: %d (%s); resident memory grew by %d MiB", len(apng)>>20, r.status, r.header.Get("Cache-Control"), grew>>20)
	checkError(t, r, http.StatusUnprocessableEntity)
	if over := grew - int64(len(apng)); over > 100<<20 {
		t.Errorf("resident memory grew by %d MiB for a %d MB source", grew>>20, len(apng)>>20)
	}
}
