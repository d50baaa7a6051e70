package testmedia

import (
	"bytes"
	"compress/flate"
	"compress/zlib"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"image"
)

const pngSignature = "\x89PNG\r\n\x1a\n"

// writeChunk appends one PNG chunk: length, type, data and the CRC-32 of
// type+data.
func writeChunk(b *bytes.Buffer, typ string, data []byte) {
	var hdr [8]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(len(data)))
	copy(hdr[4:], typ)
	b.Write(hdr[:])
	b.Write(data)
	crc := crc32.NewIEEE()
	crc.Write(hdr[4:])
	crc.Write(data)
	b.Write(binary.BigEndian.AppendUint32(nil, crc.Sum32()))
}

func ihdr(w, h int, depth, colorType byte) []byte {
	d := make([]byte, 13)
	binary.BigEndian.PutUint32(d[0:], uint32(w))
	binary.BigEndian.PutUint32(d[4:], uint32(h))
	d[8], d[9] = depth, colorType // compression, filter, interlace stay 0
	return d
}

// zlibNRGBA compresses img as 8-bit RGBA scanlines, each with the Sub filter
// (cheap, and much closer to real encoder output than filter None).
func zlibNRGBA(img *image.NRGBA) []byte {
	w, h := img.Rect.Dx(), img.Rect.Dy()
	var b bytes.Buffer
	zw := must(zlib.NewWriterLevel(&b, zlib.DefaultCompression))
	line := make([]byte, 1+4*w)
	line[0] = 1 // Sub
	for y := range h {
		row := img.Pix[y*img.Stride : y*img.Stride+4*w]
		copy(line[1:5], row[:4])
		for i := 4; i < len(row); i++ {
			line[1+i] = row[i] - row[i-4]
		}
		must(zw.Write(line))
	}
	must(0, zw.Close())
	return b.Bytes()
}

// APNG returns an animated PNG of w×h with the given number of frames
// (8-bit RGBA, loops forever, 100-300 ms per frame). Frame 0 is the default
// image (fcTL + IDAT), so decoders without APNG support see it as a still
// PNG; frames 1.. are full-size fcTL + fdAT pairs.
func APNG(w, h, frames int) []byte {
	checkSize(w, h)
	if frames < 1 {
		panic(fmt.Sprintf("testmedia: APNG needs at least one frame, got %d", frames))
	}
	var b bytes.Buffer
	b.WriteString(pngSignature)
	writeChunk(&b, "IHDR", ihdr(w, h, 8, 6))
	actl := binary.BigEndian.AppendUint32(nil, uint32(frames))
	actl = binary.BigEndian.AppendUint32(actl, 0) // num_plays 0: forever
	writeChunk(&b, "acTL", actl)

	// fcTL and fdAT share one sequence counter, starting at 0.
	var seq uint32
	for i := range frames {
		fctl := make([]byte, 26)
		binary.BigEndian.PutUint32(fctl[0:], seq)
		binary.BigEndian.PutUint32(fctl[4:], uint32(w))
		binary.BigEndian.PutUint32(fctl[8:], uint32(h))
		// x/y offsets 0.
		binary.BigEndian.PutUint16(fctl[20:], uint16(1+i%3)) // delay_num
		binary.BigEndian.PutUint16(fctl[22:], 10)            // delay_den: tenths
		fctl[24], fctl[25] = 0, 0                            // dispose NONE, blend SOURCE
		writeChunk(&b, "fcTL", fctl)
		seq++

		data := zlibNRGBA(paint(w, h, style{alpha: true, noise: 4, frame: i}))
		if i == 0 {
			writeChunk(&b, "IDAT", data)
			continue
		}
		writeChunk(&b, "fdAT", append(binary.BigEndian.AppendUint32(nil, seq), data...))
		seq++
	}
	writeChunk(&b, "IEND", nil)
	return b.Bytes()
}

// PNGBomb returns a PNG whose IHDR declares w×h 1-bit greyscale pixels and
// whose IDAT is a complete, valid zlib stream of the all-black image: it
// decodes successfully if a decoder is allowed to try, which is what makes
// it a bomb. The stream is built by repeating one pre-compressed deflate
// block of zero bytes, so generation costs milliseconds and the file is
// about raw/1000 bytes: ~31 KB for 16000×16000, ~0.5 MB for 65536×65536.
// Use [PNGBombTruncated] when only the header matters and size must be tiny.
func PNGBomb(w, h int) []byte {
	checkSize(w, h)
	raw := uint64(1+(w+7)/8) * uint64(h) // filter byte + packed row, all zero

	const unit = 1 << 20
	// A flushed (non-final, byte-aligned) block of zeros can be repeated
	// verbatim: its back-references only reach bytes it produced itself, and
	// every output byte is zero anyway.
	var blk bytes.Buffer
	fw := must(flate.NewWriter(&blk, flate.BestCompression))
	zeros := make([]byte, unit)
	must(fw.Write(zeros))
	must(0, fw.Flush())
	block := bytes.Clone(blk.Bytes())

	var tail bytes.Buffer
	fw.Reset(&tail)
	must(fw.Write(zeros[:raw%unit]))
	must(0, fw.Close())

	var z bytes.Buffer
	z.Write([]byte{0x78, 0xda}) // zlib header: deflate, 32 KiB window, best
	for range raw / unit {
		z.Write(block)
	}
	z.Write(tail.Bytes())
	// Adler-32 of n zero bytes: a stays 1 and b grows by 1 per byte.
	z.Write(binary.BigEndian.AppendUint32(nil, uint32(raw%65521)<<16|1))

	var b bytes.Buffer
	b.WriteString(pngSignature)
	writeChunk(&b, "IHDR", ihdr(w, h, 1, 0))
	writeChunk(&b, "IDAT", z.Bytes())
	writeChunk(&b, "IEND", nil)
	return b.Bytes()
}

// PNGBombTruncated returns a tiny PNG whose IHDR declares w×h (1-bit
// greyscale) but whose IDAT holds only the start of the zlib stream (the
// first rows, no final block, no checksum). Header checks see the full size;
// a decoder that goes ahead fails with unexpected EOF after allocating.
func PNGBombTruncated(w, h int) []byte {
	checkSize(w, h)
	var z bytes.Buffer
	zw := must(zlib.NewWriterLevel(&z, zlib.BestCompression))
	must(zw.Write(make([]byte, (1+(w+7)/8)*min(h, 4))))
	must(0, zw.Flush()) // emit the rows without finishing the stream

	var b bytes.Buffer
	b.WriteString(pngSignature)
	writeChunk(&b, "IHDR", ihdr(w, h, 1, 0))
	writeChunk(&b, "IDAT", z.Bytes())
	writeChunk(&b, "IEND", nil)
	return b.Bytes()
}
