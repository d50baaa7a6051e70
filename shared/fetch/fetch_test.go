package fetch

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/problem"
)

// All tests use loopback only. Hosts other than 127.0.0.0/8 and ::1 appear
// solely in cases the policy must refuse before any connect(2).

var loopback = netip.MustParsePrefix("127.0.0.0/8")

// countingListener records the remote address of every accepted connection,
// so tests can prove a refused fetch never reached a listener.
type countingListener struct {
	net.Listener
	mu      sync.Mutex
	remotes []string
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.remotes = append(l.remotes, c.RemoteAddr().String())
		l.mu.Unlock()
	}
	return c, err
}

func (l *countingListener) accepted() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.remotes)
}

func (l *countingListener) port() string {
	_, p, _ := net.SplitHostPort(l.Addr().String())
	return p
}

// assertNoNewConns proves that nothing connected to l since it had accepted
// `before` connections. It connects a sentinel and waits for it: the accept
// queue is FIFO, so any earlier connection is accepted before the sentinel.
func assertNoNewConns(t *testing.T, l *countingListener, before int) {
	t.Helper()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("sentinel dial: %v", err)
	}
	defer conn.Close()
	sentinel := conn.LocalAddr().String()
	deadline := time.Now().Add(3 * time.Second)
	for {
		got := l.accepted()
		if slices.Contains(got, sentinel) {
			if n := len(got) - before - 1; n != 0 {
				t.Errorf("listener %s accepted %d unexpected connection(s): %v", l.Addr(), n, got[before:])
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sentinel connection to %s never accepted", l.Addr())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// serveRaw accepts and immediately closes connections on l.
func serveRaw(t *testing.T, ln net.Listener) *countingListener {
	t.Helper()
	cl := &countingListener{Listener: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := cl.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return cl
}

// serveHTTP runs h on ln (which it takes over) and counts connections.
func serveHTTP(t *testing.T, ln net.Listener, h http.Handler) (*httptest.Server, *countingListener) {
	t.Helper()
	cl := &countingListener{Listener: ln}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = cl
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, cl
}

func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	return ln
}

// listenSamePort listens on hostA and hostB with one shared port, so that a
// URL whose host resolves to either address hits one of our listeners.
func listenSamePort(t *testing.T, hostA, hostB string) (a, b net.Listener, port string) {
	t.Helper()
	for range 20 {
		a := listen(t, net.JoinHostPort(hostA, "0"))
		_, port, _ := net.SplitHostPort(a.Addr().String())
		b, err := net.Listen("tcp", net.JoinHostPort(hostB, port))
		if err == nil {
			return a, b, port
		}
		a.Close()
	}
	t.Fatalf("could not listen on %s and %s with the same port", hostA, hostB)
	return nil, nil, ""
}

type resolverFunc func(ctx context.Context, network, host string) ([]netip.Addr, error)

func (f resolverFunc) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return f(ctx, network, host)
}

// staticResolver answers from m and fails every other name, so no test ever
// reaches real DNS.
func staticResolver(m map[string][]string) Resolver {
	return resolverFunc(func(_ context.Context, _, host string) ([]netip.Addr, error) {
		ss, ok := m[host]
		if !ok {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		var out []netip.Addr
		for _, s := range ss {
			out = append(out, netip.MustParseAddr(s))
		}
		return out, nil
	})
}

// allPorts lets tests reach httptest servers on random ports.
var allPorts = []PortRange{{1, 65535}}

// newTestClient fills in fast timeouts, no proxy, an offline resolver and,
// unless cfg says otherwise, every port.
func newTestClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	if cfg.AllowedPorts == nil {
		cfg.AllowedPorts = allPorts
	}
	if cfg.Resolver == nil {
		cfg.Resolver = staticResolver(nil)
	}
	if cfg.Proxy == nil {
		cfg.Proxy = NoProxy
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 2 * time.Second
	}
	if cfg.ResponseTimeout == 0 {
		cfg.ResponseTimeout = 2 * time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	c := New(cfg)
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func checkErr(t *testing.T, err error, status int, target error) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want status %d", status)
	}
	if got := problem.Status(err); got != status {
		t.Errorf("problem.Status(%v) = %d, want %d", err, got, status)
	}
	if target != nil && !errors.Is(err, target) {
		t.Errorf("error %v does not wrap %v", err, target)
	}
}

// waitForever blocks a handler until the client goes away.
func waitForever(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-time.After(10 * time.Second):
	}
}

func TestFetchAllowed(t *testing.T) {
	payload := bytes.Repeat([]byte("\x89PNG media bytes "), 100)
	var (
		mu  sync.Mutex
		got http.Header
	)
	mux := http.NewServeMux()
	mux.HandleFunc("/start", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "session", Value: "x"})
		http.Redirect(w, r, "/media/cat.png?v=1", http.StatusFound)
	})
	mux.HandleFunc("/media/cat.png", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.Header.Clone()
		mu.Unlock()
		w.Header().Set("Content-Type", "text/html") // must not matter to us
		w.Header().Set("Content-Disposition", `inline; filename="cat.png"`)
		w.Header().Set("Content-Length", strconv.Itoa(len(payload)))
		w.Write(payload)
	})
	srv, _ := serveHTTP(t, listen(t, "127.0.0.1:0"), mux)
	c := newTestClient(t, Config{
		UserAgent:      "TestAgent/1.0",
		AllowedPrivate: []netip.Prefix{loopback},
	})

	resp, err := c.Get(t.Context(), srv.URL+"/start")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	if err := resp.Body.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if !bytes.Equal(body, payload) {
		t.Errorf("body = %d bytes, want %d", len(body), len(payload))
	}
	if resp.ContentLength != int64(len(payload)) {
		t.Errorf("ContentLength = %d, want %d", resp.ContentLength, len(payload))
	}
	if want := srv.URL + "/media/cat.png?v=1"; resp.URL.String() != want {
		t.Errorf("URL = %s, want %s", resp.URL, want)
	}
	if cd := resp.Header.Get("Content-Disposition"); cd != `inline; filename="cat.png"` {
		t.Errorf("Content-Disposition = %q", cd)
	}

	mu.Lock()
	for name, want := range map[string]string{
		"User-Agent":      "TestAgent/1.0",
		"Accept":          "*/*",
		"Accept-Encoding": "", // DisableCompression: no transparent gzip
		"Cookie":          "", // no cookie jar
		"Referer":         "",
	} {
		if v := got.Get(name); v != want {
			t.Errorf("origin saw %s = %q, want %q", name, v, want)
		}
	}
	mu.Unlock()

	// Fetch reads everything into memory.
	data, resp2, err := c.Fetch(t.Context(), srv.URL+"/media/cat.png")
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if !bytes.Equal(data, payload) || resp2.ContentLength != int64(len(payload)) {
		t.Errorf("Fetch returned %d bytes, ContentLength %d", len(data), resp2.ContentLength)
	}
}

func TestDefaultUserAgent(t *testing.T) {
	ua := make(chan string, 1)
	srv, _ := serveHTTP(t, listen(t, "127.0.0.1:0"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ua <- r.UserAgent()
	}))
	c := newTestClient(t, Config{AllowedPrivate: []netip.Prefix{loopback}})
	if _, _, err := c.Fetch(t.Context(), srv.URL); err != nil {
		t.Fatal(err)
	}
	if got := <-ua; got != DefaultUserAgent {
		t.Errorf("User-Agent = %q, want %q", got, DefaultUserAgent)
	}
}

// tlsOrigin serves h over TLS on loopback; its certificate, which pool
// trusts, covers example.com, served on port.
func tlsOrigin(t *testing.T, h http.Handler) (pool *x509.CertPool, port string) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = listen(t, "127.0.0.1:0")
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool = x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	_, port, _ = net.SplitHostPort(srv.Listener.Addr().String())
	return pool, port
}

func TestHTTPS(t *testing.T) {
	pool, port := tlsOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "secure")
	}))
	target := "https://example.com:" + port + "/"

	cfg := Config{
		Resolver:        staticResolver(map[string][]string{"example.com": {"127.0.0.1"}}),
		TLSClientConfig: &tls.Config{RootCAs: pool},
	}
	_, _, err := newTestClient(t, cfg).Fetch(t.Context(), target)
	checkErr(t, err, http.StatusForbidden, ErrBlocked)

	cfg.AllowedPrivate = []netip.Prefix{loopback}
	data, _, err := newTestClient(t, cfg).Fetch(t.Context(), target)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if string(data) != "secure" {
		t.Errorf("body = %q", data)
	}
}

func TestLoopbackRefused(t *testing.T) {
	srv, cl := serveHTTP(t, listen(t, "127.0.0.1:0"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "secret")
	}))
	c := newTestClient(t, Config{})
	_, err := c.Get(t.Context(), srv.URL+"/")
	checkErr(t, err, http.StatusForbidden, ErrBlocked)
	assertNoNewConns(t, cl, 0)
}

func TestRefusedAddresses(t *testing.T) {
	v4, v6, port := listenSamePort(t, "127.0.0.1", "::1")
	l4, l6 := serveRaw(t, v4), serveRaw(t, v6)
	p := ":" + port
	tests := []struct {
		url    string
		status int
	}{
		{"http://127.1" + p + "/", http.StatusBadRequest},
		{"http://2130706433" + p + "/", http.StatusBadRequest},
		{"http://0x7f000001" + p + "/", http.StatusBadRequest},
		{"http://0177.0.0.1" + p + "/", http.StatusBadRequest},
		{"http://0x7f.0.0.1" + p + "/", http.StatusBadRequest},
		{"http://127.0.0.1." + p + "/", http.StatusBadRequest},
		{"http://127.0.0.1" + p + "/", http.StatusForbidden},
		{"http://127.0.0.2" + p + "/", http.StatusForbidden},
		{"http://[::1]" + p + "/", http.StatusForbidden},
		{"http://[::ffff:127.0.0.1]" + p + "/", http.StatusForbidden},
		{"http://[::ffff:7f00:1]" + p + "/", http.StatusForbidden},
		{"http://[::127.0.0.1]" + p + "/", http.StatusForbidden},
		{"http://0.0.0.0" + p + "/", http.StatusForbidden},
		{"http://[::]" + p + "/", http.StatusForbidden},
		{"https://127.0.0.1" + p + "/", http.StatusForbidden},
		// Below: non-loopback destinations. The policy must refuse them
		// before connect(2); ErrBlocked is only produced at that point.
		{"http://169.254.169.254/latest/meta-data", http.StatusForbidden},
		{"http://[fd00:ec2::254]/", http.StatusForbidden},
		{"http://10.0.0.1/", http.StatusForbidden},
		{"http://172.16.0.1/", http.StatusForbidden},
		{"http://192.168.1.1/", http.StatusForbidden},
		{"http://100.64.0.1/", http.StatusForbidden},
		{"http://224.0.0.1/", http.StatusForbidden},
		{"http://255.255.255.255/", http.StatusForbidden},
		{"http://[fe80::1%25lo]" + p + "/", http.StatusBadRequest}, // zones name local interfaces
		{"http://127。0。0。1" + p + "/", http.StatusForbidden},       // maps to 127.0.0.1, as in browsers
		{"http://１２７.０.０.１" + p + "/", http.StatusForbidden},
		{"http://１２７.１" + p + "/", http.StatusBadRequest},
		{"http://[64:ff9b::7f00:1]" + p + "/", http.StatusForbidden},
		{"http://[2002:7f00:1::]" + p + "/", http.StatusForbidden},
		{"http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", http.StatusForbidden},
	}
	c := newTestClient(t, Config{ConnectTimeout: 500 * time.Millisecond})
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			_, err := c.Get(t.Context(), tt.url)
			want := ErrBlocked
			if tt.status == http.StatusBadRequest {
				want = ErrBadURL
			}
			checkErr(t, err, tt.status, want)
		})
	}
	assertNoNewConns(t, l4, 0)
	assertNoNewConns(t, l6, 0)
}

func TestBadURLs(t *testing.T) {
	c := newTestClient(t, Config{AllowedPrivate: []netip.Prefix{loopback}})
	for _, raw := range []string{
		"",
		"relative",
		"/relative/path",
		"//127.0.0.1/scheme-relative",
		"ftp://example.com/file",
		"file:///etc/passwd",
		"gopher://127.0.0.1:70/_GET",
		"javascript:alert(1)",
		"http:opaque",
		"http://",
		"http:///path",
		"http://:80/",
		"http://allowed@127.0.0.1/",
		"http://user:pass@example.com/",
		`http://example.com\@127.0.0.1/`,
		"http://[::1/",
		"http://exa mple.com/",
		"HTTP://127.1/",
		"https://x@victim.example/e.png",
		"http://@victim.example/",
		"http://example..com/",
		"http://xn--zz.example/",
		"http://exa$mple.com/",
		"http://example.com:0/",
		"http://example.com:65536/",
	} {
		t.Run(raw, func(t *testing.T) {
			_, err := c.Get(t.Context(), raw)
			checkErr(t, err, http.StatusBadRequest, ErrBadURL)
		})
	}
}

func TestResolver(t *testing.T) {
	t.Run("name resolving to loopback", func(t *testing.T) {
		cl := serveRaw(t, listen(t, "127.0.0.1:0"))
		c := newTestClient(t, Config{Resolver: staticResolver(map[string][]string{
			"evil.test": {"127.0.0.1"},
		})})
		_, err := c.Get(t.Context(), "http://evil.test:"+cl.port()+"/")
		checkErr(t, err, http.StatusForbidden, ErrBlocked)
		assertNoNewConns(t, cl, 0)
	})

	t.Run("any blocked answer refuses the name", func(t *testing.T) {
		a, b, port := listenSamePort(t, "127.0.0.2", "127.0.0.1")
		la, lb := serveRaw(t, a), serveRaw(t, b)
		c := newTestClient(t, Config{
			AllowedPrivate: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")},
			Resolver: staticResolver(map[string][]string{
				"mixed.test": {"127.0.0.2", "127.0.0.1"},
			}),
		})
		_, err := c.Get(t.Context(), "http://mixed.test:"+port+"/")
		checkErr(t, err, http.StatusForbidden, ErrBlocked)
		assertNoNewConns(t, la, 0)
		assertNoNewConns(t, lb, 0)
	})

	t.Run("DNS rebinding", func(t *testing.T) {
		a, b, port := listenSamePort(t, "127.0.0.2", "127.0.0.1")
		serveHTTP(t, a, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "public")
		}))
		internal := serveRaw(t, b)
		var calls atomic.Int32
		c := newTestClient(t, Config{
			AllowedPrivate: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")},
			Resolver: resolverFunc(func(_ context.Context, _, host string) ([]netip.Addr, error) {
				if calls.Add(1) == 1 {
					return []netip.Addr{netip.MustParseAddr("127.0.0.2")}, nil
				}
				return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
			}),
		})
		target := "http://rebind.test:" + port + "/"
		data, _, err := c.Fetch(t.Context(), target)
		if err != nil || string(data) != "public" {
			t.Fatalf("first fetch = %q, %v", data, err)
		}
		c.CloseIdleConnections() // force a new dial, hence a new lookup
		_, _, err = c.Fetch(t.Context(), target)
		checkErr(t, err, http.StatusForbidden, ErrBlocked)
		if n := calls.Load(); n != 2 {
			t.Errorf("resolver called %d times, want 2", n)
		}
		assertNoNewConns(t, internal, 0)
	})

	t.Run("redirect from allowed origin to loopback", func(t *testing.T) {
		internal := serveRaw(t, listen(t, "127.0.0.1:0"))
		mux := http.NewServeMux()
		mux.HandleFunc("/ip", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://127.0.0.1:"+internal.port()+"/secret", http.StatusFound)
		})
		mux.HandleFunc("/name", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://internal.test:"+internal.port()+"/secret", http.StatusMovedPermanently)
		})
		mux.HandleFunc("/mapped", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://[::ffff:127.0.0.1]:"+internal.port()+"/secret", http.StatusTemporaryRedirect)
		})
		mux.HandleFunc("/numeric", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://2130706433:"+internal.port()+"/secret", http.StatusFound)
		})
		origin, _ := serveHTTP(t, listen(t, "127.0.0.2:0"), mux)
		c := newTestClient(t, Config{
			AllowedPrivate: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")},
			Resolver:       staticResolver(map[string][]string{"internal.test": {"127.0.0.1"}}),
		})
		for _, tt := range []struct {
			path   string
			status int
		}{
			{"/ip", http.StatusForbidden},
			{"/name", http.StatusForbidden},
			{"/mapped", http.StatusForbidden},
			{"/numeric", http.StatusForbidden},
		} {
			_, err := c.Get(t.Context(), origin.URL+tt.path)
			checkErr(t, err, tt.status, nil)
		}
		assertNoNewConns(t, internal, 0)
	})
}

// TestControlHook exercises the last line of defence on its own: a dialer
// handed a blocked address directly must refuse before connecting.
func TestControlHook(t *testing.T) {
	cl := serveRaw(t, listen(t, "127.0.0.1:0"))
	c := newTestClient(t, Config{})
	_, err := c.dialer(false).DialContext(t.Context(), "tcp", cl.Addr().String())
	checkErr(t, err, http.StatusForbidden, ErrBlocked)
	assertNoNewConns(t, cl, 0)

	conn, err := c.dialer(true).DialContext(t.Context(), "tcp", cl.Addr().String())
	if err != nil {
		t.Fatalf("trusted dial: %v", err)
	}
	conn.Close()
}

func TestRedirects(t *testing.T) {
	var loopHits atomic.Int32
	var lastReferer atomic.Value
	mux := http.NewServeMux()
	mux.HandleFunc("/r/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.PathValue("n"))
		if n == 0 {
			lastReferer.Store(r.Referer())
			io.WriteString(w, "done")
			return
		}
		http.Redirect(w, r, fmt.Sprintf("/r/%d", n-1), http.StatusFound)
	})
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) {
		loopHits.Add(1)
		http.Redirect(w, r, "/loop", http.StatusFound)
	})
	for path, loc := range map[string]string{
		"/to-ftp":      "ftp://example.com/file",
		"/to-file":     "file:///etc/passwd",
		"/to-userinfo": "http://a@example.com/",
		"/to-gopher":   "gopher://127.0.0.1:70/",
	} {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Location", loc)
			w.WriteHeader(http.StatusFound)
		})
	}
	srv, _ := serveHTTP(t, listen(t, "127.0.0.1:0"), mux)
	c := newTestClient(t, Config{AllowedPrivate: []netip.Prefix{loopback}})

	data, _, err := c.Fetch(t.Context(), srv.URL+"/r/10")
	if err != nil || string(data) != "done" {
		t.Fatalf("10 redirects: %q, %v", data, err)
	}
	if ref := lastReferer.Load(); ref != "" {
		t.Errorf("Referer sent after redirect: %q", ref)
	}

	_, err = c.Get(t.Context(), srv.URL+"/r/11")
	checkErr(t, err, http.StatusBadGateway, ErrTooManyRedirects)

	_, err = c.Get(t.Context(), srv.URL+"/loop")
	checkErr(t, err, http.StatusBadGateway, ErrTooManyRedirects)
	if n := loopHits.Load(); n != 11 {
		t.Errorf("redirect loop made %d requests, want 11", n)
	}

	for _, path := range []string{"/to-ftp", "/to-file", "/to-userinfo", "/to-gopher"} {
		_, err = c.Get(t.Context(), srv.URL+path)
		checkErr(t, err, http.StatusForbidden, ErrBadURL)
	}

	noRedirects := newTestClient(t, Config{AllowedPrivate: []netip.Prefix{loopback}, MaxRedirects: -1})
	_, err = noRedirects.Get(t.Context(), srv.URL+"/r/1")
	checkErr(t, err, http.StatusBadGateway, ErrTooManyRedirects)
}

func TestStatusMapping(t *testing.T) {
	mux := http.NewServeMux()
	for _, code := range []int{403, 404, 410, 500, 503} {
		mux.HandleFunc(fmt.Sprintf("/%d", code), func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "nope", code)
		})
	}
	mux.HandleFunc("/no-location", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusFound)
	})
	mux.HandleFunc("/reset", func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.(*net.TCPConn).SetLinger(0) // RST rather than FIN
			conn.Close()
		}
	})
	mux.HandleFunc("/slow-headers", func(w http.ResponseWriter, r *http.Request) {
		waitForever(r)
	})
	mux.HandleFunc("/slow-body", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "partial")
		http.NewResponseController(w).Flush()
		waitForever(r)
	})
	srv, _ := serveHTTP(t, listen(t, "127.0.0.1:0"), mux)

	closed := listen(t, "127.0.0.1:0")
	refusedURL := "http://" + closed.Addr().String() + "/"
	closed.Close()

	slowDNS := resolverFunc(func(ctx context.Context, _, host string) ([]netip.Addr, error) {
		if host == "slow.test" {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	})
	c := newTestClient(t, Config{
		AllowedPrivate:  []netip.Prefix{loopback},
		Resolver:        slowDNS,
		ConnectTimeout:  200 * time.Millisecond,
		ResponseTimeout: 200 * time.Millisecond,
		Timeout:         500 * time.Millisecond,
	})

	tests := []struct {
		name   string
		url    string
		status int
		target error
	}{
		{"403", srv.URL + "/403", 403, ErrRemoteStatus},
		{"404", srv.URL + "/404", 404, ErrRemoteStatus},
		{"410", srv.URL + "/410", 410, ErrRemoteStatus},
		{"500", srv.URL + "/500", 502, ErrRemoteStatus},
		{"503", srv.URL + "/503", 502, ErrRemoteStatus},
		{"3xx without Location", srv.URL + "/no-location", 502, ErrRemoteStatus},
		{"connection reset", srv.URL + "/reset", 502, nil},
		{"connection refused", refusedURL, 502, nil},
		{"DNS failure", "http://nxdomain.test/", 502, nil},
		{"connect timeout", "http://slow.test/", 504, ErrTimeout},
		{"slow headers", srv.URL + "/slow-headers", 504, ErrTimeout},
		{"slow body", srv.URL + "/slow-body", 504, ErrTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			_, _, err := c.Fetch(t.Context(), tt.url)
			checkErr(t, err, tt.status, tt.target)
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}

	// The overall timeout also covers reading via Get.
	resp, err := c.Get(t.Context(), srv.URL+"/slow-body")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	defer resp.Body.Close()
	_, err = io.ReadAll(resp.Body)
	checkErr(t, err, http.StatusGatewayTimeout, ErrTimeout)
}

func TestMaxSize(t *testing.T) {
	const limit = 1000
	mux := http.NewServeMux()
	write := func(n int, chunked bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if !chunked {
				w.Header().Set("Content-Length", strconv.Itoa(n))
			}
			for i := 0; i < n; i += 100 {
				w.Write(bytes.Repeat([]byte("x"), min(100, n-i)))
				if chunked {
					http.NewResponseController(w).Flush()
				}
			}
		}
	}
	mux.HandleFunc("/cl-over", write(limit+1, false))
	mux.HandleFunc("/cl-huge", func(w http.ResponseWriter, r *http.Request) {
		// Claims 1 GiB; the client must give up without reading it.
		w.Header().Set("Content-Length", strconv.Itoa(1<<30))
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		waitForever(r)
	})
	mux.HandleFunc("/cl-exact", write(limit, false))
	mux.HandleFunc("/chunked-over", write(limit+1, true))
	mux.HandleFunc("/chunked-exact", write(limit, true))
	srv, _ := serveHTTP(t, listen(t, "127.0.0.1:0"), mux)
	c := newTestClient(t, Config{AllowedPrivate: []netip.Prefix{loopback}, MaxSize: limit})

	for _, path := range []string{"/cl-over", "/cl-huge"} {
		_, err := c.Get(t.Context(), srv.URL+path)
		checkErr(t, err, http.StatusRequestEntityTooLarge, ErrTooLarge)
	}

	for _, path := range []string{"/cl-exact", "/chunked-exact"} {
		data, _, err := c.Fetch(t.Context(), srv.URL+path)
		if err != nil || len(data) != limit {
			t.Errorf("%s: got %d bytes, %v", path, len(data), err)
		}
	}

	resp, err := c.Get(t.Context(), srv.URL+"/chunked-over")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if resp.ContentLength != -1 {
		t.Errorf("ContentLength = %d, want -1", resp.ContentLength)
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	checkErr(t, err, http.StatusRequestEntityTooLarge, ErrTooLarge)
	if len(data) > limit {
		t.Errorf("read %d bytes past the limit", len(data))
	}

	_, _, err = c.Fetch(t.Context(), srv.URL+"/chunked-over")
	checkErr(t, err, http.StatusRequestEntityTooLarge, ErrTooLarge)
}

func TestProxy(t *testing.T) {
	var (
		mu       sync.Mutex
		proxied  []string
		notProxy atomic.Int32
	)
	proxySrv, proxyLn := serveHTTP(t, listen(t, "127.0.0.1:0"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !r.URL.IsAbs() { // origin-form: someone talked to us directly
			notProxy.Add(1)
			http.Error(w, "not a proxy request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		proxied = append(proxied, r.URL.String()+" UA="+r.UserAgent())
		mu.Unlock()
		io.WriteString(w, "via proxy")
	}))
	proxyURL, _ := url.Parse(proxySrv.URL)

	c := newTestClient(t, Config{
		UserAgent: "TestAgent/1.0",
		// Only the target's addresses are allowed; the proxy's 127.0.0.1 is not.
		AllowedPrivate: []netip.Prefix{netip.MustParsePrefix("127.0.0.3/32")},
		Proxy: func(r *http.Request) (*url.URL, error) {
			if strings.HasSuffix(r.URL.Hostname(), ".example") {
				return proxyURL, nil
			}
			return nil, nil
		},
		Resolver: staticResolver(map[string][]string{
			"media.example": {"127.0.0.3"},
			"evil.example":  {"127.0.0.1"},
			"mixed.example": {"127.0.0.3", "10.0.0.1"},
		}),
	})

	data, _, err := c.Fetch(t.Context(), "http://media.example/img.png")
	if err != nil {
		t.Fatalf("Fetch via proxy: %v", err)
	}
	if string(data) != "via proxy" {
		t.Errorf("body = %q", data)
	}
	mu.Lock()
	if want := []string{"http://media.example/img.png UA=TestAgent/1.0"}; !slices.Equal(proxied, want) {
		t.Errorf("proxy saw %v, want %v", proxied, want)
	}
	mu.Unlock()

	// Targets that resolve to blocked addresses never reach the proxy.
	for _, target := range []string{"http://evil.example/", "http://mixed.example/"} {
		_, err = c.Get(t.Context(), target)
		checkErr(t, err, http.StatusForbidden, nil)
	}
	_, err = c.Get(t.Context(), "http://nxdomain.example/")
	checkErr(t, err, http.StatusBadGateway, nil)
	mu.Lock()
	if len(proxied) != 1 {
		t.Errorf("proxy saw %v after refused requests", proxied)
	}
	mu.Unlock()

	// The proxy's own address is only trusted as a proxy: fetching it
	// directly is still refused.
	before := len(proxyLn.accepted())
	_, err = c.Get(t.Context(), proxySrv.URL+"/")
	checkErr(t, err, http.StatusForbidden, ErrBlocked)
	assertNoNewConns(t, proxyLn, before)
	if n := notProxy.Load(); n != 0 {
		t.Errorf("proxy received %d direct requests", n)
	}
}

// TestProxyConnect fetches https through a CONNECT proxy named by host name.
func TestProxyConnect(t *testing.T) {
	origin := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "tunnelled")
	}))
	origin.Listener.Close()
	origin.Listener = listen(t, "127.0.0.3:0")
	origin.StartTLS()
	t.Cleanup(origin.Close)
	_, originPort, _ := net.SplitHostPort(origin.Listener.Addr().String())
	pool := x509.NewCertPool()
	pool.AddCert(origin.Certificate())

	var connects atomic.Int32
	proxySrv, _ := serveHTTP(t, listen(t, "127.0.0.1:0"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect || r.Host != "secure.example.com:"+originPort {
			http.Error(w, "unexpected request", http.StatusBadRequest)
			return
		}
		connects.Add(1)
		up, err := net.Dial("tcp", origin.Listener.Addr().String())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer up.Close()
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n")
		go io.Copy(up, brw)
		io.Copy(conn, up)
	}))
	_, proxyPort, _ := net.SplitHostPort(proxySrv.Listener.Addr().String())
	proxyURL := &url.URL{Scheme: "http", Host: "proxy.internal:" + proxyPort}

	c := newTestClient(t, Config{
		AllowedPrivate:  []netip.Prefix{netip.MustParsePrefix("127.0.0.3/32")},
		TLSClientConfig: &tls.Config{RootCAs: pool},
		Proxy:           func(*http.Request) (*url.URL, error) { return proxyURL, nil },
		Resolver: staticResolver(map[string][]string{
			"proxy.internal":     {"127.0.0.1"},
			"secure.example.com": {"127.0.0.3"},
		}),
	})
	data, _, err := c.Fetch(t.Context(), "https://secure.example.com:"+originPort+"/")
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if string(data) != "tunnelled" || connects.Load() != 1 {
		t.Errorf("body = %q, CONNECTs = %d", data, connects.Load())
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC)
	date := func(d time.Duration, layout string) string { return now.Add(d).UTC().Format(layout) }
	for _, tt := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"120", 2 * time.Minute},
		{" 5 ", 5 * time.Second},
		{"0", 0},
		{"3600", time.Hour},
		{"3601", time.Hour}, // capped
		{"99999999999999999999999999", time.Hour}, // valid delay-seconds, however long
		{"-5", 0},
		{"+5", 0},
		{"1.5", 0},
		{"5s", 0},
		{"soon", 0},
		{date(90*time.Second, http.TimeFormat), 90 * time.Second},
		{date(90*time.Second, time.RFC850), 90 * time.Second},
		{date(90*time.Second, time.ANSIC), 90 * time.Second},
		{date(48*time.Hour, http.TimeFormat), time.Hour}, // capped
		{date(-time.Minute, http.TimeFormat), 0},         // past
		{date(0, http.TimeFormat), 0},
		{"Tue, 03 Nov 2026 12:01:30 +0100", 0}, // not an HTTP-date
	} {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
	// HTTP-dates have whole seconds; a date 1.5 s ahead of now rounds up.
	if got := parseRetryAfter(date(2*time.Second, http.TimeFormat), now.Add(500*time.Millisecond)); got != 2*time.Second {
		t.Errorf("date 1.5s ahead = %v, want 2s", got)
	}
}

func TestRetryAfter(t *testing.T) {
	mux := http.NewServeMux()
	reply := func(code int, retryAfter string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if retryAfter != "" {
				w.Header().Set("Retry-After", retryAfter)
			}
			http.Error(w, "busy", code)
		}
	}
	mux.HandleFunc("/429", reply(429, "30"))
	mux.HandleFunc("/429-none", reply(429, ""))
	mux.HandleFunc("/429-junk", reply(429, "later"))
	mux.HandleFunc("/503-date", reply(503, time.Now().Add(2*time.Minute).UTC().Format(http.TimeFormat)))
	mux.HandleFunc("/503-past", reply(503, "Sun, 06 Nov 1994 08:49:37 GMT"))
	mux.HandleFunc("/503-long", reply(503, "86400"))
	mux.HandleFunc("/500", reply(500, "30"))
	mux.HandleFunc("/404", reply(404, "30"))
	srv, _ := serveHTTP(t, listen(t, "127.0.0.1:0"), mux)
	c := newTestClient(t, Config{AllowedPrivate: []netip.Prefix{loopback}})

	for _, tt := range []struct {
		path   string
		status int
		lo, hi time.Duration
	}{
		{"/429", 429, 30 * time.Second, 30 * time.Second},
		{"/429-none", 429, 0, 0},
		{"/429-junk", 429, 0, 0},
		{"/503-date", 502, 118 * time.Second, 2 * time.Minute},
		{"/503-past", 502, 0, 0},
		{"/503-long", 502, time.Hour, time.Hour},
		{"/500", 502, 0, 0}, // only 429 and 503 carry a meaningful Retry-After
		{"/404", 404, 0, 0},
	} {
		_, err := c.Get(t.Context(), srv.URL+tt.path)
		checkErr(t, err, tt.status, ErrRemoteStatus)
		var fe *problem.Error
		if !errors.As(err, &fe) {
			t.Fatalf("%s: %v is not a *problem.Error", tt.path, err)
		}
		if fe.RetryAfter < tt.lo || fe.RetryAfter > tt.hi {
			t.Errorf("%s: RetryAfter = %v, want %v..%v", tt.path, fe.RetryAfter, tt.lo, tt.hi)
		}
	}
}

func TestLimitTo(t *testing.T) {
	const size = 1000
	mux := http.NewServeMux()
	mux.HandleFunc("/cl", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.Write(bytes.Repeat([]byte("x"), size))
	})
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		for range size / 100 {
			w.Write(bytes.Repeat([]byte("x"), 100))
			http.NewResponseController(w).Flush()
		}
	})
	srv, _ := serveHTTP(t, listen(t, "127.0.0.1:0"), mux)
	c := newTestClient(t, Config{AllowedPrivate: []netip.Prefix{loopback}, MaxSize: 800})
	big := newTestClient(t, Config{AllowedPrivate: []netip.Prefix{loopback}})

	get := func(c *Client, path string) *Response {
		t.Helper()
		resp, err := c.Get(t.Context(), srv.URL+path)
		if err != nil {
			t.Fatalf("Get %s: %v", path, err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	checkTooLarge := func(err error, limit int) {
		t.Helper()
		checkErr(t, err, http.StatusRequestEntityTooLarge, ErrTooLarge)
		if want := fmt.Sprintf("exceeds %d bytes", limit); err != nil && !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}

	t.Run("declared length over the cap", func(t *testing.T) {
		resp := get(big, "/cl")
		checkTooLarge(resp.LimitTo(size-1), size-1)
	})
	t.Run("declared length at the cap", func(t *testing.T) {
		resp := get(big, "/cl")
		if err := resp.LimitTo(size); err != nil {
			t.Fatalf("LimitTo(%d): %v", size, err)
		}
		if data, err := io.ReadAll(resp.Body); err != nil || len(data) != size {
			t.Errorf("read %d bytes, %v", len(data), err)
		}
	})
	t.Run("chunked over the cap", func(t *testing.T) {
		resp := get(big, "/chunked")
		if err := resp.LimitTo(500); err != nil {
			t.Fatalf("LimitTo: %v", err)
		}
		data, err := io.ReadAll(resp.Body)
		checkTooLarge(err, 500)
		if len(data) != 500 {
			t.Errorf("read %d bytes, want exactly the 500 allowed", len(data))
		}
	})
	t.Run("chunked exactly at the cap", func(t *testing.T) {
		resp := get(big, "/chunked")
		if err := resp.LimitTo(size); err != nil {
			t.Fatalf("LimitTo: %v", err)
		}
		if data, err := io.ReadAll(resp.Body); err != nil || len(data) != size {
			t.Errorf("read %d bytes, %v", len(data), err)
		}
	})
	t.Run("counts what was already read", func(t *testing.T) {
		resp := get(big, "/chunked")
		head := make([]byte, 300)
		if _, err := io.ReadFull(resp.Body, head); err != nil {
			t.Fatal(err)
		}
		if err := resp.LimitTo(400); err != nil { // 300 read, 100 to go
			t.Fatalf("LimitTo(400): %v", err)
		}
		rest, err := io.ReadAll(resp.Body)
		checkTooLarge(err, 400)
		if len(rest) != 100 {
			t.Errorf("read %d more bytes, want 100", len(rest))
		}
		checkTooLarge(resp.LimitTo(200), 200) // already past it
		_, err = resp.Body.Read(make([]byte, 1))
		checkErr(t, err, http.StatusRequestEntityTooLarge, ErrTooLarge)
	})
	t.Run("already read past the new cap", func(t *testing.T) {
		resp := get(big, "/chunked")
		if _, err := io.ReadFull(resp.Body, make([]byte, 300)); err != nil {
			t.Fatal(err)
		}
		checkTooLarge(resp.LimitTo(200), 200)
		_, err := resp.Body.Read(make([]byte, 1))
		checkTooLarge(err, 200)
	})
	t.Run("never raises the cap", func(t *testing.T) {
		resp := get(c, "/chunked") // MaxSize 800
		if err := resp.LimitTo(5000); err != nil {
			t.Fatalf("LimitTo: %v", err)
		}
		data, err := io.ReadAll(resp.Body)
		checkTooLarge(err, 800)
		if len(data) != 800 {
			t.Errorf("read %d bytes, want 800", len(data))
		}
	})
	t.Run("after Fetch", func(t *testing.T) {
		_, resp, err := big.Fetch(t.Context(), srv.URL+"/chunked")
		if err != nil {
			t.Fatal(err)
		}
		if err := resp.LimitTo(size); err != nil {
			t.Errorf("LimitTo(%d) after reading %d: %v", size, size, err)
		}
		checkTooLarge(resp.LimitTo(size-1), size-1)
	})
}

// TestCallerGone: a caller that goes away mid-fetch is not an origin
// failure (502) nor a timeout (504): problem.Status says the client left.
func TestCallerGone(t *testing.T) {
	arrived := make(chan struct{})
	srv, _ := serveHTTP(t, listen(t, "127.0.0.1:0"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		waitForever(r)
	}))
	c := newTestClient(t, Config{AllowedPrivate: []netip.Prefix{loopback}})
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-arrived
		cancel()
	}()
	_, err := c.Get(ctx, srv.URL+"/slow.png")
	checkErr(t, err, problem.StatusClientGone, context.Canceled)
}

// TestHTTPSNeverRedirectsToHTTP: an https URL that redirects to plain
// http is refused (403) before the http hop is asked: its bytes would be
// stored under the https URL's key for every viewer, and anyone on the
// plain path could choose them. http to https, and http to http, are
// followed.
func TestHTTPSNeverRedirectsToHTTP(t *testing.T) {
	var plainHits atomic.Int32
	plain, _ := serveHTTP(t, listen(t, "127.0.0.1:0"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plainHits.Add(1)
		io.WriteString(w, "plain")
	}))
	pool, port := tlsOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/down":
			http.Redirect(w, r, plain.URL+"/x", http.StatusFound)
		case "/hop":
			http.Redirect(w, r, "/down", http.StatusFound)
		default:
			io.WriteString(w, "secure")
		}
	}))
	c := newTestClient(t, Config{
		AllowedPrivate:  []netip.Prefix{loopback},
		Resolver:        staticResolver(map[string][]string{"example.com": {"127.0.0.1"}}),
		TLSClientConfig: &tls.Config{RootCAs: pool},
	})
	for _, path := range []string{"/down", "/hop"} {
		_, err := c.Get(t.Context(), "https://example.com:"+port+path)
		checkErr(t, err, http.StatusForbidden, ErrDowngrade)
	}
	if n := plainHits.Load(); n != 0 {
		t.Errorf("the plain http hop was asked %d times", n)
	}
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://example.com:"+port+"/ok", http.StatusFound)
	})
	upgrading, _ := serveHTTP(t, listen(t, "127.0.0.1:0"), up)
	if data, _, err := c.Fetch(t.Context(), upgrading.URL+"/"); err != nil || string(data) != "secure" {
		t.Errorf("http redirecting to https: %q, %v", data, err)
	}
}
