package pngcolour

import (
	"encoding/binary"
	"math"
)

// An ICC version 4 matrix/TRC display profile, the kind that describes
// an RGB space by its primaries and one tone curve: what cHRM and gAMA
// describe. libvips (lcms) converts from it like from any embedded profile.

// curve is an ICC parametric curve: function type 0 is Y = X^g, type 3
// is sRGB's (Y = (aX+b)^g above d, cX below).
type curve struct {
	typ    uint16
	params []float64
}

var srgbCurve = curve{3, []float64{2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045}}

func powerCurve(g float64) curve { return curve{0, []float64{g}} }

type mat3 [3][3]float64

func (m mat3) mul(n mat3) mat3 {
	var o mat3
	for i := range 3 {
		for j := range 3 {
			for k := range 3 {
				o[i][j] += m[i][k] * n[k][j]
			}
		}
	}
	return o
}

func (m mat3) apply(v [3]float64) [3]float64 {
	var o [3]float64
	for i := range 3 {
		o[i] = m[i][0]*v[0] + m[i][1]*v[1] + m[i][2]*v[2]
	}
	return o
}

// inverse of m; ok is false when m is (nearly) singular.
func (m mat3) inverse() (mat3, bool) {
	a, b, c := m[0][0], m[0][1], m[0][2]
	d, e, f := m[1][0], m[1][1], m[1][2]
	g, h, i := m[2][0], m[2][1], m[2][2]
	det := a*(e*i-f*h) - b*(d*i-f*g) + c*(d*h-e*g)
	if math.Abs(det) < 1e-9 {
		return mat3{}, false
	}
	return mat3{
		{(e*i - f*h) / det, (c*h - b*i) / det, (b*f - c*e) / det},
		{(f*g - d*i) / det, (a*i - c*g) / det, (c*d - a*f) / det},
		{(d*h - e*g) / det, (b*g - a*h) / det, (a*e - b*d) / det},
	}, true
}

func (c xy) xyz() [3]float64 { return [3]float64{c.x / c.y, 1, (1 - c.x - c.y) / c.y} }

// d50 is the ICC profile connection space's white.
var d50 = [3]float64{0.9642, 1, 0.8249}

// bradford is the cone response matrix of the Bradford chromatic
// adaptation the ICC specification recommends.
var bradford = mat3{{0.8951, 0.2664, -0.1614}, {-0.7502, 1.7135, 0.0367}, {0.0389, -0.0685, 1.0296}}

// toXYZD50 is the matrix from linear RGB in primaries p to XYZ adapted to
// D50, and the adaptation matrix itself (the profile's chad tag).
func (p primaries) toXYZD50() (m, chad mat3, ok bool) {
	r, g, b := p.r.xyz(), p.g.xyz(), p.b.xyz()
	rgb := mat3{{r[0], g[0], b[0]}, {r[1], g[1], b[1]}, {r[2], g[2], b[2]}}
	inv, ok := rgb.inverse()
	if !ok {
		return mat3{}, mat3{}, false
	}
	// Scale each primary so that R=G=B=1 is the white point.
	s := inv.apply(p.w.xyz())
	for i := range 3 {
		for j := range 3 {
			rgb[i][j] *= s[j]
		}
	}
	src, dst := bradford.apply(p.w.xyz()), bradford.apply(d50)
	binv, _ := bradford.inverse()
	chad = binv.mul(mat3{{dst[0] / src[0], 0, 0}, {0, dst[1] / src[1], 0}, {0, 0, dst[2] / src[2]}}).mul(bradford)
	return chad.mul(rgb), chad, true
}

// matrixProfile is the ICC profile of RGB with primaries p and curve c
// on every channel; nil if the primaries make no RGB space.
func matrixProfile(p primaries, c curve) []byte {
	m, chad, ok := p.toXYZD50()
	if !ok {
		return nil
	}
	column := func(j int) []byte { return xyzTag([3]float64{m[0][j], m[1][j], m[2][j]}) }
	var sf32 []byte
	for _, row := range chad {
		for _, v := range row {
			sf32 = appendS15(sf32, v)
		}
	}
	// Function type, then two reserved bytes.
	trc := typed("para", binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, c.typ), 0))
	for _, v := range c.params {
		trc = appendS15(trc, v)
	}
	tags := []struct {
		sig  string
		data []byte
	}{
		{"desc", mluc("pngcolour cHRM/gAMA")},
		{"cprt", mluc("No copyright")},
		{"wtpt", xyzTag(d50)},
		{"chad", typed("sf32", sf32)},
		{"rXYZ", column(0)},
		{"gXYZ", column(1)},
		{"bXYZ", column(2)},
		{"rTRC", trc},
		{"gTRC", trc},
		{"bTRC", trc},
	}
	// Header, tag count and table, then each tag's data 4-byte aligned
	// (the three curves share one copy).
	off := 128 + 4 + 12*len(tags)
	var table, data []byte
	var trcOff int
	for _, t := range tags {
		at := off + len(data)
		if t.sig[1:] == "TRC" && trcOff != 0 {
			at = trcOff
		} else {
			if t.sig == "rTRC" {
				trcOff = at
			}
			data = append(data, t.data...)
			for len(data)%4 != 0 {
				data = append(data, 0)
			}
		}
		table = append(table, t.sig...)
		table = binary.BigEndian.AppendUint32(table, uint32(at))
		table = binary.BigEndian.AppendUint32(table, uint32(len(t.data)))
	}
	size := off + len(data)
	h := make([]byte, 128, size)
	binary.BigEndian.PutUint32(h[0:], uint32(size))
	binary.BigEndian.PutUint32(h[8:], 0x04300000) // version 4.3
	copy(h[12:], "mntrRGB XYZ ")
	// 2026-01-01 00:00:00, fixed so that the same chunks give the same bytes.
	for i, v := range []uint16{2026, 1, 1} {
		binary.BigEndian.PutUint16(h[24+2*i:], v)
	}
	copy(h[36:], "acsp")
	copy(h[68:], xyzTag(d50)[8:])
	out := append(h, binary.BigEndian.AppendUint32(nil, uint32(len(tags)))...)
	out = append(out, table...)
	return append(out, data...)
}

// typed is a tag's data: its type signature, four reserved bytes, payload.
func typed(sig string, payload []byte) []byte {
	return append(append([]byte(sig), 0, 0, 0, 0), payload...)
}

func xyzTag(v [3]float64) []byte {
	var p []byte
	for _, c := range v {
		p = appendS15(p, c)
	}
	return typed("XYZ ", p)
}

// mluc is a multiLocalizedUnicodeType holding one en-US string (ASCII).
func mluc(s string) []byte {
	p := binary.BigEndian.AppendUint32(nil, 1) // one record
	p = binary.BigEndian.AppendUint32(p, 12)   // of 12 bytes
	p = append(p, "enUS"...)                   // language, country
	p = binary.BigEndian.AppendUint32(p, uint32(2*len(s)))
	p = binary.BigEndian.AppendUint32(p, 28) // the string's offset in the tag
	for _, r := range s {
		p = binary.BigEndian.AppendUint16(p, uint16(r))
	}
	return typed("mluc", p)
}

// appendS15 appends v as an s15Fixed16Number.
func appendS15(b []byte, v float64) []byte {
	return binary.BigEndian.AppendUint32(b, uint32(int32(math.Round(v*65536))))
}
