// Command quality scores encoded variants against a careful rendering of
// the same variant, for scripts/bench's quality columns.
//
//	quality -src SOURCE [-anim] VARIANT...
//
// Each VARIANT file (WebP, or anything libvips loads) is decoded with
// libvips, every frame. Its reference is SOURCE decoded with libvips (every
// frame with -anim) and scaled to the variant's own width and frame height
// by resizeReference, never encoded. Both are composited over black and
// over white (a variant's alpha errors show against one or the other), and
// compared by SSIM (see ssim.go); a frame's score is the mean of the two
// backgrounds. Frames are matched by time (their delays), so an encoder
// that merged identical frames is still compared frame for frame.
//
// One JSON line per variant: bytes, size, frames, the mean SSIM over the
// frames (and its Y, Cb, Cr parts) and the lowest frame's.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"

	"github.com/misskey-lambda/media-proxy/shared/vips"
)

// Result is one variant's line.
type Result struct {
	File    string  `json:"file"`
	Bytes   int     `json:"bytes"`
	Width   int     `json:"width"`
	Height  int     `json:"height"` // one frame's
	Frames  int     `json:"frames"`
	SSIM    float64 `json:"ssim"`     // mean over frames, 4:1:1 Y'CbCr
	SSIMMin float64 `json:"ssim_min"` // the worst frame
	Y       float64 `json:"y"`
	Cb      float64 `json:"cb"`
	Cr      float64 `json:"cr"`
	// Butteraugli is the mean 3-norm over frames (and backgrounds), and
	// ButteraugliMax the largest distance anywhere; both absent without
	// butteraugli_main. Lower is better.
	Butteraugli    float64 `json:"butteraugli,omitempty"`
	ButteraugliMax float64 `json:"butteraugli_max,omitempty"`
}

func main() {
	src := flag.String("src", "", "the source image the variants were made from")
	anim := flag.Bool("anim", false, "the variants keep the source's animation")
	flag.StringVar(&dumpDir, "dump", "", "also write the first frame of each reference and variant, over white, as PNG into this folder")
	flag.Parse()
	if *src == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: quality -src SOURCE [-anim] VARIANT...")
		os.Exit(2)
	}
	if err := run(*src, *anim, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "quality:", err)
		os.Exit(1)
	}
}

// picture is a decoded image: every frame, packed RGBA, stacked.
type picture struct {
	pix             []byte
	w, pageH, pages int
	delays          []int // ms per frame, or nil
}

func (p *picture) frame(i int) []byte {
	n := 4 * p.w * p.pageH
	return p.pix[i*n : (i+1)*n]
}

func decode(buf []byte, allPages bool) (*picture, error) {
	im, err := vips.Header(buf, allPages)
	if err != nil {
		return nil, err
	}
	defer im.Close()
	pix, err := im.RGBA()
	if err != nil {
		return nil, err
	}
	p := &picture{pix: pix, w: im.Width(), pageH: im.PageHeight(), pages: im.Pages()}
	if d := im.Delays(); len(d) == p.pages {
		p.delays = d
	}
	return p, nil
}

func run(srcPath string, anim bool, files []string) error {
	if err := vips.Start(vips.Options{}); err != nil {
		return err
	}
	buf, err := os.ReadFile(srcPath)
	if err != nil {
		return err
	}
	src, err := decode(buf, anim)
	if err != nil {
		return fmt.Errorf("%s: %w", srcPath, err)
	}
	ba := newButteraugli()
	defer ba.close()
	refs := map[[2]int][]*[2]*Planes{} // by output size: per source frame, over black and white
	enc := json.NewEncoder(os.Stdout)
	for _, f := range files {
		out, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		v, err := decode(out, anim)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		key := [2]int{v.w, v.pageH}
		if refs[key] == nil {
			refs[key] = reference(src, v.w, v.pageH)
		}
		if dumpDir != "" {
			if err := dump(fmt.Sprintf("%s/ref-%dx%d.png", dumpDir, v.w, v.pageH), resizeReference(src.frame(0), src.w, src.pageH, v.w, v.pageH), v.w, v.pageH); err != nil {
				return err
			}
			if err := dump(fmt.Sprintf("%s/%s.png", dumpDir, filepath.Base(f)), v.frame(0), v.w, v.pageH); err != nil {
				return err
			}
		}
		r := score(refs[key], src, v)
		r.File, r.Bytes = f, len(out)
		if ba != nil {
			if err := scoreButteraugli(ba, &r, src, v); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
		}
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

// reference renders every source frame at w x h, flattened on black and
// on white.
func reference(src *picture, w, h int) []*[2]*Planes {
	out := make([]*[2]*Planes, src.pages)
	for i := range src.pages {
		px := resizeReference(src.frame(i), src.w, src.pageH, w, h)
		out[i] = &[2]*Planes{toPlanes(flatten(px, 0), w, h), toPlanes(flatten(px, 255), w, h)}
	}
	return out
}

// score compares each source frame with the variant frame shown at the
// same time.
func score(ref []*[2]*Planes, src, v *picture) Result {
	r := Result{Width: v.w, Height: v.pageH, Frames: v.pages, SSIMMin: 1}
	match := matchFrames(src, v)
	var sum Score
	var all float64
	for i, j := range match {
		px := v.frame(j)
		var s Score
		for k, bg := range []uint8{0, 255} {
			t := ssimPlanes(ref[i][k], toPlanes(flatten(px, bg), v.w, v.pageH))
			s.Y, s.Cb, s.Cr = s.Y+t.Y/2, s.Cb+t.Cb/2, s.Cr+t.Cr/2
		}
		sum.Y, sum.Cb, sum.Cr = sum.Y+s.Y, sum.Cb+s.Cb, sum.Cr+s.Cr
		all += s.All()
		r.SSIMMin = min(r.SSIMMin, s.All())
	}
	n := float64(len(match))
	r.SSIM, r.Y, r.Cb, r.Cr = all/n, sum.Y/n, sum.Cb/n, sum.Cr/n
	return r
}

// matchFrames gives, for each source frame, the variant frame on screen
// when the source frame starts. A still variant of an animation shows
// its first frame against the first.
func matchFrames(src, v *picture) []int {
	if v.pages == 1 {
		return []int{0}
	}
	m := make([]int, src.pages)
	if src.pages == v.pages || src.delays == nil || v.delays == nil {
		for i := range m {
			m[i] = min(i, v.pages-1)
		}
		return m
	}
	var ts, tv, j int
	for i := range m {
		for j+1 < v.pages && tv+v.delays[j] <= ts {
			tv += v.delays[j]
			j++
		}
		m[i] = j
		ts += src.delays[i]
	}
	return m
}

var dumpDir string

// dump writes one frame, flattened over white, as PNG.
func dump(path string, pix []byte, w, h int) error {
	img := &image.NRGBA{Pix: flatten(pix, 255), Stride: 4 * w, Rect: image.Rect(0, 0, w, h)}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return png.Encode(f, img)
}

// scoreButteraugli adds butteraugli's figures to r: every matched frame,
// over black and white when either side has any transparency.
func scoreButteraugli(ba *butteraugli, r *Result, src, v *picture) error {
	var sum float64
	var n int
	for i, j := range matchFrames(src, v) {
		ref := resizeReference(src.frame(i), src.w, src.pageH, v.w, v.pageH)
		px := v.frame(j)
		bgs := []uint8{255}
		if !opaque(ref) || !opaque(px) {
			bgs = []uint8{0, 255}
		}
		for _, bg := range bgs {
			maxD, pn, err := ba.distance(flatten(ref, bg), flatten(px, bg), v.w, v.pageH)
			if err != nil {
				return err
			}
			sum += pn
			n++
			r.ButteraugliMax = max(r.ButteraugliMax, maxD)
		}
	}
	r.Butteraugli = sum / float64(n)
	return nil
}

func opaque(pix []byte) bool {
	for i := 3; i < len(pix); i += 4 {
		if pix[i] != 255 {
			return false
		}
	}
	return true
}
