package proxy_test

// End-to-end SSRF suite: every attempt goes through the HTTP handler, the
// way Misskey's clients reach it, and must be refused with nothing ever
// connecting to the target.
//
// Only loopback is ever connected to, even if a defence were missing:
//
//   - Targets that are loopback in some spelling (127.1, [::ffff:127.0.0.1],
//     0.0.0.0, names resolving to 127.0.0.3, ...) are dialled directly, so
//     the dial-time check is what stands in the way. Each such target has a
//     real listener on loopback, which must accept nothing.
//   - Targets that are not loopback (10/8, 169.254.169.254, fd00:ec2::254,
//     NAT64, names resolving to private addresses, ...) are routed by the
//     fetcher's Proxy hook to a trap proxy on 127.0.0.1. The fetcher
//     resolves and checks the target before handing a request to a proxy,
//     so a refused target never reaches the trap; without the check the
//     trap, not the private address, would receive the request.
//
// The real wiring (config.Load + service.New) runs the attempts that need
// neither an injected resolver nor the trap; the full table runs against a
// stack built from the same packages with a resolver the test controls.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/budget"
	"github.com/misskey-lambda/media-proxy/shared/fetch"
	"github.com/misskey-lambda/media-proxy/shared/jobs"
	"github.com/misskey-lambda/media-proxy/shared/pipeline"
	"github.com/misskey-lambda/media-proxy/shared/proxy"
	"github.com/misskey-lambda/media-proxy/shared/store"
	"github.com/misskey-lambda/media-proxy/shared/testmedia"
	"github.com/misskey-lambda/media-proxy/shared/transform"
)

// countingListener records the remote address of every accepted
// connection, so a test can prove a refused request reached nothing.
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

// noNewConns reports the connections l accepted beyond the first `before`.
// It connects a sentinel and waits until it is accepted: the accept queue
// is FIFO, so anything that connected earlier has been counted by then.
func noNewConns(t *testing.T, l *countingListener, before int) []string {
	t.Helper()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("sentinel dial %s: %v", l.Addr(), err)
	}
	defer conn.Close()
	sentinel := conn.LocalAddr().String()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := l.accepted()
		if i := slices.Index(got, sentinel); i >= 0 {
			return slices.Delete(slices.Clone(got[before:]), i-before, i-before+1)
		}
		if time.Now().After(deadline) {
			t.Fatalf("sentinel connection to %s never accepted", l.Addr())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// serveCounting serves h on ln and counts its connections.
func serveCounting(t *testing.T, ln net.Listener, h http.Handler) (*httptest.Server, *countingListener) {
	t.Helper()
	cl := &countingListener{Listener: ln}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = cl
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, cl
}

// listenSamePort listens on every host with one shared port, so that a URL
// whose host ends up at any of them hits one of our listeners.
func listenSamePort(t *testing.T, hosts ...string) ([]net.Listener, string) {
	t.Helper()
	for range 50 {
		first, err := net.Listen("tcp", net.JoinHostPort(hosts[0], "0"))
		if err != nil {
			t.Fatalf("listen %s: %v", hosts[0], err)
		}
		_, port, _ := net.SplitHostPort(first.Addr().String())
		lns := []net.Listener{first}
		for _, h := range hosts[1:] {
			ln, err := net.Listen("tcp", net.JoinHostPort(h, port))
			if err != nil {
				break
			}
			lns = append(lns, ln)
		}
		if len(lns) == len(hosts) {
			return lns, port
		}
		for _, ln := range lns {
			ln.Close()
		}
	}
	t.Fatalf("could not listen on %v with one port", hosts)
	return nil, ""
}

func hasIPv6Loopback() bool {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// resolverFunc is a fetch.Resolver.
type resolverFunc func(ctx context.Context, network, host string) ([]netip.Addr, error)

func (f resolverFunc) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return f(ctx, network, host)
}

// stackOptions configures newStack; zero fields take test defaults.
type stackOptions struct {
	allow    []netip.Prefix
	resolver fetch.Resolver // default: every name is NXDOMAIN
	proxy    func(*http.Request) (*url.URL, error)
	store    store.Store // default: a directory store
	// Handler settings, as service.New sets them on Lambda or locally.
	inlineLimit  int64
	streamLimit  int64
	spoolRoom    int64
	precompute   jobs.Enqueuer
	writeTimeout time.Duration
}

// newStack builds the proxy from its packages, as service.New does, but
// with the fetcher's hooks in the test's hands.
func newStack(t *testing.T, o stackOptions) *httptest.Server {
	t.Helper()
	srv, _ := newStackHandler(t, o)
	return srv
}

// newStackHandler is newStack with its handler.
func newStackHandler(t *testing.T, o stackOptions) (*httptest.Server, *proxy.Handler) {
	t.Helper()
	if o.resolver == nil {
		o.resolver = resolverFunc(func(_ context.Context, _, host string) ([]netip.Addr, error) {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		})
	}
	if o.proxy == nil {
		o.proxy = fetch.NoProxy
	}
	if o.store == nil {
		st, err := store.NewDir(t.TempDir(), store.DirOptions{})
		if err != nil {
			t.Fatal(err)
		}
		o.store = st
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	f := fetch.New(fetch.Config{
		ConnectTimeout:  2 * time.Second,
		ResponseTimeout: 10 * time.Second,
		Timeout:         10 * time.Second,
		AllowedPrivate:  o.allow,
		AllowedPorts:    []fetch.PortRange{{Lo: 1, Hi: 65535}}, // targets on random loopback ports
		Proxy:           o.proxy,
		Resolver:        o.resolver,
	})
	t.Cleanup(f.CloseIdleConnections)
	h := proxy.New(proxy.Config{
		Pipeline:     testPipeline(f),
		Canonical:    f.Canonical,
		Store:        o.store,
		Headers:      testHeaders,
		Logger:       log,
		InlineLimit:  o.inlineLimit,
		StreamLimit:  o.streamLimit,
		Precompute:   o.precompute,
		WriteTimeout: o.writeTimeout,
		SpoolDir:     t.TempDir(),
		SpoolRoom:    o.spoolRoom,
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, h
}

// testPipeline is the pipeline service.New builds, on fetcher.
func testPipeline(fetcher *fetch.Client) *pipeline.Pipeline {
	mem := budget.New(budget.Options{Bytes: 1 << 30})
	return pipeline.New(fetcher, transform.New(transform.DefaultLimits, 2, mem), pipeline.Options{
		InMemory:       8 << 20,
		MaxConvertSize: 50 << 20,
		Budget:         mem,
	})
}

// ssrfCase is one attempt. URLs use {P} for the port every target listens
// on and {A} for the allowed origin (http://127.0.0.2:{P}).
type ssrfCase struct {
	name, url string
	status    int
	// real marks attempts the real wiring runs too: every hop stays on
	// loopback even without the defences, and no name is ever looked up
	// (non-canonical numeric hosts would reach the system resolver if
	// their check were missing, so they run with the injected one only).
	real bool
}

func ssrfCases() []ssrfCase {
	const (
		bad  = http.StatusBadRequest
		no   = http.StatusForbidden
		gate = http.StatusBadGateway
	)
	return []ssrfCase{
		// Loopback in every notation, dialled directly.
		{"loopback", "http://127.0.0.1:{P}/a.png", no, true},
		{"loopback https", "https://127.0.0.1:{P}/a.png", no, true},
		{"loopback upper-case scheme", "HTTP://127.0.0.1:{P}/a.png", no, true},
		{"loopback short 127.1", "http://127.1:{P}/a.png", bad, false},
		{"loopback decimal", "http://2130706433:{P}/a.png", bad, false},
		{"loopback hex", "http://0x7f000001:{P}/a.png", bad, false},
		{"loopback octal", "http://0177.0.0.1:{P}/a.png", bad, false},
		{"loopback mixed hex", "http://0x7f.0.0.1:{P}/a.png", bad, false},
		{"loopback trailing dot", "http://127.0.0.1.:{P}/a.png", bad, false},
		{"zero", "http://0:{P}/a.png", bad, false},
		{"ipv6 loopback", "http://[::1]:{P}/a.png", no, true},
		{"ipv6 loopback long", "http://[0:0:0:0:0:0:0:1]:{P}/a.png", no, true},
		{"ipv4-mapped loopback", "http://[::ffff:127.0.0.1]:{P}/a.png", no, true},
		{"ipv4-mapped loopback hex", "http://[::ffff:7f00:1]:{P}/a.png", no, true},
		{"ipv4-mapped loopback long", "http://[0:0:0:0:0:ffff:127.0.0.1]:{P}/a.png", no, true},
		{"unspecified", "http://0.0.0.0:{P}/a.png", no, true},
		{"ipv6 unspecified", "http://[::]:{P}/a.png", no, true},
		{"loopback outside the allow-list", "http://127.0.0.3:{P}/a.png", no, true},
		{"loopback outside the allow-list, mapped", "http://[::ffff:127.0.0.3]:{P}/a.png", no, true},
		// Userinfo and parser confusion.
		{"userinfo", "http://allowed@127.0.0.1:{P}/a.png", bad, true},
		{"userinfo naming the allowed host", "http://127.0.0.2:{P}@127.0.0.1:{P}/a.png", bad, true},
		{"userinfo with password", "http://user:pass@127.0.0.2:{P}/a.png", bad, true},
		{"backslash authority", `http://127.0.0.2:{P}\@127.0.0.1:{P}/a.png`, bad, true},
		{"empty host", "http:///127.0.0.1:{P}/a.png", bad, true},
		{"scheme-relative", "//127.0.0.1:{P}/a.png", bad, true},
		// Other schemes.
		{"file", "file:///etc/passwd", bad, true},
		{"file with host", "file://127.0.0.1/etc/passwd", bad, true},
		{"ftp", "ftp://127.0.0.1:{P}/a.png", bad, true},
		{"gopher", "gopher://127.0.0.1:{P}/_GET%20/", bad, true},
		{"dict", "dict://127.0.0.1:{P}/info", bad, true},
		{"data", "data:image/png;base64,iVBORw0KGgo=", bad, true},
		{"javascript", "javascript:alert(document.domain)", bad, true},
		{"opaque http", "http:127.0.0.1:{P}/a.png", bad, true},
		// IDN and trailing-dot spellings the transport turns into loopback.
		{"ideographic full stops", "http://127。0。0。1:{P}/a.png", no, false},
		{"fullwidth digits", "http://１２７.０.０.１:{P}/a.png", no, false},
		{"fullwidth localhost", "http://ｌｏｃａｌｈｏｓｔ:{P}/a.png", no, false},
		{"localhost", "http://localhost:{P}/a.png", no, false},
		{"localhost upper-case", "http://LOCALHOST:{P}/a.png", no, false},
		{"localhost trailing dot", "http://localhost.:{P}/a.png", no, false},
		{"name resolving to refused loopback", "http://loop.test:{P}/a.png", no, false},
		{"name resolving to ipv6 loopback", "http://v6loop.test:{P}/a.png", no, false},
		{"name with allowed and refused answers", "http://mixed-loop.test:{P}/a.png", no, false},
		// Private, CGNAT, link-local, metadata and reserved ranges (trap).
		{"10/8", "http://10.0.0.1/a.png", no, false},
		{"172.16/12", "http://172.16.0.1/a.png", no, false},
		{"192.168/16", "http://192.168.1.1/a.png", no, false},
		{"CGNAT", "http://100.64.0.1/a.png", no, false},
		{"Alibaba metadata", "http://100.100.100.200/latest/meta-data/", no, false},
		{"link-local", "http://169.254.0.1/a.png", no, false},
		{"cloud metadata", "http://169.254.169.254/latest/meta-data/iam/security-credentials/", no, false},
		{"cloud metadata https", "https://169.254.169.254/latest/meta-data/", no, false},
		{"Oracle metadata", "http://192.0.0.192/opc/v1/instance/", no, false},
		{"multicast", "http://224.0.0.1/a.png", no, false},
		{"broadcast", "http://255.255.255.255/a.png", no, false},
		{"benchmarking", "http://198.18.0.1/a.png", no, false},
		{"AWS metadata ipv6", "http://[fd00:ec2::254]/latest/meta-data/", no, false},
		{"unique local", "http://[fc00::1]/a.png", no, false},
		{"ipv6 link-local", "http://[fe80::1]/a.png", no, false},
		{"ipv6 link-local with zone", "http://[fe80::1%25eth0]/a.png", bad, false},
		{"site-local", "http://[fec0::1]/a.png", no, false},
		{"ipv4-mapped private", "http://[::ffff:10.0.0.1]/a.png", no, false},
		{"ipv4-mapped metadata", "http://[::ffff:169.254.169.254]/latest/meta-data/", no, false},
		{"ipv4-compatible loopback", "http://[::127.0.0.1]:{P}/a.png", no, false},
		{"NAT64 metadata", "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/", no, false},
		{"NAT64 loopback", "http://[64:ff9b::7f00:1]:{P}/a.png", no, false},
		{"NAT64 private", "http://[64:ff9b::10.0.0.1]/a.png", no, false},
		{"local-use NAT64", "http://[64:ff9b:1::a00:1]/a.png", no, false},
		{"6to4 metadata", "http://[2002:a9fe:a9fe::]/latest/meta-data/", no, false},
		{"6to4 loopback", "http://[2002:7f00:1::]:{P}/a.png", no, false},
		{"Teredo", "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/a.png", no, false},
		{"name resolving to private", "http://internal.test/a.png", no, false},
		{"name resolving to private, trailing dot", "http://internal.test./a.png", no, false},
		{"name resolving to metadata", "http://metadata.test/latest/meta-data/", no, false},
		{"name resolving to ipv6 metadata", "http://v6metadata.test/latest/meta-data/", no, false},
		{"name resolving to NAT64 metadata", "http://nat64.test/latest/meta-data/", no, false},
		{"name with public and private answers", "http://mixed.test/a.png", no, false},
		{"IDN name resolving to private", "http://интранет.test/a.png", no, false},
		// Redirects from the allowed origin.
		{"redirect to loopback", "{A}/redirect?to=http://127.0.0.1:{P}/a.png", no, true},
		{"redirect to refused loopback", "{A}/redirect?to=http://127.0.0.3:{P}/a.png", no, true},
		{"redirect to ipv6 loopback", "{A}/redirect?to=http://[::1]:{P}/a.png", no, true},
		{"redirect to mapped loopback", "{A}/redirect?to=http://[::ffff:127.0.0.1]:{P}/a.png", no, true},
		{"redirect to decimal loopback", "{A}/redirect?to=http://2130706433:{P}/a.png", no, false},
		{"redirect to unspecified", "{A}/redirect?to=http://0.0.0.0:{P}/a.png", no, true},
		{"redirect 307 to loopback", "{A}/redirect?code=307&to=http://127.0.0.1:{P}/a.png", no, true},
		{"redirect 308 to loopback", "{A}/redirect?code=308&to=http://127.0.0.1:{P}/a.png", no, true},
		{"redirect to userinfo", "{A}/redirect?to=http://a@127.0.0.2:{P}/a.png", no, true},
		{"redirect to file", "{A}/redirect?to=file:///etc/passwd", no, true},
		{"redirect to gopher", "{A}/redirect?to=gopher://127.0.0.1:{P}/_x", no, true},
		{"redirect to a name resolving to loopback", "{A}/redirect?to=http://localhost:{P}/a.png", no, false},
		{"redirect to private", "{A}/redirect?to=http://10.0.0.1/a.png", no, false},
		{"redirect to metadata", "{A}/redirect?to=http://169.254.169.254/latest/meta-data/", no, false},
		{"redirect to ipv6 metadata", "{A}/redirect?to=http://[fd00:ec2::254]/", no, false},
		{"redirect to a name resolving to private", "{A}/redirect?to=http://internal.test/a.png", no, false},
		{"redirect chain ending in loopback", "{A}/redirect?to={A}/redirect%3Fto%3Dhttp://127.0.0.1:{P}/a.png", no, true},
		{"redirect loop", "{A}/loop", gate, true},
	}
}

// ssrfTargets are the listeners no attempt may reach.
type ssrfTargets struct {
	port    string
	allowed *countingListener // 127.0.0.2: the one origin that may be reached
	victims map[string]*countingListener
	trap    *countingListener
	trapURL *url.URL
	loops   atomic.Int64
}

func newSSRFTargets(t *testing.T) *ssrfTargets {
	hosts := []string{"127.0.0.2", "127.0.0.1", "127.0.0.3"}
	if hasIPv6Loopback() {
		hosts = append(hosts, "::1")
	}
	lns, port := listenSamePort(t, hosts...)
	tg := &ssrfTargets{port: port, victims: map[string]*countingListener{}}
	png := testmedia.PNG(32, 32)
	secret := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Write(png)
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		code := http.StatusFound
		fmt.Sscan(r.URL.Query().Get("code"), &code)
		w.Header().Set("Location", r.URL.Query().Get("to"))
		w.WriteHeader(code)
	})
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) {
		tg.loops.Add(1)
		http.Redirect(w, r, "/loop", http.StatusFound)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// Close after each answer, so that the next request dials (and
		// resolves) again: DNS rebinding needs a fresh connection.
		w.Header().Set("Connection", "close")
		w.Header().Set("Content-Type", "image/png")
		w.Write(png)
	})
	_, tg.allowed = serveCounting(t, lns[0], mux)
	for i, ln := range lns[1:] {
		_, cl := serveCounting(t, ln, secret)
		tg.victims[hosts[i+1]] = cl
	}
	trap, trapLn := serveCounting(t, newListener(t, "127.0.0.1:0"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("trap proxy reached: %s %s", r.Method, r.URL)
		secret(w, r)
	}))
	tg.trap = trapLn
	tg.trapURL, _ = url.Parse(trap.URL)
	return tg
}

func newListener(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func (tg *ssrfTargets) expand(s string) string {
	s = strings.ReplaceAll(s, "{A}", "http://127.0.0.2:{P}")
	return strings.ReplaceAll(s, "{P}", tg.port)
}

// checkUntouched fails the test if any victim or the trap accepted a
// connection, and returns how many listeners were watched and how many
// connections they accepted in all.
func (tg *ssrfTargets) checkUntouched(t *testing.T) (listeners, conns int) {
	t.Helper()
	for host, l := range tg.victims {
		if got := noNewConns(t, l, 0); len(got) != 0 {
			conns += len(got)
			t.Errorf("target %s accepted %d connection(s) from %v", host, len(got), got)
		}
	}
	if got := noNewConns(t, tg.trap, 0); len(got) != 0 {
		conns += len(got)
		t.Errorf("trap proxy accepted %d connection(s) from %v", len(got), got)
	}
	return len(tg.victims) + 1, conns
}

// route is the fetcher's Proxy hook: loopback-bound targets are dialled
// directly, everything else is sent to the trap.
func (tg *ssrfTargets) route(direct map[string]bool) func(*http.Request) (*url.URL, error) {
	return func(r *http.Request) (*url.URL, error) {
		host := r.URL.Hostname()
		if a, err := netip.ParseAddr(host); err == nil {
			if a.Zone() == "" && (a.Unmap().IsLoopback() || a.IsUnspecified() || a.Unmap().IsUnspecified()) {
				return nil, nil
			}
			return tg.trapURL, nil
		}
		if direct[host] {
			return nil, nil
		}
		return tg.trapURL, nil
	}
}

func runSSRF(t *testing.T, srv *httptest.Server, tg *ssrfTargets, cases []ssrfCase) (refused int) {
	t.Helper()
	client := &http.Client{Timeout: 20 * time.Second}
	for _, c := range cases {
		// Spellings of one URL share its path on purpose: a refused
		// spelling (user info, a numeric host) is answered at the door and
		// must not leave a failure marker that another spelling would meet.
		src := tg.expand(c.url)
		u := srv.URL + "/image.png?url=" + url.QueryEscape(src)
		resp, err := client.Get(u)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("%s: %s answered %d %q, want %d", c.name, src, resp.StatusCode, body, c.status)
			continue
		}
		if ct := resp.Header.Get("Content-Type"); strings.HasPrefix(ct, "image/") {
			t.Errorf("%s: refused with an image body (%s)", c.name, ct)
		}
		refused++
	}
	return refused
}

func TestSSRFEndToEnd(t *testing.T) {
	t.Parallel()
	tg := newSSRFTargets(t)
	allow := []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	addrs := func(ss ...string) []netip.Addr {
		var out []netip.Addr
		for _, s := range ss {
			out = append(out, netip.MustParseAddr(s))
		}
		return out
	}
	names := map[string][]netip.Addr{
		"localhost":           addrs("127.0.0.1"),
		"localhost.":          addrs("127.0.0.1"),
		"LOCALHOST":           addrs("127.0.0.1"),
		"loop.test":           addrs("127.0.0.3"),
		"v6loop.test":         addrs("::1"),
		"mixed-loop.test":     addrs("127.0.0.2", "127.0.0.3"),
		"internal.test":       addrs("10.1.2.3"),
		"internal.test.":      addrs("10.1.2.3"),
		"metadata.test":       addrs("169.254.169.254"),
		"v6metadata.test":     addrs("fd00:ec2::254"),
		"nat64.test":          addrs("64:ff9b::a9fe:a9fe"),
		"mixed.test":          addrs("127.0.0.2", "10.0.0.1"),
		"интранет.test":       addrs("192.168.0.10"),
		"xn--80akhubqne.test": addrs("192.168.0.10"), // интранет.test
		"allowed.test":        addrs("127.0.0.2"),
	}
	// Hosts the trap must not take: they only ever lead to loopback.
	direct := map[string]bool{
		"localhost": true, "localhost.": true, "LOCALHOST": true,
		"ｌｏｃａｌｈｏｓｔ": true, "127。0。0。1": true, "１２７.０.０.１": true,
		"loop.test": true, "v6loop.test": true, "mixed-loop.test": true,
		"allowed.test": true, "rebind.test": true,
	}
	var rebinds atomic.Int32
	var lookups atomic.Int64
	resolver := resolverFunc(func(_ context.Context, _, host string) ([]netip.Addr, error) {
		lookups.Add(1)
		if host == "rebind.test" {
			// Public (allowed) on the first lookup, internal afterwards.
			if rebinds.Add(1) == 1 {
				return addrs("127.0.0.2"), nil
			}
			return addrs("127.0.0.3"), nil
		}
		if a, ok := names[host]; ok {
			return a, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	})
	cases := ssrfCases()
	ipv6 := tg.victims["::1"] != nil

	var refused, attempts int
	t.Run("injected resolver", func(t *testing.T) {
		srv := newStack(t, stackOptions{allow: allow, resolver: resolver, proxy: tg.route(direct)})
		attempts += len(cases)
		refused += runSSRF(t, srv, tg, cases)

		// DNS rebinding: the first answer is allowed and served, the
		// second points inside and is refused at dial time.
		ok := request(t, http.MethodGet, srv.URL+"/a.png?url="+url.QueryEscape(tg.expand("http://rebind.test:{P}/first.png")))
		if ok.status != http.StatusOK {
			t.Fatalf("rebinding, first lookup (allowed address): %d %q", ok.status, ok.body)
		}
		attempts++
		if r := request(t, http.MethodGet, srv.URL+"/a.png?url="+url.QueryEscape(tg.expand("http://rebind.test:{P}/second.png"))); r.status == http.StatusForbidden {
			refused++
		} else {
			t.Errorf("rebinding, second lookup (internal address): %d %q, want 403", r.status, r.body)
		}
		if n := rebinds.Load(); n != 2 {
			t.Errorf("rebind.test resolved %d times, want 2 (one per dial)", n)
		}

		// The allow-list lets exactly its range through.
		for _, src := range []string{"http://127.0.0.2:{P}/ok.png", "http://allowed.test:{P}/ok.png", "http://[::ffff:127.0.0.2]:{P}/ok.png"} {
			if r := get(t, srv, tg.expand(src), ""); r.status != http.StatusOK || r.header.Get("Content-Type") != "image/png" {
				t.Errorf("allowed %s: %d %s", src, r.status, r.header.Get("Content-Type"))
			}
		}
		if n := tg.loops.Load(); n != 11 {
			t.Errorf("redirect loop made %d requests, want 11 (stopped after 10 redirects)", n)
		}
	})

	t.Run("real wiring", func(t *testing.T) {
		// The wiring reads HTTP(S)_PROXY through config.Load only (here
		// from the test's map), never from this process's environment.
		p := newProxy(t, map[string]string{"MEDIA_PROXY_ALLOWED_PRIVATE_NETWORKS": "127.0.0.2/32"})
		var real []ssrfCase
		for _, c := range cases {
			if c.real {
				real = append(real, c)
			}
		}
		attempts += len(real)
		refused += runSSRF(t, p, tg, real)
		if r := get(t, p, tg.expand("http://127.0.0.2:{P}/real-ok.png"), ""); r.status != http.StatusOK {
			t.Errorf("allowed 127.0.0.2 through the real wiring: %d %q", r.status, r.body)
		}
	})

	listeners, conns := tg.checkUntouched(t)
	if refused != attempts {
		t.Errorf("%d of %d attempts refused", refused, attempts)
	}
	t.Logf("SSRF: %d/%d attempts refused (%d distinct, the rest re-run on the real wiring; %d DNS lookups answered by the test); "+
		"%d target listeners (ipv6 %v) including the trap proxy accepted %d connections",
		refused, attempts, len(cases)+1, lookups.Load(), listeners, ipv6, conns)
}

// testHeaders are the default headers (see csp), for handlers built by
// hand.
var testHeaders = proxy.Headers{
	ContentSecurityPolicy: csp,
	AllowOrigin:           "*",
	AllowHeaders:          "*",
	AllowMethods:          "GET, HEAD, OPTIONS",
}
