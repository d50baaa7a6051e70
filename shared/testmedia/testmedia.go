// Package testmedia generates the media fixtures used by the proxy's tests
// and benchmarks, so the repository ships no third-party (and possibly
// copyrighted) files.
//
// Every generator is pure Go and deterministic: the same arguments always
// yield the same bytes, because all randomness comes from fixed-seed PCG
// sources. Images carry gradients, shapes and noise so that their compressed
// sizes and entropy resemble real content. Generators panic on internal
// errors; they are test support, and an encoder failing on an in-memory image
// is a bug, not a condition to handle.
//
// Returned slices may be shared (see [All]); callers that modify them should
// copy first.
package testmedia

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
)

// seed is the base of every PCG source, so fixtures are stable across runs.
const seed = 0x6d6b6d70 // "mkmp"

// pngNoise is the noise amplitude for lossless formats: enough that PNGs
// compress like camera or rendered content rather than like flat art.
const pngNoise = 4

func must[T any](v T, err error) T {
	if err != nil {
		panic("testmedia: " + err.Error())
	}
	return v
}

func newRand(stream uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, stream))
}

func checkSize(w, h int) {
	if w <= 0 || h <= 0 {
		panic(fmt.Sprintf("testmedia: invalid size %dx%d", w, h))
	}
}

// style controls paint.
type style struct {
	alpha bool // apply an alpha gradient (left opaque, right mostly transparent)
	noise int  // per-channel noise amplitude, 0 for none
	frame int  // animation frame: moves the shapes and reseeds the noise
}

// paint renders the common test scene: a colour gradient, a set of seeded
// rectangles and ellipses, a marker square that moves with st.frame, and
// per-pixel noise. Opaque scenes have alpha 255 everywhere, so their Pix can
// be reused as premultiplied RGBA (see opaqueRGBA).
func paint(w, h int, st style) *image.NRGBA {
	checkSize(w, h)
	img := image.NewNRGBA(image.Rect(0, 0, w, h))

	// Per-column and per-row tables keep the per-pixel work to a few adds,
	// which matters for the 12-megapixel JPEGLarge.
	xr := make([]uint8, w)
	xa := make([]uint8, w)
	for x := range w {
		xr[x] = uint8(x * 255 / max(w-1, 1))
		xa[x] = 255
		if st.alpha {
			xa[x] = uint8(255 - x*223/max(w-1, 1))
		}
	}
	for y := range h {
		g := uint8(y * 255 / max(h-1, 1))
		row := img.Pix[y*img.Stride : y*img.Stride+4*w]
		for x := range w {
			p := row[4*x : 4*x+4 : 4*x+4]
			p[0] = xr[x]
			p[1] = g
			p[2] = uint8((x + 2*y) * 3 / 2) // diagonal sawtooth bands
			p[3] = xa[x]
		}
	}

	// Shapes are seeded independently of the frame so animations move the
	// same shapes rather than drawing new ones.
	srng := newRand(1)
	dx, dy := st.frame*max(w/24, 1), st.frame*max(h/32, 1)
	for i := range 10 {
		c := color.NRGBA{uint8(srng.IntN(256)), uint8(srng.IntN(256)), uint8(srng.IntN(256)), 255}
		if st.alpha && i%2 == 1 {
			c.A = uint8(96 + srng.IntN(128))
		}
		cx, cy := srng.IntN(w), srng.IntN(h)
		rx, ry := max(w/16+srng.IntN(max(w/6, 1)), 1), max(h/16+srng.IntN(max(h/6, 1)), 1)
		if i%3 == 0 { // only some shapes move, as in a real animation
			cx, cy = cx+dx, cy+dy
		}
		if i%2 == 0 {
			fillRect(img, image.Rect(cx-rx, cy-ry, cx+rx, cy+ry), c)
		} else {
			fillEllipse(img, cx, cy, rx, ry, c)
		}
	}
	// The marker square makes consecutive frames visibly different even at
	// tiny sizes.
	side := max(min(w, h)/6, 1)
	mx := (st.frame * max(side/2, 1)) % max(w-side, 1)
	my := (st.frame * max(side/3, 1)) % max(h-side, 1)
	fillRect(img, image.Rect(mx, my, mx+side, my+side), color.NRGBA{255, 255, 0, 255})

	if st.noise > 0 {
		addNoise(img, st.noise, newRand(100+uint64(st.frame)))
	}
	return img
}

func fillRect(img *image.NRGBA, r image.Rectangle, c color.NRGBA) {
	r = r.Intersect(img.Rect)
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			i := img.PixOffset(x, y)
			img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = c.R, c.G, c.B, c.A
		}
	}
}

func fillEllipse(img *image.NRGBA, cx, cy, rx, ry int, c color.NRGBA) {
	r := image.Rect(cx-rx, cy-ry, cx+rx+1, cy+ry+1).Intersect(img.Rect)
	for y := r.Min.Y; y < r.Max.Y; y++ {
		fy := float64(y-cy) / float64(ry)
		for x := r.Min.X; x < r.Max.X; x++ {
			fx := float64(x-cx) / float64(rx)
			if fx*fx+fy*fy <= 1 {
				i := img.PixOffset(x, y)
				img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = c.R, c.G, c.B, c.A
			}
		}
	}
}

// addNoise perturbs the colour channels (not alpha) by up to ±amp.
func addNoise(img *image.NRGBA, amp int, rng *rand.Rand) {
	span := uint64(2*amp + 1)
	var bits uint64
	n := 0
	for i := 0; i < len(img.Pix); i++ {
		if i%4 == 3 {
			continue
		}
		if n == 0 { // one PCG draw feeds four channels
			bits, n = rng.Uint64(), 4
		}
		d := int(uint16(bits)%uint16(span)) - amp
		bits >>= 16
		n--
		img.Pix[i] = clamp8(int(img.Pix[i]) + d)
	}
}

func clamp8(v int) uint8 {
	return uint8(min(max(v, 0), 255))
}

// opaqueRGBA reinterprets an opaque NRGBA as RGBA without copying (the two
// layouts coincide when alpha is 255). image/png then writes RGB, and
// image/jpeg takes its fast RGBA path.
func opaqueRGBA(img *image.NRGBA) *image.RGBA {
	return &image.RGBA{Pix: img.Pix, Stride: img.Stride, Rect: img.Rect}
}

func encodePNG(img image.Image) []byte {
	var b bytes.Buffer
	must(0, png.Encode(&b, img))
	return b.Bytes()
}

// PNG returns a w×h 8-bit RGBA PNG with an alpha gradient, translucent shapes
// and noise.
func PNG(w, h int) []byte {
	return encodePNG(paint(w, h, style{alpha: true, noise: pngNoise}))
}

// PNG16 returns a w×h 16-bit RGBA PNG (decodes as *image.NRGBA64). The low
// byte of each colour sample carries independent noise, so the extra
// precision is real rather than a duplicated high byte.
func PNG16(w, h int) []byte {
	src := paint(w, h, style{alpha: true, noise: pngNoise})
	dst := image.NewNRGBA64(src.Rect)
	rng := newRand(2)
	for i := 0; i < len(src.Pix); i++ {
		v := int(src.Pix[i]) * 257
		if i%4 != 3 {
			v += int(rng.Uint32()%256) - 128
		}
		v = min(max(v, 0), 0xffff)
		dst.Pix[2*i], dst.Pix[2*i+1] = uint8(v>>8), uint8(v)
	}
	return encodePNG(dst)
}

// NoisePNG returns a w×h RGBA PNG of random pixels: it compresses
// nowhere, so it is about 4×w×h bytes (a 1600×1600 one is 10 MB).
func NoisePNG(w, h int) []byte {
	checkSize(w, h)
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	rng := newRand(7)
	for i := range img.Pix {
		img.Pix[i] = uint8(rng.Uint32())
	}
	return encodePNG(img)
}

// PNGOpaque returns a w×h opaque RGB PNG, suitable for large inputs.
func PNGOpaque(w, h int) []byte {
	return encodePNG(opaqueRGBA(paint(w, h, style{noise: pngNoise})))
}

// FlatPNG returns a w×h PNG of the single colour c: no entropy at all.
func FlatPNG(w, h int, c color.Color) []byte {
	checkSize(w, h)
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	nc := color.NRGBAModel.Convert(c).(color.NRGBA)
	fillRect(img, img.Rect, nc)
	return encodePNG(img)
}

// TransparentPNG returns a w×h fully transparent PNG.
func TransparentPNG(w, h int) []byte {
	return FlatPNG(w, h, color.Transparent)
}
