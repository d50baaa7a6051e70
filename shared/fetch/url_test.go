package fetch

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func TestCanonical(t *testing.T) {
	c := newTestClient(t, Config{})
	for _, tt := range []struct{ in, want string }{
		{"HTTP://EXAMPLE.COM", "http://example.com/"},
		{"http://Example.COM.:80/a?b#c", "http://example.com/a?b"},
		{"https://example.com:443/", "https://example.com/"},
		{"https://example.com:80/", "https://example.com:80/"},
		{"http://example.com:443/", "http://example.com:443/"},
		{"http://example.com:080/", "http://example.com/"},
		{"http://example.com:08080/", "http://example.com:8080/"},
		{"http://example.com:/", "http://example.com/"},
		// IDNA, UTS #46 non-transitional: see TestCanonicalSharpS.
		{"http://例え.jp/", "http://xn--r8jz45g.jp/"},
		{"http://ＥＸＡＭＰＬＥ．com/", "http://example.com/"},
		{"http://XN--R8JZ45G.jp/", "http://xn--r8jz45g.jp/"},
		// Labels browsers accept although STD3 and CheckHyphens would not.
		{"http://r3---sn-abc.googlevideo.com/", "http://r3---sn-abc.googlevideo.com/"},
		{"http://a_b.example/", "http://a_b.example/"},
		// IP literals in canonical text; mapped dotted quads become IPv4.
		{"http://127。0。0。1/", "http://127.0.0.1/"},
		{"http://１２７.０.０.１:8080/", "http://127.0.0.1:8080/"},
		{"http://[0:0::1]/", "http://[::1]/"},
		{"http://[::FFFF:127.0.0.1]:8080/", "http://[::ffff:127.0.0.1]:8080/"},
		{"http://[2001:DB8:0:0:0:0:0:1]/", "http://[2001:db8::1]/"},
		// Path and query byte for byte; only what cannot be sent is escaped.
		{"http://a.example", "http://a.example/"},
		{"http://a.example?x", "http://a.example/?x"},
		{"http://a.example/?", "http://a.example/?"},
		{"http://a.example/#frag", "http://a.example/"},
		{"http://a.example/%7e/x%2Fy/%7E/~", "http://a.example/%7e/x%2Fy/%7E/~"},
		{"http://a.example//double//", "http://a.example//double//"},
		{"http://a.example/a b", "http://a.example/a%20b"},
		{"http://a.example/a b/x%2Fy", "http://a.example/a%20b/x%2Fy"}, // url.URL.String would give /x/y
		{"http://a.example/é", "http://a.example/%C3%A9"},
		{"http://a.example/a|b^c", "http://a.example/a%7Cb%5Ec"},
		{"http://a.example/?q=a b&r=%7e&s=é&t=a+b", "http://a.example/?q=a%20b&r=%7e&s=é&t=a+b"},
		{"http://a.example/p?x?y", "http://a.example/p?x?y"},
	} {
		u, err := c.Canonical(tt.in)
		if err != nil {
			t.Errorf("Canonical(%q): %v", tt.in, err)
			continue
		}
		if got := u.String(); got != tt.want {
			t.Errorf("Canonical(%q) = %q, want %q", tt.in, got, tt.want)
		}
		again, err := c.Canonical(u.String())
		if err != nil || again.String() != u.String() {
			t.Errorf("Canonical(%q) = %v, %v: not idempotent", u, again, err)
		}
	}
}

func TestCanonicalRefused(t *testing.T) {
	c := newTestClient(t, Config{})
	for _, raw := range []string{
		"https://x@victim.example/e.png",
		"http://@victim.example/",
		"http://user:pass@example.com/",
		"http://[fe80::1%25lo]/",
		"http://[::1%25eth0]:8080/",
		"http://[127.0.0.1]/",
		"http://127.1/",
		"http://１２７.１/", // maps to 127.1
		"http://127.0.0.1./",
		"http://example..com/",
		"http://.example.com/",
		"http://example.com../",
		"http://xn--zz.example/",
		"http://xn--/",
		"http://exa$mple.com/",
		"http://exa\"mple.com/",
		"http://１：：１/", // fullwidth colons map to ':'
		"http://" + strings.Repeat("a", 64) + ".example/",
		"http://" + strings.Repeat("a.", 126) + "ab/",
		"http://\xff/",
		"http://%65xample.com/", // net/url refuses escaped ASCII in hosts
		"http://example.com:0/",
		"http://example.com:65536/",
	} {
		u, err := c.Canonical(raw)
		if err == nil {
			t.Errorf("Canonical(%q) = %q, want an error", raw, u)
			continue
		}
		checkErr(t, err, http.StatusBadRequest, ErrBadURL)
		if strings.Contains(err.Error(), "pass") {
			t.Errorf("error %q repeats the credentials", err)
		}
	}
	// 253 bytes is the longest name.
	long := strings.Repeat("a.", 125) + "abc"
	if _, err := c.Canonical("http://" + long + "/"); err != nil {
		t.Errorf("%d-byte name refused: %v", len(long), err)
	}
}

// TestCanonicalSharpS documents the IDNA choice. With UTS #46
// non-transitional processing, as in current browsers, "ß" (U+00DF) is a
// letter of its own and is punycoded, while capital "ẞ" (U+1E9E) is mapped
// to "ss". Lower-casing alone would have given one key to two hosts.
func TestCanonicalSharpS(t *testing.T) {
	c := newTestClient(t, Config{})
	want := map[string]string{
		"http://faß.example/":  "http://xn--fa-hia.example/",
		"http://FAß.example/":  "http://xn--fa-hia.example/",
		"http://faẞ.example/":  "http://fass.example/",
		"http://FASS.example/": "http://fass.example/",
	}
	for in, w := range want {
		u, err := c.Canonical(in)
		if err != nil || u.String() != w {
			t.Errorf("Canonical(%q) = %v, %v; want %q", in, u, err, w)
		}
	}
	if strings.ToLower("faß") != strings.ToLower("faẞ") {
		t.Fatal("premise: the two spellings lower-case to the same string")
	}
}

// recordingServer answers "ok" and records the Host header and request
// target of every request.
func recordingServer(t *testing.T) (port string, seen func() []string) {
	t.Helper()
	var (
		mu  sync.Mutex
		got []string
	)
	_, cl := serveHTTP(t, listen(t, "127.0.0.1:0"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Host+" "+r.RequestURI)
		mu.Unlock()
		io.WriteString(w, "ok")
	}))
	return cl.port(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// TestGetRequestsCanonical: what a caller keys on (Canonical) is exactly
// what goes on the wire, and the resolver is asked for the ASCII name.
func TestGetRequestsCanonical(t *testing.T) {
	port, seen := recordingServer(t)
	var mu sync.Mutex
	var lookups []string
	c := newTestClient(t, Config{
		AllowedPrivate: []netip.Prefix{loopback},
		Resolver: resolverFunc(func(_ context.Context, _, host string) ([]netip.Addr, error) {
			mu.Lock()
			lookups = append(lookups, host)
			mu.Unlock()
			if host == "xn--fa-hia.example" || host == "fass.example" {
				return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
			}
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}),
	})
	var want []string
	for _, raw := range []string{
		"http://FAß.Example.:" + port + "/a%7e/b c/x%2Fy?x=%7e y#frag",
		"http://faẞ.example:" + port + "/",
	} {
		key, err := c.Canonical(raw)
		if err != nil {
			t.Fatalf("Canonical(%q): %v", raw, err)
		}
		resp, err := c.Get(t.Context(), raw)
		if err != nil {
			t.Fatalf("Get(%q): %v", raw, err)
		}
		resp.Body.Close()
		if resp.URL.String() != key.String() {
			t.Errorf("Get(%q) fetched %q, key is %q", raw, resp.URL, key)
		}
		want = append(want, key.Host+" "+key.RequestURI())
	}
	if w := []string{
		"xn--fa-hia.example:" + port + " /a%7e/b%20c/x%2Fy?x=%7e%20y",
		"fass.example:" + port + " /",
	}; !slices.Equal(want, w) {
		t.Errorf("keys = %q, want %q", want, w)
	}
	if got := seen(); !slices.Equal(got, want) {
		t.Errorf("origin saw %q, want %q", got, want)
	}
	mu.Lock()
	if w := []string{"xn--fa-hia.example", "fass.example"}; !slices.Equal(lookups, w) {
		t.Errorf("resolver asked for %q, want %q", lookups, w)
	}
	mu.Unlock()
}

// TestUserInfoRefusedUpFront: a URL with user info is refused by Canonical,
// before any lookup, with the same error Get gives.
func TestUserInfoRefusedUpFront(t *testing.T) {
	var lookups atomic.Int32
	c := newTestClient(t, Config{Resolver: resolverFunc(func(_ context.Context, _, host string) ([]netip.Addr, error) {
		lookups.Add(1)
		return []netip.Addr{netip.MustParseAddr("8.8.8.8")}, nil
	})})
	const raw = "https://x@victim.example/e.png"
	_, err := c.Canonical(raw)
	checkErr(t, err, http.StatusBadRequest, ErrBadURL)
	_, err = c.Get(t.Context(), raw)
	checkErr(t, err, http.StatusBadRequest, ErrBadURL)
	if n := lookups.Load(); n != 0 {
		t.Errorf("resolver called %d times", n)
	}
}

func TestDefaultPorts(t *testing.T) {
	ln := serveRaw(t, listen(t, "127.0.0.1:0"))
	c := New(Config{
		AllowedPrivate: []netip.Prefix{loopback},
		Proxy:          NoProxy,
		Resolver:       staticResolver(map[string][]string{"example.com": {"127.0.0.1"}}),
	})
	t.Cleanup(c.CloseIdleConnections)

	for _, raw := range []string{
		"http://127.0.0.1:" + ln.port() + "/",
		"http://example.com:" + ln.port() + "/",
		"http://example.com:25/",
		"https://example.com:8443/",
	} {
		u, err := c.Canonical(raw)
		if err == nil {
			t.Errorf("Canonical(%q) = %q, want a refused port", raw, u)
			continue
		}
		checkErr(t, err, http.StatusForbidden, ErrBlocked)
		if port := strings.TrimSuffix(raw[strings.LastIndexByte(raw, ':')+1:], "/"); !strings.Contains(err.Error(), port) {
			t.Errorf("error %q does not name port %s", err, port)
		}
		_, err = c.Get(t.Context(), raw)
		checkErr(t, err, http.StatusForbidden, ErrBlocked)
	}
	assertNoNewConns(t, ln, 0)

	for _, raw := range []string{"http://example.com:80/", "https://example.com:443/", "https://example.com:80/", "http://example.com:443/"} {
		if _, err := c.Canonical(raw); err != nil {
			t.Errorf("Canonical(%q): %v", raw, err)
		}
	}

	ranges := newTestClient(t, Config{AllowedPorts: []PortRange{{8000, 8999}}})
	if _, err := ranges.Canonical("http://example.com:8080/"); err != nil {
		t.Errorf("port 8080 in 8000-8999 refused: %v", err)
	}
	_, err := ranges.Canonical("http://example.com/")
	checkErr(t, err, http.StatusForbidden, ErrBlocked)
}

// TestRedirectToRefusedPort: redirects meet the port check before any
// connection is made.
func TestRedirectToRefusedPort(t *testing.T) {
	trap := serveRaw(t, listen(t, "127.0.0.1:0"))
	mux := http.NewServeMux()
	for path, loc := range map[string]string{
		"/trap":      "http://127.0.0.1:" + trap.port() + "/",
		"/smtp":      "http://127.0.0.1:25/",
		"/smtp-name": "http://mail.test:25/",
		"/ok":        "/final",
	} {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, loc, http.StatusFound)
		})
	}
	mux.HandleFunc("/final", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "final") })
	origin, ocl := serveHTTP(t, listen(t, "127.0.0.1:0"), mux)
	var lookups atomic.Int32
	c := newTestClient(t, Config{
		AllowedPrivate: []netip.Prefix{loopback},
		AllowedPorts:   []PortRange{{mustPort(t, ocl.port()), mustPort(t, ocl.port())}},
		Resolver: resolverFunc(func(_ context.Context, _, host string) ([]netip.Addr, error) {
			lookups.Add(1)
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		}),
	})
	if data, _, err := c.Fetch(t.Context(), origin.URL+"/ok"); err != nil || string(data) != "final" {
		t.Fatalf("allowed redirect: %q, %v", data, err)
	}
	for _, path := range []string{"/trap", "/smtp", "/smtp-name"} {
		_, err := c.Get(t.Context(), origin.URL+path)
		checkErr(t, err, http.StatusForbidden, ErrBlocked)
	}
	assertNoNewConns(t, trap, 0)
	if n := lookups.Load(); n != 0 {
		t.Errorf("resolver called %d times", n)
	}
}

func mustPort(t *testing.T, s string) uint16 {
	t.Helper()
	p, err := parsePort(s)
	if err != nil {
		t.Fatalf("port %q: %v", s, err)
	}
	return p
}

// TestControlHookPort: the dial hook refuses a port outside the list even
// for an allowed address; the trusted (proxy) dial is exempt.
func TestControlHookPort(t *testing.T) {
	cl := serveRaw(t, listen(t, "127.0.0.1:0"))
	c := newTestClient(t, Config{
		AllowedPrivate: []netip.Prefix{loopback},
		AllowedPorts:   []PortRange{{80, 80}},
	})
	_, err := c.dialer(false).DialContext(t.Context(), "tcp", cl.Addr().String())
	checkErr(t, err, http.StatusForbidden, ErrBlocked)
	assertNoNewConns(t, cl, 0)

	conn, err := c.dialer(true).DialContext(t.Context(), "tcp", cl.Addr().String())
	if err != nil {
		t.Fatalf("trusted dial: %v", err)
	}
	conn.Close()
}

func TestParsePorts(t *testing.T) {
	tests := []struct {
		in   string
		want []PortRange
		err  bool
	}{
		{"", []PortRange{}, false},
		{" , ", []PortRange{}, false},
		{"80,443,8000-8999", []PortRange{{80, 80}, {443, 443}, {8000, 8999}}, false},
		{"80 443\t8080,\n1-65535", []PortRange{{80, 80}, {443, 443}, {8080, 8080}, {1, 65535}}, false},
		{"443-443", []PortRange{{443, 443}}, false},
		{"0", nil, true},
		{"65536", nil, true},
		{"-80", nil, true},
		{"80-", nil, true},
		{"90-80", nil, true},
		{"+80", nil, true},
		{"80-90-100", nil, true},
		{"http", nil, true},
		{"80;443", nil, true},
		{"80, x", nil, true},
	}
	for _, tt := range tests {
		got, err := ParsePorts(tt.in)
		if (err != nil) != tt.err {
			t.Errorf("ParsePorts(%q) error = %v, want error %v", tt.in, err, tt.err)
			continue
		}
		if !tt.err && !slices.Equal(got, tt.want) {
			t.Errorf("ParsePorts(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestRedact(t *testing.T) {
	u, _ := url.Parse("https://user:secret@example.com:8443/a/b.png?token=secret#frag")
	if got, want := Redact(u), "https://example.com:8443/a/b.png"; got != want {
		t.Errorf("Redact = %q, want %q", got, want)
	}
	if u.User == nil || u.RawQuery == "" {
		t.Error("Redact modified its argument")
	}
}
