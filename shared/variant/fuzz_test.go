package variant_test

import (
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/misskey-lambda/media-proxy/shared/variant"
)

// Query strings as Misskey and others send them, and some that are not.
var querySeeds = []string{
	"",
	"url=https%3A%2F%2Fexample.com%2Femoji.png&emoji=1",
	"url=https://example.com/a.gif&emoji=1&static=1",
	"url=https://example.com/a.gif&avatar=&static",
	"static=1&preview=1&badge=1&url=http%3A%2F%2F127.0.0.1%2F",
	"url=https%3A%2F%2Fuser%3Apass%40Example.COM.%3A443%2Fa%2F..%2Fb.png%3Fx%3D1%23frag&badge",
	"url=https://[::1]:80/&url=https://example.com/",
	"url=%zz&emoji=%",
	"url=http://%E4%BE%8B%E3%81%88.jp/%E7%B5%B5.png&preview=1",
	"url=HTTP://EXAMPLE.com:80&fallback=1",
	"url=https://example.com:443/;a=b?c=d&e",
	"emoji;avatar=1",
}

func FuzzQuery(f *testing.F) {
	for _, s := range querySeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, _ := url.ParseQuery(raw) // partial values on error, as the handler sees them
		k := variant.FromQuery(q)
		if _, ok := variant.Parse(string(k)); !ok {
			t.Fatalf("FromQuery(%q) = %q, not a kind", raw, k)
		}
		// The flags a kind names ask for that kind again (jobs and
		// pre-warming rely on it).
		back, err := url.ParseQuery(k.Query())
		if err != nil || variant.FromQuery(back) != k {
			t.Fatalf("%q.Query() = %q does not round-trip", k, k.Query())
		}
		for _, s := range q["url"] {
			if u, err := url.Parse(s); err == nil {
				checkKeys(t, u, k)
			}
		}
	})
}

func FuzzKey(f *testing.F) {
	for _, s := range []string{
		"https://example.com/a.png",
		"HTTPS://Example.COM.:443/a.png#frag",
		"http://user:pw@example.com:80",
		"https://[fe80::1%25eth0]:8443/x",
		"https://[::ffff:1.2.3.4]/",
		"http://example.com/%2e%2e/%2F..%5C",
		"https://例え.jp/絵.png?q=../../etc/passwd",
		"http://example.com?",
		"//example.com/relative",
		"/just/a/path/..",
	} {
		for _, k := range variant.Kinds {
			f.Add(s, string(k))
		}
	}
	f.Fuzz(func(t *testing.T, raw, kind string) {
		u, err := url.Parse(raw)
		if err != nil {
			return
		}
		k, ok := variant.Parse(kind)
		if !ok {
			// Kinds only ever come from FromQuery or variant.Parse.
			return
		}
		checkKeys(t, u, k)
	})
}

var (
	keyRE     = regexp.MustCompile(`^v1/([a-z-]+)/[0-9a-f]{64}$`)
	failureRE = regexp.MustCompile(`^failed/([a-z-]+)/[0-9a-f]{64}$`)
)

// checkKeys asserts what the stores rely on: keys are deterministic, say
// which kind they hold, and can never climb out of the store's root.
func checkKeys(t *testing.T, u *url.URL, k variant.Kind) {
	t.Helper()
	c, err := canonical(u.String())
	if err != nil {
		return // refused at the door: no key
	}
	n := c.String()
	key, fail := variant.Key(n, k), variant.FailureKey(n, k)
	if variant.Key(n, k) != key || variant.FailureKey(n, k) != fail {
		t.Fatalf("keys of %q are not deterministic", n)
	}
	for _, c := range []struct {
		key string
		re  *regexp.Regexp
	}{{key, keyRE}, {fail, failureRE}} {
		m := c.re.FindStringSubmatch(c.key)
		if m == nil || m[1] != string(k) {
			t.Fatalf("key %q for %q (%s) is not <prefix>/%s/<sha256>", c.key, n, k, k)
		}
		if strings.Contains(c.key, "..") || strings.HasPrefix(c.key, "/") || strings.Contains(c.key, `\`) {
			t.Fatalf("key %q escapes the store root", c.key)
		}
	}
	if key == fail {
		t.Fatalf("variant and failure marker share the key %q", key)
	}
	for _, other := range variant.Kinds {
		if other != k && variant.Key(n, other) == key {
			t.Fatalf("kinds %s and %s share the key %q", k, other, key)
		}
	}
}
