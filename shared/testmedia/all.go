package testmedia

import (
	"fmt"
	"image/color"
	"maps"
	"slices"
	"sync"
)

// ExternalRefURL is the URL SVGExternalRef points at in the "svg-external-ref"
// fixture: a closed local port, so a renderer that wrongly fetches it fails
// fast instead of reaching the network.
const ExternalRefURL = "http://127.0.0.1:1/external.png"

// fixtures maps names to lazily generated, memoised fixtures with default
// sizes chosen to be realistic yet cheap.
var fixtures = map[string]func() []byte{
	"png":                defaultPNG,
	"png16":              lazy(func() []byte { return PNG16(320, 240) }),
	"png-opaque":         lazy(func() []byte { return PNGOpaque(1920, 1080) }),
	"png-flat":           lazy(func() []byte { return FlatPNG(256, 256, color.NRGBA{0x86, 0xb3, 0x00, 0xff}) }),
	"png-transparent":    lazy(func() []byte { return TransparentPNG(256, 256) }),
	"apng":               lazy(func() []byte { return APNG(200, 150, 6) }),
	"apng-ops":           lazy(APNGOps),
	"gif-animated":       lazy(func() []byte { return GIF(160, 120, 8) }),
	"gif-static":         lazy(func() []byte { return GIFStatic(160, 120) }),
	"gif-line-art":       lazy(func() []byte { return GIFLineArt(370, 285, 4) }),
	"png-glyph":          lazy(func() []byte { return GlyphPNG(128, 128, color.NRGBA{255, 255, 255, 255}, color.NRGBA{}) }),
	"png-hidden-colour":  lazy(func() []byte { return HiddenGradientPNG(64, 64) }),
	"jpeg":               defaultJPEG,
	"jpeg-exif1":         lazy(func() []byte { return JPEGWithOrientation(640, 480, 1) }),
	"jpeg-exif2":         lazy(func() []byte { return JPEGWithOrientation(640, 480, 2) }),
	"jpeg-exif3":         lazy(func() []byte { return JPEGWithOrientation(640, 480, 3) }),
	"jpeg-exif4":         lazy(func() []byte { return JPEGWithOrientation(640, 480, 4) }),
	"jpeg-exif5":         lazy(func() []byte { return JPEGWithOrientation(640, 480, 5) }),
	"jpeg-exif6":         lazy(func() []byte { return JPEGWithOrientation(640, 480, 6) }),
	"jpeg-exif7":         lazy(func() []byte { return JPEGWithOrientation(640, 480, 7) }),
	"jpeg-exif8":         lazy(func() []byte { return JPEGWithOrientation(640, 480, 8) }),
	"jpeg-exif6-le":      lazy(func() []byte { return JPEGWithOrientationLE(640, 480, 6) }),
	"cmyk-jpeg":          lazy(func() []byte { return CMYKJPEG(320, 240) }),
	"bmp":                lazy(func() []byte { return BMP(320, 240) }),
	"bmp-alpha":          lazy(func() []byte { return BMPAlpha(320, 240) }),
	"ico":                lazy(func() []byte { return ICO(16, 32, 48, 256) }),
	"ico-bmp":            lazy(func() []byte { return ICOBMP(32) }),
	"svg":                lazy(func() []byte { return SVG(400, 300) }),
	"svg-script":         lazy(SVGWithScript),
	"svg-huge":           lazy(SVGHuge),
	"svg-entity-bomb":    lazy(SVGEntityBomb),
	"svg-external-ref":   lazy(func() []byte { return SVGExternalRef(ExternalRefURL) }),
	"wav":                lazy(func() []byte { return WAV(1) }),
	"mp4":                lazy(func() []byte { return MP4(64 << 10) }),
	"m4a":                lazy(M4A),
	"webm":               lazy(WebM),
	"ogg":                lazy(Ogg),
	"mp3":                lazy(MP3),
	"flac":               lazy(FLAC),
	"html":               lazy(HTML),
	"pdf":                lazy(PDF),
	"empty":              func() []byte { return []byte{} },
	"truncated-png":      lazy(func() []byte { b := defaultPNG(); return Truncate(b, len(b)/2) }),
	"truncated-jpeg":     lazy(func() []byte { b := defaultJPEG(); return Truncate(b, len(b)/2) }),
	"corrupt-png":        lazy(func() []byte { return CorruptHeader(defaultPNG()) }),
	"corrupt-jpeg":       lazy(func() []byte { return CorruptHeader(defaultJPEG()) }),
	"png-bomb":           lazy(func() []byte { return PNGBomb(16000, 16000) }),
	"png-bomb-truncated": lazy(func() []byte { return PNGBombTruncated(65536, 65536) }),
	"jpeg-bomb":          lazy(func() []byte { return JPEGBomb(20000, 14000) }),
	"gif-many-frames":    lazy(func() []byte { return GIFManyFrames(5000) }),
	"polyglot":           lazy(GIFHTMLPolyglot),
}

// The defaults others derive from are separate variables: referring to Get
// inside the fixtures initialiser would be an initialisation cycle.
var (
	defaultPNG  = lazy(func() []byte { return PNG(640, 480) })
	defaultJPEG = lazy(func() []byte { return JPEG(1024, 768, 85) })
)

func lazy(f func() []byte) func() []byte { return sync.OnceValue(f) }

// Names returns the fixture names known to Get and All, sorted.
func Names() []string {
	return slices.Sorted(maps.Keys(fixtures))
}

// Get returns the named fixture, generating it on first use. It panics on
// an unknown name. The slice is shared between callers: do not modify it.
func Get(name string) []byte {
	f, ok := fixtures[name]
	if !ok {
		panic(fmt.Sprintf("testmedia: unknown fixture %q", name))
	}
	return f()
}

// All returns every named fixture (see Names), each generated once per
// process and then shared. The map is a fresh copy, the slices are not:
// do not modify them.
func All() map[string][]byte {
	m := make(map[string][]byte, len(fixtures))
	for name, f := range fixtures {
		m[name] = f()
	}
	return m
}
