package testmedia

import (
	"encoding/binary"
	"image/color"
	"math"
	"math/bits"
)

// image/jpeg cannot write CMYK, so CMYKJPEG carries a minimal baseline
// encoder: one quantisation table and the standard (Annex K) luminance
// Huffman tables shared by all four components, no subsampling.

// unzig maps zig-zag order to natural (row-major) order within a block.
var unzig = [64]int{
	0, 1, 8, 16, 9, 2, 3, 10,
	17, 24, 32, 25, 18, 11, 4, 5,
	12, 19, 26, 33, 40, 48, 41, 34,
	27, 20, 13, 6, 7, 14, 21, 28,
	35, 42, 49, 56, 57, 50, 43, 36,
	29, 22, 15, 23, 30, 37, 44, 51,
	58, 59, 52, 45, 38, 31, 39, 46,
	53, 60, 61, 54, 47, 55, 62, 63,
}

// lumaQuant is the Annex K.1 luminance table in zig-zag order.
var lumaQuant = [64]int{
	16, 11, 12, 14, 12, 10, 16, 14,
	13, 14, 18, 17, 16, 19, 24, 40,
	26, 24, 22, 22, 24, 49, 35, 37,
	29, 40, 58, 51, 61, 60, 57, 51,
	56, 55, 64, 72, 92, 78, 64, 68,
	87, 69, 55, 56, 80, 109, 81, 87,
	95, 98, 103, 104, 103, 62, 77, 113,
	121, 112, 100, 120, 92, 101, 103, 99,
}

// Annex K.3 luminance DC and AC Huffman specifications: code counts per
// length 1..16, then the symbols in code order.
var (
	dcCounts = [16]byte{0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0}
	dcValues = []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}
	acCounts = [16]byte{0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 125}
	acValues = []byte{
		0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12,
		0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
		0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08,
		0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0,
		0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16,
		0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28,
		0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39,
		0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
		0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59,
		0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
		0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79,
		0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
		0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98,
		0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
		0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6,
		0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5,
		0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4,
		0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
		0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea,
		0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
		0xf9, 0xfa,
	}
)

// huffCode is a canonical Huffman code: length in bits and the code itself.
type huffCode struct {
	size uint
	code uint32
}

func buildHuff(counts [16]byte, values []byte) [256]huffCode {
	var t [256]huffCode
	code, k := uint32(0), 0
	for i, n := range counts {
		for range n {
			t[values[k]] = huffCode{uint(i + 1), code}
			code++
			k++
		}
		code <<= 1
	}
	return t
}

// dctCos[u][x] = C(u)/2 · cos((2x+1)uπ/16), so a block's DCT is
// dctCos · f · dctCosᵀ.
var dctCos = func() (c [8][8]float64) {
	for u := range 8 {
		cu := 0.5
		if u == 0 {
			cu = 0.5 / math.Sqrt2
		}
		for x := range 8 {
			c[u][x] = cu * math.Cos(float64(2*x+1)*float64(u)*math.Pi/16)
		}
	}
	return c
}()

// bitWriter packs Huffman codes MSB-first, stuffing a zero after each 0xFF
// byte as the entropy-coded segment requires.
type bitWriter struct {
	out []byte
	acc uint32
	n   uint
}

func (w *bitWriter) emit(code uint32, size uint) {
	w.acc = w.acc<<size | code&(1<<size-1)
	w.n += size
	for w.n >= 8 {
		b := byte(w.acc >> (w.n - 8))
		w.out = append(w.out, b)
		if b == 0xff {
			w.out = append(w.out, 0)
		}
		w.n -= 8
	}
	w.acc &= 1<<w.n - 1
}

// flush pads the last byte with 1 bits.
func (w *bitWriter) flush() {
	if w.n > 0 {
		w.emit(1<<(8-w.n)-1, 8-w.n)
	}
}

// emitValue writes the Huffman code for symbol followed by the magnitude
// bits of v (category = bit length of |v|; negatives as v-1, truncated).
func (w *bitWriter) emitValue(t *[256]huffCode, run int, v int) {
	a := v
	if a < 0 {
		a = -a
		v--
	}
	s := uint(bits.Len(uint(a)))
	h := t[byte(run<<4)|byte(s)]
	w.emit(h.code, h.size)
	if s > 0 {
		w.emit(uint32(v), s)
	}
}

// CMYKJPEG returns a w×h baseline JPEG with four components (C, M, Y, K), no
// subsampling, and an Adobe APP14 marker with transform 0 (no colour
// transform). As Photoshop does, and as libjpeg-based readers and
// image/jpeg expect with an Adobe marker, samples are stored inverted
// (255 = no ink). image/jpeg decodes it as *image.CMYK.
func CMYKJPEG(w, h int) []byte {
	const quality = 90
	src := paint(w, h, style{noise: photoNoise})
	// Planes are padded to whole blocks by edge replication.
	pw, ph := (w+7)&^7, (h+7)&^7
	var planes [4][]uint8
	for c := range planes {
		planes[c] = make([]uint8, pw*ph)
	}
	for y := range ph {
		for x := range pw {
			i := src.PixOffset(min(x, w-1), min(y, h-1))
			cc, m, yy, k := color.RGBToCMYK(src.Pix[i], src.Pix[i+1], src.Pix[i+2])
			o := y*pw + x
			planes[0][o], planes[1][o], planes[2][o], planes[3][o] = 255-cc, 255-m, 255-yy, 255-k
		}
	}

	// IJG quality scaling.
	scale := 200 - 2*quality
	if quality < 50 {
		scale = 5000 / quality
	}
	var qzz [64]int // zig-zag order, as stored in DQT
	for k, v := range lumaQuant {
		qzz[k] = min(max((v*scale+50)/100, 1), 255)
	}

	out := []byte{0xff, 0xd8}
	out = append(out, 0xff, 0xee, 0, 14)
	out = append(out, "Adobe"...)
	out = append(out, 0, 100, 0, 0, 0, 0, 0) // version 100, flags0, flags1, transform 0

	out = append(out, 0xff, 0xdb, 0, 67, 0x00)
	for _, q := range qzz {
		out = append(out, byte(q))
	}

	out = append(out, 0xff, 0xc0, 0, 8+3*4, 8)
	out = binary.BigEndian.AppendUint16(out, uint16(h))
	out = binary.BigEndian.AppendUint16(out, uint16(w))
	out = append(out, 4)
	for id := byte(1); id <= 4; id++ {
		out = append(out, id, 0x11, 0) // 1×1 sampling, table 0
	}

	dhtLen := 2 + 17 + len(dcValues) + 17 + len(acValues)
	out = append(out, 0xff, 0xc4)
	out = binary.BigEndian.AppendUint16(out, uint16(dhtLen))
	out = append(out, 0x00)
	out = append(out, dcCounts[:]...)
	out = append(out, dcValues...)
	out = append(out, 0x10)
	out = append(out, acCounts[:]...)
	out = append(out, acValues...)

	out = append(out, 0xff, 0xda, 0, 6+2*4, 4)
	for id := byte(1); id <= 4; id++ {
		out = append(out, id, 0x00)
	}
	out = append(out, 0, 63, 0)

	dc, ac := buildHuff(dcCounts, dcValues), buildHuff(acCounts, acValues)
	bw := &bitWriter{out: out}
	var pred [4]int
	var blk, tmp, coef [64]float64
	for by := 0; by < ph; by += 8 {
		for bx := 0; bx < pw; bx += 8 {
			// Interleaved MCU: one block of each component in turn.
			for c := range planes {
				for y := range 8 {
					for x := range 8 {
						blk[y*8+x] = float64(planes[c][(by+y)*pw+bx+x]) - 128
					}
				}
				fdct(&blk, &tmp, &coef)
				var q [64]int
				for k := range 64 {
					q[k] = int(math.Round(coef[unzig[k]] / float64(qzz[k])))
				}
				bw.emitValue(&dc, 0, q[0]-pred[c])
				pred[c] = q[0]
				run := 0
				for k := 1; k < 64; k++ {
					if q[k] == 0 {
						run++
						continue
					}
					for run > 15 {
						h := ac[0xf0] // ZRL: sixteen zeros
						bw.emit(h.code, h.size)
						run -= 16
					}
					bw.emitValue(&ac, run, q[k])
					run = 0
				}
				if run > 0 {
					h := ac[0x00] // EOB
					bw.emit(h.code, h.size)
				}
			}
		}
	}
	bw.flush()
	return append(bw.out, 0xff, 0xd9)
}

// fdct computes the 2-D DCT-II of blk into coef (natural order), using tmp.
func fdct(blk, tmp, coef *[64]float64) {
	for y := range 8 { // rows
		for u := range 8 {
			var s float64
			for x := range 8 {
				s += dctCos[u][x] * blk[y*8+x]
			}
			tmp[y*8+u] = s
		}
	}
	for u := range 8 { // columns
		for v := range 8 {
			var s float64
			for y := range 8 {
				s += dctCos[v][y] * tmp[y*8+u]
			}
			coef[v*8+u] = s
		}
	}
}
