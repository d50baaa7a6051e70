package proxy

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
)

// placeholderPNG draws the image the fallback flag answers failures with:
// a neutral grey tile with a lighter frame, so a broken emoji or avatar
// still takes its place in the layout.
func placeholderPNG() []byte {
	const size = 64
	img := image.NewNRGBA(image.Rect(0, 0, size, size))
	fill := color.NRGBA{R: 0x9e, G: 0xa3, B: 0xab, A: 0xff}
	frame := color.NRGBA{R: 0xd0, G: 0xd4, B: 0xda, A: 0xff}
	for y := range size {
		for x := range size {
			c := fill
			if x < 4 || y < 4 || x >= size-4 || y >= size-4 || x == y || x == size-1-y {
				c = frame
			}
			img.SetNRGBA(x, y, c)
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		panic(err) // encoding an in-memory image cannot fail
	}
	return buf.Bytes()
}
