package fetch

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/misskey-lambda/media-proxy/shared/problem"
	"golang.org/x/net/idna"
)

// hostProfile maps host names the way browsers do (WHATWG URL "domain to
// ASCII"): UTS #46 lookup mapping, non-transitional (so "ß" stays "ß" and
// becomes xn--...; "ẞ" U+1E9E is mapped to "ss"), with the Bidi and joiner
// rules. CheckHyphens and the STD3 rules are off, as in browsers, because
// names such as "r3---sn-abc.googlevideo.com" and "a_b.example" are in real
// use; canonicalHost checks the ASCII result against DNS syntax instead.
var hostProfile = idna.New(
	idna.MapForLookup(),
	idna.Transitional(false),
	idna.BidiRule(),
	idna.CheckHyphens(false),
	idna.StrictDomainName(false),
)

// Canonical parses raw and returns the one form of it that c fetches: it
// is meant to be both the cache key and what goes on the wire, since Get
// canonicalizes its argument with this same function. The result has
//
//   - scheme http or https,
//   - no user info (refused) and no fragment (dropped),
//   - a lower-case ASCII host: IDNA-mapped (UTS #46, non-transitional), one
//     trailing dot removed; IP literals in netip's canonical text (IPv6
//     zones and numeric IPv4 spellings such as 127.1 or 0x7f000001 are
//     refused),
//   - no port when it is the scheme's default, and only ports allowed by
//     Config.AllowedPorts,
//   - path "/" when empty; path and query otherwise byte for byte, except
//     that bytes net/http would not send as they are get percent-encoded:
//     in the path, space, non-ASCII and "<>\^`{|}; in the query, space
//     (which would split the request line).
//
// Canonical(Canonical(x).String()) gives the same URL. Errors are *problem.Error
// values: 400 wrapping ErrBadURL for malformed or refused URLs, 403 wrapping
// ErrBlocked for a port that is not allowed.
func (c *Client) Canonical(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, badURL("empty URL", nil)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the URL, credentials and query included.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, badURL("parsing URL", err)
	}
	return c.canonical(u)
}

// canonical is Canonical for a parsed URL; redirect targets go through it
// too.
func (c *Client) canonical(u *url.URL) (*url.URL, error) {
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, badURL(fmt.Sprintf("unsupported scheme %q", u.Scheme), nil)
	}
	if u.Opaque != "" {
		return nil, badURL("URL is not hierarchical", nil)
	}
	// http://allowed@127.0.0.1/ style confusion, and we never send credentials.
	if u.User != nil {
		return nil, badURL("URL must not contain user info", nil)
	}
	host, err := canonicalHost(u.Host, u.Hostname())
	if err != nil {
		return nil, err
	}
	port, err := effectivePort(u)
	if err != nil {
		return nil, err
	}
	if !c.portAllowed(port) {
		return nil, blockedPort(port)
	}
	if port != defaultPort(u.Scheme) {
		host += ":" + strconv.Itoa(int(port))
	}
	out := &url.URL{
		Scheme:     u.Scheme,
		Host:       host,
		RawQuery:   strings.ReplaceAll(u.RawQuery, " ", "%20"),
		ForceQuery: u.ForceQuery,
	}
	setPath(out, rawPath(u))
	return out, nil
}

// canonicalHost returns the canonical form of hostname, the host part of
// authority (which tells whether it was an IPv6 literal in brackets).
func canonicalHost(authority, hostname string) (string, error) {
	if hostname == "" {
		return "", badURL("URL has no host", nil)
	}
	if strings.HasPrefix(authority, "[") {
		a, err := netip.ParseAddr(hostname)
		if err != nil || !a.Is6() {
			return "", badURL("invalid IPv6 host", err)
		}
		if a.Zone() != "" {
			// A zone names an interface of this machine, never a remote host.
			return "", badURL("IPv6 zones are not allowed", nil)
		}
		return "[" + a.String() + "]", nil
	}
	if strings.Contains(hostname, ":") {
		return "", badURL("invalid IPv6 host", nil)
	}
	if !utf8.ValidString(hostname) {
		// idna would map the bad bytes to U+FFFD and encode that.
		return "", badURL("host is not valid UTF-8", nil)
	}
	ascii, err := hostProfile.ToASCII(hostname)
	if err != nil {
		return "", badURL("invalid host name", err)
	}
	// The key must be a fixed point: a result that maps to something else
	// again (or is refused) would make the key and the request disagree.
	if again, err := hostProfile.ToASCII(ascii); err != nil || again != ascii {
		return "", badURL(fmt.Sprintf("host %q does not map to a stable name", ascii), err)
	}
	// Mapping can produce a dotted quad ("127。0。0。1", fullwidth digits);
	// browsers then treat it as an IPv4 address, and so do we.
	if a, err := netip.ParseAddr(ascii); err == nil && a.Is4() {
		return a.String(), nil
	}
	if endsInNumber(ascii) {
		// 127.1, 2130706433, 0x7f000001, 0177.0.0.1, 127.0.0.1.: legacy
		// inet_aton forms that some resolvers turn into loopback. No real
		// name looks like this.
		return "", badURL(fmt.Sprintf("non-canonical IPv4 host %q", ascii), nil)
	}
	ascii = strings.TrimSuffix(ascii, ".")
	if err := checkDNSName(ascii); err != nil {
		return "", badURL("invalid host name", err)
	}
	return ascii, nil
}

// checkDNSName accepts what a resolver can look up: labels of 1 to 63
// letters, digits, hyphens and underscores, at most 253 bytes in all.
func checkDNSName(name string) error {
	if len(name) > 253 {
		return errors.New("name longer than 253 bytes")
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("label %q: want 1 to 63 bytes", label)
		}
		for i := 0; i < len(label); i++ {
			b := label[i]
			if !('a' <= b && b <= 'z' || '0' <= b && b <= '9' || b == '-' || b == '_') {
				return fmt.Errorf("label %q: invalid byte %q", label, b)
			}
		}
	}
	return nil
}

func defaultPort(scheme string) uint16 {
	if scheme == "https" {
		return 443
	}
	return 80
}

// effectivePort is the port u connects to.
func effectivePort(u *url.URL) (uint16, error) {
	p := u.Port()
	if p == "" {
		return defaultPort(u.Scheme), nil
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return 0, badURL(fmt.Sprintf("invalid port %q", p), nil)
	}
	return uint16(n), nil
}

// rawPath returns u's path as it was written.
func rawPath(u *url.URL) string {
	// url.Parse keeps the original in RawPath unless it equals the
	// default encoding of Path, which EscapedPath then returns.
	if u.RawPath != "" {
		return u.RawPath
	}
	return u.EscapedPath()
}

// setPath sets u's path to raw, percent-encoding only the bytes that
// net/url would not send as they are. Existing escapes are kept, so
// "/a%2Fb" and "/a/b" stay different paths.
func setPath(u *url.URL, raw string) {
	if raw == "" {
		raw = "/"
	}
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if pathByteOK(c) {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	esc := b.String()
	// Cannot fail: url.Parse validated every escape, and we added only
	// valid ones.
	u.Path, _ = url.PathUnescape(esc)
	u.RawPath = ""
	if u.EscapedPath() != esc {
		u.RawPath = esc
	}
}

// pathByteOK reports whether c may appear unescaped in a path that net/url
// will send as written (its validEncoded: RFC 3986 pchar plus '/', '%',
// '[' and ']').
func pathByteOK(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~!$&'()*+,;=:@/%[]", c) >= 0
}

// Redact returns u without user info, query and fragment, which may carry
// credentials or tokens, for log lines and error messages.
func Redact(u *url.URL) string {
	r := *u
	r.User = nil
	r.RawQuery, r.ForceQuery, r.Fragment, r.RawFragment = "", false, "", ""
	return r.String()
}

// endsInNumber reports whether the last label of host is numeric (decimal or
// 0x-hex), which the WHATWG URL standard treats as an IPv4 address.
func endsInNumber(host string) bool {
	host = strings.TrimSuffix(host, ".")
	last := host[strings.LastIndexByte(host, '.')+1:]
	if last == "" {
		return false
	}
	if rest, ok := strings.CutPrefix(strings.ToLower(last), "0x"); ok {
		return strings.Trim(rest, "0123456789abcdef") == ""
	}
	return strings.Trim(last, "0123456789") == ""
}

// PortRange is an inclusive range of TCP ports; a single port has Lo == Hi.
type PortRange struct{ Lo, Hi uint16 }

// DefaultPorts are the ports allowed when Config.AllowedPorts is empty, as
// ParsePorts reads them.
const DefaultPorts = "80,443"

var defaultPorts = func() []PortRange {
	p, err := ParsePorts(DefaultPorts)
	if err != nil {
		panic(err)
	}
	return p
}()

// ParsePorts parses a list of ports and ranges separated by commas and/or
// whitespace, as in MEDIA_PROXY_ALLOWED_PORTS: "80,443,8000-8999". Ports
// are 1 to 65535. An empty string yields an empty list (meaning the default,
// 80 and 443).
func ParsePorts(s string) ([]PortRange, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool {
		return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r'
	})
	out := make([]PortRange, 0, len(fields))
	for _, f := range fields {
		lo, hi, isRange := strings.Cut(f, "-")
		if !isRange {
			hi = lo
		}
		l, err1 := parsePort(lo)
		h, err2 := parsePort(hi)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("fetch: invalid port %q: %w", f, err)
		}
		if l > h {
			return nil, fmt.Errorf("fetch: invalid port range %q: start after end", f)
		}
		out = append(out, PortRange{l, h})
	}
	return out, nil
}

func parsePort(s string) (uint16, error) {
	// ParseUint alone would accept "+80"; ports are plain digits.
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, errors.New("not a number")
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, errors.New("want 1 to 65535")
	}
	return uint16(n), nil
}

// portAllowed reports whether connections to port are allowed.
func (c *Client) portAllowed(port uint16) bool {
	for _, r := range c.cfg.AllowedPorts {
		if r.Lo <= port && port <= r.Hi {
			return true
		}
	}
	return false
}

func blockedPort(port uint16) *problem.Error {
	return &problem.Error{
		Status: http.StatusForbidden,
		Msg:    fmt.Sprintf("refusing port %d (not in the allowed ports)", port),
		Err:    ErrBlocked,
	}
}
