package transform

import (
	"errors"
	"image"
	"image/color"
	"testing"

	"github.com/misskey-lambda/media-proxy/shared/testmedia"
	"github.com/misskey-lambda/media-proxy/shared/variant"
	"github.com/misskey-lambda/media-proxy/shared/vips"
)

// avif encodes src as a single-image AVIF.
func avif(t *testing.T, src []byte) []byte {
	t.Helper()
	im, err := vips.Thumbnail(src, vips.Fit{Width: 10000, Height: 10000})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	b, err := im.AVIF()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// firstFrame decodes the first frame of an output (WebP or PNG).
func firstFrame(t *testing.T, b []byte) *image.NRGBA {
	t.Helper()
	return decodeFrames(t, b, false)[0]
}

// frames decodes every frame of a WebP output.
func frames(t *testing.T, b []byte) []*image.NRGBA {
	t.Helper()
	return decodeFrames(t, b, true)
}

func decodeFrames(t *testing.T, b []byte, allPages bool) []*image.NRGBA {
	t.Helper()
	h, err := vips.Header(b, allPages)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	pix, err := h.RGBA()
	if err != nil {
		t.Fatal(err)
	}
	w, ph := h.Width(), h.PageHeight()
	var out []*image.NRGBA
	for i := range h.Pages() {
		n := 4 * w * ph
		out = append(out, &image.NRGBA{Pix: pix[i*n : (i+1)*n], Stride: 4 * w, Rect: image.Rect(0, 0, w, ph)})
	}
	return out
}

// TestAVIFPrimaryItem: every flag the reference's matrix uses, on AVIFs
// whose primary item (pitm) is not their first item, gives a variant of
// the primary image: its size and its pixels. In sharp-pitm.avif (sharp's
// fixture) the primary is a 4096x800 grid of four 1024x800 tiles, items 1
// to 4; the grid fixture here has that layout at half the size, so each
// variant has the real file's size, and the first tile alone would give
// what the reference proxy answers for static, preview and the static
// emoji and avatar (498x389, 200x156, 164x128, 410x320: the top-left
// quarter of the picture). Loading "page 0", all pages, or an embedded
// thumbnail would show the first item.
func TestAVIFPrimaryItem(t *testing.T) {
	strip := avif(t, testmedia.FlatPNG(498, 97, color.NRGBA{255, 0, 0, 255}))
	photo := avif(t, testmedia.FlatPNG(498, 389, color.NRGBA{0, 0, 255, 255}))
	// Light tiles, so the badge mask shows where the picture is.
	tileColours := []color.NRGBA{{255, 200, 200, 255}, {200, 255, 200, 255}, {200, 200, 255, 255}, {255, 255, 150, 255}}
	var tiles [][]byte
	for _, c := range tileColours {
		tiles = append(tiles, avif(t, testmedia.FlatPNG(512, 400, c)))
	}

	// Sizes of each kind for a primary of 498x389 and of 2048x400.
	type size struct{ w, h int }
	photoSizes := map[variant.Kind]size{
		variant.Static: {498, 389}, variant.Preview: {200, 156},
		variant.Emoji: {164, 128}, variant.EmojiStatic: {164, 128},
		variant.Avatar: {410, 320}, variant.AvatarStatic: {410, 320},
		// No badge: a flat colour has no shape (404).
	}
	gridSizes := map[variant.Kind]size{
		variant.Static: {498, 97}, variant.Preview: {200, 39},
		variant.Emoji: {655, 128}, variant.EmojiStatic: {655, 128},
		variant.Avatar: {1638, 320}, variant.AvatarStatic: {1638, 320},
		variant.Badge: {96, 19}, // the picture's band in the 96x96 mask
	}
	blue := [4]byte{0, 0, 255, 255}
	for _, fx := range []struct {
		name  string
		src   []byte
		sizes map[variant.Kind]size
		// colours an eighth of the width in from the left and right edges
		left, right [4]byte
	}{
		{"primary second", testmedia.AVIFPrimarySecond(strip, photo, false), photoSizes, blue, blue},
		{"primary second, first its thumbnail", testmedia.AVIFPrimarySecond(strip, photo, true), photoSizes, blue, blue},
		{"grid of four tiles, primary last", testmedia.AVIFGrid(4, tiles...), gridSizes,
			[4]byte{255, 200, 200, 255}, [4]byte{255, 255, 150, 255}},
	} {
		tr := New(DefaultLimits, 1, nil)
		for _, k := range variant.Kinds {
			if k == variant.Original {
				continue // passed through as it is
			}
			want, ok := fx.sizes[k]
			out, err := apply(t, tr, fx.src, k)
			if !ok {
				if k != variant.Badge || !errors.Is(err, ErrNoEntropy) {
					t.Errorf("%s, %s: %v, want ErrNoEntropy", fx.name, k, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s, %s: %v", fx.name, k, err)
			}
			img := firstFrame(t, out.Data)
			if k == variant.Badge {
				if band := opaqueRows(img); img.Rect.Dx() != 96 || img.Rect.Dy() != 96 || band < want.h-2 || band > want.h+2 {
					t.Errorf("%s, %s: %v mask with a band of %d rows, want 96x96 with %d (the primary's shape)", fx.name, k, img.Rect, band, want.h)
				}
				continue
			}
			w, h := img.Rect.Dx(), img.Rect.Dy()
			left, right := img.NRGBAAt(w/8, h/2), img.NRGBAAt(7*w/8, h/2)
			if w != want.w || h != want.h || out.Width != w || out.Height != h ||
				!near(rgba(left), fx.left) || !near(rgba(right), fx.right) {
				t.Errorf("%s, %s: %dx%d (output says %dx%d), colours %v and %v; want the primary's %dx%d, %v and %v",
					fx.name, k, w, h, out.Width, out.Height, left, right, want.w, want.h, fx.left, fx.right)
			}
		}
	}
}

func rgba(c color.NRGBA) [4]byte { return [4]byte{c.R, c.G, c.B, c.A} }

// opaqueRows counts the rows of a badge mask where the shape shows.
func opaqueRows(img *image.NRGBA) int {
	n := 0
	for y := range img.Rect.Dy() {
		if img.NRGBAAt(img.Rect.Dx()/2, y).A > 128 {
			n++
		}
	}
	return n
}
