package fetch

import (
	"net/netip"
	"slices"
	"testing"
)

func TestPolicyPermitted(t *testing.T) {
	def := policy{}
	allow := policy{allow: []netip.Prefix{
		netip.MustParsePrefix("10.1.0.0/16"),
		netip.MustParsePrefix("fd12:3456::/32"),
	}}
	tests := []struct {
		addr string
		p    policy
		want bool
	}{
		// Public addresses.
		{"8.8.8.8", def, true},
		{"1.1.1.1", def, true},
		{"2001:4860:4860::8888", def, true},
		{"::ffff:8.8.8.8", def, true},
		{"64:ff9b::808:808", def, true}, // NAT64 of 8.8.8.8
		{"2002:808:808::1", def, true},  // 6to4 of 8.8.8.8
		{"2001:200::1", def, true},      // just past 2001::/23
		{"100.63.255.255", def, true},   // just below CGNAT
		{"100.128.0.0", def, true},      // just above CGNAT
		{"172.32.0.1", def, true},       // just above 172.16/12
		{"223.255.255.255", def, true},  // just below multicast
		{"198.20.0.1", def, true},       // just above 198.18/15
		{"2606:4700:4700::1111", def, true},

		// IPv4 special ranges.
		{"0.0.0.0", def, false},
		{"0.1.2.3", def, false},
		{"10.0.0.1", def, false},
		{"100.64.0.1", def, false},
		{"100.100.100.200", def, false},
		{"127.0.0.1", def, false},
		{"127.255.255.254", def, false},
		{"169.254.169.254", def, false},
		{"169.254.0.1", def, false},
		{"172.16.0.1", def, false},
		{"172.31.255.255", def, false},
		{"192.0.0.192", def, false},
		{"192.0.2.1", def, false},
		{"192.168.1.1", def, false},
		{"198.18.0.1", def, false},
		{"198.19.255.255", def, false},
		{"198.51.100.1", def, false},
		{"203.0.113.1", def, false},
		{"224.0.0.1", def, false},
		{"239.255.255.250", def, false},
		{"240.0.0.1", def, false},
		{"255.255.255.255", def, false},

		// IPv6 special ranges.
		{"::", def, false},
		{"::1", def, false},
		{"fc00::1", def, false},
		{"fd00::1", def, false},
		{"fd00:ec2::254", def, false},
		{"fe80::1", def, false},
		{"fe80::1%lo", def, false},
		{"fec0::1", def, false},
		{"ff02::1", def, false},
		{"2001:db8::1", def, false},
		{"3fff::1", def, false},
		{"100::1", def, false},

		// IPv4 hidden in IPv6.
		{"::ffff:127.0.0.1", def, false},
		{"::ffff:10.0.0.1", def, false},
		{"::ffff:169.254.169.254", def, false},
		{"::127.0.0.1", def, false},                          // IPv4-compatible
		{"::8.8.8.8", def, false},                            // IPv4-compatible, refused outright
		{"64:ff9b::7f00:1", def, false},                      // NAT64 of 127.0.0.1
		{"64:ff9b::a9fe:a9fe", def, false},                   // NAT64 of 169.254.169.254
		{"64:ff9b:1::808:808", def, false},                   // local-use NAT64
		{"2002:7f00:1::", def, false},                        // 6to4 of 127.0.0.1
		{"2002:a00:1::1", def, false},                        // 6to4 of 10.0.0.1
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", def, false}, // Teredo
		{"2001:2::1", def, false},                            // benchmarking

		// Allow-list.
		{"10.1.2.3", allow, true},
		{"::ffff:10.1.2.3", allow, true},
		{"64:ff9b::a01:203", allow, true}, // NAT64 of an allowed IPv4
		{"10.2.0.1", allow, false},
		{"fd12:3456::1", allow, true},
		{"fd12:3457::1", allow, false},
		{"127.0.0.1", allow, false},
	}
	for _, tt := range tests {
		a := netip.MustParseAddr(tt.addr)
		if got := tt.p.permitted(a); got != tt.want {
			t.Errorf("permitted(%s) with allow=%v = %v, want %v", tt.addr, tt.p.allow, got, tt.want)
		}
	}
	if def.permitted(netip.Addr{}) {
		t.Error("zero Addr permitted")
	}
}

func TestParsePrefixes(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"", []string{}, false},
		{"  ", []string{}, false},
		{"10.0.0.0/8, fd00::/8", []string{"10.0.0.0/8", "fd00::/8"}, false},
		{"10.0.0.0/8,fd00::/8,", []string{"10.0.0.0/8", "fd00::/8"}, false},
		{"10.0.0.0/8 192.168.0.0/16", []string{"10.0.0.0/8", "192.168.0.0/16"}, false},
		{"127.0.0.1", []string{"127.0.0.1/32"}, false},
		{"::1", []string{"::1/128"}, false},
		{"10.1.2.3/8", []string{"10.0.0.0/8"}, false}, // masked
		{"10.0.0.0/33", nil, true},
		{"nope", nil, true},
		{"fe80::1%eth0", nil, true},
		{"10.0.0.0/8, bogus", nil, true},
	}
	for _, tt := range tests {
		got, err := ParsePrefixes(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParsePrefixes(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if tt.wantErr {
			continue
		}
		var gotS []string
		for _, p := range got {
			gotS = append(gotS, p.String())
		}
		if !slices.Equal(gotS, tt.want) && !(len(gotS) == 0 && len(tt.want) == 0) {
			t.Errorf("ParsePrefixes(%q) = %v, want %v", tt.in, gotS, tt.want)
		}
	}
}

func TestEndsInNumber(t *testing.T) {
	for host, want := range map[string]bool{
		"127.1":        true,
		"2130706433":   true,
		"0x7f000001":   true,
		"0X7F.1":       true,
		"0177.0.0.1":   true,
		"1.2.3.4.":     true,
		"foo.0x":       true,
		"example.com":  false,
		"1.example":    false,
		"example.com.": false,
		"0xg":          false,
		"a.b.c.d1":     false,
	} {
		if got := endsInNumber(host); got != want {
			t.Errorf("endsInNumber(%q) = %v, want %v", host, got, want)
		}
	}
}
