package testmedia

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/color/palette"
	"image/draw"
	"image/gif"
)

func encodeGIF(g *gif.GIF) []byte {
	var b bytes.Buffer
	must(0, gif.EncodeAll(&b, g))
	return b.Bytes()
}

// GIF returns an animated w×h GIF that loops forever. Frames show the scene
// with moving shapes, Floyd–Steinberg dithered onto the Plan 9 palette (one
// global colour table); frame i has a delay of 4+i%3 hundredths of a second.
func GIF(w, h, frames int) []byte {
	checkSize(w, h)
	if frames < 1 {
		panic(fmt.Sprintf("testmedia: GIF needs at least one frame, got %d", frames))
	}
	pal := color.Palette(palette.Plan9)
	g := &gif.GIF{
		LoopCount: 0,
		Config:    image.Config{ColorModel: pal, Width: w, Height: h},
	}
	for i := range frames {
		src := paint(w, h, style{noise: 4, frame: i})
		dst := image.NewPaletted(src.Rect, pal)
		draw.FloydSteinberg.Draw(dst, dst.Rect, src, image.Point{})
		g.Image = append(g.Image, dst)
		g.Delay = append(g.Delay, 4+i%3)
		g.Disposal = append(g.Disposal, gif.DisposalNone)
	}
	if frames == 1 {
		g.Delay[0] = 0 // a still image has no timing
	}
	return encodeGIF(g)
}

// GIFStatic returns a single-frame w×h GIF.
func GIFStatic(w, h int) []byte {
	return GIF(w, h, 1)
}

// GIFManyFrames returns a 16×16 GIF with the given number of frames (e.g.
// 5000), a frame-count bomb that stays small (about 25 bytes per frame):
// frame 0 paints the full canvas, every later frame is a 4×4 block at a
// moving position in a cycling colour, delay 2 (20 ms), no disposal.
func GIFManyFrames(frames int) []byte {
	if frames < 1 {
		panic(fmt.Sprintf("testmedia: GIFManyFrames needs at least one frame, got %d", frames))
	}
	const size, block = 16, 4
	pal := color.Palette{
		color.RGBA{0, 0, 0, 255}, color.RGBA{255, 255, 255, 255},
		color.RGBA{255, 0, 0, 255}, color.RGBA{0, 0, 255, 255},
	}
	g := &gif.GIF{
		LoopCount: 0,
		Config:    image.Config{ColorModel: pal, Width: size, Height: size},
	}
	bg := image.NewPaletted(image.Rect(0, 0, size, size), pal)
	for i := range bg.Pix {
		bg.Pix[i] = uint8(i % 2) // checkerboard-ish stripes
	}
	g.Image = append(g.Image, bg)
	g.Delay = append(g.Delay, 2)
	g.Disposal = append(g.Disposal, gif.DisposalNone)
	for i := 1; i < frames; i++ {
		cells := size / block
		x, y := (i%cells)*block, (i/cells%cells)*block
		f := image.NewPaletted(image.Rect(x, y, x+block, y+block), pal)
		for j := range f.Pix {
			f.Pix[j] = uint8(i % len(pal))
		}
		g.Image = append(g.Image, f)
		g.Delay = append(g.Delay, 2)
		g.Disposal = append(g.Disposal, gif.DisposalNone)
	}
	return encodeGIF(g)
}

// GIFHTMLPolyglot returns a valid 1×1 GIF89a that also carries an HTML page
// with a script, hidden in a comment extension before the trailer: content
// sniffers see an image, a browser told it is text/html runs the script.
func GIFHTMLPolyglot() []byte {
	img := image.NewPaletted(image.Rect(0, 0, 1, 1), color.Palette{color.Black, color.White})
	var b bytes.Buffer
	must(0, gif.Encode(&b, img, nil))
	data := b.Bytes()
	if data[len(data)-1] != 0x3b {
		panic("testmedia: GIF trailer not found")
	}
	const payload = `<html><body><script>alert(document.domain)</script></body></html>`
	ext := []byte{0x21, 0xfe} // comment extension: sub-blocks of ≤255 bytes
	for p := payload; len(p) > 0; {
		n := min(len(p), 255)
		ext = append(ext, byte(n))
		ext = append(ext, p[:n]...)
		p = p[n:]
	}
	ext = append(ext, 0)
	out := append(bytes.Clone(data[:len(data)-1]), ext...)
	return append(out, 0x3b)
}
