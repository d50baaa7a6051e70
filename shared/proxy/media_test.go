package proxy_test

// Media as browsers use it: byte ranges on every body the proxy answers
// itself, and variants never bigger than a source that already fits.

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"

	"github.com/misskey-lambda/media-proxy/shared/testmedia"
)

// TestRangeRequests: a passthrough video answers byte ranges on a miss
// (held in memory), on a hit (from the dir store) and to HEAD, as Safari
// needs to play and seek; a streamed miss with no store answers 200 in
// full.
func TestRangeRequests(t *testing.T) {
	o := newOrigin(t)
	video := testmedia.MP4(1 << 20)
	src := o.add("/v.mp4", video)
	p := newProxy(t, nil)
	u := p.URL + "/v.mp4?url=" + src
	for _, round := range []string{"miss", "hit"} {
		r := request(t, http.MethodGet, u, "Range", "bytes=0-1")
		if r.status != http.StatusPartialContent || !bytes.Equal(r.body, video[:2]) ||
			r.header.Get("Content-Range") != fmt.Sprintf("bytes 0-1/%d", len(video)) || r.header.Get("Accept-Ranges") != "bytes" {
			t.Fatalf("%s: %d %q Content-Range %q", round, r.status, r.body, r.header.Get("Content-Range"))
		}
		checkCommon(t, r)
		if r.header.Get("Cache-Control") != "max-age=31536000, immutable" || r.header.Get("Content-Type") != "video/mp4" {
			t.Errorf("%s: headers %v", round, r.header)
		}
	}
	if n := o.hitCount("/v.mp4"); n != 1 {
		t.Errorf("fetched %d times", n)
	}
	last := request(t, http.MethodGet, u, "Range", "bytes=-100")
	if last.status != http.StatusPartialContent || !bytes.Equal(last.body, video[len(video)-100:]) {
		t.Errorf("suffix range: %d, %d bytes", last.status, len(last.body))
	}
	mid := request(t, http.MethodGet, u, "Range", fmt.Sprintf("bytes=%d-", len(video)/2))
	if mid.status != http.StatusPartialContent || !bytes.Equal(mid.body, video[len(video)/2:]) {
		t.Errorf("open range: %d, %d bytes", mid.status, len(mid.body))
	}
	if r := request(t, http.MethodGet, u, "Range", fmt.Sprintf("bytes=%d-", len(video)+10)); r.status != http.StatusRequestedRangeNotSatisfiable ||
		r.header.Get("Content-Range") != fmt.Sprintf("bytes */%d", len(video)) {
		t.Errorf("unsatisfiable: %d %q", r.status, r.header.Get("Content-Range"))
	}
	etag := request(t, http.MethodHead, u).header.Get("ETag")
	if r := request(t, http.MethodGet, u, "Range", "bytes=0-1", "If-Range", etag); r.status != http.StatusPartialContent {
		t.Errorf("If-Range with the ETag: %d", r.status)
	}
	if r := request(t, http.MethodGet, u, "Range", "bytes=0-1", "If-Range", `"stale"`); r.status != http.StatusOK || len(r.body) != len(video) {
		t.Errorf("If-Range with another ETag: %d, %d bytes", r.status, len(r.body))
	}
	if r := request(t, http.MethodHead, u, "Range", "bytes=0-9"); r.status != http.StatusPartialContent || r.header.Get("Content-Length") != "10" || len(r.body) != 0 {
		t.Errorf("HEAD with a range: %d, Content-Length %q", r.status, r.header.Get("Content-Length"))
	}

	// Streamed to its one client (no store, over 8 MB): 200 in full.
	big := testmedia.MP4(9 << 20)
	ps := newProxy(t, map[string]string{"MEDIA_PROXY_STORE": "none"})
	r := request(t, http.MethodGet, ps.URL+"/v.mp4?url="+o.add("/big.mp4", big), "Range", "bytes=0-1")
	if r.status != http.StatusOK || !bytes.Equal(r.body, big) {
		t.Errorf("streamed miss: %d, %d bytes", r.status, len(r.body))
	}
}

// TestSourceKeptWhenSmaller: an emoji that already fits and would only
// grow if re-encoded is answered as it is, with its own type and name.
func TestSourceKeptWhenSmaller(t *testing.T) {
	o := newOrigin(t)
	p := newProxy(t, nil)
	gif := testmedia.GIFManyFrames(4)
	r := get(t, p, o.add("/party.gif", gif), "emoji=1")
	checkSuccess(t, r, "image/gif")
	if !bytes.Equal(r.body, gif) {
		t.Errorf("answered %d bytes, not the %d-byte source", len(r.body), len(gif))
	}
	if name := dispositionName(t, r); name != "party.gif" {
		t.Errorf("file name %q, want party.gif", name)
	}
	// Over the box, it is converted.
	checkSuccess(t, get(t, p, o.add("/big.gif", testmedia.GIF(256, 256, 3)), "emoji=1"), "image/webp")
}
