package fetch

import (
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

// FuzzParseURL checks the URL gate in front of every fetch: whatever it
// accepts is absolute http(s), carries no credentials, names a host, and
// that host is either a canonical IP literal (left to the dial-time check)
// or a name that no resolver reads as a number.
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
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := parseURL(raw)
		if err != nil {
			if StatusOf(err) != http.StatusBadRequest || !errors.Is(err, ErrBadURL) {
				t.Fatalf("parseURL(%q) = %v: want a 400 wrapping ErrBadURL", raw, err)
			}
			return
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			t.Fatalf("accepted scheme %q in %q", u.Scheme, raw)
		}
		if u.User != nil || u.Opaque != "" {
			t.Fatalf("accepted user info or an opaque URL: %q", raw)
		}
		host := u.Hostname()
		if host == "" {
			t.Fatalf("accepted %q without a host", raw)
		}
		if strings.ContainsAny(host, `"<>`) {
			t.Fatalf("accepted a host net/http refuses to send: %q", host)
		}
		if _, err := netip.ParseAddr(host); err != nil {
			if strings.Contains(host, ":") {
				t.Fatalf("accepted %q: a colon in a non-IP host", raw)
			}
			if endsInNumber(host) {
				t.Fatalf("accepted %q: numeric last label", raw)
			}
		}
		// Error messages name the URL without its query or fragment (which
		// may carry tokens); String escapes '?' and '#' anywhere else.
		if r := redact(u); strings.ContainsAny(r, "?#") {
			t.Fatalf("redact(%q) = %q still carries a query or fragment", raw, r)
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
