package testmedia

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"golang.org/x/image/bmp"
)

// BMP returns an opaque w×h 24-bit BMP.
func BMP(w, h int) []byte {
	var b bytes.Buffer
	must(0, bmp.Encode(&b, opaqueRGBA(paint(w, h, style{noise: pngNoise}))))
	return b.Bytes()
}

// BMPAlpha returns a w×h 32-bit BMP with an alpha gradient.
func BMPAlpha(w, h int) []byte {
	var b bytes.Buffer
	must(0, bmp.Encode(&b, paint(w, h, style{alpha: true, noise: pngNoise})))
	return b.Bytes()
}

// icoEntry is one image of an ICO directory.
type icoEntry struct {
	size int
	data []byte
}

// ico assembles an ICONDIR, its 16-byte entries and the image data.
func ico(entries []icoEntry) []byte {
	var b bytes.Buffer
	le := binary.LittleEndian
	b.Write([]byte{0, 0, 1, 0}) // reserved, type 1 = icon
	b.Write(le.AppendUint16(nil, uint16(len(entries))))
	off := 6 + 16*len(entries)
	for _, e := range entries {
		dim := byte(e.size) // 0 means 256
		if e.size >= 256 {
			dim = 0
		}
		b.Write([]byte{dim, dim, 0, 0})   // width, height, colour count, reserved
		b.Write(le.AppendUint16(nil, 1))  // planes
		b.Write(le.AppendUint16(nil, 32)) // bits per pixel
		b.Write(le.AppendUint32(nil, uint32(len(e.data))))
		b.Write(le.AppendUint32(nil, uint32(off)))
		off += len(e.data)
	}
	for _, e := range entries {
		b.Write(e.data)
	}
	return b.Bytes()
}

func checkIconSize(s int) {
	if s < 1 || s > 256 {
		panic(fmt.Sprintf("testmedia: icon size %d out of range 1..256", s))
	}
}

// ICO returns an icon with one square PNG-compressed entry per size (1..256),
// as modern favicons are stored.
func ICO(sizes ...int) []byte {
	if len(sizes) == 0 {
		panic("testmedia: ICO needs at least one size")
	}
	entries := make([]icoEntry, len(sizes))
	for i, s := range sizes {
		checkIconSize(s)
		entries[i] = icoEntry{s, PNG(s, s)}
	}
	return ico(entries)
}

// ICOBMP returns an icon with a single classic DIB entry of size×size: a
// BITMAPINFOHEADER declaring double height (XOR image + AND mask), 32-bit
// BGRA rows bottom-up, then the 1-bit AND mask, also bottom-up with rows
// padded to 32 bits. The mask marks pixels with alpha < 128 transparent,
// for readers that ignore the alpha channel.
func ICOBMP(size int) []byte {
	checkIconSize(size)
	img := paint(size, size, style{alpha: true, noise: pngNoise})
	le := binary.LittleEndian
	maskStride := (size + 31) / 32 * 4
	var d bytes.Buffer
	d.Write(le.AppendUint32(nil, 40))
	d.Write(le.AppendUint32(nil, uint32(size)))
	d.Write(le.AppendUint32(nil, uint32(2*size)))
	d.Write(le.AppendUint16(nil, 1))  // planes
	d.Write(le.AppendUint16(nil, 32)) // bpp
	d.Write(le.AppendUint32(nil, 0))  // BI_RGB
	d.Write(le.AppendUint32(nil, uint32(size*size*4+maskStride*size)))
	d.Write(make([]byte, 16)) // resolution and palette fields unused
	for y := size - 1; y >= 0; y-- {
		for x := range size {
			i := img.PixOffset(x, y)
			p := img.Pix[i : i+4]
			d.Write([]byte{p[2], p[1], p[0], p[3]})
		}
	}
	mask := make([]byte, maskStride)
	for y := size - 1; y >= 0; y-- {
		clear(mask)
		for x := range size {
			if img.Pix[img.PixOffset(x, y)+3] < 128 {
				mask[x/8] |= 0x80 >> (x % 8)
			}
		}
		d.Write(mask)
	}
	return ico([]icoEntry{{size, d.Bytes()}})
}
