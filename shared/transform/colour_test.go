package transform

import (
	"bytes"
	"image"
	"image/png"
	"math"
	"testing"

	"github.com/misskey-lambda/media-proxy/shared/pngcolour"
	"github.com/misskey-lambda/media-proxy/shared/testmedia"
	"github.com/misskey-lambda/media-proxy/shared/variant"
	"github.com/misskey-lambda/media-proxy/shared/vips"
)

// inProfile returns img's colours converted to profile ("p3", ...) by
// libvips, as a PNG that embeds the profile (iCCP), and its pixels as
// stored: the values a decoder that ignores the profile would show.
func inProfile(t *testing.T, img *image.NRGBA, profile string) (still []byte, stored *image.NRGBA) {
	t.Helper()
	im, err := vips.FromRGBA(img.Pix, img.Rect.Dx(), img.Rect.Dy())
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	still, err = im.PNGInProfile(profile)
	if err != nil {
		t.Fatal(err)
	}
	return still, mustDecodePNG(t, still)
}

// patchCentres are the middles of testmedia.Patches' four quadrants, as
// fractions of the size.
var patchCentres = [][2]float64{{0.25, 0.25}, {0.75, 0.25}, {0.25, 0.75}, {0.75, 0.75}}

func at(img *image.NRGBA, f [2]float64) [4]byte {
	return rgba(img.NRGBAAt(int(f[0]*float64(img.Rect.Dx())), int(f[1]*float64(img.Rect.Dy()))))
}

// within reports whether every channel of a and b differs by at most d.
func within(a, b [4]byte, d int) bool {
	for i := range a {
		if x := int(a[i]) - int(b[i]); x < -d || x > d {
			return false
		}
	}
	return true
}

// mustDiffer fails the test unless the stored values of some patch are
// far from the colours meant: otherwise a test of the conversion could
// not fail.
func mustDiffer(t *testing.T, stored, meant *image.NRGBA) {
	t.Helper()
	for _, c := range patchCentres {
		if !within(at(stored, c), at(meant, c), 12) {
			return
		}
	}
	t.Fatal("the fixture's stored values are the sRGB ones: it tests nothing")
}

// TestAPNGColourProfile: an APNG whose frames are stored in Display P3,
// with the iCCP chunk saying so (an animated emoji made on a wide-gamut
// screen), gives, for every kind, the pixels the same still PNG gives:
// its colours converted to sRGB, not its P3 values read as sRGB.
func TestAPNGColourProfile(t *testing.T) {
	meant := testmedia.Patches(600, 600)
	still, stored := inProfile(t, meant, "p3")
	mustDiffer(t, stored, meant)
	// A second frame with the patches the other way up (identical
	// frames would be merged by the encoder).
	meant2 := image.NewNRGBA(meant.Rect)
	for y := range 600 {
		copy(meant2.Pix[y*meant2.Stride:(y+1)*meant2.Stride], meant.Pix[(599-y)*meant.Stride:])
	}
	_, stored2 := inProfile(t, meant2, "p3")
	anim := testmedia.APNGOf(testmedia.APNGSpec{
		Width: 600, Height: 600,
		Chunks: testmedia.PNGColourChunks(still),
		Frames: []testmedia.APNGFrame{
			{Image: stored, DelayNum: 1, DelayDen: 10},
			{Image: stored2, DelayNum: 1, DelayDen: 10},
		},
	})
	tr := New(DefaultLimits, 1, nil)
	for _, k := range []variant.Kind{variant.Static, variant.Preview, variant.Emoji, variant.EmojiStatic, variant.Avatar, variant.AvatarStatic} {
		a, err := apply(t, tr, anim, k)
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		s, err := apply(t, tr, still, k)
		if err != nil {
			t.Fatalf("%s of the still: %v", k, err)
		}
		want := firstFrame(t, s.Data)
		got := frames(t, a.Data)
		if len(got) != map[bool]int{true: 2, false: 1}[k.Box().Animated] {
			t.Fatalf("%s: %d frames", k, len(got))
		}
		for i, f := range got {
			m := []*image.NRGBA{meant, meant2}[i]
			for _, c := range patchCentres {
				if g := at(f, c); !within(g, at(m, c), 6) || i == 0 && !within(g, at(want, c), 3) {
					t.Errorf("%s frame %d at %v: %v; the still gives %v, the colour meant is %v (stored as %v)", k, i, c, g, at(want, c), at(m, c), at(stored, c))
				}
			}
		}
	}
}

// TestBMPAndICOColourProfile: a BMP whose BITMAPV5HEADER embeds a Display
// P3 profile, and an ICO whose PNG entry carries one in iCCP, give the
// pixels the same still PNG gives, converted to sRGB.
func TestBMPAndICOColourProfile(t *testing.T) {
	meant := testmedia.Patches(600, 600)
	still, stored := inProfile(t, meant, "p3")
	mustDiffer(t, stored, meant)
	profile := pngcolour.Profile(still)
	if profile == nil {
		t.Fatal("no profile in the P3 still")
	}
	iconMeant := testmedia.Patches(256, 256)
	icon, _ := inProfile(t, iconMeant, "p3")

	tr := New(DefaultLimits, 1, nil)
	for _, c := range []struct {
		name       string
		src, still []byte
		meant      *image.NRGBA
		kinds      []variant.Kind
	}{
		{"bmp", testmedia.BMPWithProfile(stored, profile), still, meant, []variant.Kind{variant.Static, variant.Preview, variant.Emoji}},
		{"ico", testmedia.ICOFromPNG(icon), icon, iconMeant, []variant.Kind{variant.Preview, variant.Emoji}},
	} {
		for _, k := range c.kinds {
			out, err := apply(t, tr, c.src, k)
			if err != nil {
				t.Fatalf("%s, %s: %v", c.name, k, err)
			}
			s, err := apply(t, tr, c.still, k)
			if err != nil {
				t.Fatalf("%s, %s of the still: %v", c.name, k, err)
			}
			got, want := firstFrame(t, out.Data), firstFrame(t, s.Data)
			for _, p := range patchCentres {
				if g, w, m := at(got, p), at(want, p), at(c.meant, p); !within(g, w, 3) || !within(g, m, 6) {
					t.Errorf("%s, %s at %v: %v; the still gives %v, the colour meant is %v", c.name, k, p, g, w, m)
				}
			}
		}
	}
}

// TestPNGGamma: a gAMA chunk without iCCP or sRGB is honoured, in stills
// and APNG alike (libvips reads neither gAMA nor cHRM): pixels stored in
// linear light (gAMA 1.0) come out sRGB-encoded. gAMA 1/2.2, which
// writers put in sRGB files, leaves the pixels as they are.
func TestPNGGamma(t *testing.T) {
	stored := testmedia.Patches(600, 600)
	plain := testmedia.APNGOf(testmedia.APNGSpec{Width: 600, Height: 600, Frames: []testmedia.APNGFrame{{Image: stored}}})
	for _, c := range []struct {
		name  string
		gamma float64
		// encode maps a stored value to the sRGB one expected.
		encode func(v byte) byte
	}{
		{"linear", 1, func(v byte) byte {
			l := float64(v) / 255
			if l > 0.0031308 {
				l = 1.055*math.Pow(l, 1/2.4) - 0.055
			} else {
				l *= 12.92
			}
			return byte(math.Round(255 * l))
		}},
		{"1/2.2", 1 / 2.2, func(v byte) byte { return v }},
	} {
		g := testmedia.GAMAChunk(c.gamma)
		still := testmedia.PNGWithChunks(encodeNRGBA(t, stored), g)
		anim := testmedia.PNGWithChunks(plain, g)
		tr := New(DefaultLimits, 1, nil)
		for _, src := range []struct {
			name string
			b    []byte
		}{{"still", still}, {"apng", anim}} {
			out, err := apply(t, tr, src.b, variant.Preview)
			if err != nil {
				t.Fatalf("%s, %s: %v", c.name, src.name, err)
			}
			img := firstFrame(t, out.Data)
			for _, p := range patchCentres {
				s := at(stored, p)
				want := [4]byte{c.encode(s[0]), c.encode(s[1]), c.encode(s[2]), 255}
				if got := at(img, p); !within(got, want, 3) {
					t.Errorf("gAMA %s, %s at %v: %v, want %v (stored %v)", c.name, src.name, p, got, want, s)
				}
			}
		}
	}
}

func encodeNRGBA(t *testing.T, img *image.NRGBA) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
