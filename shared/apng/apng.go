// Package apng decodes animated PNG (APNG) files into composed frames.
//
// The animation layer (acTL, fcTL and fdAT chunks, sequence numbers, frame
// regions) is parsed and checked here, strictly: what the APNG
// specification calls an error is one. Each frame's pixels go through the
// standard library's image/png, fed a minimal PNG rebuilt from the file's
// IHDR (with the frame's size), PLTE and tRNS and the frame's data as IDAT,
// so filtering, bit depths, palettes and interlacing stay in a well-kept
// decoder. Frames are decoded one at a time, so memory stays at a few
// canvases whatever the frame count.
//
// What the reader keeps about the file is a fixed handful of values, never
// an entry per chunk or per frame: a frame's data is found again in the
// input when the frame is decoded, and fed to image/png chunk by chunk. A
// crafted file of millions of tiny chunks therefore costs the time to walk
// them, not memory in proportion to their number; runs of empty data
// chunks, which carry nothing and only serve such files, are refused.
package apng

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/png"
	"io"
	"strings"
	"time"
)

// Config is what an APNG's chunk headers say, read without decoding pixels.
type Config struct {
	// Width and Height are the canvas size from IHDR.
	Width, Height int
	// Frames is the number of animation frames.
	Frames int
	// Plays is how many times the animation runs; 0 means forever.
	Plays int
	// DefaultIsFrame says the IDAT image is the first animation frame.
	// When false it is a still for decoders without APNG support, which
	// animation-aware decoders (and this one) never show.
	DefaultIsFrame bool
}

// Limits bound what a decode may cost; both must be positive.
type Limits struct {
	// MaxPixels bounds the canvas area times the number of frames decoded.
	MaxPixels int64
	MaxFrames int
}

// ErrTooLarge reports an image over the pixel or frame limit.
var ErrTooLarge = errors.New("apng: over the pixel or frame limit")

// FormatError reports input that is not a valid APNG.
type FormatError string

func (e FormatError) Error() string { return "apng: invalid format: " + string(e) }

// Frame is one animation frame as displayed.
type Frame struct {
	// Image is the whole canvas while the frame shows. It belongs to the
	// Decoder and is overwritten by the next call to Next.
	Image *image.NRGBA
	// Delay is how long the frame shows.
	Delay time.Duration
}

// The fcTL operations.
const (
	disposeNone       = 0
	disposeBackground = 1
	disposePrevious   = 2
	blendSource       = 0
	blendOver         = 1
)

const (
	signature = "\x89PNG\r\n\x1a\n"
	// maxUint31 is the largest value of a PNG four-byte unsigned integer.
	maxUint31 = 1<<31 - 1
	// iend is the IEND chunk, constant: zero length, type, CRC.
	iend = "\x00\x00\x00\x00IEND\xae\x42\x60\x82"
	// maxEmptyRun is the longest run of consecutive empty data chunks (an
	// IDAT with no bytes, an fdAT with only its sequence number) a file
	// may have. They carry nothing; encoders do not write runs of them.
	maxEmptyRun = 16
	// The PNG specification's largest PLTE (256 entries) and tRNS.
	maxPLTE, maxTRNS = 3 * 256, 256
)

// frameInfo is one frame's fcTL and where its data is.
type frameInfo struct {
	rect           image.Rectangle
	delay          time.Duration
	dispose, blend byte
	// The frame's zlib stream is the payloads of the chunks of type data
	// (IDAT for the default image, else fdAT, without its sequence
	// number) in the input between offsets first and end.
	data       string
	first, end int
}

// Decoder yields the frames of one APNG in order.
type Decoder struct {
	cfg  Config
	src  []byte
	ihdr []byte // IHDR payload
	pre  []byte // PLTE and tRNS chunks, whole, as in the file
	// pos is where the search for the next frame's fcTL starts.
	pos  int
	prev frameInfo // the frame shown last, for its dispose_op
	next int
	err  error
	// canvas is what is shown; saved holds the region of a frame whose
	// dispose_op is PREVIOUS as it was before the frame, rows packed.
	canvas *image.NRGBA
	saved  []byte
}

// DecodeConfig reads and checks every chunk of b without decoding pixels.
// Frame data may still fail to decode later.
func DecodeConfig(b []byte) (Config, error) {
	d, err := parse(b)
	if err != nil {
		return Config{}, err
	}
	return d.cfg, nil
}

// NewDecoder checks b as DecodeConfig does and the limits for decoding
// every frame; it decodes no pixels.
func NewDecoder(b []byte, lim Limits) (*Decoder, error) {
	d, err := parse(b)
	if err != nil {
		return nil, err
	}
	if err := lim.Check(d.cfg, d.cfg.Frames); err != nil {
		return nil, err
	}
	return d, nil
}

// DecodeFirst decodes the first animation frame only; the limits count one
// frame. When the IDAT image is not part of the animation it is skipped, as
// animation-aware decoders skip it.
func DecodeFirst(b []byte, lim Limits) (*image.NRGBA, error) {
	d, err := parse(b)
	if err != nil {
		return nil, err
	}
	if err := lim.Check(d.cfg, 1); err != nil {
		return nil, err
	}
	f, err := d.Next()
	if err != nil {
		return nil, err
	}
	return f.Image, nil
}

// Check reports ErrTooLarge when decoding frames frames of c would pass
// the limits.
func (l Limits) Check(c Config, frames int) error {
	if frames > l.MaxFrames {
		return fmt.Errorf("%w: %d frames", ErrTooLarge, frames)
	}
	// Width and height are below 2^31, so their product fits; the frame
	// count is compared by division so it cannot overflow.
	px := int64(c.Width) * int64(c.Height)
	if px > l.MaxPixels || int64(frames) > l.MaxPixels/px {
		return fmt.Errorf("%w: %dx%d x %d frames", ErrTooLarge, c.Width, c.Height, frames)
	}
	return nil
}

// Config is what the headers said.
func (d *Decoder) Config() Config { return d.cfg }

// Next decodes and composes the next frame. It returns io.EOF after the
// last frame, and the same error again after a failure.
func (d *Decoder) Next() (Frame, error) {
	if d.err != nil {
		return Frame{}, d.err
	}
	if d.next == d.cfg.Frames {
		return Frame{}, io.EOF
	}
	i := d.next
	f := d.locate()
	if i == 0 {
		// The canvas starts fully transparent black.
		d.canvas = image.NewNRGBA(image.Rect(0, 0, d.cfg.Width, d.cfg.Height))
	} else {
		d.dispose(&d.prev)
	}
	src, err := d.decodeFrame(&f)
	if err != nil {
		d.err = fmt.Errorf("apng: frame %d: %w", i, err)
		return Frame{}, d.err
	}
	if f.dispose == disposePrevious {
		d.saved = copyOut(d.saved[:0], d.canvas, f.rect)
	}
	compose(d.canvas, src, f.rect.Min, f.blend)
	d.prev = f
	d.next++
	return Frame{Image: d.canvas, Delay: f.delay}, nil
}

// locate finds the next frame in the input, which parse has checked:
// its fcTL, and the span of the chunks holding its data, which ends at
// the following fcTL or at IEND.
func (d *Decoder) locate() frameInfo {
	canvas := image.Rect(0, 0, d.cfg.Width, d.cfg.Height)
	var f frameInfo
	p := d.pos
	for {
		typ, data, next := chunkAt(d.src, p)
		p = next
		if typ == "fcTL" {
			f, _ = parseFCTL(data, canvas)
			break
		}
	}
	f.data = "fdAT"
	if d.next == 0 && d.cfg.DefaultIsFrame {
		f.data = "IDAT"
	}
	f.first = -1
	for {
		typ, _, next := chunkAt(d.src, p)
		if typ == "fcTL" || typ == "IEND" {
			d.pos = p
			return f
		}
		if typ == f.data {
			if f.first < 0 {
				f.first = p
			}
			f.end = next
		}
		p = next
	}
}

// chunkAt reads the chunk at offset p of a file parse has checked.
func chunkAt(b []byte, p int) (typ string, data []byte, next int) {
	end := p + 8 + int(binary.BigEndian.Uint32(b[p:]))
	return string(b[p+4 : p+8]), b[p+8 : end], end + 4
}

// dispose applies frame f's dispose_op after it has shown. PREVIOUS on the
// first frame restores the fresh, transparent canvas: the BACKGROUND the
// specification asks for.
func (d *Decoder) dispose(f *frameInfo) {
	switch f.dispose {
	case disposeBackground:
		for y := f.rect.Min.Y; y < f.rect.Max.Y; y++ {
			clear(d.canvas.Pix[d.canvas.PixOffset(f.rect.Min.X, y):d.canvas.PixOffset(f.rect.Max.X, y)])
		}
	case disposePrevious:
		n := 4 * f.rect.Dx()
		for y := f.rect.Min.Y; y < f.rect.Max.Y; y++ {
			copy(d.canvas.Pix[d.canvas.PixOffset(f.rect.Min.X, y):], d.saved[(y-f.rect.Min.Y)*n:][:n])
		}
	}
}

// copyOut appends the rows of region r of img to buf.
func copyOut(buf []byte, img *image.NRGBA, r image.Rectangle) []byte {
	for y := r.Min.Y; y < r.Max.Y; y++ {
		buf = append(buf, img.Pix[img.PixOffset(r.Min.X, y):img.PixOffset(r.Max.X, y)]...)
	}
	return buf
}

// decodeFrame decodes one frame's pixels with image/png, from a PNG stream
// rebuilt around the frame's data.
func (d *Decoder) decodeFrame(f *frameInfo) (*image.NRGBA, error) {
	ihdr := bytes.Clone(d.ihdr)
	binary.BigEndian.PutUint32(ihdr[0:], uint32(f.rect.Dx()))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(f.rect.Dy()))
	head := appendChunk([]byte(signature), "IHDR", ihdr)
	head = append(head, d.pre...)
	data := &frameData{src: d.src, p: f.first, end: f.end, typ: f.data}
	img, err := png.Decode(io.MultiReader(bytes.NewReader(head), data, strings.NewReader(iend)))
	if err != nil {
		return nil, err
	}
	if img.Bounds() != image.Rect(0, 0, f.rect.Dx(), f.rect.Dy()) {
		return nil, FormatError("frame decoded at the wrong size")
	}
	return toNRGBA(img), nil
}

// frameData reads a frame's data chunks from the input as the IDAT chunks
// of a PNG stream, one at a time: only a chunk's few header bytes are
// made, its data is read in place.
type frameData struct {
	src    []byte
	p, end int
	typ    string
	hdr    [8]byte
	crc    [4]byte
	parts  [3][]byte // what is left of the chunk: header, data, CRC
}

func (r *frameData) Read(b []byte) (int, error) {
	for {
		for i := range r.parts {
			if len(r.parts[i]) > 0 {
				n := copy(b, r.parts[i])
				r.parts[i] = r.parts[i][n:]
				return n, nil
			}
		}
		if !r.nextChunk() {
			return 0, io.EOF
		}
	}
}

// nextChunk makes the next non-empty data chunk of the span the current one.
func (r *frameData) nextChunk() bool {
	for r.p >= 0 && r.p < r.end {
		typ, data, next := chunkAt(r.src, r.p)
		r.p = next
		if typ != r.typ {
			continue
		}
		if typ == "fdAT" {
			data = data[4:] // the sequence number
		}
		if len(data) == 0 {
			continue
		}
		binary.BigEndian.PutUint32(r.hdr[:], uint32(len(data)))
		copy(r.hdr[4:], "IDAT")
		binary.BigEndian.PutUint32(r.crc[:], crc32.Update(crc32.ChecksumIEEE(r.hdr[4:]), crc32.IEEETable, data))
		r.parts = [3][]byte{r.hdr[:], data, r.crc[:]}
		return true
	}
	return false
}

func appendChunk(b []byte, typ string, data []byte) []byte {
	start := len(b)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	b = append(b, typ...)
	b = append(b, data...)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b[start+4:]))
}

// parse walks every chunk of b, checking the PNG and APNG rules that the
// decode depends on; it decodes no pixels, and what it allocates does not
// grow with the number of chunks or frames.
func parse(b []byte) (*Decoder, error) {
	if !bytes.HasPrefix(b, []byte(signature)) {
		return nil, FormatError("not a PNG signature")
	}
	d := &Decoder{src: b}
	var (
		seq                 uint32 // next fcTL/fdAT sequence number
		numFrames, frames   int    // frames declared, fcTL chunks seen
		hasData             bool   // the last frame seen has data
		emptyRun            int    // consecutive empty data chunks
		seenACTL            bool
		inIDAT, pastIDAT    bool
		plteSeen, trnsSeen  bool
		canvas              image.Rectangle
		defaultFrame, ended bool
	)
	for p := len(signature); !ended; {
		if len(b)-p < 12 {
			return nil, FormatError("truncated: no IEND chunk")
		}
		n := binary.BigEndian.Uint32(b[p:])
		if n > maxUint31 || uint64(n) > uint64(len(b)-p-12) {
			return nil, FormatError("chunk runs past the end of the file")
		}
		end := p + 8 + int(n)
		typ, data := string(b[p+4:p+8]), b[p+8:end]
		if crc32.ChecksumIEEE(b[p+4:end]) != binary.BigEndian.Uint32(b[end:]) {
			return nil, FormatError("bad CRC in " + printable(typ) + " chunk")
		}
		whole := b[p : end+4]
		first := p == len(signature)
		if first {
			d.pos = end + 4
		}
		p = end + 4

		if first != (typ == "IHDR") {
			return nil, FormatError("IHDR is not the first chunk")
		}
		if typ == "IDAT" {
			if pastIDAT {
				return nil, FormatError("IDAT chunks are not consecutive")
			}
			inIDAT = true
		} else if inIDAT {
			inIDAT, pastIDAT = false, true
		}
		beforeIDAT := !inIDAT && !pastIDAT
		switch {
		case typ == "IDAT" && len(data) == 0, typ == "fdAT" && len(data) == 4:
			if emptyRun++; emptyRun > maxEmptyRun {
				return nil, FormatError(fmt.Sprintf("more than %d empty data chunks in a row", maxEmptyRun))
			}
		case typ == "IDAT", typ == "fdAT":
			emptyRun = 0
		}

		switch typ {
		case "IHDR":
			if err := d.parseIHDR(data); err != nil {
				return nil, err
			}
			canvas = image.Rect(0, 0, d.cfg.Width, d.cfg.Height)
		case "acTL":
			if seenACTL || !beforeIDAT {
				return nil, FormatError("acTL repeated or after IDAT")
			}
			if len(data) != 8 {
				return nil, FormatError("bad acTL length")
			}
			n, plays := binary.BigEndian.Uint32(data), binary.BigEndian.Uint32(data[4:])
			if n == 0 || n > maxUint31 || plays > maxUint31 {
				return nil, FormatError("bad acTL values")
			}
			seenACTL, numFrames, d.cfg.Plays = true, int(n), int(plays)
		case "PLTE", "tRNS":
			// Every frame is decoded with them; image/png checks their
			// contents and order.
			if !beforeIDAT || typ == "PLTE" && plteSeen || typ == "tRNS" && trnsSeen {
				return nil, FormatError(typ + " repeated or after IDAT")
			}
			if typ == "PLTE" && len(data) > maxPLTE || typ == "tRNS" && len(data) > maxTRNS {
				return nil, FormatError(typ + " too long")
			}
			plteSeen, trnsSeen = plteSeen || typ == "PLTE", trnsSeen || typ == "tRNS"
			d.pre = append(d.pre, whole...)
		case "fcTL":
			if !seenACTL {
				return nil, FormatError("fcTL before acTL")
			}
			if frames == numFrames {
				return nil, FormatError("more fcTL chunks than acTL num_frames")
			}
			if frames > 0 && !hasData {
				return nil, FormatError("frame without data")
			}
			if err := checkSeq(data, &seq); err != nil {
				return nil, err
			}
			f, err := parseFCTL(data, canvas)
			if err != nil {
				return nil, err
			}
			// A fcTL before IDAT makes the IDAT image frame 0, which must
			// cover the canvas.
			if beforeIDAT {
				if f.rect != canvas {
					return nil, FormatError("the default image's fcTL does not cover the canvas")
				}
				defaultFrame = true
			}
			frames++
			hasData = false
		case "IDAT":
			if !seenACTL {
				return nil, FormatError("no acTL before IDAT: not animated")
			}
			if defaultFrame && len(data) > 0 {
				hasData = true
			}
		case "fdAT":
			if !pastIDAT {
				return nil, FormatError("fdAT before IDAT")
			}
			if frames == 0 || defaultFrame && frames == 1 {
				return nil, FormatError("fdAT without its fcTL")
			}
			if err := checkSeq(data, &seq); err != nil {
				return nil, err
			}
			if len(data) > 4 {
				hasData = true
			}
		case "IEND":
			ended = true
		default:
			// Bit 5 of the first letter clear: critical, must be understood.
			if typ[0]&0x20 == 0 {
				return nil, FormatError("unknown critical chunk " + printable(typ))
			}
		}
	}
	if !pastIDAT {
		return nil, FormatError("no IDAT chunk")
	}
	if frames != numFrames {
		return nil, FormatError(fmt.Sprintf("acTL says %d frames, the file has %d", numFrames, frames))
	}
	if !hasData {
		return nil, FormatError("frame without data")
	}
	d.cfg.Frames = numFrames
	d.cfg.DefaultIsFrame = defaultFrame
	return d, nil
}

func (d *Decoder) parseIHDR(data []byte) error {
	if len(data) != 13 {
		return FormatError("bad IHDR length")
	}
	w, h := binary.BigEndian.Uint32(data), binary.BigEndian.Uint32(data[4:])
	if w == 0 || h == 0 || w > maxUint31 || h > maxUint31 {
		return FormatError("bad image size")
	}
	depth, colorType := data[8], data[9]
	ok := false
	switch colorType {
	case 0: // grey
		ok = depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16
	case 3: // palette
		ok = depth == 1 || depth == 2 || depth == 4 || depth == 8
	case 2, 4, 6: // RGB, grey+alpha, RGBA
		ok = depth == 8 || depth == 16
	}
	if !ok || data[10] != 0 || data[11] != 0 || data[12] > 1 {
		return FormatError("unsupported IHDR depth, colour type, compression, filter or interlace")
	}
	d.ihdr = data
	d.cfg.Width, d.cfg.Height = int(w), int(h)
	return nil
}

// checkSeq checks the sequence number fcTL and fdAT chunks start with:
// one counter for both, from 0, without gaps or repeats.
func checkSeq(data []byte, next *uint32) error {
	if len(data) < 4 {
		return FormatError("chunk too short for a sequence number")
	}
	if got := binary.BigEndian.Uint32(data); got != *next {
		return FormatError(fmt.Sprintf("sequence number %d, want %d", got, *next))
	}
	*next++
	return nil
}

func parseFCTL(data []byte, canvas image.Rectangle) (frameInfo, error) {
	if len(data) != 26 {
		return frameInfo{}, FormatError("bad fcTL length")
	}
	u := func(i int) uint64 { return uint64(binary.BigEndian.Uint32(data[i:])) }
	w, h, x, y := u(4), u(8), u(12), u(16)
	// The canvas is below 2^31 on each side, so the sums cannot overflow.
	if w == 0 || h == 0 || x+w > uint64(canvas.Dx()) || y+h > uint64(canvas.Dy()) {
		return frameInfo{}, FormatError("frame region outside the canvas")
	}
	num, den := binary.BigEndian.Uint16(data[20:]), binary.BigEndian.Uint16(data[22:])
	if den == 0 {
		den = 100 // the specification's default: hundredths of a second
	}
	f := frameInfo{
		rect:    image.Rect(int(x), int(y), int(x+w), int(y+h)),
		delay:   time.Duration(num) * time.Second / time.Duration(den),
		dispose: data[24],
		blend:   data[25],
	}
	if f.dispose > disposePrevious || f.blend > blendOver {
		return frameInfo{}, FormatError("bad dispose or blend operation")
	}
	return f, nil
}

// printable keeps hostile chunk types from putting control bytes in errors.
func printable(typ string) string {
	return fmt.Sprintf("%q", typ)
}
