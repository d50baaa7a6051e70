package fetch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/problem"
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
// dial-time check cannot see the real destination; instead we check the
// target's port and resolve its name here, refusing it if any address is
// blocked. From then on the guarantee rests on the proxy: it resolves again
// and may get other answers, so it must enforce egress rules of its own.
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
// second, unchecked lookup; then it races the addresses (see race).
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

	addrs = dialOrder(addrs)
	targets := make([]netip.AddrPort, len(addrs))
	for i, a := range addrs {
		targets[i] = netip.AddrPortFrom(a, uint16(port))
	}
	d := c.dialer(trusted)
	return race(ctx, targets, c.cfg.FallbackDelay, func(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
		return d.DialContext(ctx, network, ap.String())
	})
}

// maxDialAttempts caps how many of a name's addresses one dial tries.
// Every attempt started stays open until it fails or the connect deadline
// passes, so a hostile name with hundreds of blackholed addresses would
// otherwise hold hundreds of sockets per fetch.
const maxDialAttempts = 8

// dialOrder returns the addresses to try, alternating address families and
// starting with the family of the first answer (RFC 8305 section 4); within
// a family the resolver's order is kept. At most maxDialAttempts are kept.
func dialOrder(addrs []netip.Addr) []netip.Addr {
	if len(addrs) == 0 {
		return nil
	}
	isV4 := func(a netip.Addr) bool { return a.Unmap().Is4() }
	first := isV4(addrs[0])
	var same, other []netip.Addr
	for _, a := range addrs {
		if isV4(a) == first {
			same = append(same, a)
		} else {
			other = append(other, a)
		}
	}
	out := make([]netip.Addr, 0, min(len(addrs), maxDialAttempts))
	for i := 0; len(out) < cap(out); i++ {
		if i < len(same) {
			out = append(out, same[i])
		}
		if i < len(other) && len(out) < cap(out) {
			out = append(out, other[i])
		}
	}
	return out
}

// race connects to one of addrs, in order: an attempt starts when the
// previous one fails or after delay, whichever comes first (RFC 8305
// section 5). The first connection wins; the attempts still running are
// cancelled, and one that connects anyway is closed. A blackholed address
// thus costs delay, not the whole connect deadline, which ctx carries.
func race(ctx context.Context, addrs []netip.AddrPort, delay time.Duration,
	dial func(context.Context, netip.AddrPort) (net.Conn, error),
) (net.Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the losers

	// Buffered so that no attempt ever blocks on delivering its result.
	results := make(chan dialResult, len(addrs))
	next, running := 0, 0
	start := func() {
		ap := addrs[next]
		next++
		running++
		go func() {
			conn, err := dial(ctx, ap)
			results <- dialResult{conn, err}
		}()
	}
	stagger := time.NewTimer(delay)
	defer stagger.Stop()
	if len(addrs) > 0 {
		start()
	}

	var errs []error
	for running > 0 {
		select {
		case r := <-results:
			running--
			if r.err == nil {
				if running > 0 {
					go closeLate(results, running)
				}
				return r.conn, nil
			}
			errs = append(errs, r.err)
		case <-stagger.C:
		}
		// Either an attempt failed or the stagger passed: next address.
		if next < len(addrs) && ctx.Err() == nil {
			start()
			stagger.Reset(delay)
		}
	}
	return nil, newDialError(ctx, errs, len(addrs))
}

type dialResult struct {
	conn net.Conn
	err  error
}

// closeLate closes the connections of the n attempts that lost the race.
func closeLate(results <-chan dialResult, n int) {
	for range n {
		if r := <-results; r.conn != nil {
			r.conn.Close()
		}
	}
}

// dialError reports a dial in which every attempt failed.
type dialError struct {
	errs    []error // one per attempt, in the order they failed
	untried int     // addresses not tried before the deadline
	timeout bool
}

// newDialError sums up the failed attempts of a race over n addresses
// under ctx. It is a timeout if the connect deadline passed or an attempt
// timed out, so that a blackholed address next to a refusing one still
// classifies as a gateway timeout.
func newDialError(ctx context.Context, errs []error, n int) *dialError {
	e := &dialError{errs: errs, untried: n - len(errs)}
	e.timeout = errors.Is(ctx.Err(), context.DeadlineExceeded)
	for _, err := range errs {
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
			e.timeout = true
		}
	}
	return e
}

func (e *dialError) Error() string {
	if len(e.errs) == 0 {
		return "no address to connect to"
	}
	if len(e.errs) == 1 && e.untried == 0 {
		return e.errs[0].Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "all %d connection attempts failed", len(e.errs))
	if e.untried > 0 {
		fmt.Fprintf(&b, " (%d more addresses untried)", e.untried)
	}
	for i, err := range e.errs {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(err.Error())
	}
	return b.String()
}

func (e *dialError) Unwrap() []error { return e.errs }
func (e *dialError) Timeout() bool   { return e.timeout }

// Temporary is part of net.Error; like net's own errors, never true.
func (e *dialError) Temporary() bool { return false }

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
				return &problem.Error{Status: http.StatusForbidden, Msg: "refusing to connect to " + address, Err: ErrBlocked}
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
