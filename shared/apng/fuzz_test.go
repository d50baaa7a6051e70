package apng_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"io"
	"runtime"
	"testing"

	"github.com/misskey-lambda/media-proxy/shared/apng"
)

// FuzzDecode feeds the decoder arbitrary files (APNG emoji and avatars come
// from any Fediverse server). It must not panic; it refuses up front with a
// FormatError or ErrTooLarge, or fails later only in a frame's pixel data;
// and what it decodes agrees with DecodeConfig and DecodeFirst. The seed
// corpus in testdata/fuzz/FuzzDecode holds small testmedia APNGs: RGBA,
// palette with tRNS, grey and 16-bit frames, sub-frames at offsets, every
// dispose and blend operation, a default image outside the animation, one
// frame, a plain PNG and a truncated file.
//
// What the decoder allocates is checked too: reading the chunks allocates
// a few kilobytes whatever the file holds (no entry per chunk or frame),
// and each frame at most a bounded multiple of the canvas.
//
// Every chunk carries a CRC, so nearly every mutation would stop at the
// first check: each input is also tried with its CRCs made right, which
// lets the fuzzer reach the chunk and pixel logic behind them.
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecode(t, b)
		if fixed := withCRCs(b); !bytes.Equal(fixed, b) {
			checkDecode(t, fixed)
		}
	})
}

// withCRCs returns a copy of b with the CRC of every whole chunk recomputed.
func withCRCs(b []byte) []byte {
	b = bytes.Clone(b)
	for p := 8; p+12 <= len(b); {
		n := int64(binary.BigEndian.Uint32(b[p:]))
		end := int64(p) + 8 + n
		if end+4 > int64(len(b)) {
			break
		}
		binary.BigEndian.PutUint32(b[end:], crc32.ChecksumIEEE(b[p+4:end]))
		p = int(end) + 4
	}
	return b
}

func checkDecode(t *testing.T, b []byte) {
	t.Helper()
	// Small limits keep each run fast; the checks are the same at any size.
	lim := apng.Limits{MaxPixels: 1 << 18, MaxFrames: 16}
	orig := bytes.Clone(b)
	var cfg apng.Config
	var cfgErr error
	allocs := allocated(func() { cfg, cfgErr = apng.DecodeConfig(b) })
	if allocs > parseAllocs {
		t.Fatalf("DecodeConfig of %d bytes allocated %d bytes", len(b), allocs)
	}
	d, err := apng.NewDecoder(b, lim)
	var fe apng.FormatError
	switch {
	case cfgErr != nil && !errors.As(cfgErr, &fe):
		t.Fatalf("DecodeConfig: %v is not a FormatError", cfgErr)
	case cfgErr != nil && err == nil:
		t.Fatalf("NewDecoder accepted what DecodeConfig refused: %v", cfgErr)
	case cfgErr != nil:
		return
	case err != nil && !errors.Is(err, apng.ErrTooLarge):
		t.Fatalf("NewDecoder: %v after DecodeConfig accepted %+v", err, cfg)
	case err != nil:
		if cfg.Frames <= lim.MaxFrames && int64(cfg.Width)*int64(cfg.Height)*int64(cfg.Frames) <= lim.MaxPixels {
			t.Fatalf("%v for %+v, within the limits", err, cfg)
		}
		return
	}
	if d.Config() != cfg {
		t.Fatalf("Config %+v, DecodeConfig %+v", d.Config(), cfg)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Frames <= 0 || cfg.Plays < 0 {
		t.Fatalf("accepted %+v", cfg)
	}
	first, firstErr := apng.DecodeFirst(b, lim)
	n := 0
	for ; ; n++ {
		var fr apng.Frame
		var err error
		canvas := uint64(cfg.Width) * uint64(cfg.Height)
		if allocs := allocated(func() { fr, err = d.Next() }); allocs > frameAllocs(canvas) {
			t.Fatalf("frame %d of a %dx%d canvas allocated %d bytes", n, cfg.Width, cfg.Height, allocs)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if n == 0 && firstErr == nil {
				t.Fatalf("DecodeFirst succeeded, frame 0 failed: %v", err)
			}
			if _, again := d.Next(); again != err {
				t.Fatalf("after %v, Next returned %v", err, again)
			}
			return
		}
		if fr.Image.Bounds() != image.Rect(0, 0, cfg.Width, cfg.Height) {
			t.Fatalf("frame %d is %v, canvas %dx%d", n, fr.Image.Bounds(), cfg.Width, cfg.Height)
		}
		if fr.Delay < 0 {
			t.Fatalf("frame %d delay %v", n, fr.Delay)
		}
		if n == 0 && (firstErr != nil || !bytes.Equal(first.Pix, fr.Image.Pix)) {
			t.Fatalf("DecodeFirst (%v) differs from frame 0", firstErr)
		}
	}
	if n != cfg.Frames {
		t.Fatalf("decoded %d frames, DecodeConfig said %d", n, cfg.Frames)
	}
	if _, err := d.Next(); err != io.EOF {
		t.Fatalf("Next after the last frame: %v", err)
	}
	if !bytes.Equal(b, orig) {
		t.Fatal("the decoder modified its input")
	}
}

// parseAllocs bounds what reading a file's chunks may allocate: the
// decoder, PLTE and tRNS, an error.
const parseAllocs = 16 << 10

// frameAllocs bounds what decoding one frame may allocate: image/png's
// image (up to 8 bytes a pixel) and rows, its conversion, the canvas and a
// saved region (4 bytes a pixel each), and the inflater's window.
func frameAllocs(canvasPixels uint64) uint64 {
	return 24*canvasPixels + 256<<10
}

// allocated is how many bytes of heap f allocated.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}
