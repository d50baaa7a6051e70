package apng_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/png"
	"io"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/apng"
	"github.com/misskey-lambda/media-proxy/shared/testmedia"
)

var roomy = apng.Limits{MaxPixels: 1 << 30, MaxFrames: 1000}

// frames decodes every frame, copying each canvas.
func frames(t *testing.T, b []byte) ([]*image.NRGBA, []time.Duration, apng.Config) {
	t.Helper()
	d, err := apng.NewDecoder(b, roomy)
	if err != nil {
		t.Fatalf("NewDecoder: %v", err)
	}
	var imgs []*image.NRGBA
	var delays []time.Duration
	for {
		f, err := d.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("frame %d: %v", len(imgs), err)
		}
		c := *f.Image
		c.Pix = bytes.Clone(f.Image.Pix)
		imgs = append(imgs, &c)
		delays = append(delays, f.Delay)
	}
	return imgs, delays, d.Config()
}

func solid(w, h int, c color.NRGBA) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = c.R, c.G, c.B, c.A
	}
	return img
}

// noise is an image no two pixels of which are likely alike.
func noise(w, h int, seed uint64) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range img.Pix {
		img.Pix[i] = uint8(r.Uint32())
	}
	return img
}

var (
	transparent = color.NRGBA{}
	blue        = color.NRGBA{0, 0, 255, 255}
	yellow      = color.NRGBA{255, 255, 0, 255}
	green       = color.NRGBA{0, 255, 0, 255}
)

// composition exercises every dispose and blend operation on an 8x8 canvas
// whose default image (green) is not part of the animation.
func composition() []byte {
	return testmedia.APNGOf(testmedia.APNGSpec{
		Width: 8, Height: 8, Plays: 2,
		Default: solid(8, 8, green),
		Frames: []testmedia.APNGFrame{
			// 0: blue over the top-left 6x6; the rest stays transparent.
			{Image: solid(6, 6, blue), DelayNum: 5, DelayDen: 0,
				Dispose: testmedia.APNGDisposeNone, Blend: testmedia.APNGBlendSource},
			// 1: half-transparent red over 2..6, undone afterwards.
			{Image: solid(5, 5, color.NRGBA{255, 0, 0, 128}), X: 2, Y: 2, DelayNum: 1, DelayDen: 3,
				Dispose: testmedia.APNGDisposePrevious, Blend: testmedia.APNGBlendOver},
			// 2: yellow at 6..7, cleared afterwards.
			{Image: solid(2, 2, yellow), X: 6, Y: 6, DelayNum: 0, DelayDen: 0,
				Dispose: testmedia.APNGDisposeBackground, Blend: testmedia.APNGBlendSource},
			// 3: SOURCE copies a fully transparent green, alpha included.
			{Image: solid(2, 2, color.NRGBA{0, 255, 0, 0}), DelayNum: 2, DelayDen: 1},
			// 4: OVER with a transparent row (no change) and a half-white one.
			{Image: func() *image.NRGBA {
				img := solid(8, 2, color.NRGBA{255, 255, 255, 128})
				clear(img.Pix[:4*8])
				return img
			}(), Y: 4, DelayNum: 1, DelayDen: 100, Blend: testmedia.APNGBlendOver},
		},
	})
}

func TestCompose(t *testing.T) {
	imgs, delays, cfg := frames(t, composition())
	if want := (apng.Config{Width: 8, Height: 8, Frames: 5, Plays: 2}); cfg != want {
		t.Errorf("config %+v, want %+v", cfg, want)
	}
	wantDelays := []time.Duration{50 * time.Millisecond, time.Second / 3, 0, 2 * time.Second, 10 * time.Millisecond}
	if len(imgs) != 5 || !slices.Equal(delays, wantDelays) {
		t.Fatalf("%d frames, delays %v; want 5, %v", len(imgs), delays, wantDelays)
	}
	redOverBlue := color.NRGBA{128, 0, 127, 255}
	for _, c := range []struct {
		frame, x, y int
		want        color.NRGBA
		why         string
	}{
		{0, 0, 0, blue, "frame 0 drawn"},
		{0, 5, 5, blue, "frame 0 drawn"},
		{0, 7, 7, transparent, "default image not shown"},
		{0, 6, 0, transparent, "outside frame 0"},
		{1, 3, 3, redOverBlue, "OVER onto opaque"},
		{1, 5, 5, redOverBlue, "OVER onto opaque"},
		{1, 6, 6, color.NRGBA{255, 0, 0, 128}, "OVER onto transparent"},
		{1, 1, 1, blue, "outside frame 1"},
		{2, 3, 3, blue, "PREVIOUS restored"},
		{2, 6, 2, transparent, "PREVIOUS restored"},
		{2, 6, 6, yellow, "frame 2 drawn"},
		{2, 7, 7, yellow, "frame 2 drawn"},
		{3, 0, 0, color.NRGBA{0, 255, 0, 0}, "SOURCE replaces alpha too"},
		{3, 1, 1, color.NRGBA{0, 255, 0, 0}, "SOURCE replaces alpha too"},
		{3, 2, 2, blue, "outside frame 3"},
		{3, 7, 7, transparent, "BACKGROUND cleared"},
		{4, 0, 4, blue, "OVER with alpha 0 changes nothing"},
		{4, 0, 5, color.NRGBA{128, 128, 255, 255}, "OVER onto opaque"},
		{4, 6, 5, color.NRGBA{255, 255, 255, 128}, "OVER onto transparent"},
		{4, 1, 0, color.NRGBA{0, 255, 0, 0}, "kept from frame 3"},
	} {
		if got := imgs[c.frame].NRGBAAt(c.x, c.y); got != c.want {
			t.Errorf("frame %d at %d,%d: %v, want %v (%s)", c.frame, c.x, c.y, got, c.want, c.why)
		}
	}
}

func TestFirstFramePreviousActsAsBackground(t *testing.T) {
	imgs, _, _ := frames(t, testmedia.APNGOf(testmedia.APNGSpec{
		Width: 4, Height: 4,
		Frames: []testmedia.APNGFrame{
			{Image: solid(4, 4, blue), Dispose: testmedia.APNGDisposePrevious},
			{Image: solid(1, 1, yellow), X: 3, Y: 3},
		},
	}))
	if got := imgs[0].NRGBAAt(1, 1); got != blue {
		t.Errorf("frame 0 at 1,1: %v", got)
	}
	if got := imgs[1].NRGBAAt(1, 1); got != transparent {
		t.Errorf("frame 1 at 1,1: %v, want transparent (frame 0 disposed)", got)
	}
	if got := imgs[1].NRGBAAt(3, 3); got != yellow {
		t.Errorf("frame 1 at 3,3: %v", got)
	}
}

func TestDefaultImageIsFrameZero(t *testing.T) {
	const w, h = 32, 24
	srcs := []*image.NRGBA{noise(w, h, 1), noise(w, h, 2), noise(w, h, 3)}
	s := testmedia.APNGSpec{Width: w, Height: h, Plays: 7}
	for i, img := range srcs {
		s.Frames = append(s.Frames, testmedia.APNGFrame{Image: img, DelayNum: uint16(i + 1), DelayDen: 10})
	}
	b := testmedia.APNGOf(s)
	imgs, delays, cfg := frames(t, b)
	if want := (apng.Config{Width: w, Height: h, Frames: 3, Plays: 7, DefaultIsFrame: true}); cfg != want {
		t.Errorf("config %+v, want %+v", cfg, want)
	}
	for i, img := range imgs {
		if !bytes.Equal(img.Pix, srcs[i].Pix) {
			t.Errorf("frame %d differs from its source", i)
		}
		if want := time.Duration(i+1) * 100 * time.Millisecond; delays[i] != want {
			t.Errorf("frame %d delay %v, want %v", i, delays[i], want)
		}
	}
	first, err := apng.DecodeFirst(b, roomy)
	if err != nil || !bytes.Equal(first.Pix, srcs[0].Pix) {
		t.Errorf("DecodeFirst: %v, or pixels differ from frame 0", err)
	}
}

func TestDecodeFirstSkipsSeparateDefault(t *testing.T) {
	first, err := apng.DecodeFirst(composition(), roomy)
	if err != nil {
		t.Fatal(err)
	}
	if first.Bounds() != image.Rect(0, 0, 8, 8) || first.NRGBAAt(0, 0) != blue || first.NRGBAAt(7, 7) != transparent {
		t.Errorf("DecodeFirst: %v, %v at 0,0, %v at 7,7; want frame 0 of the animation", first.Bounds(), first.NRGBAAt(0, 0), first.NRGBAAt(7, 7))
	}
}

func TestOpsFixture(t *testing.T) {
	imgs, delays, cfg := frames(t, testmedia.APNGOps())
	if want := (apng.Config{Width: 64, Height: 48, Frames: 4, Plays: 3}); cfg != want {
		t.Errorf("config %+v, want %+v", cfg, want)
	}
	want := []time.Duration{50 * time.Millisecond, 50 * time.Millisecond, 70 * time.Millisecond, 0}
	if len(imgs) != 4 || !slices.Equal(delays, want) {
		t.Errorf("%d frames, delays %v; want 4, %v", len(imgs), delays, want)
	}
}

// Every colour type image/png produces composes as its colour model says.
func TestColourTypes(t *testing.T) {
	pal := color.Palette{color.NRGBA{0, 0, 0, 0}, color.NRGBA{200, 10, 20, 255}, color.NRGBA{0, 90, 255, 100}, color.NRGBA{9, 9, 9, 255}}
	paletted := func(w, h int, seed uint64) image.Image {
		img := image.NewPaletted(image.Rect(0, 0, w, h), pal)
		for i, v := range noise(w, h, seed).Pix[:len(img.Pix)] {
			img.Pix[i] = v % uint8(len(pal))
		}
		return img
	}
	opaque := func(w, h int, seed uint64) image.Image {
		img := noise(w, h, seed)
		for i := 3; i < len(img.Pix); i += 4 {
			img.Pix[i] = 255
		}
		return &image.RGBA{Pix: img.Pix, Stride: img.Stride, Rect: img.Rect}
	}
	gray := func(w, h int, seed uint64) image.Image {
		return &image.Gray{Pix: noise(w, h, seed).Pix[:w*h], Stride: w, Rect: image.Rect(0, 0, w, h)}
	}
	deep := func(w, h int, seed uint64) image.Image {
		return &image.NRGBA64{Pix: noise(2*w, h, seed).Pix, Stride: 8 * w, Rect: image.Rect(0, 0, w, h)}
	}
	for name, gen := range map[string]func(w, h int, seed uint64) image.Image{
		"palette with tRNS": paletted, "rgb": opaque, "grey": gray, "rgba 16-bit": deep,
	} {
		t.Run(name, func(t *testing.T) {
			base, sub := gen(12, 10, 1), gen(5, 4, 2)
			b := testmedia.APNGOf(testmedia.APNGSpec{Width: 12, Height: 10, Frames: []testmedia.APNGFrame{
				{Image: base},
				{Image: sub, X: 6, Y: 3},
			}})
			imgs, _, _ := frames(t, b)
			for y := range 10 {
				for x := range 12 {
					want := color.NRGBAModel.Convert(base.At(x, y))
					if p := (image.Point{x, y}).Sub(image.Pt(6, 3)); p.In(sub.Bounds()) {
						want = color.NRGBAModel.Convert(sub.At(p.X, p.Y))
					}
					if got := imgs[1].NRGBAAt(x, y); got != want {
						t.Fatalf("frame 1 at %d,%d: %v, want %v", x, y, got, want)
					}
				}
			}
		})
	}
}

func TestLimits(t *testing.T) {
	b := testmedia.APNG(20, 10, 5) // 200 pixels a frame, 1000 in all
	for _, c := range []struct {
		lim  apng.Limits
		fail bool
	}{
		{apng.Limits{MaxPixels: 1000, MaxFrames: 5}, false},
		{apng.Limits{MaxPixels: 999, MaxFrames: 5}, true},
		{apng.Limits{MaxPixels: 1000, MaxFrames: 4}, true},
	} {
		_, err := apng.NewDecoder(b, c.lim)
		if c.fail != errors.Is(err, apng.ErrTooLarge) || !c.fail && err != nil {
			t.Errorf("%+v: %v", c.lim, err)
		}
	}
	// The first frame alone counts once.
	if _, err := apng.DecodeFirst(b, apng.Limits{MaxPixels: 200, MaxFrames: 1}); err != nil {
		t.Errorf("DecodeFirst within one frame's pixels: %v", err)
	}
	if _, err := apng.DecodeFirst(b, apng.Limits{MaxPixels: 199, MaxFrames: 1}); !errors.Is(err, apng.ErrTooLarge) {
		t.Errorf("DecodeFirst over one frame's pixels: %v", err)
	}
}

// A tiny file claiming a huge canvas is refused from its headers, before
// anything of that size is allocated.
func TestBombRefusedFromHeaders(t *testing.T) {
	b := testmedia.APNGOf(testmedia.APNGSpec{
		Width: 1 << 30, Height: 1 << 30,
		Default: solid(1, 1, blue),
		Frames:  []testmedia.APNGFrame{{Image: solid(1, 1, blue)}},
	})
	cfg, err := apng.DecodeConfig(b)
	if err != nil || cfg.Width != 1<<30 || cfg.Frames != 1 {
		t.Fatalf("DecodeConfig: %+v, %v", cfg, err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = apng.NewDecoder(b, apng.Limits{MaxPixels: 100_000_000, MaxFrames: 1000})
	_, err2 := apng.DecodeFirst(b, apng.Limits{MaxPixels: 100_000_000, MaxFrames: 1000})
	runtime.ReadMemStats(&after)
	if !errors.Is(err, apng.ErrTooLarge) || !errors.Is(err2, apng.ErrTooLarge) {
		t.Errorf("errors %v, %v; want ErrTooLarge", err, err2)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 64<<10 {
		t.Errorf("allocated %d bytes refusing a bomb", n)
	}
}

type chunk struct {
	typ  string
	data []byte
}

func split(t *testing.T, b []byte) []chunk {
	t.Helper()
	var cs []chunk
	for p := b[8:]; len(p) >= 12; {
		n := binary.BigEndian.Uint32(p)
		cs = append(cs, chunk{string(p[4:8]), bytes.Clone(p[8 : 8+n])})
		p = p[12+n:]
	}
	return cs
}

func join(cs []chunk) []byte {
	b := []byte("\x89PNG\r\n\x1a\n")
	for _, c := range cs {
		b = binary.BigEndian.AppendUint32(b, uint32(len(c.data)))
		b = append(b, c.typ...)
		b = append(b, c.data...)
		b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(append([]byte(c.typ), c.data...)))
	}
	return b
}

// edit returns b with f applied to its chunks (CRCs recomputed).
func edit(t *testing.T, b []byte, f func([]chunk) []chunk) []byte {
	t.Helper()
	return join(f(split(t, b)))
}

// nth is the index of the n-th (from 0) chunk of type typ.
func nth(cs []chunk, typ string, n int) int {
	for i, c := range cs {
		if c.typ == typ {
			if n == 0 {
				return i
			}
			n--
		}
	}
	panic("no such chunk " + typ)
}

func put32(b []byte, at int, v uint32) []byte {
	binary.BigEndian.PutUint32(b[at:], v)
	return b
}

func TestMalformed(t *testing.T) {
	good := testmedia.APNG(16, 12, 3) // IHDR acTL fcTL IDAT fcTL fdAT fcTL fdAT IEND
	sep := composition()              // IHDR acTL IDAT fcTL fdAT ... IEND
	sepFull := testmedia.APNGOf(testmedia.APNGSpec{Width: 4, Height: 4, Default: solid(4, 4, green),
		Frames: []testmedia.APNGFrame{{Image: solid(4, 4, blue)}, {Image: solid(4, 4, yellow)}}})
	for _, c := range []struct {
		name, want string
		src        []byte
	}{
		{"not a PNG", "signature", []byte("GIF89a")},
		{"plain PNG", "not animated", testmedia.PNG(8, 8)},
		{"num_frames too high", "acTL says 4 frames", edit(t, good, func(cs []chunk) []chunk {
			put32(cs[1].data, 0, 4)
			return cs
		})},
		{"num_frames too low", "more fcTL chunks", edit(t, good, func(cs []chunk) []chunk {
			put32(cs[1].data, 0, 2)
			return cs
		})},
		{"num_frames zero", "acTL values", edit(t, good, func(cs []chunk) []chunk {
			put32(cs[1].data, 0, 0)
			return cs
		})},
		{"sequence gap", "sequence number 2, want 1", edit(t, good, func(cs []chunk) []chunk {
			put32(cs[nth(cs, "fcTL", 1)].data, 0, 2)
			return cs
		})},
		{"sequence repeated", "sequence number 1, want 2", edit(t, good, func(cs []chunk) []chunk {
			put32(cs[nth(cs, "fdAT", 0)].data, 0, 1)
			return cs
		})},
		{"frame outside canvas", "outside the canvas", edit(t, sep, func(cs []chunk) []chunk {
			put32(cs[nth(cs, "fcTL", 1)].data, 12, 4) // x 4 + width 5 > 8
			return cs
		})},
		{"empty frame", "outside the canvas", edit(t, sep, func(cs []chunk) []chunk {
			put32(cs[nth(cs, "fcTL", 1)].data, 4, 0)
			return cs
		})},
		{"offset overflowing 32 bits", "outside the canvas", edit(t, sep, func(cs []chunk) []chunk {
			put32(cs[nth(cs, "fcTL", 1)].data, 12, 0xffffffff)
			return cs
		})},
		{"default frame smaller than canvas", "does not cover", edit(t, good, func(cs []chunk) []chunk {
			put32(cs[nth(cs, "fcTL", 0)].data, 4, 15)
			return cs
		})},
		{"default frame offset", "does not cover", edit(t, good, func(cs []chunk) []chunk {
			put32(cs[nth(cs, "fcTL", 0)].data, 4, 15)
			put32(cs[nth(cs, "fcTL", 0)].data, 12, 1)
			return cs
		})},
		{"bad dispose op", "dispose or blend", edit(t, good, func(cs []chunk) []chunk {
			cs[nth(cs, "fcTL", 1)].data[24] = 3
			return cs
		})},
		{"bad blend op", "dispose or blend", edit(t, good, func(cs []chunk) []chunk {
			cs[nth(cs, "fcTL", 1)].data[25] = 2
			return cs
		})},
		{"fcTL length", "fcTL length", edit(t, good, func(cs []chunk) []chunk {
			i := nth(cs, "fcTL", 1)
			cs[i].data = cs[i].data[:25]
			return cs
		})},
		{"frame without data", "frame without data", edit(t, good, func(cs []chunk) []chunk {
			i := nth(cs, "fdAT", 1)
			return append(cs[:i:i], cs[i+1:]...) // the last frame loses its data
		})},
		{"acTL after IDAT", "not animated", edit(t, sep, func(cs []chunk) []chunk {
			actl := cs[1]
			cs = append(cs[:1:1], cs[2:]...)
			i := nth(cs, "IDAT", 0) + 1
			return append(cs[:i:i], append([]chunk{actl}, cs[i:]...)...)
		})},
		{"second acTL", "acTL repeated", edit(t, good, func(cs []chunk) []chunk {
			return append(cs[:2:2], append([]chunk{cs[1]}, cs[2:]...)...)
		})},
		{"fdAT before IDAT", "fdAT before IDAT", edit(t, sepFull, func(cs []chunk) []chunk {
			i := nth(cs, "IDAT", 0)
			cs[i].typ = "tEXt" // the default image becomes a comment
			return cs
		})},
		{"IDAT split by another chunk", "not consecutive", edit(t, good, func(cs []chunk) []chunk {
			i := nth(cs, "IDAT", 0)
			d := cs[i].data
			rest := []chunk{{"IDAT", d[:10]}, {"tEXt", []byte("a\x00b")}, {"IDAT", d[10:]}}
			return append(cs[:i:i], append(rest, cs[i+1:]...)...)
		})},
		{"unknown critical chunk", "unknown critical", edit(t, good, func(cs []chunk) []chunk {
			return append(cs[:2:2], append([]chunk{{"ZZZZ", nil}}, cs[2:]...)...)
		})},
		{"second IHDR", "IHDR", edit(t, good, func(cs []chunk) []chunk {
			return append(cs[:2:2], append([]chunk{cs[0]}, cs[2:]...)...)
		})},
		{"bad bit depth", "IHDR", edit(t, good, func(cs []chunk) []chunk {
			cs[0].data[8] = 4 // RGBA is 8 or 16 bits
			return cs
		})},
		{"no IEND", "no IEND", good[:len(good)-12]},
		{"bad CRC", "bad CRC", func() []byte {
			b := bytes.Clone(good)
			b[len(b)-20] ^= 1 // inside the last fdAT
			return b
		}()},
		{"chunk length past the end", "past the end", func() []byte {
			b := bytes.Clone(good)
			put32(b, 33, 1<<20) // acTL's length
			return b
		}()},
	} {
		_, err := apng.DecodeConfig(c.src)
		var fe apng.FormatError
		if !errors.As(err, &fe) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a FormatError containing %q", c.name, err, c.want)
		}
		if _, err2 := apng.NewDecoder(c.src, roomy); err2 == nil {
			t.Errorf("%s: NewDecoder accepted what DecodeConfig refused", c.name)
		}
	}

	// Unknown ancillary chunks are skipped anywhere.
	withText := edit(t, good, func(cs []chunk) []chunk {
		i := nth(cs, "fdAT", 0)
		return append(cs[:i:i], append([]chunk{{"zzTx", []byte("x")}}, cs[i:]...)...)
	})
	if imgs, _, _ := frames(t, withText); len(imgs) != 3 {
		t.Errorf("%d frames with an ancillary chunk between fcTL and fdAT", len(imgs))
	}
}

// Every prefix of a valid file fails cleanly.
func TestTruncated(t *testing.T) {
	b := composition()
	for n := range len(b) {
		if _, err := apng.DecodeConfig(b[:n]); err == nil {
			t.Fatalf("DecodeConfig accepted the first %d of %d bytes", n, len(b))
		}
	}
}

// Damaged frame data (with valid CRCs) passes the header checks and fails
// when that frame is decoded; the error then sticks.
func TestCorruptFrameData(t *testing.T) {
	b := edit(t, testmedia.APNG(16, 12, 3), func(cs []chunk) []chunk {
		i := nth(cs, "fdAT", 1)
		cs[i].data = append(cs[i].data[:4], []byte("\x78\x9cnot deflate")...)
		return cs
	})
	d, err := apng.NewDecoder(b, roomy)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := d.Next(); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	_, err = d.Next()
	if err == nil || !strings.Contains(err.Error(), "frame 2") {
		t.Fatalf("frame 2: %v", err)
	}
	if _, again := d.Next(); again != err {
		t.Errorf("after a failure Next returned %v", again)
	}

	// Frame data that decodes to more rows than the frame has.
	b = edit(t, testmedia.APNG(16, 12, 2), func(cs []chunk) []chunk {
		put32(cs[nth(cs, "fcTL", 1)].data, 8, 6) // the fdAT holds 12 rows
		return cs
	})
	d, err = apng.NewDecoder(b, roomy)
	if err != nil {
		t.Fatal(err)
	}
	d.Next()
	if _, err := d.Next(); err == nil {
		t.Error("a frame with too much data decoded")
	}
}

func TestFirstFrameMatchesPNGDecoder(t *testing.T) {
	b := testmedia.APNG(40, 30, 4)
	ref, err := png.Decode(bytes.NewReader(b)) // sees the default image
	if err != nil {
		t.Fatal(err)
	}
	first, err := apng.DecodeFirst(b, roomy)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.Pix, ref.(*image.NRGBA).Pix) {
		t.Error("frame 0 differs from image/png's decode of the default image")
	}
}

// emptyIDATs is the file of issue 19: a 1x1 animation whose one frame is
// the default image, its data followed by n empty IDAT chunks.
func emptyIDATs(t *testing.T, n int) []byte {
	t.Helper()
	cs := split(t, testmedia.APNG(1, 1, 1))
	i := nth(cs, "IDAT", 0) + 1
	head, tail := join(cs[:i]), join(cs[i:])[8:]
	empty := join([]chunk{{"IDAT", nil}})[8:]
	b := make([]byte, 0, len(head)+n*len(empty)+len(tail))
	b = append(b, head...)
	for range n {
		b = append(b, empty...)
	}
	return append(b, tail...)
}

// The reader's bookkeeping does not grow with the chunks of a file: 4.3
// million empty IDAT chunks (52 MB) are refused having allocated next to
// nothing (a slice entry and readers per chunk took 2.3 GiB), and a frame
// whose data comes in many one-byte chunks decodes for what its canvas
// costs, not per chunk.
func TestChunkBookkeepingBounded(t *testing.T) {
	b := emptyIDATs(t, 4_300_000)
	var err error
	allocs := allocated(func() { _, err = apng.DecodeConfig(b) })
	var fe apng.FormatError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "empty data chunks") {
		t.Errorf("%d MB of empty IDAT chunks: %v, want a FormatError about empty chunks", len(b)>>20, err)
	}
	t.Logf("%d MB of empty IDAT chunks: refused after allocating %d bytes", len(b)>>20, allocs)
	if allocs > 64<<10 {
		t.Errorf("refusing %d MB of empty IDAT chunks allocated %d bytes", len(b)>>20, allocs)
	}
	// A few empty chunks are harmless and skipped.
	if _, err := apng.DecodeFirst(emptyIDATs(t, 3), roomy); err != nil {
		t.Errorf("three empty IDAT chunks: %v", err)
	}

	// A 128x128 frame of noise (about 64 KB compressed) cut into
	// one-byte IDAT chunks: 850 KB of chunk headers.
	src := testmedia.APNGOf(testmedia.APNGSpec{Width: 128, Height: 128, Frames: []testmedia.APNGFrame{{Image: noise(128, 128, 1)}}})
	tiny := edit(t, src, func(cs []chunk) []chunk {
		i := nth(cs, "IDAT", 0)
		var bytewise []chunk
		for _, c := range cs[i].data {
			bytewise = append(bytewise, chunk{"IDAT", []byte{c}})
		}
		return append(cs[:i:i], append(bytewise, cs[i+1:]...)...)
	})
	want, err := apng.DecodeFirst(src, roomy)
	if err != nil {
		t.Fatal(err)
	}
	var got *image.NRGBA
	allocs = allocated(func() { got, err = apng.DecodeFirst(tiny, roomy) })
	if err != nil || !bytes.Equal(got.Pix, want.Pix) {
		t.Fatalf("frame in one-byte chunks: %v, or pixels differ", err)
	}
	t.Logf("a 128x128 frame in %d one-byte chunks (%d KB): decoded allocating %d KB", len(tiny)/13, len(tiny)>>10, allocs>>10)
	if limit := frameAllocs(128 * 128); allocs > limit {
		t.Errorf("a 128x128 frame in one-byte chunks allocated %d bytes, over %d", allocs, limit)
	}
}
