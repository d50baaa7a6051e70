package testmedia

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"math"
)

// Audio and video fixtures are only sniffed and passed through byte for
// byte by the proxy, never decoded, so they are minimal but structurally
// valid: correct magic numbers, box/element sizes and checksums.

// WAV returns a RIFF/WAVE file with seconds of a 440 Hz sine wave, 16-bit
// PCM mono at 44.1 kHz.
func WAV(seconds float64) []byte {
	const rate = 44100
	if seconds < 0 || math.IsNaN(seconds) {
		panic(fmt.Sprintf("testmedia: invalid WAV duration %v", seconds))
	}
	n := int(seconds * rate)
	le := binary.LittleEndian
	b := make([]byte, 0, 44+2*n)
	b = append(b, "RIFF"...)
	b = le.AppendUint32(b, uint32(36+2*n))
	b = append(b, "WAVEfmt "...)
	b = le.AppendUint32(b, 16)
	b = le.AppendUint16(b, 1) // PCM
	b = le.AppendUint16(b, 1) // mono
	b = le.AppendUint32(b, rate)
	b = le.AppendUint32(b, rate*2) // byte rate
	b = le.AppendUint16(b, 2)      // block align
	b = le.AppendUint16(b, 16)     // bits per sample
	b = append(b, "data"...)
	b = le.AppendUint32(b, uint32(2*n))
	for i := range n {
		v := 0.5 * math.Sin(2*math.Pi*440*float64(i)/rate)
		b = le.AppendUint16(b, uint16(int16(math.Round(v*math.MaxInt16))))
	}
	return b
}

// box returns an ISO BMFF box header for a box of total size n.
func box(typ string, n int) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(n))
	return append(b, typ...)
}

func ftyp(major string, minor uint32, compat ...string) []byte {
	b := box("ftyp", 16+4*len(compat))
	b = append(b, major...)
	b = binary.BigEndian.AppendUint32(b, minor)
	for _, c := range compat {
		b = append(b, c...)
	}
	return b
}

// randomFill fills p with deterministic pseudo-random bytes.
func randomFill(p []byte, stream uint64) {
	rng := newRand(stream)
	for len(p) >= 8 {
		binary.LittleEndian.PutUint64(p, rng.Uint64())
		p = p[8:]
	}
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
}

// MP4 returns an ISO BMFF file of exactly size bytes (size >= 48): an ftyp
// box (major brand isom, compatible isom iso2 avc1 mp41), a small free box,
// and an mdat box of pseudo-random payload filling the rest. It has no moov,
// so it is not playable, which is fine for sniffing and pass-through.
func MP4(size int) []byte {
	f := ftyp("isom", 0x200, "isom", "iso2", "avc1", "mp41")
	const freeLen = 8
	if size < len(f)+freeLen+8 {
		panic(fmt.Sprintf("testmedia: MP4 size %d below minimum %d", size, len(f)+freeLen+8))
	}
	if size > math.MaxUint32 {
		panic(fmt.Sprintf("testmedia: MP4 size %d needs 64-bit box sizes", size))
	}
	b := make([]byte, size)
	n := copy(b, f)
	n += copy(b[n:], box("free", freeLen))
	n += copy(b[n:], box("mdat", size-n))
	randomFill(b[n:], 3)
	return b
}

// M4A returns an ISO BMFF audio file: ftyp with major brand "M4A " and a
// 4 KiB mdat of pseudo-random payload.
func M4A() []byte {
	b := ftyp("M4A ", 0, "M4A ", "mp42", "isom")
	payload := make([]byte, 4096)
	randomFill(payload, 4)
	b = append(b, box("mdat", 8+len(payload))...)
	return append(b, payload...)
}

// ebml encodes one EBML element: id (with its marker bits, as in the
// Matroska spec), a minimal-length size vint, and the payload.
func ebml(id uint32, payload []byte) []byte {
	var b []byte
	for shift := 24; shift >= 0; shift -= 8 {
		if id>>shift != 0 || shift == 0 {
			b = append(b, byte(id>>shift))
		}
	}
	n := uint64(len(payload))
	l := 1
	for n >= 1<<(7*l)-1 { // all-ones is reserved for "unknown size"
		l++
	}
	for i := l - 1; i >= 0; i-- {
		v := byte(n >> (8 * i))
		if i == l-1 {
			v |= 0x80 >> (l - 1)
		}
		b = append(b, v)
	}
	return append(b, payload...)
}

func ebmlUint(id uint32, v uint64) []byte {
	var p []byte
	for shift := 56; shift >= 0; shift -= 8 {
		if v>>shift != 0 || shift == 0 || len(p) > 0 {
			p = append(p, byte(v>>shift))
		}
	}
	return ebml(id, p)
}

// WebM returns an EBML header with DocType "webm" followed by a Segment
// holding an Info element and a 4 KiB Void element as payload.
func WebM() []byte {
	header := ebml(0x1a45dfa3, bytes.Join([][]byte{
		ebmlUint(0x4286, 1), // EBMLVersion
		ebmlUint(0x42f7, 1), // EBMLReadVersion
		ebmlUint(0x42f2, 4), // EBMLMaxIDLength
		ebmlUint(0x42f3, 8), // EBMLMaxSizeLength
		ebml(0x4282, []byte("webm")),
		ebmlUint(0x4287, 4), // DocTypeVersion
		ebmlUint(0x4285, 2), // DocTypeReadVersion
	}, nil))
	info := ebml(0x1549a966, bytes.Join([][]byte{
		ebmlUint(0x2ad7b1, 1000000), // TimestampScale: 1 ms
		ebml(0x4d80, []byte("testmedia")),
		ebml(0x5741, []byte("testmedia")),
	}, nil))
	void := make([]byte, 4096)
	randomFill(void, 5)
	segment := ebml(0x18538067, append(info, ebml(0xec, void)...))
	return append(header, segment...)
}

// oggCRC is the Ogg page checksum: CRC-32 with polynomial 0x04c11db7, MSB
// first, zero initial value and no final XOR (hash/crc32 only does the
// reflected variant).
var oggCRCTable = func() (t [256]uint32) {
	for i := range t {
		r := uint32(i) << 24
		for range 8 {
			if r&0x80000000 != 0 {
				r = r<<1 ^ 0x04c11db7
			} else {
				r <<= 1
			}
		}
		t[i] = r
	}
	return t
}()

func oggCRC(p []byte) uint32 {
	var crc uint32
	for _, b := range p {
		crc = crc<<8 ^ oggCRCTable[byte(crc>>24)^b]
	}
	return crc
}

// oggPage builds one page carrying the given packets (each < 255*255 bytes).
func oggPage(flags byte, granule uint64, serial, seq uint32, packets ...[]byte) []byte {
	var lacing, body []byte
	for _, p := range packets {
		n := len(p)
		for n >= 255 {
			lacing = append(lacing, 255)
			n -= 255
		}
		lacing = append(lacing, byte(n))
		body = append(body, p...)
	}
	if len(lacing) > 255 {
		panic("testmedia: too many Ogg segments")
	}
	le := binary.LittleEndian
	b := []byte("OggS\x00")
	b = append(b, flags)
	b = le.AppendUint64(b, granule)
	b = le.AppendUint32(b, serial)
	b = le.AppendUint32(b, seq)
	b = le.AppendUint32(b, 0) // CRC, patched below
	b = append(b, byte(len(lacing)))
	b = append(b, lacing...)
	b = append(b, body...)
	le.PutUint32(b[22:], oggCRC(b))
	return b
}

// Ogg returns an Ogg Opus stream: a BOS page with OpusHead, a page with
// OpusTags, and an EOS page with one second of 20 ms silence frames, all
// with valid page CRCs.
func Ogg() []byte {
	const serial, preSkip = 0x74657374, 312
	le := binary.LittleEndian
	head := []byte("OpusHead\x01\x02") // version 1, stereo
	head = le.AppendUint16(head, preSkip)
	head = le.AppendUint32(head, 48000) // input sample rate
	head = le.AppendUint16(head, 0)     // output gain
	head = append(head, 0)              // channel mapping family
	tags := []byte("OpusTags")
	tags = le.AppendUint32(tags, uint32(len("testmedia")))
	tags = append(tags, "testmedia"...)
	tags = le.AppendUint32(tags, 0) // no user comments

	// 0xF8 0xFF 0xFE is the customary CELT 20 ms silence packet.
	audio := make([][]byte, 50)
	for i := range audio {
		audio[i] = []byte{0xf8, 0xff, 0xfe}
	}
	var b []byte
	b = append(b, oggPage(0x02, 0, serial, 0, head)...)
	b = append(b, oggPage(0x00, 0, serial, 1, tags)...)
	b = append(b, oggPage(0x04, 48000+preSkip, serial, 2, audio...)...)
	return b
}

// MP3 returns an ID3v2.3 tag (with a TIT2 title frame) followed by ten
// MPEG-1 Layer III frames (128 kbit/s, 48 kHz, mono) of silence: 384 bytes
// each, zero side info and main data.
func MP3() []byte {
	title := append([]byte{0}, "testmedia"...) // ISO-8859-1 text
	frame := []byte("TIT2")
	frame = binary.BigEndian.AppendUint32(frame, uint32(len(title)))
	frame = append(frame, 0, 0)
	frame = append(frame, title...)
	n := len(frame)
	b := []byte{'I', 'D', '3', 3, 0, 0}
	// The tag size is "synchsafe": 7 bits per byte.
	b = append(b, byte(n>>21&0x7f), byte(n>>14&0x7f), byte(n>>7&0x7f), byte(n&0x7f))
	b = append(b, frame...)
	for range 10 {
		// sync+MPEG-1+Layer III+no CRC, 128 kbit/s + 48 kHz, mono+original.
		hdr := []byte{0xff, 0xfb, 0x94, 0xc4}
		b = append(b, hdr...)
		b = append(b, make([]byte, 144*128000/48000-len(hdr))...)
	}
	return b
}

func crc8(p []byte) byte {
	var c byte
	for _, b := range p {
		c ^= b
		for range 8 {
			if c&0x80 != 0 {
				c = c<<1 ^ 0x07
			} else {
				c <<= 1
			}
		}
	}
	return c
}

func crc16(p []byte) uint16 {
	var c uint16
	for _, b := range p {
		c ^= uint16(b) << 8
		for range 8 {
			if c&0x8000 != 0 {
				c = c<<1 ^ 0x8005
			} else {
				c <<= 1
			}
		}
	}
	return c
}

// FLAC returns "fLaC", a STREAMINFO block and ten frames of 4096 samples of
// silence (16-bit mono, 44.1 kHz, CONSTANT subframes), with correct frame
// CRCs and the MD5 of the decoded audio, so it is fully decodable.
func FLAC() []byte {
	const block, frames, rate = 4096, 10, 44100
	var fr []byte
	for i := range frames {
		// Sync + fixed blocksize; 4096 samples, 44.1 kHz; mono, 16-bit;
		// frame number (UTF-8 coded, one byte below 128).
		h := []byte{0xff, 0xf8, 0xc9, 0x08, byte(i)}
		h = append(h, crc8(h))
		h = append(h, 0x00, 0x00, 0x00) // CONSTANT subframe, value 0
		fr = binary.BigEndian.AppendUint16(append(fr, h...), crc16(h))
	}
	frameLen := len(fr) / frames

	si := binary.BigEndian.AppendUint16(nil, block) // min block size
	si = binary.BigEndian.AppendUint16(si, block)   // max block size
	si = append(si, 0, 0, byte(frameLen))           // min frame size (24 bits)
	si = append(si, 0, 0, byte(frameLen))           // max frame size
	// 20-bit rate, 3-bit channels-1, 5-bit bps-1, 36-bit total samples.
	si = binary.BigEndian.AppendUint64(si, rate<<44|0<<41|15<<36|block*frames)
	sum := md5.Sum(make([]byte, 2*block*frames))
	si = append(si, sum[:]...)

	b := []byte("fLaC")
	b = append(b, 0x80, 0, 0, byte(len(si))) // last metadata block, STREAMINFO
	b = append(b, si...)
	return append(b, fr...)
}
