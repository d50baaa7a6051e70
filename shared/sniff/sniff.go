// Package sniff decides what a remote file really is from its leading bytes.
//
// Remote Content-Type headers are never trusted: a proxy that forwards them
// lets any server serve HTML or script from the proxy's origin.
package sniff

import (
	"bytes"
	"encoding/binary"
	"strings"

	"github.com/h2non/filetype"
)

// HeadSize is how many leading bytes Detect wants. Fewer is fine; detection
// just gets less certain (e.g. an SVG with a long prolog, or an APNG whose
// acTL chunk sits after a large metadata chunk).
const HeadSize = 8192

// Type is what the bytes are.
type Type struct {
	MIME string // e.g. "image/png"; "application/octet-stream" when unknown
	Ext  string // canonical filename extension without dot; "unknown" when unknown
}

// Unknown is returned when nothing recognisable was found.
var Unknown = Type{MIME: "application/octet-stream", Ext: "unknown"}

var (
	typeSVG  = Type{MIME: "image/svg+xml", Ext: "svg"}
	typeAPNG = Type{MIME: "image/apng", Ext: "png"}
	typeAVIF = Type{MIME: "image/avif", Ext: "avif"}
	typeHEIC = Type{MIME: "image/heic", Ext: "heic"}
	typeHEIF = Type{MIME: "image/heif", Ext: "heif"}
	typeMP4  = Type{MIME: "video/mp4", Ext: "mp4"}
	typeM4A  = Type{MIME: "audio/x-m4a", Ext: "m4a"}
	typeM4V  = Type{MIME: "video/x-m4v", Ext: "m4v"}
	typeMOV  = Type{MIME: "video/quicktime", Ext: "mov"}
	type3GP  = Type{MIME: "video/3gpp", Ext: "3gp"}
	type3G2  = Type{MIME: "video/3gpp2", Ext: "3g2"}
	typeMP3  = Type{MIME: "audio/mpeg", Ext: "mp3"}
)

// normalised maps filetype's MIME strings to the ones the rest of the proxy
// (and the browser-safe allow-list) uses, with our canonical extension.
var normalised = map[string]Type{
	"image/jpeg":               {MIME: "image/jpeg", Ext: "jpg"},
	"image/tiff":               {MIME: "image/tiff", Ext: "tiff"},
	"image/vnd.microsoft.icon": {MIME: "image/x-icon", Ext: "ico"},
	"audio/x-flac":             {MIME: "audio/flac", Ext: "flac"},
	"audio/x-wav":              {MIME: "audio/wav", Ext: "wav"},
	"audio/m4a":                typeM4A,
	"video/mpeg":               {MIME: "video/mpeg", Ext: "mpg"},
}

// browserSafe is the passthrough allow-list: types a browser renders as media
// and never as a document, so serving them from our origin is harmless.
var browserSafe = map[string]bool{
	"image/png":       true,
	"image/gif":       true,
	"image/jpeg":      true,
	"image/webp":      true,
	"image/avif":      true,
	"image/apng":      true,
	"image/bmp":       true,
	"image/tiff":      true,
	"image/x-icon":    true,
	"audio/opus":      true,
	"video/ogg":       true,
	"audio/ogg":       true,
	"application/ogg": true,
	"video/quicktime": true,
	"video/mp4":       true,
	"audio/mp4":       true,
	"video/x-m4v":     true,
	"audio/x-m4a":     true,
	"video/3gpp":      true,
	"video/3gpp2":     true,
	"video/mpeg":      true,
	"audio/mpeg":      true,
	"video/webm":      true,
	"audio/webm":      true,
	"audio/aac":       true,
	"audio/flac":      true,
	"audio/wav":       true,
}

// convertible are the image types libvips can decode and we re-encode.
var convertible = map[string]bool{
	"image/png":     true,
	"image/apng":    true,
	"image/gif":     true,
	"image/jpeg":    true,
	"image/webp":    true,
	"image/avif":    true,
	"image/svg+xml": true,
	"image/bmp":     true,
	"image/x-icon":  true,
}

// BrowserSafe reports whether the bytes may be passed through as-is.
func (t Type) BrowserSafe() bool { return browserSafe[t.MIME] }

// Convertible reports whether the image is one we transform with libvips.
func (t Type) Convertible() bool { return convertible[t.MIME] }

// IsSVG reports whether t is an SVG document.
func (t Type) IsSVG() bool { return t.MIME == typeSVG.MIME }

// IsImage reports whether t is any image type, including ones we cannot convert.
func (t Type) IsImage() bool { return strings.HasPrefix(t.MIME, "image/") }

// Exts returns every extension spelling acceptable for t, canonical first.
// Filenames already using one of these are left alone.
func (t Type) Exts() []string {
	switch t.MIME {
	case "image/jpeg":
		return []string{"jpg", "jpeg"}
	case "image/tiff":
		return []string{"tiff", "tif"}
	case "image/apng":
		return []string{"png", "apng"}
	case "video/mpeg":
		return []string{"mpg", "mpeg"}
	}
	if t.Ext == "" {
		return []string{Unknown.Ext}
	}
	return []string{t.Ext}
}

// Detect identifies head, which should be the first HeadSize bytes (or the
// whole body if shorter). Magic numbers win over anything textual, so a
// GIF/HTML polyglot is a GIF.
func Detect(head []byte) Type {
	if len(head) == 0 {
		return Unknown
	}
	if len(head) >= 12 && string(head[4:8]) == "ftyp" {
		return detectISOBMFF(head)
	}

	kind, err := filetype.Match(head)
	if err == nil && kind != filetype.Unknown {
		return fromFiletype(head, kind.MIME.Value, kind.Extension)
	}

	if isMP3Frame(head) {
		return typeMP3
	}
	if isSVG(head) {
		return typeSVG
	}
	return Unknown
}

// fromFiletype normalises a filetype match and double-checks the matchers
// whose signatures are too short to trust on their own.
func fromFiletype(head []byte, mime, ext string) Type {
	switch mime {
	case "image/png":
		if isAPNG(head) {
			return typeAPNG
		}
	case "image/bmp":
		// filetype only checks "BM", which plain text can start with.
		if !isBMP(head) {
			return Unknown
		}
	case "image/vnd.microsoft.icon":
		// filetype only checks 00 00 01 00; require at least one image.
		if len(head) < 6 || binary.LittleEndian.Uint16(head[4:6]) == 0 {
			return Unknown
		}
	case "image/webp":
		// filetype only checks "WEBP" at offset 8, not the RIFF container.
		if !bytes.HasPrefix(head, []byte("RIFF")) {
			return Unknown
		}
	}
	if t, ok := normalised[mime]; ok {
		return t
	}
	return Type{MIME: mime, Ext: ext}
}

// isAPNG walks the PNG chunks after the signature: an animated PNG has an
// acTL chunk before the first IDAT.
func isAPNG(head []byte) bool {
	pos := 8
	for pos+8 <= len(head) {
		length := int64(binary.BigEndian.Uint32(head[pos : pos+4]))
		switch string(head[pos+4 : pos+8]) {
		case "acTL":
			return true
		case "IDAT":
			return false
		}
		// length + type + data + CRC; int64 so a hostile length cannot wrap.
		next := int64(pos) + 12 + length
		if next > int64(len(head)) {
			return false
		}
		pos = int(next)
	}
	return false
}

// isBMP checks the DIB header size, which is one of a few fixed values.
func isBMP(head []byte) bool {
	if len(head) < 18 || head[0] != 'B' || head[1] != 'M' {
		return false
	}
	switch binary.LittleEndian.Uint32(head[14:18]) {
	case 12, 16, 40, 52, 56, 64, 108, 124:
		return true
	}
	return false
}

// isMP3Frame recognises an MPEG audio Layer III frame header without an ID3
// tag. filetype only knows ID3 and FF FB (MPEG-1 without CRC), which misses
// MPEG-2 files and files with CRC.
func isMP3Frame(head []byte) bool {
	if len(head) < 4 || head[0] != 0xFF {
		return false
	}
	b1, b2 := head[1], head[2]
	return b1&0xE0 == 0xE0 && // rest of the 11-bit sync
		(b1>>3)&0x03 != 0x01 && // version: 01 is reserved
		(b1>>1)&0x03 == 0x01 && // layer III (00 would be AAC ADTS)
		b2>>4 != 0x0F && // bitrate index 1111 is invalid
		(b2>>2)&0x03 != 0x03 // sample rate index 11 is reserved
}

// detectISOBMFF classifies ISO base media files (MP4, MOV, AVIF, HEIC...)
// by their ftyp brands; head starts with an ftyp box. filetype is not used
// for these: it has no AVIF matcher, and its QuickTime matcher accepts any
// 20-byte ftyp box, overlapping MP4 and 3GP with map-order dependent results.
// Files whose brands we do not know are Unknown rather than guessed.
func detectISOBMFF(head []byte) Type {
	major := string(head[8:12])
	if t, ok := brandType(major); ok {
		return t
	}

	end := int64(binary.BigEndian.Uint32(head[0:4]))
	if end > int64(len(head)) {
		end = int64(len(head))
	}
	var compat []string
	for i := int64(16); i+4 <= end; i += 4 {
		compat = append(compat, string(head[i:i+4]))
	}

	// Image brands first: AVIF and HEIC files often carry generic brands
	// such as mif1 or iso8 alongside the one that matters.
	for _, want := range []Type{typeAVIF, typeHEIC} {
		for _, b := range compat {
			if t, ok := brandType(b); ok && t == want {
				return t
			}
		}
	}
	if major == "mif1" || major == "msf1" {
		return typeHEIF
	}
	for _, b := range compat {
		if t, ok := brandType(b); ok {
			return t
		}
	}
	return Unknown
}

// brandType maps a single ftyp brand to a type.
func brandType(brand string) (Type, bool) {
	switch brand {
	case "avif", "avis":
		return typeAVIF, true
	case "heic", "heix", "heim", "heis", "hevc", "hevx":
		return typeHEIC, true
	case "qt  ":
		return typeMOV, true
	case "M4A ", "M4B ", "M4P ":
		return typeM4A, true
	case "M4V ", "M4VH", "M4VP":
		return typeM4V, true
	case "avc1", "av01", "dash", "mmp4", "MSNV", "cmfc", "XAVC", "F4V ", "F4P ":
		return typeMP4, true
	}
	switch {
	case strings.HasPrefix(brand, "iso"), strings.HasPrefix(brand, "mp4"),
		strings.HasPrefix(brand, "mp7"):
		return typeMP4, true
	case strings.HasPrefix(brand, "3g2"):
		return type3G2, true
	case strings.HasPrefix(brand, "3gp"), strings.HasPrefix(brand, "3ge"),
		strings.HasPrefix(brand, "3gg"), strings.HasPrefix(brand, "3gs"),
		strings.HasPrefix(brand, "3gr"):
		return type3GP, true
	case strings.HasPrefix(brand, "ND"): // Sony NDAS/NDSC/NDXC... MP4 variants
		return typeMP4, true
	}
	return Type{}, false
}
