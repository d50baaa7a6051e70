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

	"github.com/misskey-lambda/media-proxy/shared/pngcolour"
)

// ICO files hold one or more images, each a PNG or a headerless BMP (DIB)
// whose height counts the colour rows and the 1-bit AND mask together.
// libvips has no safe loader for them, so they are decoded here.

type icoEntry struct {
	width, height int // 0 in the directory means 256
	size, offset  uint32
}

// decodeICO decodes the largest image of an ICO file, and its colour
// profile: a PNG entry's iCCP, cHRM or gAMA (bitmap entries have none);
// maxPixels bounds the pixels it is willing to allocate.
func decodeICO(b []byte, maxPixels int64) (image.Image, []byte, error) {
	data, w, h, err := largestICO(b)
	if err != nil {
		return nil, nil, err
	}
	if int64(w)*int64(h) > maxPixels {
		return nil, nil, ErrTooLarge
	}
	if isPNG(data) {
		img, err := png.Decode(bytes.NewReader(data))
		return img, pngcolour.Profile(data), err
	}
	img, err := decodeDIB(data, maxPixels)
	return img, nil, err
}

// largestICO finds the largest image of an ICO file and its size: from its
// PNG header, or from the directory for a bitmap entry.
func largestICO(b []byte) (data []byte, w, h int, err error) {
	if len(b) < 6 || binary.LittleEndian.Uint16(b[0:]) != 0 || binary.LittleEndian.Uint16(b[2:]) != 1 {
		return nil, 0, 0, errors.New("ico: bad header")
	}
	n := int(binary.LittleEndian.Uint16(b[4:]))
	if n == 0 || len(b) < 6+16*n {
		return nil, 0, 0, errors.New("ico: bad directory")
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
		return nil, 0, 0, errors.New("ico: entry outside the file")
	}
	data = b[best.offset:end]
	if isPNG(data) {
		cfg, err := png.DecodeConfig(bytes.NewReader(data))
		if err != nil {
			return nil, 0, 0, fmt.Errorf("ico: png entry: %w", err)
		}
		return data, cfg.Width, cfg.Height, nil
	}
	// A bitmap's own header may say more than the directory's byte does
	// (decodeDIB checks it).
	if len(data) >= 12 {
		dw, dh := int(int32(binary.LittleEndian.Uint32(data[4:]))), int(int32(binary.LittleEndian.Uint32(data[8:])))/2
		if dw > 0 && dh > 0 {
			return data, max(dw, best.width), max(dh, best.height), nil
		}
	}
	return data, best.width, best.height, nil
}

func isPNG(b []byte) bool { return bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) }

// goDecodedSize is the size of a BMP or ICO, read from its headers.
func goDecodedSize(src []byte, mime string) (w, h int64, err error) {
	if mime == "image/x-icon" {
		_, iw, ih, err := largestICO(src)
		return int64(iw), int64(ih), err
	}
	cfg, err := bmp.DecodeConfig(bytes.NewReader(src))
	return int64(cfg.Width), int64(cfg.Height), err
}

// bmpProfile is the ICC profile a BMP's BITMAPV5HEADER embeds (bV5CSType
// PROFILE_EMBEDDED), or nil. A linked profile (a file name) is never
// followed, and calibrated endpoints (LCS_CALIBRATED_RGB) are not read:
// those are taken as sRGB. libvips checks the
// profile itself, as for every other format, and leaves the pixels alone
// when it cannot use it.
func bmpProfile(b []byte) []byte {
	const fileHeader, v5Len, profileEmbedded = 14, 124, 0x4d424544 // 'MBED'
	if len(b) < fileHeader+v5Len || binary.LittleEndian.Uint32(b[fileHeader:]) < v5Len {
		return nil
	}
	v5 := b[fileHeader:]
	if binary.LittleEndian.Uint32(v5[56:]) != profileEmbedded {
		return nil
	}
	// bV5ProfileData counts from the start of the header.
	off, n := uint64(binary.LittleEndian.Uint32(v5[112:])), uint64(binary.LittleEndian.Uint32(v5[116:]))
	if n == 0 || off < v5Len || off+n > uint64(len(v5)) {
		return nil
	}
	return v5[off : off+n]
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
