package pngcolour

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"hash/crc32"
	"math"
	"testing"
)

// png builds a 1x1 RGB PNG with chunks between IHDR and IDAT, and after
// IDAT the chunks in late.
func png(chunks [][2][]byte, late ...[2][]byte) []byte {
	b := []byte(signature)
	add := func(typ string, data []byte) {
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		start := len(b)
		b = append(b, typ...)
		b = append(b, data...)
		b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b[start:]))
	}
	add("IHDR", []byte{0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0})
	for _, c := range chunks {
		add(string(c[0]), c[1])
	}
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	zw.Write([]byte{0, 1, 2, 3})
	zw.Close()
	add("IDAT", z.Bytes())
	for _, c := range late {
		add(string(c[0]), c[1])
	}
	add("IEND", nil)
	return b
}

func chunk(typ string, data []byte) [2][]byte { return [2][]byte{[]byte(typ), data} }

func iccp(profile []byte) [2][]byte {
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	zw.Write(profile)
	zw.Close()
	return chunk("iCCP", append([]byte("test\x00\x00"), z.Bytes()...))
}

func gama(v uint32) [2][]byte { return chunk("gAMA", binary.BigEndian.AppendUint32(nil, v)) }

func chrm(p primaries) [2][]byte {
	var d []byte
	for _, c := range []xy{p.w, p.r, p.g, p.b} {
		d = binary.BigEndian.AppendUint32(d, uint32(math.Round(c.x*100000)))
		d = binary.BigEndian.AppendUint32(d, uint32(math.Round(c.y*100000)))
	}
	return chunk("cHRM", d)
}

var p3 = primaries{w: xy{0.3127, 0.3290}, r: xy{0.680, 0.320}, g: xy{0.265, 0.690}, b: xy{0.150, 0.060}}

// readMatrix reads the rXYZ, gXYZ and bXYZ columns and the rTRC curve's
// type and first parameter from a profile made by matrixProfile.
func readMatrix(t *testing.T, p []byte) (m mat3, trcType uint16, g float64) {
	t.Helper()
	if len(p) < 132 || int(binary.BigEndian.Uint32(p)) != len(p) || string(p[36:40]) != "acsp" || string(p[16:20]) != "RGB " {
		t.Fatalf("not an RGB ICC profile of its declared size (%d bytes)", len(p))
	}
	s15 := func(b []byte) float64 { return float64(int32(binary.BigEndian.Uint32(b))) / 65536 }
	n := int(binary.BigEndian.Uint32(p[128:]))
	found := 0
	for i := range n {
		e := p[132+12*i:]
		sig, off, size := string(e[:4]), int(binary.BigEndian.Uint32(e[4:])), int(binary.BigEndian.Uint32(e[8:]))
		if off%4 != 0 || off+size > len(p) {
			t.Fatalf("tag %s at %d+%d outside the profile or unaligned", sig, off, size)
		}
		d := p[off : off+size]
		switch sig {
		case "rXYZ", "gXYZ", "bXYZ":
			j := map[string]int{"rXYZ": 0, "gXYZ": 1, "bXYZ": 2}[sig]
			for k := range 3 {
				m[k][j] = s15(d[8+4*k:])
			}
			found++
		case "rTRC":
			trcType, g = binary.BigEndian.Uint16(d[8:]), s15(d[12:])
			found++
		}
	}
	if found != 4 {
		t.Fatalf("%d of the matrix and curve tags", found)
	}
	return m, trcType, g
}

func TestMatrixOfSRGB(t *testing.T) {
	// The sRGB matrix adapted to D50, as the ICC's sRGB profiles hold it.
	want := mat3{{0.4361, 0.3851, 0.1431}, {0.2225, 0.7169, 0.0606}, {0.0139, 0.0971, 0.7141}}
	m, typ, g := readMatrix(t, matrixProfile(srgbPrimaries, powerCurve(2.2)))
	for i := range 3 {
		for j := range 3 {
			if math.Abs(m[i][j]-want[i][j]) > 0.001 {
				t.Fatalf("matrix %v, want %v", m, want)
			}
		}
	}
	if typ != 0 || math.Abs(g-2.2) > 0.0001 {
		t.Errorf("curve type %d, exponent %v; want 0, 2.2", typ, g)
	}
}

func TestPrecedence(t *testing.T) {
	linear := matrixProfile(srgbPrimaries, powerCurve(1))
	grey := bytes.Clone(linear)
	copy(grey[16:], "GRAY")
	badCRC := iccp(linear)
	damaged := png([][2][]byte{badCRC})
	damaged[len(signature)+25+8+len(badCRC[1])] ^= 1 // the iCCP chunk's CRC
	huge := make([]byte, MaxProfile+1)
	copy(huge, linear)
	binary.BigEndian.PutUint32(huge, uint32(len(huge)))

	type want struct {
		profile bool
		gamma   float64 // the curve's exponent, when a profile is made
		red     xy      // the red primary it has
	}
	for _, c := range []struct {
		name string
		png  []byte
		want want
	}{
		{"nothing said", png(nil), want{}},
		{"iCCP", png([][2][]byte{iccp(linear)}), want{true, 1, srgbPrimaries.r}},
		{"iCCP before sRGB", png([][2][]byte{chunk("sRGB", []byte{0}), iccp(linear)}), want{true, 1, srgbPrimaries.r}},
		{"sRGB before cHRM and gAMA", png([][2][]byte{chunk("sRGB", []byte{0}), gama(100000), chrm(p3)}), want{}},
		{"gAMA 1/2.2 alone means sRGB", png([][2][]byte{gama(45455)}), want{}},
		{"gAMA 1/2.2 and sRGB primaries", png([][2][]byte{gama(45455), chrm(srgbPrimaries)}), want{}},
		{"gAMA 1 alone: linear, sRGB primaries", png([][2][]byte{gama(100000)}), want{true, 1, srgbPrimaries.r}},
		{"gAMA 1/1.8", png([][2][]byte{gama(55556)}), want{true, 1.8, srgbPrimaries.r}},
		{"cHRM P3 and gAMA 1/2.2", png([][2][]byte{chrm(p3), gama(45455)}), want{true, 2.2, p3.r}},
		{"cHRM P3 alone: sRGB's curve", png([][2][]byte{chrm(p3)}), want{true, 2.4, p3.r}},
		{"grey iCCP falls through to gAMA", png([][2][]byte{iccp(grey), gama(100000)}), want{true, 1, srgbPrimaries.r}},
		{"iCCP with a bad CRC is skipped", damaged, want{}},
		{"iCCP over MaxProfile is skipped", png([][2][]byte{iccp(huge), gama(100000)}), want{true, 1, srgbPrimaries.r}},
		{"iCCP that does not inflate", png([][2][]byte{chunk("iCCP", []byte("x\x00\x00not zlib"))}), want{}},
		{"gAMA 0 is damage", png([][2][]byte{gama(0)}), want{}},
		{"cHRM with y 0 is damage", png([][2][]byte{chrm(primaries{w: xy{0.3, 0}, r: p3.r, g: p3.g, b: p3.b})}), want{}},
		{"after IDAT is too late", png(nil, gama(100000)), want{}},
		{"truncated", png([][2][]byte{gama(100000)})[:40], want{}},
		{"not a PNG", []byte("GIF89a"), want{}},
	} {
		p := Profile(c.png)
		if (p != nil) != c.want.profile {
			t.Errorf("%s: profile %v, want %v", c.name, p != nil, c.want.profile)
			continue
		}
		if p == nil {
			continue
		}
		m, _, g := readMatrix(t, p)
		if math.Abs(g-c.want.gamma) > 0.01 {
			t.Errorf("%s: exponent %v, want %v", c.name, g, c.want.gamma)
		}
		// The red column's chromaticity is the red primary (Bradford
		// moves it a little from D65 to D50, less than 0.02).
		r := xy{m[0][0] / (m[0][0] + m[1][0] + m[2][0]), m[1][0] / (m[0][0] + m[1][0] + m[2][0])}
		if math.Abs(r.x-c.want.red.x) > 0.02 || math.Abs(r.y-c.want.red.y) > 0.02 {
			t.Errorf("%s: red at %v, want near %v", c.name, r, c.want.red)
		}
	}
}

// FuzzProfile: any input gives nil or a profile of an RGB colour space,
// never a panic.
func FuzzProfile(f *testing.F) {
	f.Add(png([][2][]byte{gama(100000), chrm(p3)}))
	f.Add(png([][2][]byte{iccp(matrixProfile(p3, srgbCurve))}))
	f.Add(png([][2][]byte{chunk("sRGB", []byte{0})}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if p := Profile(b); p != nil && !isRGBProfile(p) {
			t.Fatalf("profile of %d bytes is not an RGB profile", len(p))
		}
	})
}
