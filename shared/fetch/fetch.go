// Package fetch is an SSRF-safe HTTP client for fetching remote media.
//
// Every URL, the caller's and each redirect target, is first put in its
// canonical form (Client.Canonical): http or https only, no user info, an
// IDNA-mapped lower-case ASCII host or a canonical IP literal, and a port
// from Config.AllowedPorts (default 80 and 443). That form is exactly what is
// requested, so a cache keyed on it cannot be poisoned by spellings that
// would reach different hosts.
//
// Without an outgoing proxy, every connection is checked at dial time against
// the address actually connected to: the client resolves host names itself
// (Config.Resolver), refuses a name if any of its addresses is blocked, and a
// net.Dialer Control hook re-checks the final IP and port just before
// connect(2). DNS rebinding, redirects and odd host spellings therefore cannot
// reach loopback, private, link-local, metadata or other internal addresses
// unless they are listed in Config.AllowedPrivate. A name's addresses are
// raced (Happy Eyeballs, RFC 8305), so a dead address costs
// Config.FallbackDelay rather than the whole connect timeout.
//
// With an outgoing proxy (Config.Proxy; by default HTTP_PROXY, HTTPS_PROXY,
// NO_PROXY), the URL and port checks still apply to every hop, and before a
// hop is handed to the proxy its name is resolved with Config.Resolver and
// refused if any address is blocked. But the proxy resolves the name again
// and makes the connection itself, so nothing here sees the address finally
// connected to: a rebinding DNS server, or a proxy with a different view of
// DNS, can reach whatever the proxy can. The proxy must enforce its own egress
// rules. The proxy's own address is always dialable, even if private or on a
// port outside Config.AllowedPorts.
package fetch

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/problem"
)

// Defaults for the zero fields of Config; package config uses the same
// values for the variables that set them.
const (
	// DefaultUserAgent identifies the proxy to remote servers.
	DefaultUserAgent       = "MisskeyMediaProxy/1.0 (+https://github.com/misskey-lambda/media-proxy)"
	DefaultMaxSize         = 250 << 20
	DefaultConnectTimeout  = 30 * time.Second
	DefaultResponseTimeout = 30 * time.Second
	DefaultTimeout         = 60 * time.Second
)

// Config configures a Client. Zero fields take the documented defaults.
type Config struct {
	UserAgent       string         // sent on every request; default DefaultUserAgent
	MaxSize         int64          // bytes; default DefaultMaxSize when 0
	ConnectTimeout  time.Duration  // DNS + TCP connect + TLS handshake; default DefaultConnectTimeout
	ResponseTimeout time.Duration  // from request sent to response headers; default DefaultResponseTimeout
	Timeout         time.Duration  // whole fetch including reading the body; default DefaultTimeout
	MaxRedirects    int            // default 10 when 0; negative disables redirects
	AllowedPrivate  []netip.Prefix // ranges exempt from the SSRF block (MEDIA_PROXY_ALLOWED_PRIVATE_NETWORKS)
	// AllowedPorts are the destination ports that may be fetched from
	// (MEDIA_PROXY_ALLOWED_PORTS, see ParsePorts); empty means 80 and 443.
	AllowedPorts []PortRange
	// FallbackDelay is how long one connection attempt runs before the next
	// address of the name is tried in parallel; default 300ms, as in
	// net.Dialer. A failed attempt starts the next one at once.
	FallbackDelay time.Duration
	// Proxy chooses a proxy per request; default http.ProxyFromEnvironment
	// (HTTP_PROXY, HTTPS_PROXY, NO_PROXY). Use NoProxy to disable.
	Proxy func(*http.Request) (*url.URL, error)
	// Resolver looks up host names; default net.DefaultResolver. Tests inject
	// their own.
	Resolver Resolver
	// TLSClientConfig is optional; nil means system roots and defaults.
	TLSClientConfig *tls.Config
}

func (cfg Config) withDefaults() Config {
	if cfg.UserAgent == "" {
		cfg.UserAgent = DefaultUserAgent
	}
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = DefaultMaxSize
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.ResponseTimeout <= 0 {
		cfg.ResponseTimeout = DefaultResponseTimeout
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	switch {
	case cfg.MaxRedirects == 0:
		cfg.MaxRedirects = 10
	case cfg.MaxRedirects < 0:
		cfg.MaxRedirects = 0
	}
	if cfg.Proxy == nil {
		cfg.Proxy = http.ProxyFromEnvironment
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if len(cfg.AllowedPorts) == 0 {
		cfg.AllowedPorts = defaultPorts
	}
	cfg.AllowedPorts = slices.Clone(cfg.AllowedPorts)
	if cfg.FallbackDelay <= 0 {
		cfg.FallbackDelay = 300 * time.Millisecond
	}
	allow := make([]netip.Prefix, len(cfg.AllowedPrivate))
	for i, p := range cfg.AllowedPrivate {
		allow[i] = p.Masked()
	}
	cfg.AllowedPrivate = allow
	return cfg
}

// Client fetches remote media. It is safe for concurrent use; create one and
// share it so that connections are reused.
type Client struct {
	cfg    Config
	policy policy
	tr     *http.Transport
	hc     *http.Client
}

// New returns a Client for cfg.
func New(cfg Config) *Client {
	c := &Client{cfg: cfg.withDefaults()}
	c.policy = policy{allow: c.cfg.AllowedPrivate}
	var tlsConf *tls.Config
	if cfg.TLSClientConfig != nil {
		tlsConf = cfg.TLSClientConfig.Clone()
	}
	c.tr = &http.Transport{
		Proxy:                  c.proxy,
		DialContext:            c.dialContext,
		TLSClientConfig:        tlsConf,
		TLSHandshakeTimeout:    c.cfg.ConnectTimeout,
		ResponseHeaderTimeout:  c.cfg.ResponseTimeout,
		DisableCompression:     true, // pass bytes through untouched
		ForceAttemptHTTP2:      true, // custom DialContext would otherwise disable h2
		MaxIdleConns:           100,
		MaxIdleConnsPerHost:    8,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 1 << 20,
	}
	c.hc = &http.Client{
		Transport:     c.tr,
		CheckRedirect: c.checkRedirect,
		// No Jar: never send or store cookies.
	}
	return c
}

// CloseIdleConnections closes pooled keep-alive connections.
func (c *Client) CloseIdleConnections() { c.tr.CloseIdleConnections() }

// Response is a successful (2xx) remote response.
type Response struct {
	// Body is bounded by MaxSize or a lower LimitTo (reading past it returns
	// an error wrapping ErrTooLarge) and by the overall Timeout. Read errors
	// are *problem.Error values.
	Body          io.ReadCloser
	ContentLength int64       // -1 when unknown
	Header        http.Header // remote headers; never trust Content-Type
	URL           *url.URL    // final URL after redirects, in canonical form

	body *body // Body as returned by Get, for LimitTo
}

// LimitTo lowers the size cap of this response to n bytes, counting what
// has already been read. It returns a 413 *problem.Error wrapping ErrTooLarge at once
// if the declared ContentLength or the bytes already read exceed n;
// otherwise reading past n fails with that error. A cap is never raised. It
// must not be called concurrently with reads; the caller still closes Body.
func (r *Response) LimitTo(n int64) error {
	n = max(n, 0)
	if r.ContentLength > n {
		return tooLarge(n)
	}
	if r.body == nil {
		return nil
	}
	return r.body.limitTo(n)
}

// Get fetches rawURL in its canonical form (see Canonical). On success the
// caller must Close the Response body; closing it also releases the overall
// timeout. Errors are *problem.Error values carrying the status the proxy should
// answer with (see problem.Status).
func (c *Client) Get(ctx context.Context, rawURL string) (*Response, error) {
	u, err := c.Canonical(rawURL)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	ctx = context.WithValue(ctx, stateKey{}, &fetchState{})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		cancel()
		return nil, badURL("building request", err)
	}
	req.Header.Set("User-Agent", c.cfg.UserAgent)
	req.Header.Set("Accept", "*/*")

	resp, err := c.hc.Do(req)
	if err != nil {
		if resp != nil { // CheckRedirect failures return the last response too
			resp.Body.Close()
		}
		// url.Error repeats the URL, query and all; we name it once, redacted.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		e := classify(ctx, "fetch "+Redact(u), err)
		cancel()
		return nil, e
	}
	if e := checkStatus(resp, time.Now()); e != nil {
		resp.Body.Close()
		cancel()
		return nil, e
	}
	if resp.ContentLength > c.cfg.MaxSize {
		resp.Body.Close()
		cancel()
		return nil, tooLarge(c.cfg.MaxSize)
	}
	b := &body{
		rc:     resp.Body,
		ctx:    ctx,
		cancel: cancel,
		limit:  c.cfg.MaxSize,
	}
	return &Response{
		Body:          b,
		ContentLength: resp.ContentLength,
		Header:        resp.Header,
		URL:           resp.Request.URL,
		body:          b,
	}, nil
}

// Fetch reads the whole body (bounded by MaxSize) into memory. The returned
// Response's Body has already been consumed and closed; it is http.NoBody.
func (c *Client) Fetch(ctx context.Context, rawURL string) ([]byte, *Response, error) {
	resp, err := c.Get(ctx, rawURL)
	if err != nil {
		return nil, nil, err
	}
	body := resp.Body
	defer body.Close()
	var buf bytes.Buffer
	if resp.ContentLength > 0 { // already checked against MaxSize
		buf.Grow(int(resp.ContentLength))
	}
	if _, err := buf.ReadFrom(body); err != nil {
		return nil, nil, err
	}
	resp.Body = http.NoBody
	return buf.Bytes(), resp, nil
}

// maxRetryAfter caps an origin's Retry-After: a hint of days would only
// keep clients away for no good reason.
const maxRetryAfter = time.Hour

func checkStatus(resp *http.Response, now time.Time) *problem.Error {
	code := resp.StatusCode
	msg := "remote returned " + resp.Status
	var e *problem.Error
	switch {
	case code >= 200 && code <= 299:
		return nil
	case code >= 400 && code <= 499:
		e = &problem.Error{Status: code, Msg: msg, Err: ErrRemoteStatus}
	default: // 5xx, and 1xx/3xx we could not follow
		e = &problem.Error{Status: http.StatusBadGateway, Msg: msg, Err: ErrRemoteStatus}
	}
	if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
		e.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), now)
	}
	return e
}

// parseRetryAfter reads a Retry-After value (RFC 9110 section 10.2.3):
// delay-seconds or an HTTP-date. It returns 0 for junk and past dates, and
// caps the delay at maxRetryAfter. A date is rounded up to whole seconds.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if strings.Trim(v, "0123456789") == "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n > uint64(maxRetryAfter/time.Second) { // err: too many digits
			return maxRetryAfter
		}
		return time.Duration(n) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	d := t.Sub(now)
	if d <= 0 {
		return 0
	}
	if r := d.Truncate(time.Second); r < d {
		d = r + time.Second
	}
	return min(d, maxRetryAfter)
}

func (c *Client) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > c.cfg.MaxRedirects {
		return &problem.Error{
			Status: http.StatusBadGateway,
			Msg:    fmt.Sprintf("stopped after %d redirects", c.cfg.MaxRedirects),
			Err:    ErrTooManyRedirects,
		}
	}
	u, err := c.canonical(req.URL)
	if err != nil {
		return &problem.Error{Status: http.StatusForbidden, Msg: "refusing redirect to " + Redact(req.URL), Err: err}
	}
	// Once on TLS, never off it: the bytes of an https URL are stored and
	// served under its key, and a plain-http hop would let anyone on that
	// path put their own there for every viewer.
	if u.Scheme == "http" && slices.ContainsFunc(via, func(r *http.Request) bool { return r.URL.Scheme == "https" }) {
		return &problem.Error{Status: http.StatusForbidden, Msg: "refusing redirect to " + Redact(req.URL), Err: ErrDowngrade}
	}
	// Request what a caller would key on had it asked for this URL.
	req.URL, req.Host = u, u.Host
	// Don't tell the next hop where we came from.
	req.Header.Del("Referer")
	return nil
}

// body enforces the size cap and maps read errors to *problem.Error.
type body struct {
	rc     io.ReadCloser
	ctx    context.Context
	cancel context.CancelFunc
	limit  int64 // size cap
	read   int64 // bytes returned so far
	err    error // sticky
}

func (b *body) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	// Read one byte beyond the limit so a body of exactly limit bytes is
	// not an error.
	remaining := b.limit - b.read
	if int64(len(p)) > remaining {
		p = p[:remaining+1]
	}
	n, err := b.rc.Read(p)
	if int64(n) > remaining {
		b.read = b.limit
		b.err = tooLarge(b.limit)
		return int(remaining), b.err
	}
	b.read += int64(n)
	if err != nil && err != io.EOF {
		b.err = classify(b.ctx, "reading response body", err)
		return n, b.err
	}
	return n, err
}

// limitTo lowers the cap to n.
func (b *body) limitTo(n int64) error {
	if n >= b.limit {
		return nil
	}
	b.limit = n
	if b.read > n {
		if b.err == nil { // keep an earlier read error
			b.err = tooLarge(n)
		}
		return tooLarge(n)
	}
	return nil
}

func (b *body) Close() error {
	err := b.rc.Close()
	b.cancel()
	return err
}
