package transform

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"

	"golang.org/x/image/bmp"
)

// ICO files hold one or more images, each a PNG or a headerless BMP (DIB)
// whose height counts the colour rows and the 1-bit AND mask together.
// libvips has no safe loader for them, so they are decoded here.

type icoEntry struct {
	width, height int // 0 in the directory means 256
	size, offset  uint32
}

// decodeICO decodes the largest image of an ICO file; maxPixels bounds the
// pixels it is willing to allocate.
func decodeICO(b []byte, maxPixels int64) (image.Image, error) {
	if len(b) < 6 || binary.LittleEndian.Uint16(b[0:]) != 0 || binary.LittleEndian.Uint16(b[2:]) != 1 {
		return nil, errors.New("ico: bad header")
	}
	n := int(binary.LittleEndian.Uint16(b[4:]))
	if n == 0 || len(b) < 6+16*n {
		return nil, errors.New("ico: bad directory")
	}
	var best icoEntry
	for i := range n {
		d := b[6+16*i:]
		e := icoEntry{
			width:  int(d[0]),
			height: int(d[1]),
			size:   binary.LittleEndian.Uint32(d[8:]),
			offset: binary.LittleEndian.Uint32(d[12:]),
		}
		if e.width == 0 {
			e.width = 256
		}
		if e.height == 0 {
			e.height = 256
		}
		if e.width*e.height > best.width*best.height {
			best = e
		}
	}
	end := uint64(best.offset) + uint64(best.size)
	if best.size == 0 || end > uint64(len(b)) {
		return nil, errors.New("ico: entry outside the file")
	}
	data := b[best.offset:end]
	if bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")) {
		cfg, err := png.DecodeConfig(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("ico: png entry: %w", err)
		}
		if int64(cfg.Width)*int64(cfg.Height) > maxPixels {
			return nil, ErrTooLarge
		}
		return png.Decode(bytes.NewReader(data))
	}
	return decodeDIB(data, maxPixels)
}

// decodeDIB decodes an ICO's BMP entry. 32-bit entries carry real alpha,
// which x/image/bmp ignores for this header version, so they are read here;
// other depths go through x/image/bmp with a synthesised file header.
func decodeDIB(d []byte, maxPixels int64) (image.Image, error) {
	if len(d) < 40 {
		return nil, errors.New("ico: short bitmap header")
	}
	hdrLen := binary.LittleEndian.Uint32(d[0:])
	w := int(int32(binary.LittleEndian.Uint32(d[4:])))
	h := int(int32(binary.LittleEndian.Uint32(d[8:]))) / 2
	bpp := binary.LittleEndian.Uint16(d[14:])
	if hdrLen < 40 || uint64(hdrLen) > uint64(len(d)) || w <= 0 || h <= 0 || w > 1024 || h > 1024 {
		return nil, errors.New("ico: bad bitmap header")
	}
	if int64(w)*int64(h) > maxPixels {
		return nil, ErrTooLarge
	}
	if bpp == 32 {
		stride := w * 4
		pix := d[hdrLen:]
		if len(pix) < stride*h {
			return nil, errors.New("ico: short bitmap")
		}
		img := image.NewNRGBA(image.Rect(0, 0, w, h))
		for y := range h {
			row := pix[(h-1-y)*stride:]
			for x := range w {
				p := row[x*4:]
				img.SetNRGBA(x, y, color.NRGBA{R: p[2], G: p[1], B: p[0], A: p[3]})
			}
		}
		return img, nil
	}
	// Rewrite the height to the colour rows only and prepend a file header.
	dib := append([]byte(nil), d...)
	binary.LittleEndian.PutUint32(dib[8:], uint32(h))
	colours := 0
	if bpp <= 8 {
		colours = int(binary.LittleEndian.Uint32(dib[32:]))
		if colours == 0 {
			colours = 1 << bpp
		}
	}
	file := make([]byte, 14, 14+len(dib))
	file[0], file[1] = 'B', 'M'
	binary.LittleEndian.PutUint32(file[2:], uint32(14+len(dib)))
	binary.LittleEndian.PutUint32(file[10:], uint32(14+int(hdrLen)+4*colours))
	img, err := bmp.Decode(bytes.NewReader(append(file, dib...)))
	if err != nil {
		return nil, fmt.Errorf("ico: bitmap entry: %w", err)
	}
	return img, nil
}
