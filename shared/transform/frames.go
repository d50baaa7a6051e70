package transform

import "encoding/binary"

// countFrames counts the frames of a GIF or WebP from its block or chunk
// structure, without decoding anything or allocating: 1 for other types
// and for what it cannot read (libvips then decides). It stops counting at
// whatever does not parse, so a truncated file counts the frames before
// the break.
func countFrames(src []byte, mime string) int {
	switch mime {
	case "image/gif":
		return gifFrames(src)
	case "image/webp":
		return webpFrames(src)
	}
	return 1
}

// gifFrames counts the image descriptors of a GIF (GIF89a, section 17-27).
func gifFrames(b []byte) int {
	const header = 13 // signature, version, logical screen descriptor
	if len(b) < header {
		return 1
	}
	p := header
	if b[10]&0x80 != 0 {
		p += 3 << (b[10]&7 + 1) // global colour table
	}
	n := 0
	for p < len(b) {
		switch b[p] {
		case 0x21: // extension: label, then data sub-blocks
			p = skipSubBlocks(b, p+2)
		case 0x2c: // image descriptor, local colour table, LZW code size, data
			if p+10 > len(b) {
				return max(n, 1)
			}
			packed := b[p+9]
			p += 10
			if packed&0x80 != 0 {
				p += 3 << (packed&7 + 1)
			}
			p = skipSubBlocks(b, p+1)
			n++
		default: // the trailer, or something else: the end
			return max(n, 1)
		}
	}
	return max(n, 1)
}

// skipSubBlocks returns the offset past the data sub-blocks at p (sizes
// up to 255, ended by a zero size).
func skipSubBlocks(b []byte, p int) int {
	for p < len(b) {
		size := int(b[p])
		p++
		if size == 0 {
			break
		}
		p += size
	}
	return p
}

// webpFrames counts the ANMF chunks of an animated WebP.
func webpFrames(b []byte) int {
	if len(b) < 12 || string(b[0:4]) != "RIFF" || string(b[8:12]) != "WEBP" {
		return 1
	}
	n := 0
	for p := uint64(12); p+8 <= uint64(len(b)); {
		if string(b[p:p+4]) == "ANMF" {
			n++
		}
		size := uint64(binary.LittleEndian.Uint32(b[p+4:]))
		p += 8 + size + size&1
	}
	return max(n, 1)
}
