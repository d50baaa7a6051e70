package transform

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"math"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/sniff"
	"github.com/misskey-lambda/media-proxy/shared/testmedia"
	"github.com/misskey-lambda/media-proxy/shared/variant"
	"github.com/misskey-lambda/media-proxy/shared/vips"
)

func apply(t *testing.T, tr *Transformer, src []byte, k variant.Kind) (*Output, error) {
	t.Helper()
	return tr.Apply(context.Background(), src, sniff.Detect(src), k)
}

func TestLimits(t *testing.T) {
	tr := New(Limits{MaxPixels: 1_000_000, MaxFrames: 10}, 1, nil)
	for name, tc := range map[string]struct {
		src  []byte
		kind variant.Kind
	}{
		"pixels":             {testmedia.PNG(1001, 1000), variant.Emoji},
		"frames":             {testmedia.GIF(16, 16, 11), variant.Emoji},
		"all frames counted": {testmedia.GIF(400, 400, 8), variant.Avatar},
		"bmp":                {testmedia.BMP(1200, 1000), variant.Preview},
	} {
		if _, err := apply(t, tr, tc.src, tc.kind); !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: err = %v, want ErrTooLarge", name, err)
		}
	}
	// Static decodes only the first frame, so only it counts.
	out, err := apply(t, tr, testmedia.GIF(400, 400, 8), variant.Static)
	if err != nil || out.Frames != 1 {
		t.Errorf("static of a long animation: %v", err)
	}
}

func TestNotConvertible(t *testing.T) {
	tr := New(DefaultLimits, 1, nil)
	for name, src := range map[string][]byte{"wav": testmedia.WAV(0.1), "html": testmedia.HTML(), "empty": nil} {
		if _, err := apply(t, tr, src, variant.Emoji); !errors.Is(err, ErrNotConvertible) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := apply(t, tr, testmedia.PNG(10, 10), variant.Original); !errors.Is(err, ErrNotConvertible) {
		t.Errorf("Original of a PNG is a passthrough, not a transform: %v", err)
	}
}

func TestICOAndBMPAlpha(t *testing.T) {
	tr := New(DefaultLimits, 1, nil)
	for name, src := range map[string][]byte{
		"ico png entries": testmedia.ICO(16, 48),
		"ico bitmap":      testmedia.ICOBMP(48),
		"bmp alpha":       testmedia.BMPAlpha(64, 48),
	} {
		out, err := apply(t, tr, src, variant.Emoji)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if out.MIME != "image/webp" || out.Height != 48 {
			t.Errorf("%s: %s %dx%d", name, out.MIME, out.Width, out.Height)
		}
	}
	if _, err := apply(t, tr, []byte("\x00\x00\x01\x00\x01\x00garbage"), variant.Emoji); err == nil {
		t.Error("a broken ICO converted")
	}
}

func TestCancelledWhileWaitingForASlot(t *testing.T) {
	tr := New(DefaultLimits, 1, nil)
	tr.slots <- struct{}{} // the only slot is busy
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	src := testmedia.PNG(10, 10)
	if _, err := tr.Apply(ctx, src, sniff.Detect(src), variant.Emoji); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v", err)
	}
}

func TestJPEGShrink(t *testing.T) {
	emoji := vips.Fit{Width: heightOnlyMaxWidth, Height: 128}
	preview := vips.Fit{Width: 200, Height: 200}
	for _, tt := range []struct {
		w, h, orientation int
		fit               vips.Fit
		want              int
	}{
		{4000, 3000, 1, vips.Fit{Width: heightOnlyMaxWidth, Height: 320}, 8}, // 9.4x
		{1024, 768, 1, emoji, 4},   // 6x
		{640, 480, 1, emoji, 2},    // 3.75x
		{640, 480, 6, emoji, 4},    // shown 480x640: 5x
		{200, 100, 1, emoji, 1},    // never below the box
		{1600, 400, 1, preview, 8}, // the wide side binds
	} {
		if got := jpegShrink(tt.w, tt.h, tt.orientation, tt.fit); got != tt.want {
			t.Errorf("%dx%d orientation %d in %dx%d: shrink %d, want %d", tt.w, tt.h, tt.orientation, tt.fit.Width, tt.fit.Height, got, tt.want)
		}
	}
}

// webpInfo reads an output back: size, frames, delays, loop, and the
// colour in the middle of each frame.
type webpInfo struct {
	w, h, frames, loop int
	delays             []int
	middles            [][4]byte
}

func readWebP(t *testing.T, b []byte) webpInfo {
	t.Helper()
	h, err := vips.Header(b, true)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if h.Loader() != "webpload_buffer" {
		t.Fatalf("output loaded by %s", h.Loader())
	}
	info := webpInfo{w: h.Width(), h: h.PageHeight(), frames: h.Pages(), loop: h.Loop(), delays: h.Delays()}
	pix, err := h.RGBA()
	if err != nil {
		t.Fatal(err)
	}
	for i := range info.frames {
		o := ((i*info.h+info.h/2)*info.w + info.w/2) * 4
		info.middles = append(info.middles, [4]byte(pix[o:o+4]))
	}
	return info
}

func near(a, b [4]byte) bool {
	for i := range a {
		if d := int(a[i]) - int(b[i]); d < -10 || d > 10 {
			return false
		}
	}
	return true
}

func TestAPNGEmojiKeepsEveryFrame(t *testing.T) {
	tr := New(DefaultLimits, 1, nil)
	out, err := apply(t, tr, testmedia.APNG(256, 256, 60), variant.Emoji)
	if err != nil {
		t.Fatal(err)
	}
	if out.MIME != "image/webp" || out.Width != 128 || out.Height != 128 || out.Frames != 60 {
		t.Errorf("output %s %dx%d x %d frames, want image/webp 128x128 x 60", out.MIME, out.Width, out.Height, out.Frames)
	}
	info := readWebP(t, out.Data)
	if info.w != 128 || info.h != 128 || info.frames != 60 || info.loop != 0 {
		t.Errorf("WebP %dx%d x %d frames, loop %d; want 128x128 x 60, loop 0", info.w, info.h, info.frames, info.loop)
	}
	if len(info.delays) != 60 {
		t.Fatalf("%d delays", len(info.delays))
	}
	for i, d := range info.delays {
		if want := 100 * (1 + i%3); d != want { // testmedia.APNG: (1+i%3)/10 s
			t.Errorf("frame %d delay %d ms, want %d", i, d, want)
		}
	}
}

func TestAPNGTimingAndLoop(t *testing.T) {
	tr := New(DefaultLimits, 1, nil)
	out, err := apply(t, tr, testmedia.APNGOps(), variant.Avatar)
	if err != nil {
		t.Fatal(err)
	}
	info := readWebP(t, out.Data)
	// 64x48 is within the box and never enlarged. The ops fixture's last
	// delay is 0, which WebP encoders raise as browsers do; the others
	// (delay_den 0 means hundredths) are kept.
	if info.w != 64 || info.h != 48 || info.frames != 4 || info.loop != 3 {
		t.Errorf("WebP %dx%d x %d frames, loop %d; want 64x48 x 4, loop 3", info.w, info.h, info.frames, info.loop)
	}
	if d := info.delays; len(d) != 4 || d[0] != 50 || d[1] != 50 || d[2] != 70 {
		t.Errorf("delays %v, want [50 50 70 ...]", d)
	}
}

// Every kind shows the animation, not a default image that is not part
// of it, and only animated kinds keep more than one frame.
func TestAPNGKinds(t *testing.T) {
	solid := func(c color.NRGBA) *image.NRGBA {
		img := image.NewNRGBA(image.Rect(0, 0, 400, 300))
		for i := 0; i < len(img.Pix); i += 4 {
			img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = c.R, c.G, c.B, c.A
		}
		return img
	}
	src := testmedia.APNGOf(testmedia.APNGSpec{
		Width: 400, Height: 300,
		Default: solid(color.NRGBA{0, 255, 0, 255}),
		Frames: []testmedia.APNGFrame{
			{Image: solid(color.NRGBA{0, 0, 255, 255}), DelayNum: 1, DelayDen: 4},
			{Image: solid(color.NRGBA{255, 0, 0, 255}), DelayNum: 1, DelayDen: 4},
		},
	})
	blue, red := [4]byte{0, 0, 255, 255}, [4]byte{255, 0, 0, 255}
	tr := New(DefaultLimits, 1, nil)
	for _, c := range []struct {
		kind   variant.Kind
		w, h   int
		middle [][4]byte
	}{
		{variant.Emoji, 171, 128, [][4]byte{blue, red}},
		{variant.Avatar, 400, 300, [][4]byte{blue, red}}, // never enlarged
		{variant.EmojiStatic, 171, 128, [][4]byte{blue}},
		{variant.AvatarStatic, 400, 300, [][4]byte{blue}},
		{variant.Static, 400, 300, [][4]byte{blue}},
		{variant.Preview, 200, 150, [][4]byte{blue}},
	} {
		out, err := apply(t, tr, src, c.kind)
		if err != nil {
			t.Errorf("%s: %v", c.kind, err)
			continue
		}
		info := readWebP(t, out.Data)
		if info.w != c.w || info.h != c.h || info.frames != len(c.middle) || out.Frames != len(c.middle) {
			t.Errorf("%s: %dx%d x %d frames, want %dx%d x %d", c.kind, info.w, info.h, info.frames, c.w, c.h, len(c.middle))
			continue
		}
		for i, want := range c.middle {
			if !near(info.middles[i], want) {
				t.Errorf("%s: frame %d shows %v, want about %v", c.kind, i, info.middles[i], want)
			}
		}
	}
	// A solid frame has no shape to make a badge of: the test is on the
	// frame itself, not on the letterboxed mask, where the letterbox is a
	// second colour (see badge_test.go, which has APNG badges made too).
	if _, err := apply(t, tr, src, variant.Badge); !errors.Is(err, ErrNoEntropy) {
		t.Errorf("badge: %v, want ErrNoEntropy", err)
	}
}

func TestAPNGErrors(t *testing.T) {
	tr := New(Limits{MaxPixels: 1_000_000, MaxFrames: 10}, 1, nil)
	dot := image.NewNRGBA(image.Rect(0, 0, 1, 1))
	bomb := testmedia.APNGOf(testmedia.APNGSpec{ // a tiny file claiming 2^40 pixels
		Width: 1 << 20, Height: 1 << 20, Default: dot, Frames: []testmedia.APNGFrame{{Image: dot}},
	})
	for name, tc := range map[string]struct {
		src  []byte
		kind variant.Kind
		want error
	}{
		"frames":             {testmedia.APNG(16, 16, 11), variant.Emoji, ErrTooLarge},
		"all frames counted": {testmedia.APNG(400, 400, 8), variant.Avatar, ErrTooLarge},
		"pixels":             {testmedia.APNG(1001, 1000, 1), variant.Static, ErrTooLarge},
		"bomb":               {bomb, variant.Static, ErrTooLarge},
		"truncated":          {testmedia.Truncate(testmedia.APNG(64, 64, 3), 2000), variant.Emoji, ErrUndecodable},
		"truncated static":   {testmedia.Truncate(testmedia.APNG(64, 64, 3), 2000), variant.Static, ErrUndecodable},
		"bad CRC":            {badCRC(testmedia.APNG(64, 64, 3)), variant.Emoji, ErrUndecodable},
	} {
		typ := sniff.Detect(tc.src)
		if typ.MIME != "image/apng" {
			t.Fatalf("%s: sniffed as %s", name, typ.MIME)
		}
		if _, err := tr.Apply(context.Background(), tc.src, typ, tc.kind); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", name, err, tc.want)
		}
	}
	// Static decodes only the first frame, so only it counts.
	out, err := apply(t, tr, testmedia.APNG(400, 400, 8), variant.Static)
	if err != nil || out.Frames != 1 {
		t.Errorf("static of a long APNG: %v", err)
	}
}

// An acTL past the sniffed head still makes the file an APNG.
func TestAPNGWithLargeMetadata(t *testing.T) {
	b := testmedia.APNG(64, 64, 3)
	text := append([]byte("Comment\x00"), bytes.Repeat([]byte("x"), sniff.HeadSize)...)
	var c bytes.Buffer
	c.Write(binary.BigEndian.AppendUint32(nil, uint32(len(text))))
	c.WriteString("tEXt")
	c.Write(text)
	c.Write(binary.BigEndian.AppendUint32(nil, crc32.ChecksumIEEE(append([]byte("tEXt"), text...))))
	const afterIHDR = 8 + 25
	src := append(append(bytes.Clone(b[:afterIHDR]), c.Bytes()...), b[afterIHDR:]...)
	typ := sniff.Detect(src[:sniff.HeadSize])
	if typ.MIME != "image/png" {
		t.Fatalf("head sniffed as %s", typ.MIME)
	}
	out, err := New(DefaultLimits, 1, nil).Apply(context.Background(), src, typ, variant.Emoji)
	if err != nil || out.Frames != 3 {
		t.Errorf("emoji: %v, want 3 frames", err)
	}
}

// badCRC flips a bit in the last chunk before IEND.
func badCRC(b []byte) []byte {
	b = bytes.Clone(b)
	b[len(b)-20] ^= 1
	return b
}

func TestWebPDelay(t *testing.T) {
	for _, c := range []struct {
		d      time.Duration
		frames int
		want   int
	}{
		{time.Second / 3, 1, 333},
		{1500 * time.Microsecond, 1, 2},
		{65535 * time.Second, 1, maxWebPDelay},
		{65535 * time.Second, 1000, math.MaxInt32 / 1000},
	} {
		if got := webpDelay(c.d, c.frames); got != c.want {
			t.Errorf("webpDelay(%v, %d) = %d, want %d", c.d, c.frames, got, c.want)
		}
	}
}

// TestSlowSVGKilled: an SVG built to render for minutes is stopped at the
// time limit (its renderer process killed), and the slot is free again.
func TestSlowSVGKilled(t *testing.T) {
	src := testmedia.SVGSlow(20000) // minutes at 2048x2048
	tr := New(Limits{Timeout: time.Second}, 1, nil)
	start := time.Now()
	_, err := tr.Apply(context.Background(), src, sniff.Detect(src), variant.Original)
	took := time.Since(start)
	if !errors.Is(err, ErrTooSlow) {
		t.Fatalf("slow SVG: %v after %v, want ErrTooSlow", err, took)
	}
	// The slot is free: a small SVG converts at once.
	small := testmedia.SVG(40, 40)
	if _, err := tr.Apply(context.Background(), small, sniff.Detect(small), variant.Emoji); err != nil {
		t.Fatalf("after the kill: %v", err)
	}
	t.Logf("stopped after %v (limit 1 s)", took.Round(time.Millisecond))
	if took > 10*time.Second {
		t.Errorf("the deadline stopped the render only after %v", took)
	}
}

// TestDeadlineStopsLibvips: a raster transform in this process is stopped
// at the time limit through libvips' kill flag: Apply returns once libvips
// has given up, long before the work would have finished.
func TestDeadlineStopsLibvips(t *testing.T) {
	src := testmedia.FlatPNG(8000, 8000, color.NRGBA{0x20, 0x60, 0xa0, 0xff}) // no shrink-on-load for PNG: every row is decoded
	full := New(DefaultLimits, 1, nil)
	start := time.Now()
	if _, err := full.Apply(context.Background(), src, sniff.Detect(src), variant.Static); err != nil {
		t.Fatal(err)
	}
	whole := time.Since(start)
	tr := New(Limits{Timeout: whole / 10}, 1, nil)
	start = time.Now()
	_, err := tr.Apply(context.Background(), src, sniff.Detect(src), variant.Static)
	took := time.Since(start)
	if !errors.Is(err, ErrTooSlow) {
		t.Fatalf("with a limit of %v: %v after %v, want ErrTooSlow", whole/10, err, took)
	}
	// A transform that ran to its end would have succeeded: ErrTooSlow
	// means libvips was stopped (no timing is asserted, the machine may be
	// busy).
	t.Logf("the whole transform takes %v; with a limit of %v it stopped after %v", whole.Round(time.Millisecond), (whole / 10).Round(time.Millisecond), took.Round(time.Millisecond))
}

// webp encodes src (all frames) as WebP at quality q.
func webp(t *testing.T, src []byte, q int) []byte {
	t.Helper()
	im, err := vips.Thumbnail(src, vips.Fit{Width: 10000, Height: 10000, AllPages: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	b, err := im.WebP(vips.WebPOptions{Quality: q, AlphaQuality: q, Effort: 4})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestNeverBiggerThanAFittingSource: a source that already fits the box,
// with the animation the variant wants, is answered as it is when the
// re-encode would not be smaller; otherwise the variant is encoded.
func TestNeverBiggerThanAFittingSource(t *testing.T) {
	tr := New(DefaultLimits, 1, nil)
	smallAnimatedWebP := webp(t, testmedia.GIF(80, 80, 6), 20) // small, and cheap already
	tinyGIF := testmedia.GIFManyFrames(4)                      // 16x16, a few hundred bytes of flat colour
	for _, c := range []struct {
		name string
		src  []byte
		kind variant.Kind
		keep bool
		mime string
	}{
		{"small animated webp as emoji", smallAnimatedWebP, variant.Emoji, true, "image/webp"},
		{"small animated webp as avatar", smallAnimatedWebP, variant.Avatar, true, "image/webp"},
		{"small gif as emoji", tinyGIF, variant.Emoji, true, "image/gif"},
		// Not kept: a static variant of an animation, a source over the
		// box, a badge.
		{"animated webp as emoji-static", smallAnimatedWebP, variant.EmojiStatic, false, "image/webp"},
		{"gif over the box", testmedia.GIF(256, 256, 3), variant.Emoji, false, "image/webp"},
		{"badge", testmedia.PNG(64, 64), variant.Badge, false, "image/png"},
		{"exif-rotated jpeg", testmedia.JPEGWithOrientation(64, 48, 6), variant.Emoji, false, "image/webp"},
	} {
		out, err := apply(t, tr, c.src, c.kind)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		kept := bytes.Equal(out.Data, c.src)
		if kept != c.keep || out.MIME != c.mime {
			t.Errorf("%s: kept %v (%s, %d bytes from %d), want kept %v as %s", c.name, kept, out.MIME, len(out.Data), len(c.src), c.keep, c.mime)
		}
		if c.keep && out.Ext != sniff.Detect(c.src).Ext {
			t.Errorf("%s: extension %q for a %s", c.name, out.Ext, c.mime)
		}
		if !c.keep && c.kind != variant.Badge && len(out.Data) >= len(c.src) && bytes.Equal(out.Data, c.src) {
			t.Errorf("%s: the source came back unchanged", c.name)
		}
	}
}

// TestWideGamutToSRGB: a photo whose pixels are in Display P3 (as phones
// take them), with the profile embedded, comes out in sRGB: the colours
// the profile means, not its numbers read as sRGB.
func TestWideGamutToSRGB(t *testing.T) {
	want := color.NRGBA{200, 40, 30, 255}
	flat, err := vips.Thumbnail(testmedia.FlatPNG(64, 64, want), vips.Fit{Width: 64, Height: 64})
	if err != nil {
		t.Fatal(err)
	}
	src, err := flat.PNGInProfile("p3")
	flat.Close()
	if err != nil {
		t.Fatal(err)
	}
	tr := New(DefaultLimits, 1, nil)
	for _, k := range []variant.Kind{variant.Emoji, variant.Static, variant.Preview} {
		out, err := apply(t, tr, src, k)
		if err != nil {
			t.Fatal(err)
		}
		if out.MIME != "image/webp" {
			// Kept as it is, it would be shown by browsers with its
			// profile; a WebP has none.
			continue
		}
		got := readWebP(t, out.Data).middles[0]
		if !near(got, [4]byte{want.R, want.G, want.B, 255}) {
			t.Errorf("%s: middle %v, want about %v (the source's P3 values read as sRGB would be off)", k, got, want)
		}
	}
}

// TestDeadlineMeasuresTheWork: a transform that waited for its decode
// slot longer than the time limit still gets the whole limit for its
// work. Counting the queue against the image made a burst of valid
// images "too slow" (issue 19).
func TestDeadlineMeasuresTheWork(t *testing.T) {
	tr := New(Limits{Timeout: time.Second}, 1, nil)
	tr.slots <- struct{}{} // the only slot is busy
	src := testmedia.PNG(64, 64)
	done := make(chan error, 1)
	go func() {
		_, err := tr.Apply(context.Background(), src, sniff.Detect(src), variant.Emoji)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("finished without a slot: %v", err)
	case <-time.After(2 * time.Second): // twice the limit, in the queue
	}
	<-tr.slots
	if err := <-done; err != nil {
		t.Fatalf("after waiting 2 s for a slot, with a 1 s limit on the work: %v", err)
	}
}

// TestSlotWaitBounded: a transform that gets no slot within SlotWait
// fails with ErrBusy, which is not the image's failure (not ErrTooSlow).
func TestSlotWaitBounded(t *testing.T) {
	tr := New(Limits{Timeout: time.Hour, SlotWait: 100 * time.Millisecond}, 1, nil)
	tr.slots <- struct{}{}
	src := testmedia.PNG(64, 64)
	_, err := tr.Apply(context.Background(), src, sniff.Detect(src), variant.Emoji)
	if !errors.Is(err, ErrBusy) || errors.Is(err, ErrTooSlow) {
		t.Fatalf("no slot within SlotWait: %v, want ErrBusy", err)
	}
}

// TestSVGChildHonoursMaxPixels: the renderer process applies the parent's
// pixel limit, not its default one. A badge tests the shape of the SVG
// at its own size: 4 million pixels here.
func TestSVGChildHonoursMaxPixels(t *testing.T) {
	src := testmedia.SVG(2000, 2000)
	if _, err := apply(t, New(Limits{MaxPixels: 1_000_000}, 1, nil), src, variant.Badge); !errors.Is(err, ErrTooLarge) {
		t.Errorf("a 2000x2000 SVG badge under a 1 Mpx limit: %v, want ErrTooLarge", err)
	}
	if _, err := apply(t, New(DefaultLimits, 1, nil), src, variant.Badge); err != nil {
		t.Errorf("the same under the default limit: %v", err)
	}
}

// TestSVGChildOutputBounded: the parent reads back at most what the plan
// accounted for; a render writing more is refused.
func TestSVGChildOutputBounded(t *testing.T) {
	tr := New(DefaultLimits, 1, nil)
	src := testmedia.SVG(400, 400)
	p, err := tr.Plan(src, sniff.Detect(src), variant.Original, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw := int64(2048 * 2048 * 4)
	if p.childOutput != childOutputLimit(raw) || p.Memory() < 2*raw+p.childOutput {
		t.Fatalf("plan: output limit %d, memory %d; want %d and at least %d", p.childOutput, p.Memory(), childOutputLimit(raw), 2*raw+p.childOutput)
	}
	if _, err := tr.Run(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	p.childOutput = 100 // less than the render writes
	if _, err := tr.Run(context.Background(), p); err == nil {
		t.Error("a render larger than its accounted output was read back")
	}
}

// TestAPNGFrameCopyAccounted: the resized frames are held twice at the
// end, as collected and as libvips' copy the animation is encoded from;
// the plan takes both.
func TestAPNGFrameCopyAccounted(t *testing.T) {
	const w, h, frames = 256, 64, 10
	src := testmedia.APNG(w, h, frames)
	p, err := New(DefaultLimits, 1, nil).Plan(src, sniff.Detect(src), variant.Emoji, nil)
	if err != nil {
		t.Fatal(err)
	}
	frame := int64(4 * w * h) // fits the emoji box as it is
	if p.Memory() < 2*frames*frame {
		t.Errorf("plan holds %d bytes for %d frames of %d bytes each, collected and copied", p.Memory(), frames, frame)
	}
}

// TestHeaderReadAccounted: the frames of a GIF are counted before libvips
// reads it (libvips keeps an entry for each while it reads the header):
// an animation over the limit is refused before the read, and the read's
// memory is asked for first; a refusal stops the plan there.
func TestHeaderReadAccounted(t *testing.T) {
	tr := New(Limits{MaxFrames: 100}, 1, nil)
	many := testmedia.GIFManyFrames(5000)
	var asked []int64
	take := func(n int64) error { asked = append(asked, n); return nil }
	if _, err := tr.Plan(many, sniff.Detect(many), variant.Emoji, take); !errors.Is(err, ErrTooLarge) || len(asked) != 0 {
		t.Errorf("emoji of 5000 frames: %v, %d takes; want ErrTooLarge before any", err, len(asked))
	}
	if _, err := tr.Plan(many, sniff.Detect(many), variant.Static, take); err != nil || len(asked) != 1 || asked[0] < 5000*headerPerFrame {
		t.Errorf("static of 5000 frames: %v, asked %v; want one take of at least %d", err, asked, 5000*headerPerFrame)
	}
	refused := errors.New("no memory")
	if _, err := tr.Plan(many, sniff.Detect(many), variant.Static, func(int64) error { return refused }); !errors.Is(err, refused) {
		t.Errorf("with the take refused: %v", err)
	}
	for _, c := range []struct {
		src  []byte
		want int
	}{
		{testmedia.GIF(16, 16, 7), 7},
		{testmedia.GIFStatic(16, 16), 1},
		{many, 5000},
		{testmedia.Truncate(testmedia.GIF(16, 16, 7), 200), 1},
		{testmedia.PNG(8, 8), 1},
		{webp(t, testmedia.GIF(16, 16, 7), 80), 7},
		{webp(t, testmedia.GIFStatic(8, 8), 80), 1},
	} {
		typ := sniff.Detect(c.src)
		if got := countFrames(c.src, typ.MIME); got != c.want {
			t.Errorf("%s: counted %d frames, want %d", typ.MIME, got, c.want)
		}
	}
}

// TestSVGChildStoppedFromOutside: a renderer ended by SIGTERM (a service
// manager stopping the proxy) fails with ErrInterrupted, which is not the
// image's failure; a renderer that crashes is.
func TestSVGChildStoppedFromOutside(t *testing.T) {
	for _, c := range []struct {
		sig  syscall.Signal
		want error
	}{
		{syscall.SIGTERM, ErrInterrupted},
		{syscall.SIGSEGV, ErrUndecodable},
	} {
		tr := New(Limits{Timeout: time.Minute}, 1, nil)
		src := testmedia.SVGSlow(20000)
		done := make(chan error, 1)
		go func() {
			_, err := tr.Apply(context.Background(), src, sniff.Detect(src), variant.Original)
			done <- err
		}()
		pid := childOf(t, os.Getpid())
		if err := syscall.Kill(pid, c.sig); err != nil {
			t.Fatal(err)
		}
		if err := <-done; !errors.Is(err, c.want) || c.want == ErrUndecodable && errors.Is(err, ErrInterrupted) {
			t.Errorf("renderer ended by %v: %v, want %v", c.sig, err, c.want)
		}
	}
}

// childOf waits for a child process of pid to appear and returns its pid.
func childOf(t *testing.T, pid int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
			if err != nil {
				continue
			}
			// pid (comm) state ppid ...: comm may hold spaces, so read
			// past its closing parenthesis.
			rest := stat[bytes.LastIndexByte(stat, ')')+2:]
			f := strings.Fields(string(rest))
			if len(f) > 1 && f[1] == strconv.Itoa(pid) {
				child, _ := strconv.Atoi(e.Name())
				return child
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no child process appeared")
	return 0
}
