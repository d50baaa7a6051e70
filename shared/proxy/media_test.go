package proxy_test

// Media as browsers use it: byte ranges on every body the proxy answers
// itself, and variants never bigger than a source that already fits.

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
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

// rawHead sends one GET and returns the response's status line and
// headers exactly as they came over the wire, and the body length.
func rawHead(t *testing.T, rawURL string) (head string, bodyLen int) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", u.RequestURI(), u.Host)
	all, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(all, []byte("\r\n\r\n"))
	if i < 0 {
		t.Fatalf("no header end in %q", all)
	}
	return string(all[:i+4]), len(all) - i - 4
}

// TestInlineSmallHits: with MEDIA_PROXY_INLINE_HITS_BELOW, a stored variant
// below the size is answered with its bytes (one round trip, cacheable for
// a year by a CDN) instead of a redirect; larger ones still redirect. The
// test logs the header bytes and round trips a view of a small emoji
// costs each way.
func TestInlineSmallHits(t *testing.T) {
	e := s3StandinFromEnv(t)
	bucket := e.bucket(t)
	setAWSEnv(t, e, e.endpoint)
	o := newOrigin(t)
	emoji := o.add("/e.png", testmedia.PNG(160, 160))
	big := o.add("/big.png", testmedia.PNGOpaque(1600, 1200))
	env := map[string]string{
		"MEDIA_PROXY_STORE":             "s3://" + bucket + "/inline",
		"MEDIA_PROXY_S3_PATH_STYLE":     "true",
		"MEDIA_PROXY_INLINE_HITS_BELOW": "8192",
	}
	p := newProxy(t, env)
	miss := get(t, p, emoji, "emoji=1")
	checkSuccess(t, miss, "image/webp")
	hit := get(t, p, emoji, "emoji=1")
	checkSuccess(t, hit, "image/webp")
	if !bytes.Equal(hit.body, miss.body) || hit.header.Get("ETag") != miss.header.Get("ETag") {
		t.Errorf("inline hit: %d bytes, ETag %q; the miss had %d, %q", len(hit.body), hit.header.Get("ETag"), len(miss.body), miss.header.Get("ETag"))
	}
	get(t, p, big, "static=1")
	if r := get(t, p, big, "static=1"); r.status != http.StatusFound {
		t.Errorf("a hit over the size answered %d, want a redirect", r.status)
	}

	// What a view of the small emoji costs, three ways.
	inlineHead, n := rawHead(t, p.URL+"/e.webp?emoji=1&url="+url.QueryEscape(emoji))
	delete(env, "MEDIA_PROXY_INLINE_HITS_BELOW")
	presigned := newProxy(t, env)
	presignedHead, _ := rawHead(t, presigned.URL+"/e.webp?emoji=1&url="+url.QueryEscape(emoji))
	s3Head, _ := rawHead(t, request(t, http.MethodGet, presigned.URL+"/e.webp?emoji=1&url="+url.QueryEscape(emoji)).header.Get("Location"))
	env["MEDIA_PROXY_PUBLIC_BASE_URL"] = "https://media-cdn.example.com"
	public := newProxy(t, env)
	publicHead, _ := rawHead(t, public.URL+"/e.webp?emoji=1&url="+url.QueryEscape(emoji))
	// On Lambda the role's credentials carry a session token of about
	// 1 KB that every presigned URL repeats (the stand-in knows no
	// tokens, so it is added here): in the 302's Location and in the
	// second request line.
	const token = len("&X-Amz-Security-Token=") + 1100
	location := func(head string) int {
		for _, l := range strings.Split(head, "\r\n") {
			if v, ok := strings.CutPrefix(l, "Location: "); ok {
				return len(v)
			}
		}
		return 0
	}
	t.Logf("a %d-byte emoji, per view: inline: 1 round trip, %d response header bytes; "+
		"302 to a presigned URL (Lambda credentials): 2 round trips, %d + %d response header bytes, and the %d-byte URL again in the second request; "+
		"302 to MEDIA_PROXY_PUBLIC_BASE_URL: 2 round trips, %d response header bytes plus the CDN's own, a %d-byte URL",
		n, len(inlineHead), len(presignedHead)+token, len(s3Head), location(presignedHead)+token, len(publicHead), location(publicHead))
	if !strings.HasPrefix(inlineHead, "HTTP/1.1 200") || !strings.HasPrefix(presignedHead, "HTTP/1.1 302") || !strings.HasPrefix(publicHead, "HTTP/1.1 302") {
		t.Errorf("answers: %q / %q / %q", inlineHead[:12], presignedHead[:12], publicHead[:12])
	}
}
