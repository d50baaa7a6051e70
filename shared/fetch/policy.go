package fetch

import (
	"fmt"
	"net/netip"
	"strings"
	"unicode"
)

// blockedV4 lists IPv4 ranges that are not globally reachable or that reach
// infrastructure a media proxy has no business talking to.
// Source: IANA IPv4 Special-Purpose Address Registry, plus cloud metadata.
var blockedV4 = mustPrefixes(
	"0.0.0.0/8",          // "this network"; connecting to 0.0.0.0 reaches localhost on Linux
	"10.0.0.0/8",         // private
	"100.64.0.0/10",      // CGNAT (also Alibaba metadata 100.100.100.200)
	"127.0.0.0/8",        // loopback
	"169.254.0.0/16",     // link-local
	"169.254.169.254/32", // cloud metadata (inside link-local; listed for the record)
	"172.16.0.0/12",      // private
	"192.0.0.0/24",       // IETF protocol assignments (also Oracle metadata 192.0.0.192)
	"192.0.2.0/24",       // TEST-NET-1
	"192.88.99.0/24",     // deprecated 6to4 relay anycast
	"192.168.0.0/16",     // private
	"198.18.0.0/15",      // benchmarking
	"198.51.100.0/24",    // TEST-NET-2
	"203.0.113.0/24",     // TEST-NET-3
	"224.0.0.0/4",        // multicast
	"240.0.0.0/4",        // reserved, includes broadcast 255.255.255.255
)

// blockedV6 lists IPv6 ranges refused outright. IPv4-mapped addresses are
// unmapped before this list is consulted; NAT64 (64:ff9b::/96) and 6to4
// (2002::/16) are checked by their embedded IPv4 address instead.
var blockedV6 = mustPrefixes(
	"::/128",            // unspecified
	"::1/128",           // loopback
	"::/96",             // IPv4-compatible (deprecated); would smuggle IPv4
	"64:ff9b:1::/48",    // local-use NAT64; embedding format is site-specific
	"100::/64",          // discard-only
	"2001::/23",         // IETF protocol assignments, includes Teredo 2001::/32
	"2001:db8::/32",     // documentation
	"3fff::/20",         // documentation (RFC 9637)
	"5f00::/16",         // SRv6 SIDs
	"fc00::/7",          // unique local
	"fd00:ec2::254/128", // AWS metadata over IPv6 (inside fc00::/7; listed for the record)
	"fe80::/10",         // link-local
	"fec0::/10",         // site-local (deprecated)
	"ff00::/8",          // multicast
)

var (
	nat64Prefix = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour   = netip.MustParsePrefix("2002::/16")
)

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// policy decides which addresses may be dialled.
type policy struct {
	allow []netip.Prefix
}

// permitted reports whether a connection to a is allowed.
func (p policy) permitted(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	a = a.WithZone("") // zones do not change which network an address is in
	// The allow-list is checked first so that an operator can open up, say,
	// an internal object store without us second-guessing it.
	for _, pre := range p.allow {
		if pre.Contains(a) || pre.Contains(a.Unmap()) {
			return true
		}
	}
	a = a.Unmap() // ::ffff:127.0.0.1 connects to 127.0.0.1
	if a.Is4() {
		return !containsAny(blockedV4, a)
	}
	if containsAny(blockedV6, a) {
		return false
	}
	// Translation prefixes reach whatever IPv4 address they embed.
	if v4, ok := embeddedV4(a); ok {
		return p.permitted(v4)
	}
	return true
}

func containsAny(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, pre := range prefixes {
		if pre.Contains(a) {
			return true
		}
	}
	return false
}

// embeddedV4 extracts the IPv4 address carried by a NAT64 or 6to4 address.
func embeddedV4(a netip.Addr) (netip.Addr, bool) {
	b := a.As16()
	switch {
	case nat64Prefix.Contains(a):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case sixToFour.Contains(a):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}

// ParsePrefixes parses a list of networks separated by commas and/or
// whitespace, as found in MEDIA_PROXY_ALLOWED_PRIVATE_NETWORKS.
// Bare addresses are accepted as single-host prefixes (/32 or /128).
// An empty string yields an empty list.
func ParsePrefixes(csv string) ([]netip.Prefix, error) {
	fields := strings.FieldsFunc(csv, func(r rune) bool {
		return r == ',' || unicode.IsSpace(r)
	})
	out := make([]netip.Prefix, 0, len(fields))
	for _, f := range fields {
		if strings.Contains(f, "/") {
			pre, err := netip.ParsePrefix(f)
			if err != nil {
				return nil, fmt.Errorf("fetch: invalid network %q: %w", f, err)
			}
			out = append(out, pre.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("fetch: invalid network %q: %w", f, err)
		}
		if a.Zone() != "" {
			return nil, fmt.Errorf("fetch: invalid network %q: zones are not allowed", f)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
