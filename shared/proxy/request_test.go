package proxy

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/misskey-lambda/media-proxy/shared/fetch"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

func TestParseRequest(t *testing.T) {
	canon := fetch.New(fetch.Config{}).Canonical
	q := url.QueryEscape
	for _, tt := range []struct {
		target   string
		status   int
		kind     variant.Kind
		src      string
		fallback bool
	}{
		{"/e.webp?emoji=1&url=" + q("https://Example.COM:443/a.png?x=1#frag"), 0, variant.Emoji, "https://example.com/a.png?x=1", false},
		{"/proxy/e.webp?static=1&avatar=1&fallback=1&url=" + q("http://example.com"), 0, variant.AvatarStatic, "http://example.com/", true},
		{"/e.webp?url=" + q("https://xn--fa-hia.example/e.png"), 0, variant.Original, "https://xn--fa-hia.example/e.png", false},
		{"/e.webp?url=" + q("https://faß.example/e.png"), 0, variant.Original, "https://xn--fa-hia.example/e.png", false},
		// Refused at the door: nothing is fetched, nothing remembered.
		{"/e.webp?emoji=1&url=" + q("https://x@victim.example/e.png"), http.StatusBadRequest, variant.Emoji, "", false},
		{"/e.webp?url=" + q("ftp://example.com/a"), http.StatusBadRequest, variant.Original, "", false},
		{"/e.webp?url=" + q("/relative.png"), http.StatusBadRequest, variant.Original, "", false},
		{"/e.webp?url=" + q("http://127.1/"), http.StatusBadRequest, variant.Original, "", false},
		{"/e.webp?url=" + q("http://example.com:25/"), http.StatusForbidden, variant.Original, "", false},
		{"/e.webp?url=a&url=b", http.StatusBadRequest, variant.Original, "", false},
		{"/e.webp?emoji=1", http.StatusBadRequest, variant.Emoji, "", false},
		{"/e.webp?url=%zz", http.StatusBadRequest, variant.Original, "", false},
		// Parameters the proxy does not read are ignored, even those
		// url.ParseQuery refuses; flags are case-sensitive.
		{"/e.webp?x=%zz&%zz=1&Emoji=1&a;b=c&emoji=2&url=" + q("https://example.com/a.png") + "&y=%", 0, variant.Emoji, "https://example.com/a.png", false},
		{"/a/b?url=" + q("https://example.com/"), http.StatusNotFound, "", "", false},
		{"/proxy/?url=" + q("https://example.com/"), http.StatusNotFound, "", "", false},
	} {
		req, status := parseRequest(httptest.NewRequest(http.MethodGet, tt.target, nil), canon)
		if status != tt.status {
			t.Errorf("%s: status %d, want %d", tt.target, status, tt.status)
			continue
		}
		if req.kind != tt.kind || req.fallback != tt.fallback {
			t.Errorf("%s: kind %q fallback %v", tt.target, req.kind, req.fallback)
		}
		if status != 0 {
			if req.src != nil || req.key != "" || req.failKey != "" {
				t.Errorf("%s: refused request has a source or keys: %+v", tt.target, req)
			}
			continue
		}
		if req.src.String() != tt.src {
			t.Errorf("%s: source %q, want %q", tt.target, req.src, tt.src)
		}
		if req.key != variant.Key(tt.src, tt.kind) || req.failKey != variant.FailureKey(tt.src, tt.kind) {
			t.Errorf("%s: keys %s %s not derived from the canonical URL", tt.target, req.key, req.failKey)
		}
		if req.logURL != fetch.Redact(req.src) {
			t.Errorf("%s: log URL %q", tt.target, req.logURL)
		}
	}
}
