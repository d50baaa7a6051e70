package vips

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/color"
	"image/gif"
	"image/png"
	"testing"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/testmedia"
)

func webp(t *testing.T, im *Image) []byte {
	t.Helper()
	b, err := im.WebP(WebPOptions{Quality: 77, AlphaQuality: 95, Effort: 2})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestThumbnailKeepsAnimation(t *testing.T) {
	src := testmedia.GIF(256, 256, 12)
	im, err := Thumbnail(src, Fit{Width: 4096, Height: 128, AllPages: true, FailOn: FailOnTruncated})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	out := webp(t, im)
	if !bytes.HasPrefix(out, []byte("RIFF")) || string(out[8:12]) != "WEBP" {
		t.Fatalf("output is not WebP: % x", out[:12])
	}
	h, err := Header(out, true)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if h.Width() != 128 || h.PageHeight() != 128 || h.Pages() != 12 {
		t.Errorf("got %dx%d x %d frames, want 128x128 x 12", h.Width(), h.PageHeight(), h.Pages())
	}
	if d := h.Delays(); len(d) != 12 || d[0] != 40 {
		t.Errorf("delays = %v, want 12 frames starting at 40 ms", d)
	}
}

func TestThumbnailFirstPageOnly(t *testing.T) {
	im, err := Thumbnail(testmedia.GIF(100, 50, 5), Fit{Width: 498, Height: 422, FailOn: FailOnTruncated})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if im.Pages() != 1 || im.Width() != 100 || im.Height() != 50 {
		t.Errorf("got %dx%d x %d pages, want 100x50 x 1 (no enlargement)", im.Width(), im.Height(), im.Pages())
	}
}

func TestThumbnailRefusesTruncated(t *testing.T) {
	src := testmedia.Truncate(testmedia.JPEG(800, 600, 90), 4000)
	im, err := Thumbnail(src, Fit{Width: 4096, Height: 128, FailOn: FailOnTruncated})
	if err == nil {
		defer im.Close()
		_, err = im.WebP(WebPOptions{Quality: 77, AlphaQuality: 95, Effort: 2})
	}
	if err == nil {
		t.Fatal("a truncated JPEG converted without error")
	}
}

func TestHeaderDoesNotDecode(t *testing.T) {
	h, err := Header(testmedia.PNGBomb(65536, 65536), false)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if h.Width() != 65536 || h.Height() != 65536 {
		t.Errorf("header says %dx%d", h.Width(), h.Height())
	}
}

func TestBlockedLoader(t *testing.T) {
	// TIFF is a libvips format, but not one this proxy lets libvips load.
	tiff := []byte("II*\x00\x08\x00\x00\x00\x00\x00")
	if h, err := Header(tiff, false); err == nil {
		h.Close()
		t.Fatal("TIFF loader is not blocked")
	}
}

func TestBadge(t *testing.T) {
	im, err := Thumbnail(testmedia.PNG(300, 200), Fit{Width: 96, Height: 96, Enlarge: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	b, err := im.Badge(96, 1.75)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Width() != 96 || b.Height() != 96 || b.Bands() != 2 {
		t.Errorf("badge is %dx%d with %d bands", b.Width(), b.Height(), b.Bands())
	}
}

func TestEntropy(t *testing.T) {
	halves := image.NewNRGBA(image.Rect(0, 0, 8, 8))
	for i := range halves.Pix {
		if i%4 == 3 || i >= len(halves.Pix)/2 {
			halves.Pix[i] = 255
		}
	}
	var half bytes.Buffer
	if err := png.Encode(&half, halves); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		src      []byte
		min, max float64
	}{
		"flat":        {testmedia.FlatPNG(64, 64, color.NRGBA{0x86, 0xb3, 0x00, 0xff}), 0, 0},
		"black/white": {half.Bytes(), 1, 1},
		// Alpha is not looked at: the colours stored under it count.
		"transparent, colours stored": {testmedia.HiddenGradientPNG(64, 64), 7, 8},
		"transparent, all black":      {testmedia.TransparentPNG(64, 64), 0, 0},
		// The first frame alone: later ones add a large red bar.
		"first frame of line art": {testmedia.GIFLineArt(370, 285, 4), 0.01, 0.05},
	} {
		im, err := LoadFirst(tc.src, FailOnTruncated)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		e, err := im.Entropy()
		im.Close()
		if err != nil || e < tc.min-1e-9 || e > tc.max+1e-9 {
			t.Errorf("%s: entropy %v (%v), want %v to %v", name, e, err, tc.min, tc.max)
		}
	}
	// The whole frame at its own size, not shrunk on load.
	im, err := LoadFirst(testmedia.JPEG(1024, 768, 85), FailOnTruncated)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if im.Width() != 1024 || im.Height() != 768 {
		t.Errorf("loaded %dx%d", im.Width(), im.Height())
	}
	// Truncation shows when the pixels are read, if not before.
	if tr, err := LoadFirst(testmedia.Truncate(testmedia.PNG(64, 64), 2000), FailOnTruncated); err == nil {
		_, err = tr.Entropy()
		tr.Close()
		if err == nil {
			t.Error("the entropy of a truncated PNG")
		}
	}
}

func TestFromRGBA(t *testing.T) {
	pix := make([]byte, 4*10*20)
	im, err := FromRGBA(pix, 10, 20)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	th, err := im.Thumbnail(Fit{Width: 5, Height: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer th.Close()
	if th.Width() != 3 || th.Height() != 5 {
		t.Errorf("got %dx%d, want 3x5", th.Width(), th.Height())
	}
	if _, err := FromRGBA(pix, 100, 100); err == nil {
		t.Error("FromRGBA accepted a short buffer")
	}
}

func TestFromRGBAFramesIsAnAnimation(t *testing.T) {
	const w, ph = 16, 12
	colours := [][4]byte{{255, 0, 0, 255}, {0, 255, 0, 255}, {0, 0, 255, 128}}
	var pix []byte
	for _, c := range colours {
		for range w * ph {
			pix = append(pix, c[:]...)
		}
	}
	im, err := FromRGBAFrames(pix, w, ph, []int{50, 333, 1000}, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	h, err := Header(webp(t, im), true)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if h.Width() != w || h.PageHeight() != ph || h.Pages() != 3 || h.Loop() != 3 {
		t.Errorf("got %dx%d x %d frames, loop %d; want %dx%d x 3, loop 3", h.Width(), h.PageHeight(), h.Pages(), h.Loop(), w, ph)
	}
	if d := h.Delays(); len(d) != 3 || d[0] != 50 || d[1] != 333 || d[2] != 1000 {
		t.Errorf("delays %v, want [50 333 1000]", d)
	}
	got, err := h.RGBA()
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range colours {
		p := got[(i*ph+ph/2)*w*4+w*2:] // the middle of frame i
		for j := range 4 {
			if d := int(p[j]) - int(c[j]); d < -8 || d > 8 {
				t.Errorf("frame %d: middle pixel %v, want about %v", i, p[:4], c)
				break
			}
		}
	}
	if _, err := FromRGBAFrames(pix, w, ph, []int{1, 2, 3, 4}, 0); err == nil {
		t.Error("FromRGBAFrames accepted fewer pixels than the frames need")
	}
}

func TestRGBA(t *testing.T) {
	pix := make([]byte, 4*10*20)
	for i := range pix {
		pix[i] = byte(i * 7)
	}
	im, err := FromRGBA(pix, 10, 20)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if got, err := im.RGBA(); err != nil || !bytes.Equal(got, pix) {
		t.Errorf("RGBA of FromRGBA differs from its input (%v)", err)
	}
	th, err := im.Thumbnail(Fit{Width: 5, Height: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer th.Close()
	if got, err := th.RGBA(); err != nil || len(got) != 4*th.Width()*th.Height() {
		t.Errorf("RGBA of a thumbnail: %d bytes, %v", len(got), err)
	}
	// A badge is grey and alpha: white, with the mask as alpha.
	mask, err := th.Badge(8, 1.75)
	if err != nil {
		t.Fatal(err)
	}
	defer mask.Close()
	got, err := mask.RGBA()
	if err != nil || len(got) != 4*8*8 {
		t.Fatalf("RGBA of a badge: %d bytes, %v", len(got), err)
	}
	if !bytes.Equal(got[:3], []byte{255, 255, 255}) {
		t.Errorf("badge pixel %v, want white", got[:4])
	}
	// Opaque images get alpha 255.
	opaque, err := Thumbnail(testmedia.JPEG(16, 8, 90), Fit{Width: 16, Height: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer opaque.Close()
	if got, err := opaque.RGBA(); err != nil || len(got) != 4*16*8 || got[3] != 255 || got[len(got)-1] != 255 {
		t.Errorf("RGBA of an opaque image: %d bytes, %v", len(got), err)
	}
}

// TestKillOnStopsAComputation: an encode that would run for many seconds
// (a 16000x16000 PNG) fails soon after the context ends, because libvips
// checks the kill flag between tiles; the call returns only once libvips
// has stopped.
func TestKillOnStopsAComputation(t *testing.T) {
	pix := make([]byte, 512*512*4)
	for i := range pix {
		pix[i] = byte(i * 7)
	}
	src, err := FromRGBA(pix, 512, 512)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	big, err := src.Thumbnail(Fit{Width: 16000, Height: 16000, Enlarge: true})
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	stop := big.KillOn(ctx)
	start := time.Now()
	_, err = big.PNG()
	stop()
	took := time.Since(start)
	if err == nil {
		t.Fatalf("a 256-megapixel PNG encode finished in %v despite the kill", took)
	}
	if took > 5*time.Second {
		t.Errorf("the encode stopped %v after the context ended", took-200*time.Millisecond)
	}
	t.Logf("stopped after %v: %v", took.Round(time.Millisecond), err)
}

// transparentGIF is an animated w x h GIF whose frames mix opaque noise
// with transparent pixels, so premultiplying changes what a resize makes
// of the edges.
func transparentGIF(w, h, frames int) []byte {
	pal := color.Palette{color.NRGBA{}} // index 0: transparent
	for i := 1; i < 256; i++ {
		pal = append(pal, color.NRGBA{uint8(i * 37), uint8(i * 91), uint8(i * 13), 255})
	}
	g := &gif.GIF{Config: image.Config{ColorModel: pal, Width: w, Height: h}}
	seed := uint32(1)
	for f := range frames {
		img := image.NewPaletted(image.Rect(0, 0, w, h), pal)
		for i := range img.Pix {
			seed = seed*1664525 + 1013904223
			if (i/w+i%w+f*7)%23 > 9 {
				img.Pix[i] = uint8(1 + seed>>24%255)
			}
		}
		g.Image = append(g.Image, img)
		g.Delay = append(g.Delay, 5)
		g.Disposal = append(g.Disposal, gif.DisposalBackground)
	}
	var b bytes.Buffer
	if err := gif.EncodeAll(&b, g); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// The 8-bit RGBA path (thumbnail_rgba8 in vips.c) must give vips_thumbnail's
// pixels to the bit, page height included, for every input it takes; and
// it must take the emoji inputs it exists for.
func TestThumbnailRGBA8MatchesLibvips(t *testing.T) {
	cases := []struct {
		name string
		src  []byte
		fit  Fit
	}{
		{"png 512x512 alpha, emoji", testmedia.PNG(512, 512), Fit{Width: 4096, Height: 128}},
		{"png 300x200 alpha, odd scale", testmedia.PNG(300, 200), Fit{Width: 4096, Height: 77}},
		{"png alpha, bound by width", testmedia.PNG(640, 90), Fit{Width: 200, Height: 200}},
		{"gif 7 frames, transparency", transparentGIF(150, 110, 7), Fit{Width: 4096, Height: 64, AllPages: true}},
		// 110 / (150 / 70) is no whole number of rows: every page is
		// shrunk a little more to stay on whole rows.
		{"gif 7 frames, bound by width", transparentGIF(150, 110, 7), Fit{Width: 70, Height: 4096, AllPages: true}},
		{"gif first frame, transparency", transparentGIF(150, 110, 3), Fit{Width: 4096, Height: 64}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.fit.FailOn = FailOnTruncated
			fast, err := thumbnail(c.src, c.fit, pathFast)
			if err != nil {
				t.Fatalf("fast path: %v", err)
			}
			defer fast.Close()
			ref, err := thumbnail(c.src, c.fit, pathLibvips)
			if err != nil {
				t.Fatal(err)
			}
			defer ref.Close()
			if fast.Width() != ref.Width() || fast.Height() != ref.Height() || fast.PageHeight() != ref.PageHeight() || fast.Bands() != ref.Bands() {
				t.Fatalf("fast path %dx%d (page %d, %d bands), libvips %dx%d (page %d, %d bands)",
					fast.Width(), fast.Height(), fast.PageHeight(), fast.Bands(), ref.Width(), ref.Height(), ref.PageHeight(), ref.Bands())
			}
			a, err := fast.RGBA()
			if err != nil {
				t.Fatal(err)
			}
			b, err := ref.RGBA()
			if err != nil {
				t.Fatal(err)
			}
			if n, first := differing(a, b); n > 0 {
				t.Errorf("%d of %d bytes differ from vips_thumbnail's, the first at byte %d (%d, want %d)", n, len(a), first, a[first], b[first])
			}
		})
	}
}

func differing(a, b []byte) (n, first int) {
	first = -1
	for i := range a {
		if a[i] != b[i] {
			if first < 0 {
				first = i
			}
			n++
		}
	}
	return n, first
}

// Everything else goes to vips_thumbnail: the fast path refuses it.
func TestThumbnailRGBA8Refuses(t *testing.T) {
	for _, c := range []struct {
		name string
		src  []byte
		fit  Fit
	}{
		{"opaque png", testmedia.PNGOpaque(300, 300), Fit{Width: 4096, Height: 128}},
		{"jpeg", testmedia.JPEG(300, 300, 90), Fit{Width: 4096, Height: 128}},
		{"webp (shrink-on-load)", webpOf(t, testmedia.PNG(300, 300)), Fit{Width: 4096, Height: 128}},
		{"16-bit png", testmedia.PNG16(300, 300), Fit{Width: 4096, Height: 128}},
		{"fits already", testmedia.PNG(100, 100), Fit{Width: 4096, Height: 128}},
		{"enlarge", testmedia.PNG(300, 300), Fit{Width: 96, Height: 96, Enlarge: true}},
	} {
		c.fit.FailOn = FailOnTruncated
		im, err := thumbnail(c.src, c.fit, pathFast)
		if !errors.Is(err, errNotFast) {
			im.Close()
			t.Errorf("%s: fast path answered %v, want errNotFast", c.name, err)
		}
	}
}

func webpOf(t *testing.T, src []byte) []byte {
	t.Helper()
	im, err := Header(src, false)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	return webp(t, im)
}
