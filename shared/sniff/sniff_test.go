package sniff

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"
)

// chunk builds a PNG chunk; the CRC is not checked by Detect, so it is zero.
func chunk(typ string, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(data)))
	b = append(b, typ...)
	b = append(b, data...)
	return append(b, 0, 0, 0, 0)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

var pngSig = []byte("\x89PNG\r\n\x1a\n")

func png(chunks ...[]byte) []byte { return cat(append([][]byte{pngSig}, chunks...)...) }

var (
	ihdr = chunk("IHDR", make([]byte, 13))
	idat = chunk("IDAT", []byte{1, 2, 3})
	actl = chunk("acTL", make([]byte, 8))
)

// ftyp builds an ISO BMFF ftyp box with the given major and compatible brands.
func ftyp(major string, compat ...string) []byte {
	size := 16 + 4*len(compat)
	b := binary.BigEndian.AppendUint32(nil, uint32(size))
	b = append(b, "ftyp"+major+"\x00\x00\x00\x00"...)
	for _, c := range compat {
		b = append(b, c...)
	}
	// Followed by the start of a box, as in a real file.
	return append(b, "\x00\x00\x00\x08free"...)
}

// bmp builds a BITMAPFILEHEADER plus the size field of a BITMAPINFOHEADER.
func bmp(dibSize uint32) []byte {
	b := []byte("BM")
	b = binary.LittleEndian.AppendUint32(b, 70)
	b = append(b, 0, 0, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, 54)
	b = binary.LittleEndian.AppendUint32(b, dibSize)
	return append(b, make([]byte, 36)...)
}

func riff(form string, rest string) []byte {
	return []byte("RIFF\x24\x00\x00\x00" + form + rest)
}

// webm is an EBML header whose DocType element (42 82) is "webm".
var webm = []byte("\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81\x08\x42\x82\x84webm\x42\x87\x81\x04")

func TestDetect(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		mime string
		ext  string
	}{
		// Images.
		{"png", png(ihdr, idat), "image/png", "png"},
		{"png signature only", pngSig, "image/png", "png"},
		{"apng", png(ihdr, actl, idat), "image/apng", "png"},
		{"apng after ancillary chunks", png(ihdr, chunk("tEXt", []byte("Comment\x00hi")), chunk("pHYs", make([]byte, 9)), actl, idat), "image/apng", "png"},
		{"acTL after IDAT is not apng", png(ihdr, idat, actl), "image/png", "png"},
		{"acTL in chunk data is not apng", png(chunk("tEXt", []byte("acTL")), idat), "image/png", "png"},
		{"png with huge chunk length", png([]byte("\xff\xff\xff\xffIHDR"), actl), "image/png", "png"},
		{"gif89a", []byte("GIF89a\x01\x00\x01\x00\x00\x00\x00;"), "image/gif", "gif"},
		{"gif87a", []byte("GIF87a\x01\x00\x01\x00"), "image/gif", "gif"},
		{"gif html polyglot", []byte("GIF89a<html><script>alert(1)</script></html>"), "image/gif", "gif"},
		{"jpeg", []byte("\xff\xd8\xff\xe0\x00\x10JFIF\x00"), "image/jpeg", "jpg"},
		{"webp", riff("WEBP", "VP8 \x00\x00\x00\x00"), "image/webp", "webp"},
		{"webp lossless", riff("WEBP", "VP8L\x00\x00\x00\x00"), "image/webp", "webp"},
		{"WEBP without RIFF", []byte("xxxxxxxxWEBPVP8 "), "application/octet-stream", "unknown"},
		{"avif", ftyp("avif", "mif1", "miaf"), "image/avif", "avif"},
		{"avif sequence", ftyp("avis", "avif", "msf1"), "image/avif", "avif"},
		{"avif via mif1", ftyp("mif1", "avif", "miaf"), "image/avif", "avif"},
		{"avif 20-byte ftyp", ftyp("avif", "mif1"), "image/avif", "avif"},
		{"heic", ftyp("heic", "mif1", "heic"), "image/heic", "heic"},
		{"heic via mif1", ftyp("mif1", "heic"), "image/heic", "heic"},
		{"heif generic", ftyp("mif1", "miaf"), "image/heif", "heif"},
		{"bmp", bmp(40), "image/bmp", "bmp"},
		{"bmp v5", bmp(124), "image/bmp", "bmp"},
		{"text starting with BM", []byte("BMW is a car manufacturer from Munich."), "application/octet-stream", "unknown"},
		{"ico", []byte("\x00\x00\x01\x00\x01\x00\x10\x10\x00\x00\x01\x00\x20\x00"), "image/x-icon", "ico"},
		{"ico with no images", []byte("\x00\x00\x01\x00\x00\x00\x10\x10\x00\x00"), "application/octet-stream", "unknown"},
		{"tiff little endian", []byte("II*\x00\x08\x00\x00\x00\x00\x00\x00\x00"), "image/tiff", "tiff"},
		{"tiff big endian", []byte("MM\x00*\x00\x00\x00\x08\x00\x00\x00\x00"), "image/tiff", "tiff"},
		{"psd", []byte("8BPS\x00\x01\x00\x00"), "image/vnd.adobe.photoshop", "psd"},

		// SVG.
		{"svg", []byte(`<svg xmlns="http://www.w3.org/2000/svg"/>`), "image/svg+xml", "svg"},
		{"svg self-closing", []byte(`<svg/>`), "image/svg+xml", "svg"},
		{"svg bare", []byte(`<svg>`), "image/svg+xml", "svg"},
		{"svg uppercase", []byte(`<SVG WIDTH="1">`), "image/svg+xml", "svg"},
		{"svg with newline", []byte("<svg\n xmlns=\"http://www.w3.org/2000/svg\">"), "image/svg+xml", "svg"},
		{"svg bom", []byte("\xef\xbb\xbf<svg>"), "image/svg+xml", "svg"},
		{"svg xml decl", []byte(`<?xml version="1.0" encoding="UTF-8" standalone="no"?>` + "\n<svg>"), "image/svg+xml", "svg"},
		{"svg bom whitespace decl comment", []byte("\xef\xbb\xbf \r\n<?xml version=\"1.0\"?>\n<!-- Generator: Adobe Illustrator -->\n<svg version=\"1.1\">"), "image/svg+xml", "svg"},
		{"svg doctype", []byte("<?xml version=\"1.0\"?>\n<!DOCTYPE svg PUBLIC \"-//W3C//DTD SVG 1.1//EN\" \"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd\">\n<svg>"), "image/svg+xml", "svg"},
		{"svg doctype internal subset", []byte("<!DOCTYPE svg [\n<!ENTITY a \"<b>\">\n<!-- ] > -->\n<!ENTITY c 'd>'>\n]>\n<svg>"), "image/svg+xml", "svg"},
		{"svg stylesheet pi", []byte(`<?xml version="1.0"?><?xml-stylesheet href="a.css"?><svg>`), "image/svg+xml", "svg"},
		{"svg namespace prefix", []byte(`<svg:svg xmlns:svg="http://www.w3.org/2000/svg">`), "image/svg+xml", "svg"},
		{"svgfoo element", []byte(`<svgfoo>`), "application/octet-stream", "unknown"},
		{"svg truncated", []byte(`<svg`), "application/octet-stream", "unknown"},
		{"unterminated comment", []byte(`<!-- <svg>`), "application/octet-stream", "unknown"},
		{"svg inside comment only", []byte(`<!-- <svg> --><html>`), "application/octet-stream", "unknown"},
		{"unterminated doctype", []byte(`<!DOCTYPE svg [ <svg>`), "application/octet-stream", "unknown"},
		{"html with inline svg", []byte("<!DOCTYPE html>\n<html><body><svg></svg></body></html>"), "application/octet-stream", "unknown"},
		{"text before svg", []byte("hello <svg>"), "application/octet-stream", "unknown"},

		// Not media.
		{"empty", nil, "application/octet-stream", "unknown"},
		{"html", []byte("<!doctype html>\n<html><head><title>x</title></head><body><img src=a.png></body></html>"), "application/octet-stream", "unknown"},
		{"html uppercase", []byte("<HTML><BODY>hi</BODY></HTML>"), "application/octet-stream", "unknown"},
		{"plain text", []byte("hello, world\n"), "application/octet-stream", "unknown"},
		{"json", []byte(`{"error":"not found"}`), "application/octet-stream", "unknown"},
		{"pdf", []byte("%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"), "application/pdf", "pdf"},
		{"zip", []byte("PK\x03\x04\x14\x00\x00\x00"), "application/zip", "zip"},
		{"gzip", []byte("\x1f\x8b\x08\x00\x00\x00\x00\x00"), "application/gzip", "gz"},

		// Video and audio.
		{"mp4 isom", ftyp("isom", "isom", "iso2", "avc1", "mp41"), "video/mp4", "mp4"},
		{"mp4 isom 20-byte ftyp", ftyp("isom", "isom"), "video/mp4", "mp4"},
		{"mp4 mp42", ftyp("mp42", "mp42", "mp41"), "video/mp4", "mp4"},
		{"mp4 dash", ftyp("dash", "iso6", "mp41"), "video/mp4", "mp4"},
		{"mp4 unknown major known compat", ftyp("abcd", "abcd", "mp42", "iso2"), "video/mp4", "mp4"},
		{"m4a", ftyp("M4A ", "M4A ", "mp42", "isom"), "audio/x-m4a", "m4a"},
		{"m4v", ftyp("M4V ", "M4V ", "M4A ", "mp42", "isom"), "video/x-m4v", "m4v"},
		{"quicktime ftyp", ftyp("qt  ", "qt  "), "video/quicktime", "mov"},
		{"quicktime moov", []byte("\x00\x00\x00\x6cmoov\x00\x00\x00\x6cmvhd\x00\x00\x00\x00"), "video/quicktime", "mov"},
		{"quicktime wide mdat", []byte("\x00\x00\x00\x08wide\x00\x01\x00\x00mdat\x00\x00\x00\x00"), "video/quicktime", "mov"},
		{"3gp", ftyp("3gp4", "isom", "3gp4"), "video/3gpp", "3gp"},
		{"3gp5", ftyp("3gp5", "3gp5", "isom"), "video/3gpp", "3gp"},
		{"3g2", ftyp("3g2a", "3g2a"), "video/3gpp2", "3g2"},
		{"unknown ftyp brand", ftyp("zzzz", "yyyy"), "application/octet-stream", "unknown"},
		{"webm", webm, "video/webm", "webm"},
		{"mkv", bytes.Replace(webm, []byte("\x42\x82\x84webm"), []byte("\x42\x82\x88matroska"), 1), "video/x-matroska", "mkv"},
		{"ogg", []byte("OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x01\x02\x03\x04\x00\x00\x00\x00\x00\x00\x00\x00\x01\x13OpusHead"), "audio/ogg", "ogg"},
		{"mp3 id3", []byte("ID3\x04\x00\x00\x00\x00\x00\x00"), "audio/mpeg", "mp3"},
		{"mp3 frame mpeg1", []byte("\xff\xfb\x90\x64\x00\x00"), "audio/mpeg", "mp3"},
		{"mp3 frame mpeg1 crc", []byte("\xff\xfa\x90\x64\x00\x00"), "audio/mpeg", "mp3"},
		{"mp3 frame mpeg2", []byte("\xff\xf3\x84\xc4\x00\x00"), "audio/mpeg", "mp3"},
		{"mp3 frame bad bitrate", []byte("\xff\xf3\xf4\xc4\x00\x00"), "application/octet-stream", "unknown"},
		{"aac adts", []byte("\xff\xf1\x50\x80\x02\x1f\xfc"), "audio/aac", "aac"},
		{"flac", []byte("fLaC\x00\x00\x00\x22"), "audio/flac", "flac"},
		{"wav", riff("WAVE", "fmt \x10\x00\x00\x00"), "audio/wav", "wav"},
		{"avi", riff("AVI ", "LIST"), "video/x-msvideo", "avi"},
		{"mpeg program stream", []byte("\x00\x00\x01\xba\x44\x00\x04\x00"), "video/mpeg", "mpg"},
		{"mpeg video", []byte("\x00\x00\x01\xb3\x14\x00\xf0\x13"), "video/mpeg", "mpg"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Detect(tt.in)
			if got.MIME != tt.mime || got.Ext != tt.ext {
				t.Errorf("Detect() = %+v, want {MIME:%s Ext:%s}", got, tt.mime, tt.ext)
			}
		})
	}
}

// Detection must not depend on filetype's map iteration order, which varies
// between runs; repeating catches overlapping matchers.
func TestDetectDeterministic(t *testing.T) {
	inputs := [][]byte{ftyp("isom", "isom"), ftyp("M4A ", "mp42"), ftyp("3gp4", "isom"), ftyp("avif", "mif1")}
	for _, in := range inputs {
		want := Detect(in)
		for range 50 {
			if got := Detect(in); got != want {
				t.Fatalf("Detect(%q) = %+v then %+v", in, want, got)
			}
		}
	}
}

func TestPredicates(t *testing.T) {
	tests := []struct {
		mime       string
		safe, conv bool
		svg, image bool
	}{
		{"image/png", true, true, false, true},
		{"image/apng", true, true, false, true},
		{"image/gif", true, true, false, true},
		{"image/jpeg", true, true, false, true},
		{"image/webp", true, true, false, true},
		{"image/avif", true, true, false, true},
		{"image/bmp", true, true, false, true},
		{"image/x-icon", true, true, false, true},
		{"image/tiff", true, false, false, true},
		{"image/svg+xml", false, true, true, true},
		{"image/heic", false, false, false, true},
		{"image/heif", false, false, false, true},
		{"image/vnd.adobe.photoshop", false, false, false, true},
		{"video/mp4", true, false, false, false},
		{"video/quicktime", true, false, false, false},
		{"video/webm", true, false, false, false},
		{"video/x-matroska", false, false, false, false},
		{"audio/mpeg", true, false, false, false},
		{"audio/flac", true, false, false, false},
		{"audio/wav", true, false, false, false},
		{"audio/x-m4a", true, false, false, false},
		{"application/pdf", false, false, false, false},
		{"application/octet-stream", false, false, false, false},
		{"text/html", false, false, false, false},
	}
	for _, tt := range tests {
		ty := Type{MIME: tt.mime}
		if got := ty.BrowserSafe(); got != tt.safe {
			t.Errorf("%s BrowserSafe() = %v", tt.mime, got)
		}
		if got := ty.Convertible(); got != tt.conv {
			t.Errorf("%s Convertible() = %v", tt.mime, got)
		}
		if got := ty.IsSVG(); got != tt.svg {
			t.Errorf("%s IsSVG() = %v", tt.mime, got)
		}
		if got := ty.IsImage(); got != tt.image {
			t.Errorf("%s IsImage() = %v", tt.mime, got)
		}
	}
}

// Every media type Detect can produce for the allow-list must be on it;
// a normalisation typo would silently block passthrough.
func TestDetectedMediaIsBrowserSafe(t *testing.T) {
	inputs := map[string][]byte{
		"png":  png(ihdr, idat),
		"apng": png(ihdr, actl, idat),
		"gif":  []byte("GIF89a\x01\x00"),
		"jpeg": []byte("\xff\xd8\xff\xe0"),
		"webp": riff("WEBP", "VP8 "),
		"avif": ftyp("avif", "mif1"),
		"bmp":  bmp(40),
		"ico":  []byte("\x00\x00\x01\x00\x01\x00"),
		"tiff": []byte("II*\x00\x08\x00\x00\x00\x00\x00\x00"),
		"mp4":  ftyp("isom"),
		"m4a":  ftyp("M4A "),
		"m4v":  ftyp("M4V "),
		"mov":  ftyp("qt  "),
		"3gp":  ftyp("3gp4"),
		"3g2":  ftyp("3g2a"),
		"webm": webm,
		"ogg":  []byte("OggS\x00\x02"),
		"mp3":  []byte("ID3\x04\x00"),
		"aac":  []byte("\xff\xf1\x50\x80"),
		"flac": []byte("fLaC\x00"),
		"wav":  riff("WAVE", "fmt "),
		"mpeg": []byte("\x00\x00\x01\xba\x44"),
	}
	for name, in := range inputs {
		if got := Detect(in); !got.BrowserSafe() {
			t.Errorf("%s: Detect() = %+v, not browser-safe", name, got)
		}
	}
}

func TestExts(t *testing.T) {
	tests := []struct {
		in   Type
		want []string
	}{
		{Type{MIME: "image/jpeg", Ext: "jpg"}, []string{"jpg", "jpeg"}},
		{Type{MIME: "image/tiff", Ext: "tiff"}, []string{"tiff", "tif"}},
		{Type{MIME: "image/apng", Ext: "png"}, []string{"png", "apng"}},
		{Type{MIME: "video/mpeg", Ext: "mpg"}, []string{"mpg", "mpeg"}},
		{Type{MIME: "image/webp", Ext: "webp"}, []string{"webp"}},
		{Unknown, []string{"unknown"}},
		{Type{}, []string{"unknown"}},
	}
	for _, tt := range tests {
		if got := tt.in.Exts(); !slices.Equal(got, tt.want) {
			t.Errorf("%+v.Exts() = %q, want %q", tt.in, got, tt.want)
		}
		if got := tt.in.Exts(); tt.in.Ext != "" && got[0] != tt.in.Ext {
			t.Errorf("%+v.Exts()[0] = %q, want canonical %q", tt.in, got[0], tt.in.Ext)
		}
	}
}

func FuzzDetect(f *testing.F) {
	f.Add([]byte("<!DOCTYPE svg [<!ENTITY a '>'>]><svg>"))
	f.Add(png(ihdr, actl, idat))
	f.Add(ftyp("mif1", "avif"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got := Detect(b)
		if got.MIME == "" || got.Ext == "" {
			t.Fatalf("Detect() = %+v", got)
		}
	})
}
