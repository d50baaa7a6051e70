package transform

import (
	"context"
	"errors"
	"testing"

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
	tr := New(Limits{MaxPixels: 1_000_000, MaxFrames: 10}, 1)
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
	tr := New(DefaultLimits, 1)
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
	tr := New(DefaultLimits, 1)
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
	tr := New(DefaultLimits, 1)
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
