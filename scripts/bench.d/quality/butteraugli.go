package main

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
)

// butteraugli scores a variant frame against its reference with libjxl's
// butteraugli_main (Debian: libjxl-devtools), when it is installed: a
// second, colour-aware opinion next to SSIM. SSIM on Y'CbCr can be fooled
// by trading chroma for luma (libwebp without sharp YUV scores better on
// luma and worse on chroma at fewer bytes); butteraugli weighs colour
// errors as the eye does.
type butteraugli struct {
	bin string
	dir string
}

func newButteraugli() *butteraugli {
	bin, err := exec.LookPath("butteraugli_main")
	if err != nil {
		return nil
	}
	dir, err := os.MkdirTemp("", "quality-butteraugli")
	if err != nil {
		return nil
	}
	return &butteraugli{bin: bin, dir: dir}
}

func (b *butteraugli) close() {
	if b != nil {
		os.RemoveAll(b.dir)
	}
}

var pnormRE = regexp.MustCompile(`3-norm:\s*([0-9.eE+-]+)`)

// distance returns butteraugli's maximum distance and 3-norm between two
// opaque frames (packed RGBA, w x h).
func (b *butteraugli) distance(ref, dist []byte, w, h int) (maxD, pnorm float64, err error) {
	rp, dp := filepath.Join(b.dir, "ref.png"), filepath.Join(b.dir, "dist.png")
	if err := writePNG(rp, ref, w, h); err != nil {
		return 0, 0, err
	}
	if err := writePNG(dp, dist, w, h); err != nil {
		return 0, 0, err
	}
	out, err := exec.Command(b.bin, rp, dp).Output()
	if err != nil {
		return 0, 0, fmt.Errorf("butteraugli_main: %w", err)
	}
	lines := bytes.Fields(out)
	if len(lines) == 0 {
		return 0, 0, fmt.Errorf("butteraugli_main printed nothing")
	}
	maxD, err = strconv.ParseFloat(string(lines[0]), 64)
	if err != nil {
		return 0, 0, fmt.Errorf("butteraugli_main: %q", out)
	}
	m := pnormRE.FindSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("butteraugli_main: no 3-norm in %q", out)
	}
	pnorm, err = strconv.ParseFloat(string(m[1]), 64)
	return maxD, pnorm, err
}

func writePNG(path string, pix []byte, w, h int) error {
	var buf bytes.Buffer
	img := &image.NRGBA{Pix: pix, Stride: 4 * w, Rect: image.Rect(0, 0, w, h)}
	if err := (&png.Encoder{CompressionLevel: png.NoCompression}).Encode(&buf, img); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}
