package main

import (
	"image"
	"math"

	"golang.org/x/image/draw"
)

// SSIM as Wang, Bovik, Sheikh and Simoncelli define it ("Image quality
// assessment: from error visibility to structural similarity", IEEE TIP
// 2004) with the parameters of their reference implementation: an 11x11
// Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, over the
// window positions that fit inside the image ("valid"), no downsampling
// (the images here are small).
//
// Colour: the pictures are converted to Y'CbCr (BT.601, full range), SSIM
// is taken on each plane at full resolution, and the planes are weighted
// 4:1:1, as ffmpeg's ssim filter weights them for 4:2:0 video ("All").
// Chroma counts because the encoder options in question (chroma
// subsampling, sharp YUV) change only chroma; Y alone would not see them.

const (
	ssimK1     = 0.01
	ssimK2     = 0.03
	ssimL      = 255.0
	ssimRadius = 5 // 11x11 window
	ssimSigma  = 1.5
)

// Planes is a picture as three float planes.
type Planes struct {
	W, H      int
	Y, Cb, Cr []float64
}

// toPlanes converts packed, opaque RGB(A) pixels (alpha ignored) into
// Y'CbCr planes.
func toPlanes(pix []byte, w, h int) *Planes {
	p := &Planes{W: w, H: h, Y: make([]float64, w*h), Cb: make([]float64, w*h), Cr: make([]float64, w*h)}
	for i := range w * h {
		r, g, b := float64(pix[4*i]), float64(pix[4*i+1]), float64(pix[4*i+2])
		p.Y[i] = 0.299*r + 0.587*g + 0.114*b
		p.Cb[i] = 128 - 0.168736*r - 0.331264*g + 0.5*b
		p.Cr[i] = 128 + 0.5*r - 0.418688*g - 0.081312*b
	}
	return p
}

// Score is the similarity of one picture to its reference.
type Score struct {
	Y, Cb, Cr float64
}

// All is the 4:1:1 weighted SSIM.
func (s Score) All() float64 { return (4*s.Y + s.Cb + s.Cr) / 6 }

// ssimPlanes compares two pictures of the same size.
func ssimPlanes(a, b *Planes) Score {
	return Score{
		Y:  ssimPlane(a.Y, b.Y, a.W, a.H),
		Cb: ssimPlane(a.Cb, b.Cb, a.W, a.H),
		Cr: ssimPlane(a.Cr, b.Cr, a.W, a.H),
	}
}

var gaussWindow = func() []float64 {
	k := make([]float64, 2*ssimRadius+1)
	var sum float64
	for i := range k {
		d := float64(i - ssimRadius)
		k[i] = math.Exp(-d * d / (2 * ssimSigma * ssimSigma))
		sum += k[i]
	}
	for i := range k {
		k[i] /= sum
	}
	return k
}()

// blurValid filters x (w x h) with the separable Gaussian, keeping only
// the positions where the window fits: (w-10) x (h-10).
func blurValid(x []float64, w, h int) []float64 {
	n := 2*ssimRadius + 1
	ow, oh := w-n+1, h-n+1
	tmp := make([]float64, ow*h)
	for y := range h {
		row := x[y*w:]
		for i := range ow {
			var s float64
			for k, c := range gaussWindow {
				s += c * row[i+k]
			}
			tmp[y*ow+i] = s
		}
	}
	out := make([]float64, ow*oh)
	for y := range oh {
		for i := range ow {
			var s float64
			for k, c := range gaussWindow {
				s += c * tmp[(y+k)*ow+i]
			}
			out[y*ow+i] = s
		}
	}
	return out
}

// ssimPlane is the mean SSIM of two planes. Planes smaller than the
// window are compared as one window (plain global SSIM).
func ssimPlane(a, b []float64, w, h int) float64 {
	c1 := (ssimK1 * ssimL) * (ssimK1 * ssimL)
	c2 := (ssimK2 * ssimL) * (ssimK2 * ssimL)
	if w < 2*ssimRadius+1 || h < 2*ssimRadius+1 {
		var ma, mb, va, vb, cov float64
		n := float64(len(a))
		for i := range a {
			ma += a[i]
			mb += b[i]
		}
		ma, mb = ma/n, mb/n
		for i := range a {
			va += (a[i] - ma) * (a[i] - ma)
			vb += (b[i] - mb) * (b[i] - mb)
			cov += (a[i] - ma) * (b[i] - mb)
		}
		va, vb, cov = va/n, vb/n, cov/n
		return ((2*ma*mb + c1) * (2*cov + c2)) / ((ma*ma + mb*mb + c1) * (va + vb + c2))
	}
	aa := make([]float64, len(a))
	bb := make([]float64, len(a))
	ab := make([]float64, len(a))
	for i := range a {
		aa[i], bb[i], ab[i] = a[i]*a[i], b[i]*b[i], a[i]*b[i]
	}
	mu1, mu2 := blurValid(a, w, h), blurValid(b, w, h)
	s11, s22, s12 := blurValid(aa, w, h), blurValid(bb, w, h), blurValid(ab, w, h)
	var sum float64
	for i := range mu1 {
		m1, m2 := mu1[i], mu2[i]
		v1, v2, cv := s11[i]-m1*m1, s22[i]-m2*m2, s12[i]-m1*m2
		sum += ((2*m1*m2 + c1) * (2*cv + c2)) / ((m1*m1 + m2*m2 + c1) * (v1 + v2 + c2))
	}
	return sum / float64(len(mu1))
}

// flatten composites non-premultiplied RGBA over an opaque background
// colour, in 8-bit sRGB as a browser does, rounding to 8 bits.
func flatten(pix []byte, bg uint8) []byte {
	out := make([]byte, len(pix))
	for i := 0; i+3 < len(pix); i += 4 {
		a := float64(pix[i+3]) / 255
		for c := range 3 {
			v := float64(pix[i+c])*a + float64(bg)*(1-a)
			out[i+c] = uint8(math.Round(v))
		}
		out[i+3] = 255
	}
	return out
}

// resizeReference scales one frame of non-premultiplied RGBA to w x h
// with Catmull-Rom, widened to cover the source pixels each output pixel
// spans (golang.org/x/image/draw), in premultiplied alpha, and returns
// non-premultiplied RGBA again. It is a slow, careful rendering made by
// neither libvips nor sharp.
func resizeReference(pix []byte, sw, sh, w, h int) []byte {
	src := &image.NRGBA{Pix: pix, Stride: 4 * sw, Rect: image.Rect(0, 0, sw, sh)}
	if sw == w && sh == h {
		return pix
	}
	dst := image.NewNRGBA(image.Rect(0, 0, w, h))
	draw.CatmullRom.Scale(dst, dst.Rect, src, src.Rect, draw.Src, nil)
	return dst.Pix
}
