package apng

import (
	"image"
	"image/color"
)

// compose draws src onto dst with its top-left corner at at, as blend_op
// says: SOURCE replaces the region, OVER composites src over it.
func compose(dst, src *image.NRGBA, at image.Point, blend byte) {
	n := 4 * src.Rect.Dx()
	for y := range src.Rect.Dy() {
		s := src.Pix[y*src.Stride:][:n]
		d := dst.Pix[dst.PixOffset(at.X, at.Y+y):][:n]
		if blend == blendSource {
			copy(d, s)
			continue
		}
		for i := 0; i < n; i += 4 {
			over(d[i:i+4:i+4], s[i:i+4:i+4])
		}
	}
}

// over is Porter-Duff "over" on one non-premultiplied RGBA pixel, as in
// the PNG specification's alpha compositing, with colours weighted by
// their share of the result's alpha. Integer arithmetic, rounded.
func over(d, s []byte) {
	sa, da := uint32(s[3]), uint32(d[3])
	switch {
	case sa == 0:
		return
	case sa == 255 || da == 0:
		copy(d, s)
		return
	}
	// Both weights are scaled by 255.
	ws := sa * 255
	wd := da * (255 - sa)
	sum := ws + wd
	for c := range 3 {
		d[c] = uint8((uint32(s[c])*ws + uint32(d[c])*wd + sum/2) / sum)
	}
	d[3] = uint8((sum + 127) / 255)
}

// toNRGBA returns img as non-premultiplied 8-bit RGBA with its origin at
// 0,0. image/png's common outputs have fast paths; the rest (16-bit, grey
// with alpha, ...) go through the colour model.
func toNRGBA(img image.Image) *image.NRGBA {
	if m, ok := img.(*image.NRGBA); ok && m.Rect.Min == (image.Point{}) {
		return m
	}
	b := img.Bounds()
	out := image.NewNRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	switch m := img.(type) {
	case *image.Paletted:
		// image/png grows the palette to cover every index it decodes;
		// anything else stays transparent black.
		var lut [256][4]uint8
		for i, c := range m.Palette {
			n := color.NRGBAModel.Convert(c).(color.NRGBA)
			lut[i] = [4]uint8{n.R, n.G, n.B, n.A}
		}
		for y := range b.Dy() {
			row := m.Pix[y*m.Stride:][:b.Dx()]
			o := out.Pix[y*out.Stride:]
			for x, idx := range row {
				copy(o[4*x:4*x+4], lut[idx][:])
			}
		}
	case *image.RGBA:
		for y := range b.Dy() {
			s := m.Pix[y*m.Stride:][:4*b.Dx()]
			o := out.Pix[y*out.Stride:][:4*b.Dx()]
			for i := 0; i < len(s); i += 4 {
				switch a := uint32(s[i+3]); a {
				case 0:
				case 255:
					copy(o[i:i+4], s[i:i+4])
				default: // premultiplied: a colour is at most its alpha
					for c := range 3 {
						o[i+c] = uint8(min(uint32(s[i+c])*255/a, 255))
					}
					o[i+3] = uint8(a)
				}
			}
		}
	case *image.Gray:
		for y := range b.Dy() {
			row := m.Pix[y*m.Stride:][:b.Dx()]
			o := out.Pix[y*out.Stride:]
			for x, v := range row {
				o[4*x], o[4*x+1], o[4*x+2], o[4*x+3] = v, v, v, 255
			}
		}
	default:
		for y := range b.Dy() {
			for x := range b.Dx() {
				c := color.NRGBAModel.Convert(img.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA)
				out.SetNRGBA(x, y, c)
			}
		}
	}
	return out
}
