package testmedia

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"math"
)

// photoNoise is the noise amplitude of "photo-like" JPEG content; it stands
// in for sensor noise and texture, which dominate real JPEG sizes.
const photoNoise = 10

func encodeJPEG(img image.Image, quality int) []byte {
	var b bytes.Buffer
	must(0, jpeg.Encode(&b, img, &jpeg.Options{Quality: quality}))
	return b.Bytes()
}

// JPEG returns an opaque w×h baseline JPEG with photo-like content (4:2:0,
// as image/jpeg writes).
func JPEG(w, h, quality int) []byte {
	return encodeJPEG(opaqueRGBA(paint(w, h, style{noise: photoNoise})), quality)
}

// JPEGWithOrientation returns a w×h JPEG whose stored pixels have a red
// block in the top-left, green in the top-right and blue in the bottom-left
// corner, with an EXIF APP1 segment (big-endian TIFF) right after SOI
// setting Orientation (tag 0x0112) to orientation. Viewers that honour EXIF
// show the red block elsewhere for orientations 2-8.
func JPEGWithOrientation(w, h, orientation int) []byte {
	return jpegWithOrientation(w, h, orientation, binary.BigEndian)
}

// JPEGWithOrientationLE is JPEGWithOrientation with a little-endian ("II")
// TIFF header, the other byte order EXIF parsers must handle.
func JPEGWithOrientationLE(w, h, orientation int) []byte {
	return jpegWithOrientation(w, h, orientation, binary.LittleEndian)
}

func jpegWithOrientation(w, h, orientation int, order binary.AppendByteOrder) []byte {
	if orientation < 0 || orientation > 0xffff {
		panic(fmt.Sprintf("testmedia: orientation %d does not fit a SHORT", orientation))
	}
	img := paint(w, h, style{noise: photoNoise})
	bw, bh := max(w/4, 1), max(h/4, 1)
	fillRect(img, image.Rect(0, 0, bw, bh), color.NRGBA{255, 0, 0, 255})
	fillRect(img, image.Rect(w-bw, 0, w, bh), color.NRGBA{0, 255, 0, 255})
	fillRect(img, image.Rect(0, h-bh, bw, h), color.NRGBA{0, 0, 255, 255})
	data := encodeJPEG(opaqueRGBA(img), 90)
	return insertAfterSOI(data, exifOrientation(uint16(orientation), order))
}

// exifOrientation builds an APP1 segment holding a TIFF header and an IFD0
// with the single entry Orientation (SHORT, count 1).
func exifOrientation(orientation uint16, order binary.AppendByteOrder) []byte {
	tiff := make([]byte, 0, 26)
	if order == binary.BigEndian {
		tiff = append(tiff, "MM"...)
	} else {
		tiff = append(tiff, "II"...)
	}
	tiff = order.AppendUint16(tiff, 42)
	tiff = order.AppendUint32(tiff, 8) // IFD0 right after the header
	tiff = order.AppendUint16(tiff, 1) // one entry
	tiff = order.AppendUint16(tiff, 0x0112)
	tiff = order.AppendUint16(tiff, 3) // SHORT
	tiff = order.AppendUint32(tiff, 1)
	tiff = order.AppendUint16(tiff, orientation) // value left-justified in the 4-byte field
	tiff = order.AppendUint16(tiff, 0)
	tiff = order.AppendUint32(tiff, 0) // no IFD1

	seg := []byte{0xff, 0xe1, 0, 0}
	seg = append(seg, "Exif\x00\x00"...)
	seg = append(seg, tiff...)
	binary.BigEndian.PutUint16(seg[2:], uint16(len(seg)-2))
	return seg
}

func insertAfterSOI(data, seg []byte) []byte {
	if len(data) < 2 || data[0] != 0xff || data[1] != 0xd8 {
		panic("testmedia: not a JPEG")
	}
	out := make([]byte, 0, len(data)+len(seg))
	out = append(out, data[:2]...)
	out = append(out, seg...)
	return append(out, data[2:]...)
}

// JPEGSize returns a 4:3 photo-like JPEG (quality 85) whose size is within
// a few percent of target bytes (always within ±10% for targets from a few
// KB up), found by scaling the dimensions with the measured bytes per pixel.
func JPEGSize(target int) []byte {
	if target <= 0 {
		panic(fmt.Sprintf("testmedia: invalid JPEG target size %d", target))
	}
	const quality = 85
	// Starting guess: noisy content at q85 costs roughly 0.6 bytes/pixel.
	px := float64(target) / 0.6
	var best []byte
	for range 8 {
		w := max(int(math.Round(math.Sqrt(px*4/3))), 8)
		h := max(w*3/4, 6)
		b := JPEG(w, h, quality)
		if best == nil || absDiff(len(b), target) < absDiff(len(best), target) {
			best = b
		}
		if absDiff(len(b), target)*40 <= target { // within 2.5%
			break
		}
		// Header bytes do not scale with area; ignoring them only costs an
		// extra iteration for tiny targets.
		px *= float64(target) / float64(len(b))
	}
	return best
}

func absDiff(a, b int) int {
	if a > b {
		return a - b
	}
	return b - a
}

// JPEGLarge returns a 4000×3000 photo-like JPEG at quality 92, about 3.5 MB:
// the noise keeps it from compressing like a flat synthetic image.
func JPEGLarge() []byte {
	return JPEG(4000, 3000, 92)
}

// JPEGBomb returns a small, valid 64×48 JPEG whose SOF0 frame header has been
// patched to declare w×h (e.g. 20000×14000). Header-only inspection
// (image.DecodeConfig, vips' header load) reports the declared size; a full
// decode allocates for it and then runs out of entropy-coded data. JPEG
// cannot declare more than 65535 in either dimension.
func JPEGBomb(w, h int) []byte {
	checkSize(w, h)
	if w > 0xffff || h > 0xffff {
		panic(fmt.Sprintf("testmedia: JPEG dimensions %dx%d exceed 65535", w, h))
	}
	data := JPEG(64, 48, 75)
	sof := findMarker(data, 0xc0)
	if sof < 0 {
		panic("testmedia: SOF0 not found")
	}
	// SOF0: FF C0, length(2), precision(1), height(2), width(2).
	binary.BigEndian.PutUint16(data[sof+5:], uint16(h))
	binary.BigEndian.PutUint16(data[sof+7:], uint16(w))
	return data
}

// findMarker returns the offset of the first marker segment of the given
// type before the scan data, or -1.
func findMarker(data []byte, marker byte) int {
	for i := 2; i+4 <= len(data); {
		if data[i] != 0xff {
			return -1
		}
		m := data[i+1]
		if m == marker {
			return i
		}
		if m == 0xda || m == 0xd9 { // entropy-coded data follows
			return -1
		}
		i += 2 + int(binary.BigEndian.Uint16(data[i+2:]))
	}
	return -1
}
