package proxy_test

// What a CDN in front may rely on: the answer depends on no query
// parameter but the proxy's own, and a body streamed from the origin is
// not kept at the edge for long.

import (
	"bytes"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/misskey-lambda/media-proxy/shared/testmedia"
)

// TestUnknownQueryParametersChangeNothing: parameters other than url,
// emoji, avatar, static, preview, badge and fallback (CloudFront keeps
// only those in its cache key and sends only those to the function) leave
// the answer as it is: the same status, headers and bytes, from the same
// stored variant.
func TestUnknownQueryParametersChangeNothing(t *testing.T) {
	o := newOrigin(t)
	png := o.add("/e.png", testmedia.PNG(300, 200))
	jpeg := o.add("/p.jpg", testmedia.Get("jpeg"))
	// Cache busters, tracking tags, a flag spelled in another case, and
	// escapes a strict parser would refuse.
	const extra = "&_=1712345678&utm_source=misskey&Emoji=1&URL=x&v=%zz&%zz=1&x=%"
	for _, c := range []struct{ name, src, flags string }{
		{"emoji", png, "emoji=1"},
		{"static avatar", png, "avatar=1&static=1"},
		{"passthrough", jpeg, ""},
		{"gone", o.URL + "/gone.png", "emoji=1"},
		{"gone with fallback", o.URL + "/gone2.png", "emoji=1&fallback=1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ask := func(p string, flags string) response {
				u := p + "/image.webp?url=" + url.QueryEscape(c.src)
				if flags != "" {
					u += "&" + flags
				}
				return request(t, http.MethodGet, u)
			}
			// Two fresh instances: one asked plainly, one with the extras.
			plain, extras := newProxy(t, nil), newProxy(t, nil)
			want, got := ask(plain.URL, c.flags), ask(extras.URL, c.flags+extra)
			same := func(step string, want, got response, remembered bool) {
				t.Helper()
				hw, hg := want.header.Clone(), got.header.Clone()
				hw.Del("Date")
				hg.Del("Date")
				// A remembered failure is cached for what is left of it.
				var w, g int
				if _, err := fmt.Sscanf(hw.Get("Cache-Control")+"|"+hg.Get("Cache-Control"), "max-age=%d|max-age=%d", &w, &g); remembered && err == nil && g == w-1 {
					hg.Set("Cache-Control", hw.Get("Cache-Control"))
				}
				if got.status != want.status || !bytes.Equal(got.body, want.body) || !maps.EqualFunc(hw, hg, slices.Equal) {
					t.Errorf("%s: %d, %d bytes, %v; want %d, %d bytes, %v", step, got.status, len(got.body), hg, want.status, len(want.body), hw)
				}
			}
			same("with extra parameters", want, got, false)
			// The instance asked with the extras answers the plain
			// request from what it stored or remembered: the same key.
			fetches := o.hitCount(mustPath(t, c.src))
			same("plain, after the extras", want, ask(extras.URL, c.flags), true)
			if n := o.hitCount(mustPath(t, c.src)); n != fetches {
				t.Errorf("the plain request fetched again (%d, then %d): the extras made another key", fetches, n)
			}
		})
	}
}

func mustPath(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Path
}

// TestStreamedMissShortCacheControl: a miss streamed from the origin as it
// arrives is answered with a short max-age, not the year a variant gets:
// whether a stream broken after its headers reaches a CDN as a failure or
// as a complete (short) body has not been seen on a real deployment, and
// the next request is a cheap store hit anyway. Once stored, the same
// bytes get the year.
func TestStreamedMissShortCacheControl(t *testing.T) {
	video := testmedia.MP4(12 << 20) // over the 8 MB held in memory: streamed
	o := newOrigin(t)
	src := o.add("/v.mp4", video)
	p, _, svc := newService(t, nil)
	r := get(t, p, src, "")
	if r.status != http.StatusOK || !bytes.Equal(r.body, video) || r.header.Get("ETag") != "" {
		t.Fatalf("miss: %d, %d bytes, ETag %q; want a 200 streamed whole, without an ETag", r.status, len(r.body), r.header.Get("ETag"))
	}
	if cc := r.header.Get("Cache-Control"); cc != "max-age=60" {
		t.Errorf("streamed miss: Cache-Control %q, want max-age=60", cc)
	}
	key, _ := keysOf(t, src, "original")
	waitStored(t, svc.Store, key, video)
	r = get(t, p, src, "")
	if r.status != http.StatusOK || !bytes.Equal(r.body, video) || r.header.Get("Cache-Control") != "max-age=31536000, immutable" {
		t.Errorf("stored: %d, %d bytes, Cache-Control %q; want the year", r.status, len(r.body), r.header.Get("Cache-Control"))
	}
}
