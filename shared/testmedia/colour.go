package testmedia

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
)

// Fixtures for colour management: images whose pixels are not sRGB and
// say so, in each of the ways a format can.

// PNGChunk is one chunk of a PNG file: its type and payload.
type PNGChunk struct {
	Type string
	Data []byte
}

// PNGColourChunks returns the colour chunks of a PNG (iCCP, sRGB, gAMA,
// cHRM), in file order, to give another image (an APNG) the same colour
// space.
func PNGColourChunks(png []byte) []PNGChunk {
	var out []PNGChunk
	for _, c := range pngChunks(png) {
		switch c.Type {
		case "iCCP", "sRGB", "gAMA", "cHRM":
			out = append(out, c)
		}
	}
	return out
}

// PNGWithChunks returns png with chunks inserted right after IHDR, where
// colour chunks belong.
func PNGWithChunks(png []byte, chunks ...PNGChunk) []byte {
	cs := pngChunks(png)
	var b bytes.Buffer
	b.WriteString(pngSignature)
	for i, c := range cs {
		writeChunk(&b, c.Type, c.Data)
		if i == 0 {
			for _, x := range chunks {
				writeChunk(&b, x.Type, x.Data)
			}
		}
	}
	return b.Bytes()
}

// GAMAChunk is a gAMA chunk for the encoding exponent g (1/2.2 for
// sRGB-like files, 1 for linear light).
func GAMAChunk(g float64) PNGChunk {
	return PNGChunk{"gAMA", binary.BigEndian.AppendUint32(nil, uint32(g*100000+0.5))}
}

func pngChunks(png []byte) []PNGChunk {
	if !bytes.HasPrefix(png, []byte(pngSignature)) {
		panic("testmedia: not a PNG")
	}
	var out []PNGChunk
	for p := len(pngSignature); len(png)-p >= 12; {
		n := int(binary.BigEndian.Uint32(png[p:]))
		out = append(out, PNGChunk{string(png[p+4 : p+8]), bytes.Clone(png[p+8 : p+8+n])})
		p += 12 + n
	}
	return out
}

// Patches returns a w×h opaque image of four flat, saturated quadrants
// (red, green, blue, orange): colours whose values differ most between
// colour spaces, and flat so that resizing leaves the middle of each
// quadrant alone.
func Patches(w, h int) *image.NRGBA {
	checkSize(w, h)
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	fillRect(img, image.Rect(0, 0, w/2, h/2), color.NRGBA{220, 30, 40, 255})
	fillRect(img, image.Rect(w/2, 0, w, h/2), color.NRGBA{40, 190, 60, 255})
	fillRect(img, image.Rect(0, h/2, w/2, h), color.NRGBA{30, 60, 210, 255})
	fillRect(img, image.Rect(w/2, h/2, w, h), color.NRGBA{240, 150, 20, 255})
	return img
}

// BMPWithProfile returns img as a 32-bit BMP with a BITMAPV5HEADER that
// embeds an ICC profile (bV5CSType PROFILE_EMBEDDED), the profile after
// the pixels, as Windows writes it.
func BMPWithProfile(img *image.NRGBA, profile []byte) []byte {
	w, h := img.Rect.Dx(), img.Rect.Dy()
	checkSize(w, h)
	const fileHeader, infoHeader = 14, 124
	pixels := 4 * w * h
	le := binary.LittleEndian
	var b bytes.Buffer
	b.WriteString("BM")
	b.Write(le.AppendUint32(nil, uint32(fileHeader+infoHeader+pixels+len(profile))))
	b.Write(make([]byte, 4)) // reserved
	b.Write(le.AppendUint32(nil, fileHeader+infoHeader))

	v5 := make([]byte, infoHeader)
	le.PutUint32(v5[0:], infoHeader)
	le.PutUint32(v5[4:], uint32(w))
	le.PutUint32(v5[8:], uint32(h)) // bottom-up
	le.PutUint16(v5[12:], 1)        // planes
	le.PutUint16(v5[14:], 32)       // bits per pixel
	le.PutUint32(v5[16:], 3)        // BI_BITFIELDS
	le.PutUint32(v5[20:], uint32(pixels))
	le.PutUint32(v5[40:], 0x00ff0000) // red, green, blue, alpha masks
	le.PutUint32(v5[44:], 0x0000ff00)
	le.PutUint32(v5[48:], 0x000000ff)
	le.PutUint32(v5[52:], 0xff000000)
	le.PutUint32(v5[56:], 0x4d424544)                 // 'MBED': PROFILE_EMBEDDED
	le.PutUint32(v5[108:], 4)                         // LCS_GM_IMAGES
	le.PutUint32(v5[112:], uint32(infoHeader+pixels)) // from the info header's start
	le.PutUint32(v5[116:], uint32(len(profile)))
	b.Write(v5)
	for y := h - 1; y >= 0; y-- {
		for x := range w {
			c := img.NRGBAAt(x, y)
			b.Write([]byte{c.B, c.G, c.R, c.A})
		}
	}
	b.Write(profile)
	return b.Bytes()
}

// ICOFromPNG returns an icon whose one entry is png, as it is (a PNG
// entry keeps its chunks, colour chunks included).
func ICOFromPNG(png []byte) []byte {
	ihdr := pngChunks(png)[0]
	w, h := int(binary.BigEndian.Uint32(ihdr.Data)), int(binary.BigEndian.Uint32(ihdr.Data[4:]))
	if w != h {
		panic(fmt.Sprintf("testmedia: ICO entry of %dx%d, want a square", w, h))
	}
	checkIconSize(w)
	return ico([]icoEntry{{w, png}})
}
