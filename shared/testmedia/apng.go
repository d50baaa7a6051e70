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
	s := APNGSpec{Width: w, Height: h}
	for i := range frames {
		s.Frames = append(s.Frames, APNGFrame{
			Image:    paint(w, h, style{alpha: true, noise: 4, frame: i}),
			DelayNum: uint16(1 + i%3),
			DelayDen: 10, // tenths of a second
		})
	}
	return APNGOf(s)
}

// APNG dispose_op and blend_op values.
const (
	APNGDisposeNone       = 0 // leave the frame on the canvas
	APNGDisposeBackground = 1 // clear its region to transparent black
	APNGDisposePrevious   = 2 // restore its region as it was before the frame
	APNGBlendSource       = 0 // the frame replaces its region
	APNGBlendOver         = 1 // the frame is alpha-composited onto it
)

// APNGFrame is one animation frame for [APNGOf].
type APNGFrame struct {
	// Image holds the frame's pixels; its size is the frame's size. An
	// *image.NRGBA is written as 8-bit RGBA; other types are encoded by
	// image/png (palette, grey, 16-bit, ...), and then every image of the
	// file must encode with the same colour type, depth and palette.
	Image image.Image
	// X and Y place the frame on the canvas.
	X, Y int
	// The frame shows for DelayNum/DelayDen seconds; DelayDen 0 means 100.
	DelayNum, DelayDen uint16
	Dispose, Blend     byte
}

// APNGSpec describes an APNG for [APNGOf].
type APNGSpec struct {
	Width, Height int
	// Plays is num_plays: how often the animation runs, 0 for forever.
	Plays int
	// Default, when set, is written as the IDAT image before the first
	// fcTL: what decoders without APNG support show, not part of the
	// animation. When nil, frame 0 is the IDAT image (it must then cover
	// the canvas).
	Default image.Image
	Frames  []APNGFrame
	// Chunks are written right after IHDR: colour chunks (iCCP, gAMA,
	// ...), see [PNGColourChunks].
	Chunks []PNGChunk
}

// APNGOf builds the APNG s describes, chunk by chunk as written, without
// checking that it is valid: tests use it for broken files too.
func APNGOf(s APNGSpec) []byte {
	checkSize(s.Width, s.Height)
	if len(s.Frames) == 0 {
		panic("testmedia: APNGOf needs at least one frame")
	}
	first := s.Default
	if first == nil {
		first = s.Frames[0].Image
	}
	format, pre, _ := encodeFrame(first)

	var b bytes.Buffer
	b.WriteString(pngSignature)
	hdr := binary.BigEndian.AppendUint32(nil, uint32(s.Width))
	hdr = binary.BigEndian.AppendUint32(hdr, uint32(s.Height))
	writeChunk(&b, "IHDR", append(hdr, format...))
	for _, c := range s.Chunks {
		writeChunk(&b, c.Type, c.Data)
	}
	actl := binary.BigEndian.AppendUint32(nil, uint32(len(s.Frames)))
	actl = binary.BigEndian.AppendUint32(actl, uint32(s.Plays))
	writeChunk(&b, "acTL", actl)
	for _, c := range pre {
		writeChunk(&b, c.typ, c.data)
	}
	if s.Default != nil {
		_, _, data := encodeFrame(s.Default)
		writeChunk(&b, "IDAT", data)
	}

	// fcTL and fdAT share one sequence counter, starting at 0.
	var seq uint32
	for i, f := range s.Frames {
		fmtI, preI, data := encodeFrame(f.Image)
		if !bytes.Equal(fmtI, format) || !samePre(preI, pre) {
			panic(fmt.Sprintf("testmedia: APNG frame %d encodes unlike the first image", i))
		}
		r := f.Image.Bounds()
		fctl := binary.BigEndian.AppendUint32(nil, seq)
		fctl = binary.BigEndian.AppendUint32(fctl, uint32(r.Dx()))
		fctl = binary.BigEndian.AppendUint32(fctl, uint32(r.Dy()))
		fctl = binary.BigEndian.AppendUint32(fctl, uint32(f.X))
		fctl = binary.BigEndian.AppendUint32(fctl, uint32(f.Y))
		fctl = binary.BigEndian.AppendUint16(fctl, f.DelayNum)
		fctl = binary.BigEndian.AppendUint16(fctl, f.DelayDen)
		fctl = append(fctl, f.Dispose, f.Blend)
		writeChunk(&b, "fcTL", fctl)
		seq++
		if i == 0 && s.Default == nil {
			writeChunk(&b, "IDAT", data)
			continue
		}
		writeChunk(&b, "fdAT", append(binary.BigEndian.AppendUint32(nil, seq), data...))
		seq++
	}
	writeChunk(&b, "IEND", nil)
	return b.Bytes()
}

type chunk struct {
	typ  string
	data []byte
}

func samePre(a, b []chunk) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].typ != b[i].typ || !bytes.Equal(a[i].data, b[i].data) {
			return false
		}
	}
	return true
}

// encodeFrame returns an image's IHDR fields after width and height (depth,
// colour type, compression, filter, interlace), the PLTE and tRNS chunks it
// needs, and its zlib-compressed scanlines.
func encodeFrame(img image.Image) (format []byte, pre []chunk, data []byte) {
	if n, ok := img.(*image.NRGBA); ok {
		return []byte{8, 6, 0, 0, 0}, nil, zlibNRGBA(n)
	}
	p := encodePNG(img)[len(pngSignature):]
	var idat bytes.Buffer
	for len(p) >= 12 {
		n := binary.BigEndian.Uint32(p)
		typ, body := string(p[4:8]), p[8:8+n]
		switch typ {
		case "IHDR":
			format = bytes.Clone(body[8:13])
		case "PLTE", "tRNS":
			pre = append(pre, chunk{typ, bytes.Clone(body)})
		case "IDAT":
			idat.Write(body)
		}
		p = p[12+n:]
	}
	return format, pre, idat.Bytes()
}

// APNGOps returns a 64×48 APNG that uses every feature a decoder must get
// right: a default image that is not part of the animation, sub-frames at
// offsets, each dispose and blend operation, translucent pixels, delays with
// delay_den 0 (hundredths) and 3 plays. Frames are painted scenes, not
// flat colours, so compression behaves as on real content.
func APNGOps() []byte {
	const w, h = 64, 48
	sub := func(frame, fw, fh int) *image.NRGBA {
		return paint(fw, fh, style{alpha: true, noise: 4, frame: frame})
	}
	return APNGOf(APNGSpec{
		Width: w, Height: h, Plays: 3,
		Default: paint(w, h, style{noise: 4, frame: 9}),
		Frames: []APNGFrame{
			{Image: sub(0, w, h), DelayNum: 5, DelayDen: 0, Dispose: APNGDisposeNone, Blend: APNGBlendSource},
			{Image: sub(1, 24, 16), X: 8, Y: 4, DelayNum: 1, DelayDen: 20, Dispose: APNGDisposeBackground, Blend: APNGBlendOver},
			{Image: sub(2, 32, 20), X: 30, Y: 26, DelayNum: 7, DelayDen: 0, Dispose: APNGDisposePrevious, Blend: APNGBlendOver},
			{Image: sub(3, 16, 16), X: 40, Y: 30, DelayNum: 0, DelayDen: 0, Dispose: APNGDisposeNone, Blend: APNGBlendSource},
		},
	})
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
