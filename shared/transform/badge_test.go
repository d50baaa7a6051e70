package transform

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/draw"
	"image/gif"
	"image/png"
	"testing"
	"time"

	"golang.org/x/image/bmp"

	"github.com/misskey-lambda/media-proxy/shared/testmedia"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

// The expected statuses and mask values below come from an oracle: the
// reference proxy's badge steps run with sharp 0.35.5 (on libvips 8.18.7,
// the build this project links) on these same generated inputs. The
// entropies it printed are quoted. BMP is not one of sharp's formats: the
// reference decodes it to pixels first, so the rule applies to the same
// pixels as the PNG or GIF they were copied from.

var (
	white      = color.NRGBA{255, 255, 255, 255}
	clearBlack = color.NRGBA{}
	clearWhite = color.NRGBA{255, 255, 255, 0}
)

// lineArt is the first frame of testmedia.GIFLineArt, as NRGBA.
func lineArt(t *testing.T) *image.NRGBA {
	t.Helper()
	g, err := gif.DecodeAll(bytes.NewReader(testmedia.GIFLineArt(370, 285, 4)))
	if err != nil {
		t.Fatal(err)
	}
	img := image.NewNRGBA(g.Image[0].Rect)
	draw.Draw(img, img.Rect, g.Image[0], image.Point{}, draw.Src)
	return img
}

// lineArtSVG draws the same axis and tick as GIFLineArt's first frame.
const lineArtSVG = `<svg xmlns="http://www.w3.org/2000/svg" width="370" height="285">` +
	`<rect width="370" height="285" fill="#fefffc"/>` +
	`<path d="M18 213.5h334M18.5 208v11" stroke="#030501" stroke-width="1"/></svg>`

func TestBadgeShapeTest(t *testing.T) {
	tr := New(DefaultLimits, 1, nil)
	art := lineArt(t)
	var artBMP bytes.Buffer
	if err := bmp.Encode(&artBMP, art); err != nil {
		t.Fatal(err)
	}
	// The line art first, then a busy frame: only the first one counts.
	artAPNG := testmedia.APNGOf(testmedia.APNGSpec{Width: 370, Height: 285, Frames: []testmedia.APNGFrame{
		{Image: art, DelayNum: 1, DelayDen: 10},
		{Image: mustDecodePNG(t, testmedia.PNG(370, 285)), DelayNum: 1, DelayDen: 10},
	}})

	for _, tc := range []struct {
		name string
		src  []byte
		want error // nil: a badge (200); ErrNoEntropy: 404
	}{
		// 0.032 bits: nearly every pixel of the first frame is paper,
		// although the 96x96 mask has 0.86 bits, mostly from its
		// letterbox. We used to test the mask, and answered 200.
		{"line art gif", testmedia.GIFLineArt(370, 285, 4), ErrNoEntropy},
		{"line art svg", []byte(lineArtSVG), ErrNoEntropy},
		{"line art bmp", artBMP.Bytes(), ErrNoEntropy},
		{"line art apng", artAPNG, ErrNoEntropy},
		// 0 bits: alpha is not looked at, and this transparent paper
		// stores white, like the ink. We used to answer 200.
		{"white glyph, transparent white paper", testmedia.GlyphPNG(128, 128, white, clearWhite), ErrNoEntropy},
		// 7.59 bits in the colours stored under alpha 0: the reference
		// makes a badge, an empty one. We used to answer 404.
		{"transparent, colours stored", testmedia.HiddenGradientPNG(64, 64), nil},
		// 0.714 bits.
		{"white glyph, transparent black paper", testmedia.GlyphPNG(128, 128, white, clearBlack), nil},
		// 0.454 bits.
		{"grey glyph, wide", testmedia.GlyphPNG(300, 150, color.NRGBA{100, 100, 100, 255}, color.NRGBA{200, 200, 200, 255}), nil},
		// 7.16 bits.
		{"scene", testmedia.PNG(300, 200), nil},
		// 7.20 bits (its first frame).
		{"scene apng", testmedia.APNG(200, 150, 6), nil},
		// The same kind of scene, decoded in Go.
		{"scene bmp", testmedia.BMP(320, 240), nil},
		{"flat", testmedia.FlatPNG(256, 256, color.NRGBA{0x86, 0xb3, 0x00, 0xff}), ErrNoEntropy},
		{"transparent", testmedia.TransparentPNG(256, 256), ErrNoEntropy},
	} {
		out, err := apply(t, tr, tc.src, variant.Badge)
		if !errors.Is(err, tc.want) || (err != nil && tc.want == nil) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
			continue
		}
		if err == nil && (out.MIME != "image/png" || out.Width != 96 || out.Height != 96 || out.Frames != 1) {
			t.Errorf("%s: %s %dx%d, %d frames", tc.name, out.MIME, out.Width, out.Height, out.Frames)
		}
	}
}

func TestBadgeMask(t *testing.T) {
	tr := New(DefaultLimits, 1, nil)
	type point struct{ x, y, alpha int }
	for _, tc := range []struct {
		name   string
		src    []byte
		points []point
		mean   float64 // of the alpha
	}{
		{
			// Contrast first, then the stretch, over the whole square:
			// the black letterbox keeps the range wide, so the ink stays
			// grey. Normalising the picture alone, before the contrast,
			// made the ink 0 and the paper 255.
			name:   "grey glyph, wide",
			src:    testmedia.GlyphPNG(300, 150, color.NRGBA{100, 100, 100, 255}, color.NRGBA{200, 200, 200, 255}),
			points: []point{{48, 48, 79}, {10, 40, 254}, {80, 60, 254}, {48, 2, 0}, {48, 93, 0}},
			mean:   118.58,
		},
		{
			name:   "white glyph, transparent black paper",
			src:    testmedia.GlyphPNG(128, 128, white, clearBlack),
			points: []point{{48, 48, 255}, {48, 30, 255}, {2, 2, 0}, {10, 40, 0}},
			mean:   49.84,
		},
		{
			// Mean 50.2 in the reference's mask; the old order gave 45.0.
			name:   "scene",
			src:    testmedia.PNG(300, 200),
			points: []point{{48, 20, 255}, {48, 2, 0}, {80, 60, 0}},
			mean:   50.24,
		},
		{
			name:   "transparent, colours stored",
			src:    testmedia.HiddenGradientPNG(64, 64),
			points: []point{{48, 48, 0}, {2, 2, 0}},
			mean:   0,
		},
	} {
		out, err := apply(t, tr, tc.src, variant.Badge)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		img := mustDecodePNG(t, out.Data)
		var sum float64
		for y := range 96 {
			for x := range 96 {
				c := img.NRGBAAt(x, y)
				if c.R != 255 || c.G != 255 || c.B != 255 {
					t.Fatalf("%s: colour %v at %d,%d: the mask is all white, shaped by alpha", tc.name, c, x, y)
				}
				sum += float64(c.A)
			}
		}
		// Resizing before the greyscale (the reference does it after)
		// moves a few values by a few steps.
		for _, p := range tc.points {
			if a := int(img.NRGBAAt(p.x, p.y).A); a < p.alpha-3 || a > p.alpha+3 {
				t.Errorf("%s: alpha %d at %d,%d, want %d", tc.name, a, p.x, p.y, p.alpha)
			}
		}
		if mean := sum / (96 * 96); mean < tc.mean-2 || mean > tc.mean+2 {
			t.Errorf("%s: mean alpha %.2f, want %.2f", tc.name, mean, tc.mean)
		}
	}
}

func mustDecodePNG(t *testing.T, b []byte) *image.NRGBA {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	n, ok := img.(*image.NRGBA)
	if !ok {
		n = image.NewNRGBA(img.Bounds())
		draw.Draw(n, n.Rect, img, img.Bounds().Min, draw.Src)
	}
	return n
}

// The shape test reads the whole first frame, a decode of its own: the
// time limit stops it like any other.
func TestDeadlineStopsShapeTest(t *testing.T) {
	src := testmedia.FlatPNG(8000, 8000, color.NRGBA{0x20, 0x60, 0xa0, 0xff})
	full := New(DefaultLimits, 1, nil)
	if _, err := apply(t, full, testmedia.PNG(64, 64), variant.Badge); err != nil {
		t.Fatal(err) // warms libvips up, so that the timing below is the shape test's
	}
	start := time.Now()
	if _, err := apply(t, full, src, variant.Badge); !errors.Is(err, ErrNoEntropy) {
		t.Fatalf("flat: %v, want ErrNoEntropy", err)
	}
	whole := time.Since(start)
	start = time.Now()
	_, err := apply(t, New(Limits{Timeout: whole / 10}, 1, nil), src, variant.Badge)
	took := time.Since(start)
	if !errors.Is(err, ErrTooSlow) {
		t.Fatalf("with a limit of %v: %v after %v, want ErrTooSlow", whole/10, err, took)
	}
	// A shape test that ran to its end would have said ErrNoEntropy:
	// ErrTooSlow means libvips was stopped (no timing is asserted, the
	// machine may be busy).
	t.Logf("the shape test takes %v; with a limit of %v it stopped after %v", whole.Round(time.Millisecond), (whole / 10).Round(time.Millisecond), took.Round(time.Millisecond))
}
