package fetch

import (
	"errors"
	"net/http"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/misskey-lambda/media-proxy/shared/problem"
)

// FuzzParseURL checks Canonical, the URL gate in front of every fetch and
// the cache key: whatever it accepts is absolute http(s) with no credentials
// or fragment, a lower-case ASCII host that is a DNS name no resolver reads
// as a number or a canonical IP literal (left to the dial-time check), no
// default or refused port; and canonicalizing again changes nothing, so the
// key and the request line never disagree.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"https://example.com/a.png?x=1#y",
		"http://127.0.0.1:8080/",
		"http://127.1/", "http://2130706433/", "http://0x7f000001/", "http://0177.0.0.1/", "http://127.0.0.1./",
		"http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://[fe80::1%25eth0]/", "http://[64:ff9b::7f00:1]/",
		"http://allowed@127.0.0.1/", "http://user:pass@example.com/", `http://example.com\@127.0.0.1/`,
		"file:///etc/passwd", "gopher://127.0.0.1:70/_GET", "javascript:alert(1)", "data:,x", "http:opaque",
		"HTTP://EXAMPLE.COM", "https://例え.jp/", "http://127。0。0。1/", "http://example.com:99999/",
		"//example.com/", "", "http://", "http://[::1/", "http://exa mple.com/",
		"http://faß.example/", "http://faẞ.example/", "http://FASS.example.:80/", "http://xn--fa-hia.example/",
		"http://r3---sn-abc.example/", "http://a_b.example/", "http://example.com../", "http://xn--/",
		"http://a/a b/%7e/x%2Fy?c d&e=%7E", "http://a/é?é", "http://a?", "http://a:/", "http://a:080/", "https://a:443",
		"http://a:25/", "http://[0:0::1]:8080/", "http://１２７.０.０.１/", "http://%65xample.com/",
	} {
		f.Add(s)
	}
	all := New(Config{AllowedPorts: []PortRange{{1, 65535}}})
	def := New(Config{})
	f.Fuzz(func(t *testing.T, raw string) {
		// The default ports refuse with 403, never accept what all ports refuse.
		if _, err := def.Canonical(raw); err != nil && !(problem.Status(err) == http.StatusBadRequest && errors.Is(err, ErrBadURL)) &&
			!(problem.Status(err) == http.StatusForbidden && errors.Is(err, ErrBlocked)) {
			t.Fatalf("Canonical(%q) with default ports = %v: want a 400 ErrBadURL or a 403 ErrBlocked", raw, err)
		}
		u, err := all.Canonical(raw)
		if err != nil {
			if problem.Status(err) != http.StatusBadRequest || !errors.Is(err, ErrBadURL) {
				t.Fatalf("Canonical(%q) = %v: want a 400 wrapping ErrBadURL", raw, err)
			}
			return
		}
		if du, err := def.Canonical(raw); err == nil && du.String() != u.String() {
			t.Fatalf("Canonical(%q) depends on the allowed ports: %q, %q", raw, du, u)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			t.Fatalf("accepted scheme %q in %q", u.Scheme, raw)
		}
		if u.User != nil || u.Opaque != "" || u.Fragment != "" || u.RawFragment != "" {
			t.Fatalf("accepted user info, an opaque URL or a fragment: %q", raw)
		}
		host := u.Hostname()
		if a, err := netip.ParseAddr(host); err == nil {
			if a.Zone() != "" || a.String() != host {
				t.Fatalf("Canonical(%q) host %q is not canonical IP text", raw, host)
			}
		} else {
			if err := checkDNSName(host); err != nil {
				t.Fatalf("Canonical(%q) host %q: %v", raw, host, err)
			}
			if endsInNumber(host) {
				t.Fatalf("accepted %q: numeric last label", raw)
			}
		}
		if p := u.Port(); p == "" {
			// default port
		} else if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 || uint16(n) == defaultPort(u.Scheme) || strconv.Itoa(n) != p {
			t.Fatalf("Canonical(%q) has port %q", raw, p)
		}
		if !strings.HasPrefix(u.EscapedPath(), "/") {
			t.Fatalf("Canonical(%q) has path %q", raw, u.EscapedPath())
		}
		s := u.String()
		if strings.ContainsAny(u.RequestURI(), " ") {
			t.Fatalf("Canonical(%q) request target %q cannot be sent", raw, u.RequestURI())
		}
		// Idempotent, and exactly what net/http will send.
		again, err := all.Canonical(s)
		if err != nil {
			t.Fatalf("Canonical(%q) = %q, which is refused: %v", raw, s, err)
		}
		if again.String() != s || !reflect.DeepEqual(again, u) {
			t.Fatalf("Canonical(%q) = %#v, Canonical of that = %#v", raw, u, again)
		}
		// Error messages name the URL without its query or fragment (which
		// may carry tokens); String escapes '?' and '#' anywhere else.
		if r := Redact(u); strings.ContainsAny(r, "?#") {
			t.Fatalf("Redact(%q) = %q still carries a query or fragment", raw, r)
		}
	})
}

// FuzzPolicy checks the address policy against the standard library's own
// classification: nothing loopback, private, link-local, multicast or
// unspecified is ever permitted, however it is spelled in IPv6.
func FuzzPolicy(f *testing.F) {
	for _, s := range []string{
		"127.0.0.1", "10.0.0.1", "169.254.169.254", "100.100.100.200", "0.0.0.0", "8.8.8.8", "255.255.255.255",
		"::1", "::", "::ffff:127.0.0.1", "::127.0.0.1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::a00:1", "2002:7f00:1::",
		"2001:0:4136:e378:8000:63bf:3fff:fdd2", "fd00:ec2::254", "fe80::1", "ff02::1", "2606:4700::1111", "2002:808:808::",
	} {
		a := netip.MustParseAddr(s)
		b := a.AsSlice()
		f.Add(b)
	}
	var p policy
	f.Fuzz(func(t *testing.T, b []byte) {
		a, ok := netip.AddrFromSlice(b)
		if !ok {
			return
		}
		if !p.permitted(a) {
			return
		}
		for _, x := range []netip.Addr{a, a.Unmap()} {
			if x.IsLoopback() || x.IsPrivate() || x.IsLinkLocalUnicast() || x.IsLinkLocalMulticast() ||
				x.IsInterfaceLocalMulticast() || x.IsMulticast() || x.IsUnspecified() {
				t.Fatalf("%s is permitted", a)
			}
		}
		if v4, ok := embeddedV4(a.Unmap()); ok && !p.permitted(v4) {
			t.Fatalf("%s is permitted but embeds refused %s", a, v4)
		}
		if a.Is6() && !a.Is4In6() && netip.MustParsePrefix("::/96").Contains(a) {
			t.Fatalf("IPv4-compatible %s is permitted", a)
		}
		if netip.MustParsePrefix("2001::/32").Contains(a) {
			t.Fatalf("Teredo %s is permitted", a)
		}
	})
}
