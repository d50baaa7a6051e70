// Package pngcolour reads the colour space a PNG or APNG declares (its
// iCCP, sRGB, cHRM and gAMA chunks) as the ICC profile its pixels are in,
// so that pixels decoded outside libvips, or chunks libvips does not read,
// are converted to sRGB like every other image.
//
// The chunks are read in the order of the PNG specification, which
// Skia's decoder (Chromium's) follows too: an iCCP profile; else an sRGB
// chunk, which means sRGB; else cHRM primaries with the gAMA exponent
// (the sRGB curve without one); else a gAMA exponent on sRGB primaries.
// A chunk that cannot be used (a damaged CRC, a profile that does not
// inflate, is not an RGB profile or is over MaxProfile) counts as absent,
// and the next one in that order decides.
package pngcolour

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"hash/crc32"
	"io"
	"math"
)

// MaxProfile bounds an iCCP profile once inflated. Display profiles are
// a few kilobytes; a larger one is ignored (the image is read as sRGB)
// rather than inflated without bound.
const MaxProfile = 4 << 20

const signature = "\x89PNG\r\n\x1a\n"

// Profile is the ICC profile the pixels of the PNG b are in, or nil when
// they are sRGB or say nothing (which browsers show as sRGB), including
// cHRM and gAMA values that describe sRGB: converting those would only
// trade sRGB's curve for a pure power, which the files' writers did not
// mean. Only the chunks before the image data are read; b may be an APNG,
// or a PNG held in an ICO.
func Profile(b []byte) []byte {
	c := readChunks(b)
	if c.iccp != nil {
		if p := inflateProfile(c.iccp); p != nil {
			return p
		}
	}
	if c.srgb {
		return nil
	}
	// Damaged values count as absent.
	prim, curve := srgbPrimaries, srgbCurve
	hasPrim, hasGamma := false, false
	if p, ok := parseCHRM(c.chrm); ok {
		prim, hasPrim = p, true
	}
	if g, ok := parseGAMA(c.gama); ok {
		curve, hasGamma = powerCurve(g), true
	}
	if !hasPrim && !hasGamma {
		return nil
	}
	if prim.near(srgbPrimaries) && (!hasGamma || nearSRGBGamma(c.gama)) {
		return nil
	}
	return matrixProfile(prim, curve)
}

// chunks are the colour chunks' payloads, the first of each kind.
type chunks struct {
	iccp, chrm, gama []byte
	srgb             bool
}

// readChunks walks b's chunks up to the image data (colour chunks must
// precede it), skipping any whose CRC does not match, as libpng does with
// damaged ancillary chunks. A malformed file yields what was read so far;
// the decoder proper reports the damage.
func readChunks(b []byte) chunks {
	var c chunks
	if !bytes.HasPrefix(b, []byte(signature)) {
		return c
	}
	for p := len(signature); len(b)-p >= 12; {
		n := binary.BigEndian.Uint32(b[p:])
		if uint64(n) > uint64(len(b)-p-12) {
			break
		}
		end := p + 8 + int(n)
		typ, data := string(b[p+4:p+8]), b[p+8:end]
		ok := crc32.ChecksumIEEE(b[p+4:end]) == binary.BigEndian.Uint32(b[end:])
		p = end + 4
		switch {
		case typ == "IDAT" || typ == "IEND":
			return c
		case !ok:
		case typ == "iCCP" && c.iccp == nil:
			c.iccp = data
		case typ == "sRGB":
			c.srgb = true
		case typ == "cHRM" && c.chrm == nil:
			c.chrm = data
		case typ == "gAMA" && c.gama == nil:
			c.gama = data
		}
	}
	return c
}

// inflateProfile takes the profile out of an iCCP payload (a name of 1-79
// bytes, a NUL, compression method 0, a zlib stream); nil if it cannot be
// used on RGB pixels.
func inflateProfile(iccp []byte) []byte {
	nul := bytes.IndexByte(iccp, 0)
	if nul < 1 || nul > 79 || len(iccp) < nul+2 || iccp[nul+1] != 0 {
		return nil
	}
	zr, err := zlib.NewReader(bytes.NewReader(iccp[nul+2:]))
	if err != nil {
		return nil
	}
	defer zr.Close()
	p, err := io.ReadAll(io.LimitReader(zr, MaxProfile+1))
	if err != nil || len(p) > MaxProfile || !isRGBProfile(p) {
		return nil
	}
	return p
}

// isRGBProfile reports whether p has an ICC header whose data colour space
// is RGB: the only profiles that apply to the RGBA pixels this proxy
// decodes in Go (a grey PNG's are read as RGBA too).
func isRGBProfile(p []byte) bool {
	return len(p) >= 132 && string(p[36:40]) == "acsp" && string(p[16:20]) == "RGB " &&
		uint64(binary.BigEndian.Uint32(p)) <= uint64(len(p))
}

// xy is a chromaticity.
type xy struct{ x, y float64 }

// primaries are the white point and the red, green and blue primaries.
type primaries struct{ w, r, g, b xy }

var srgbPrimaries = primaries{w: xy{0.3127, 0.3290}, r: xy{0.64, 0.33}, g: xy{0.30, 0.60}, b: xy{0.15, 0.06}}

func (p primaries) near(q primaries) bool {
	same := func(a, b xy) bool { return math.Abs(a.x-b.x) <= 0.01 && math.Abs(a.y-b.y) <= 0.01 }
	return same(p.w, q.w) && same(p.r, q.r) && same(p.g, q.g) && same(p.b, q.b)
}

// parseCHRM reads cHRM's eight values (white, red, green, blue; x then y;
// times 100000).
func parseCHRM(d []byte) (primaries, bool) {
	if len(d) != 32 {
		return primaries{}, false
	}
	v := func(i int) float64 { return float64(binary.BigEndian.Uint32(d[4*i:])) / 100000 }
	p := primaries{w: xy{v(0), v(1)}, r: xy{v(2), v(3)}, g: xy{v(4), v(5)}, b: xy{v(6), v(7)}}
	for _, c := range []xy{p.w, p.r, p.g, p.b} {
		if c.x <= 0 || c.y <= 0 || c.x+c.y > 1 {
			return primaries{}, false
		}
	}
	return p, true
}

// parseGAMA reads gAMA: the encoding exponent times 100000, so the
// decoding exponent is its inverse. Values outside 0.1 to 10 are taken as
// damage, not meaning.
func parseGAMA(d []byte) (float64, bool) {
	if len(d) != 4 {
		return 0, false
	}
	g := float64(binary.BigEndian.Uint32(d)) / 100000
	if g < 0.1 || g > 10 {
		return 0, false
	}
	return 1 / g, true
}

// nearSRGBGamma: within libpng's tolerance of the 1/2.2 (45455) that
// writers store for sRGB.
func nearSRGBGamma(d []byte) bool {
	v := int64(binary.BigEndian.Uint32(d))
	return v >= 45455-500 && v <= 45455+500
}
