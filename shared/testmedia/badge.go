package testmedia

import (
	"fmt"
	"image"
	"image/color"
	"image/gif"
)

// GIFLineArt returns an animated w×h GIF (frames ≥ 1) whose first frame is
// line art: a one-pixel dark axis across most of the width, with a tick at
// its start, on a flat off-white background, so that well under 1% of the
// pixels are inked. Each later frame adds a red bar above the axis, in the
// way of a diagram that builds up. Four colours, no transparency.
func GIFLineArt(w, h, frames int) []byte {
	checkSize(w, h)
	if frames < 1 {
		panic(fmt.Sprintf("testmedia: GIFLineArt needs at least one frame, got %d", frames))
	}
	const paper, ink, bar = 0, 1, 2
	pal := color.Palette{
		color.NRGBA{254, 255, 252, 255},
		color.NRGBA{3, 5, 1, 255},
		color.NRGBA{200, 30, 30, 255},
		color.NRGBA{222, 224, 221, 255},
	}
	g := &gif.GIF{Config: image.Config{ColorModel: pal, Width: w, Height: h}}
	axis, left, right := h*3/4, w/20, w-w/20
	for i := range frames {
		img := image.NewPaletted(image.Rect(0, 0, w, h), pal)
		for x := left; x < right; x++ {
			img.SetColorIndex(x, axis, ink)
		}
		for y := axis - 5; y <= axis+5; y++ {
			img.SetColorIndex(left, y, ink)
		}
		for x := left + 10; x < left+10+i*(right-left)/(2*frames); x++ {
			for y := axis - h/3; y < axis-2; y++ {
				img.SetColorIndex(x, y, bar)
			}
		}
		g.Image = append(g.Image, img)
		g.Delay = append(g.Delay, 10)
		g.Disposal = append(g.Disposal, gif.DisposalNone)
	}
	return encodeGIF(g)
}

// GlyphPNG returns a w×h PNG of a disc of colour ink, its diameter half the
// shorter side, centred on a background of colour paper. A paper with
// alpha 0 still stores its colour, as PNG does: editors differ in whether
// they keep white, black or anything else under full transparency.
func GlyphPNG(w, h int, ink, paper color.NRGBA) []byte {
	checkSize(w, h)
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	fillRect(img, img.Rect, paper)
	r := min(w, h) / 4
	fillEllipse(img, w/2, h/2, r, r, ink)
	return encodePNG(img)
}

// HiddenGradientPNG returns a w×h PNG that is fully transparent (alpha 0
// everywhere) but stores a colour gradient under that alpha.
func HiddenGradientPNG(w, h int) []byte {
	checkSize(w, h)
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			i := img.PixOffset(x, y)
			img.Pix[i] = uint8(x * 255 / max(w-1, 1))
			img.Pix[i+1] = uint8(y * 255 / max(h-1, 1))
			img.Pix[i+2] = 128
		}
	}
	return encodePNG(img)
}
