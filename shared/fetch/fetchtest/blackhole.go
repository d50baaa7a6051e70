//go:build unix

// Package fetchtest has helpers for tests of code that fetches: an address
// that silently drops connection attempts, as a firewall does.
package fetchtest

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// blackhole listens on ip:port (port 0 picks one) and returns the port. It
// never accepts, and its accept queue is full, so the kernel drops further
// SYNs: connecting to it hangs like an address behind a firewall that drops
// packets. This relies on Linux's listen(2): with backlog 0 the queue holds
// one connection, and SYNs to a full queue are dropped, not refused.
func blackhole(t testing.TB, ip string, port int) (int, error) {
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

// BlackholePort makes blackholes on ips (all with one port) and returns
// it. If first is non-nil, its port is used.
func BlackholePort(t testing.TB, first net.Listener, ips ...string) string {
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
