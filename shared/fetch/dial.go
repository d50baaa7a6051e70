package fetch

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Resolver looks up host names. *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// NoProxy is a Config.Proxy that never uses a proxy.
func NoProxy(*http.Request) (*url.URL, error) { return nil, nil }

// fetchState is attached to the context of every request made by Get. The
// transport keeps request context values when dialling, which lets the dial
// hook learn whether the current hop goes through the configured proxy.
type fetchState struct {
	mu        sync.Mutex
	proxyAddr string // host:port the transport will dial for the proxy; "" if direct
}

type stateKey struct{}

func (s *fetchState) setProxy(addr string) {
	s.mu.Lock()
	s.proxyAddr = addr
	s.mu.Unlock()
}

// isProxy reports whether address is the proxy chosen for the current hop.
// Comparing the address as well as the flag means a direct dial can never be
// mistaken for a proxy dial unless it targets the proxy itself.
func (s *fetchState) isProxy(address string) bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proxyAddr != "" && s.proxyAddr == address
}

// proxy wraps Config.Proxy. A proxy resolves target names itself, so our
// dial-time check cannot see the real destination; instead we resolve the
// target here and refuse if any of its addresses is blocked. From then on
// the guarantee rests on the proxy (it could still see different DNS answers).
func (c *Client) proxy(req *http.Request) (*url.URL, error) {
	st, _ := req.Context().Value(stateKey{}).(*fetchState)
	if st != nil {
		st.setProxy("")
	}
	pu, err := c.cfg.Proxy(req)
	if err != nil {
		return nil, fmt.Errorf("choosing proxy: %w", err)
	}
	if pu == nil {
		return nil, nil
	}
	// The proxy connects to the target port for us, so check it here too
	// (Canonical and checkRedirect already did; this is defence in depth).
	port, err := effectivePort(req.URL)
	if err != nil {
		return nil, err
	}
	if !c.portAllowed(port) {
		return nil, blockedPort(port)
	}
	host := req.URL.Hostname()
	ctx, cancel := context.WithTimeout(req.Context(), c.cfg.ConnectTimeout)
	defer cancel()
	addrs, err := c.resolve(ctx, "ip", host)
	if err != nil {
		// Fail closed: without an answer we cannot vouch for the target.
		return nil, err
	}
	for _, a := range addrs {
		if !c.policy.permitted(a) {
			return nil, blocked(host, a)
		}
	}
	if st != nil {
		st.setProxy(proxyAddr(pu))
	}
	return pu, nil
}

// proxyAddr mirrors how net/http derives the address it dials for a proxy.
// Non-ASCII proxy host names are not converted to punycode here, so they
// must be configured in ASCII form to be recognised.
func proxyAddr(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch u.Scheme {
		case "https":
			port = "443"
		case "socks5", "socks5h":
			port = "1080"
		default:
			port = "80"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// resolve returns the addresses for host, which may be an IP literal.
func (c *Client) resolve(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	addrs, err := c.cfg.Resolver.LookupNetIP(ctx, network, host)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", host, err)
	}
	if len(addrs) == 0 {
		return nil, &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
	}
	return addrs, nil
}

// dialContext is the transport's DialContext. It resolves the host itself so
// that every address is checked before use and the transport never does a
// second, unchecked lookup.
func (c *Client) dialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", address, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("dial %s: invalid port: %w", address, err)
	}
	st, _ := ctx.Value(stateKey{}).(*fetchState)
	trusted := st.isProxy(address) // the admin's proxy may live on a private network

	// The transport detaches dials from request cancellation, so bound the
	// whole lookup-and-connect sequence here.
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	defer cancel()

	lookupNet := "ip"
	switch network {
	case "tcp4":
		lookupNet = "ip4"
	case "tcp6":
		lookupNet = "ip6"
	}
	addrs, err := c.resolve(ctx, lookupNet, host)
	if err != nil {
		return nil, err
	}
	if !trusted {
		// One bad answer makes the whole name suspect (e.g. a rebinding
		// attacker mixing public and internal records).
		for _, a := range addrs {
			if !c.policy.permitted(a) {
				return nil, blocked(host, a)
			}
		}
	}

	d := c.dialer(trusted)
	var firstErr error
	for _, a := range addrs {
		conn, err := d.DialContext(ctx, network, netip.AddrPortFrom(a, uint16(port)).String())
		if err == nil {
			return conn, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	if len(addrs) > 1 {
		return nil, fmt.Errorf("%w (tried %d addresses)", firstErr, len(addrs))
	}
	return nil, firstErr
}

// dialer returns a net.Dialer whose Control hook re-checks the exact address
// and port handed to connect(2). This is the last line of defence: whatever
// path led here, a blocked address or port is never connected to. A trusted
// dial (the admin's proxy) skips both checks.
func (c *Client) dialer(trusted bool) *net.Dialer {
	return &net.Dialer{
		KeepAlive: 30 * time.Second,
		ControlContext: func(_ context.Context, network, address string, _ syscall.RawConn) error {
			if trusted {
				return nil
			}
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return &Error{Status: http.StatusForbidden, Msg: "refusing to connect to " + address, Err: ErrBlocked}
			}
			if !c.policy.permitted(ap.Addr()) {
				return blocked("", ap.Addr())
			}
			if !c.portAllowed(ap.Port()) {
				return blockedPort(ap.Port())
			}
			return nil
		},
	}
}
