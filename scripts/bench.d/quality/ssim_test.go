package main

import (
	"math"
	"math/rand/v2"
	"testing"
)

func gradient(w, h int) []byte {
	pix := make([]byte, 4*w*h)
	for y := range h {
		for x := range w {
			i := 4 * (y*w + x)
			pix[i], pix[i+1], pix[i+2], pix[i+3] = uint8(x*255/w), uint8(y*255/h), uint8((x+y)%256), 255
		}
	}
	return pix
}

func TestSSIMIdenticalIsOne(t *testing.T) {
	p := toPlanes(gradient(64, 48), 64, 48)
	if s := ssimPlanes(p, p).All(); math.Abs(s-1) > 1e-12 {
		t.Fatalf("SSIM of a picture with itself = %v", s)
	}
}

func TestSSIMFallsWithNoise(t *testing.T) {
	w, h := 64, 48
	ref := gradient(w, h)
	rng := rand.New(rand.NewPCG(1, 2))
	noisy := func(amp int) float64 {
		px := append([]byte(nil), ref...)
		for i := range px {
			if i%4 == 3 {
				continue
			}
			px[i] = uint8(min(max(int(px[i])+rng.IntN(2*amp+1)-amp, 0), 255))
		}
		return ssimPlanes(toPlanes(ref, w, h), toPlanes(px, w, h)).All()
	}
	small, large := noisy(4), noisy(40)
	if !(small < 1 && large < small) {
		t.Fatalf("SSIM with small noise %v, with large noise %v: want 1 > small > large", small, large)
	}
}

func TestSSIMSeesChroma(t *testing.T) {
	w, h := 32, 32
	ref := gradient(w, h)
	px := append([]byte(nil), ref...)
	// Swap red and blue in a checkerboard: luma changes little, chroma a lot.
	for y := range h {
		for x := range w {
			if (x/2+y/2)%2 == 0 {
				i := 4 * (y*w + x)
				px[i], px[i+2] = px[i+2], px[i]
			}
		}
	}
	s := ssimPlanes(toPlanes(ref, w, h), toPlanes(px, w, h))
	if !(s.Cb < s.Y && s.Cr < s.Y) {
		t.Fatalf("chroma damage not seen: %+v", s)
	}
}

func TestFlatten(t *testing.T) {
	px := []byte{200, 100, 0, 128}
	black, white := flatten(px, 0), flatten(px, 255)
	if black[0] != 100 || black[3] != 255 || white[2] != 127 {
		t.Fatalf("over black %v, over white %v", black, white)
	}
}

func TestMatchFramesByTime(t *testing.T) {
	src := &picture{pages: 4, delays: []int{100, 100, 100, 100}}
	v := &picture{pages: 2, delays: []int{200, 200}} // frames 0=1 and 2=3 merged
	got := matchFrames(src, v)
	want := []int{0, 0, 1, 1}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("matchFrames = %v, want %v", got, want)
		}
	}
}
