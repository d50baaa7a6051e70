//go:build unix

package fetch

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// blackhole listens on ip:port (port 0 picks one) and returns the port. It
// never accepts, and its accept queue is full, so the kernel drops further
// SYNs: connecting to it hangs like an address behind a firewall that drops
// packets. This relies on Linux's listen(2): with backlog 0 the queue holds
// one connection, and SYNs to a full queue are dropped, not refused.
func blackhole(t *testing.T, ip string, port int) (int, error) {
	t.Helper()
	a := netip.MustParseAddr(ip)
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	syscall.CloseOnExec(fd)
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: a.As4()}); err != nil {
		return 0, err // the caller may retry with another port
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatalf("listen: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	port = sa.(*syscall.SockaddrInet4).Port
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	for range 2 { // the second usually times out already
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			t.Cleanup(func() { c.Close() })
		}
	}
	c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
	if err == nil {
		c.Close()
		t.Fatalf("blackhole %s accepted a connection: this kernel does not drop SYNs to a full accept queue "+
			"(Linux listen(2) semantics with backlog 0 are needed for this test)", addr)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("blackhole %s: dial failed with %v; want it to hang until the timeout "+
			"(SYNs to a full accept queue must be dropped, not refused)", addr, err)
	}
	return port, nil
}

// blackholePort makes blackholes on ips (all with one port) and returns it.
// If first is non-nil, its port is used.
func blackholePort(t *testing.T, first net.Listener, ips ...string) string {
	t.Helper()
	for range 20 {
		port := 0
		if first != nil {
			_, p, _ := net.SplitHostPort(first.Addr().String())
			port, _ = strconv.Atoi(p)
		}
		ok := true
		for _, ip := range ips {
			p, err := blackhole(t, ip, port)
			if err != nil {
				ok = false
				break
			}
			port = p
		}
		if ok {
			return strconv.Itoa(port)
		}
		if first != nil {
			break
		}
	}
	t.Fatalf("could not bind blackholes on %v", ips)
	return ""
}

// TestHappyEyeballs: a name whose first address silently drops packets is
// still fetched from its second address, after FallbackDelay rather than the
// connect timeout.
func TestHappyEyeballs(t *testing.T) {
	ln := listen(t, "127.0.0.1:0")
	port := blackholePort(t, ln, "127.0.0.2")
	serveHTTP(t, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "from 127.0.0.1")
	}))
	c := newTestClient(t, Config{
		AllowedPrivate: []netip.Prefix{loopback},
		ConnectTimeout: 5 * time.Second,
		Timeout:        10 * time.Second,
		Resolver:       staticResolver(map[string][]string{"dual.test": {"127.0.0.2", "127.0.0.1"}}),
	})
	start := time.Now()
	data, _, err := c.Fetch(t.Context(), "http://dual.test:"+port+"/")
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("Fetch after %v: %v", elapsed, err)
	}
	if string(data) != "from 127.0.0.1" {
		t.Errorf("body = %q", data)
	}
	if elapsed >= time.Second {
		t.Errorf("took %v, want under 1s (fallback after 300ms)", elapsed)
	}
}

// TestAllBlackholed: when every address drops packets the fetch ends at the
// connect deadline with a 504, having tried each address.
func TestAllBlackholed(t *testing.T) {
	port := blackholePort(t, nil, "127.0.0.2", "127.0.0.3")
	const connect = time.Second
	c := newTestClient(t, Config{
		AllowedPrivate: []netip.Prefix{loopback},
		ConnectTimeout: connect,
		Timeout:        10 * time.Second,
		Resolver: staticResolver(map[string][]string{
			"dead.test":  {"127.0.0.2", "127.0.0.3"},
			"mixed.test": {"127.0.0.2", "127.0.0.1"}, // nothing listens on 127.0.0.1:port
		}),
	})
	for _, name := range []string{"dead.test", "mixed.test"} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			_, err := c.Get(t.Context(), "http://"+name+":"+port+"/")
			elapsed := time.Since(start)
			checkErr(t, err, http.StatusGatewayTimeout, ErrTimeout)
			if elapsed < connect-50*time.Millisecond || elapsed > connect+500*time.Millisecond {
				t.Errorf("took %v, want about the connect timeout %v", elapsed, connect)
			}
			if msg := err.Error(); !strings.Contains(msg, "127.0.0.2:"+port) ||
				!strings.Contains(msg, ":"+port) || !strings.Contains(msg, "2 connection attempts") {
				t.Errorf("error %q does not report both attempts", msg)
			}
		})
	}
}
