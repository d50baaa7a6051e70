package testmedia

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"encoding/xml"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/h2non/filetype"
	"golang.org/x/image/bmp"
)

func decodeConfig(t *testing.T, b []byte) (image.Config, string) {
	t.Helper()
	cfg, format, err := image.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("DecodeConfig: %v", err)
	}
	return cfg, format
}

func checkDims(t *testing.T, img image.Image, w, h int) {
	t.Helper()
	if got := img.Bounds(); got != image.Rect(0, 0, w, h) {
		t.Fatalf("bounds = %v, want %dx%d", got, w, h)
	}
}

// distinctColours counts distinct pixel values, to catch flat output.
func distinctColours(img image.Image) int {
	seen := map[color.Color]struct{}{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			seen[img.At(x, y)] = struct{}{}
		}
	}
	return len(seen)
}

func TestDeterministic(t *testing.T) {
	t.Parallel()
	for name, f := range map[string]func() []byte{
		"png":  func() []byte { return PNG(50, 40) },
		"gif":  func() []byte { return GIF(30, 20, 3) },
		"jpeg": func() []byte { return JPEG(50, 40, 80) },
		"cmyk": func() []byte { return CMYKJPEG(20, 20) },
		"mp4":  func() []byte { return MP4(1000) },
	} {
		if !bytes.Equal(f(), f()) {
			t.Errorf("%s: output differs between calls", name)
		}
	}
}

func TestPNG(t *testing.T) {
	t.Parallel()
	img, err := png.Decode(bytes.NewReader(PNG(97, 61)))
	if err != nil {
		t.Fatal(err)
	}
	n, ok := img.(*image.NRGBA)
	if !ok {
		t.Fatalf("decoded %T, want *image.NRGBA", img)
	}
	checkDims(t, n, 97, 61)
	minA := 255
	for i := 3; i < len(n.Pix); i += 4 {
		minA = min(minA, int(n.Pix[i]))
	}
	if minA > 64 {
		t.Errorf("minimum alpha %d: no alpha gradient", minA)
	}
	if c := distinctColours(n); c < 1000 {
		t.Errorf("only %d distinct colours", c)
	}
}

func TestPNG16(t *testing.T) {
	t.Parallel()
	img, err := png.Decode(bytes.NewReader(PNG16(40, 30)))
	if err != nil {
		t.Fatal(err)
	}
	n, ok := img.(*image.NRGBA64)
	if !ok {
		t.Fatalf("decoded %T, want *image.NRGBA64", img)
	}
	checkDims(t, n, 40, 30)
	// Real 16-bit content: low bytes are not copies of the high bytes.
	differ := 0
	for i := 0; i < len(n.Pix); i += 2 {
		if n.Pix[i] != n.Pix[i+1] {
			differ++
		}
	}
	if differ < len(n.Pix)/4 {
		t.Errorf("only %d of %d samples have distinct low bytes", differ, len(n.Pix)/2)
	}
}

func TestPNGOpaque(t *testing.T) {
	t.Parallel()
	b := PNGOpaque(120, 80)
	if b[25] != 2 { // IHDR colour type
		t.Errorf("colour type %d, want 2 (RGB)", b[25])
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	checkDims(t, img, 120, 80)
	if !img.(interface{ Opaque() bool }).Opaque() {
		t.Error("not opaque")
	}
}

func TestFlatPNG(t *testing.T) {
	t.Parallel()
	want := color.NRGBA{10, 200, 30, 255}
	img, err := png.Decode(bytes.NewReader(FlatPNG(33, 17, want)))
	if err != nil {
		t.Fatal(err)
	}
	checkDims(t, img, 33, 17)
	if c := distinctColours(img); c != 1 {
		t.Errorf("%d colours, want 1", c)
	}
	if got := color.NRGBAModel.Convert(img.At(5, 5)); got != want {
		t.Errorf("colour %v, want %v", got, want)
	}

	img, err = png.Decode(bytes.NewReader(TransparentPNG(8, 9)))
	if err != nil {
		t.Fatal(err)
	}
	checkDims(t, img, 8, 9)
	for y := range 9 {
		for x := range 8 {
			if _, _, _, a := img.At(x, y).RGBA(); a != 0 {
				t.Fatalf("pixel (%d,%d) alpha %d", x, y, a)
			}
		}
	}
}

type pngChunk struct {
	typ  string
	data []byte
}

// parsePNG splits a PNG into chunks, verifying signature and CRCs.
func parsePNG(t *testing.T, b []byte) []pngChunk {
	t.Helper()
	if !bytes.HasPrefix(b, []byte(pngSignature)) {
		t.Fatal("missing PNG signature")
	}
	var chunks []pngChunk
	for p := b[8:]; len(p) > 0; {
		if len(p) < 12 {
			t.Fatalf("trailing %d bytes", len(p))
		}
		n := int(binary.BigEndian.Uint32(p))
		if len(p) < 12+n {
			t.Fatal("chunk overruns file")
		}
		typ, data := string(p[4:8]), p[8:8+n]
		if got, want := binary.BigEndian.Uint32(p[8+n:]), crc32.ChecksumIEEE(p[4:8+n]); got != want {
			t.Fatalf("%s CRC %08x, want %08x", typ, got, want)
		}
		chunks = append(chunks, pngChunk{typ, data})
		p = p[12+n:]
	}
	return chunks
}

func inflate(t *testing.T, b []byte) []byte {
	t.Helper()
	r, err := zlib.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(r) // verifies the Adler-32 at EOF
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAPNG(t *testing.T) {
	t.Parallel()
	const w, h, frames = 64, 48, 5
	b := APNG(w, h, frames)
	chunks := parsePNG(t, b)
	if chunks[0].typ != "IHDR" || chunks[len(chunks)-1].typ != "IEND" {
		t.Fatalf("first/last chunk %s/%s", chunks[0].typ, chunks[len(chunks)-1].typ)
	}
	var (
		seq        uint32
		fctl, fdat int
		seenIDAT   bool
		raws       [][]byte
	)
	for _, c := range chunks[1 : len(chunks)-1] {
		switch c.typ {
		case "acTL":
			if seenIDAT || fctl > 0 {
				t.Error("acTL after frame data")
			}
			if n := binary.BigEndian.Uint32(c.data); n != frames {
				t.Errorf("acTL num_frames %d, want %d", n, frames)
			}
			if plays := binary.BigEndian.Uint32(c.data[4:]); plays != 0 {
				t.Errorf("num_plays %d, want 0", plays)
			}
		case "fcTL", "fdAT":
			if got := binary.BigEndian.Uint32(c.data); got != seq {
				t.Errorf("%s sequence %d, want %d", c.typ, got, seq)
			}
			seq++
			if c.typ == "fcTL" {
				fctl++
				if fw, fh := binary.BigEndian.Uint32(c.data[4:]), binary.BigEndian.Uint32(c.data[8:]); fw != w || fh != h {
					t.Errorf("fcTL size %dx%d", fw, fh)
				}
			} else {
				fdat++
				raws = append(raws, inflate(t, c.data[4:]))
			}
		case "IDAT":
			if fctl != 1 {
				t.Error("IDAT not preceded by exactly one fcTL")
			}
			seenIDAT = true
			raws = append(raws, inflate(t, c.data))
		default:
			t.Errorf("unexpected chunk %s", c.typ)
		}
	}
	if fctl != frames || fdat != frames-1 {
		t.Errorf("%d fcTL, %d fdAT; want %d, %d", fctl, fdat, frames, frames-1)
	}
	for i, r := range raws {
		if len(r) != h*(1+4*w) {
			t.Errorf("frame %d: %d raw bytes", i, len(r))
		}
		if i > 0 && bytes.Equal(r, raws[i-1]) {
			t.Errorf("frame %d equals frame %d", i, i-1)
		}
	}

	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("frame 0 does not decode as PNG: %v", err)
	}
	checkDims(t, img, w, h)
	ref := paint(w, h, style{alpha: true, noise: 4})
	if !bytes.Equal(img.(*image.NRGBA).Pix, ref.Pix) {
		t.Error("decoded frame 0 differs from source")
	}
}

func TestAPNGOps(t *testing.T) {
	t.Parallel()
	chunks := parsePNG(t, APNGOps())
	var (
		types          []string
		seq            uint32
		dispose, blend = map[byte]bool{}, map[byte]bool{}
		offset, den0   bool
	)
	for _, c := range chunks {
		types = append(types, c.typ)
		switch c.typ {
		case "acTL":
			if plays := binary.BigEndian.Uint32(c.data[4:]); plays != 3 {
				t.Errorf("num_plays %d, want 3", plays)
			}
		case "fcTL", "fdAT":
			if got := binary.BigEndian.Uint32(c.data); got != seq {
				t.Errorf("%s sequence %d, want %d", c.typ, got, seq)
			}
			seq++
			if c.typ == "fcTL" {
				offset = offset || binary.BigEndian.Uint32(c.data[12:]) > 0 && binary.BigEndian.Uint32(c.data[16:]) > 0
				den0 = den0 || binary.BigEndian.Uint16(c.data[22:]) == 0
				dispose[c.data[24]], blend[c.data[25]] = true, true
			}
		}
	}
	want := "IHDR acTL IDAT fcTL fdAT fcTL fdAT fcTL fdAT fcTL fdAT IEND"
	if got := strings.Join(types, " "); got != want {
		t.Errorf("chunks %s, want %s (default image before the first fcTL)", got, want)
	}
	if len(dispose) != 3 || len(blend) != 2 || !offset || !den0 {
		t.Errorf("dispose ops %v, blend ops %v, offset frame %v, delay_den 0 %v: want all", dispose, blend, offset, den0)
	}
}

func TestAPNGOfPalette(t *testing.T) {
	t.Parallel()
	pal := color.Palette{color.NRGBA{0, 0, 0, 0}, color.NRGBA{255, 0, 0, 255}, color.NRGBA{0, 0, 255, 128}}
	frame := func(i uint8) *image.Paletted {
		img := image.NewPaletted(image.Rect(0, 0, 8, 4), pal)
		for j := range img.Pix {
			img.Pix[j] = (uint8(j) + i) % 3
		}
		return img
	}
	b := APNGOf(APNGSpec{Width: 8, Height: 4, Frames: []APNGFrame{{Image: frame(0)}, {Image: frame(1)}}})
	var types []string
	for _, c := range parsePNG(t, b) {
		types = append(types, c.typ)
	}
	if got := strings.Join(types, " "); got != "IHDR acTL PLTE tRNS fcTL IDAT fcTL fdAT IEND" {
		t.Errorf("chunks %s", got)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got := img.(*image.Paletted).Pix; !bytes.Equal(got, frame(0).Pix) {
		t.Errorf("default image %v, want frame 0", got)
	}
}

func TestGIF(t *testing.T) {
	t.Parallel()
	const w, h, frames = 48, 32, 7
	g, err := gif.DecodeAll(bytes.NewReader(GIF(w, h, frames)))
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Image) != frames {
		t.Fatalf("%d frames, want %d", len(g.Image), frames)
	}
	if g.LoopCount != 0 {
		t.Errorf("LoopCount %d, want 0", g.LoopCount)
	}
	if g.Config.Width != w || g.Config.Height != h {
		t.Errorf("screen %dx%d", g.Config.Width, g.Config.Height)
	}
	for i, f := range g.Image {
		checkDims(t, f, w, h)
		if g.Delay[i] != 4+i%3 {
			t.Errorf("frame %d delay %d, want %d", i, g.Delay[i], 4+i%3)
		}
		if i > 0 && bytes.Equal(f.Pix, g.Image[i-1].Pix) {
			t.Errorf("frame %d equals frame %d", i, i-1)
		}
	}
	if c := distinctColours(g.Image[0]); c < 16 {
		t.Errorf("frame 0 uses %d colours", c)
	}

	s, err := gif.DecodeAll(bytes.NewReader(GIFStatic(20, 10)))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Image) != 1 {
		t.Errorf("static GIF has %d frames", len(s.Image))
	}
	checkDims(t, s.Image[0], 20, 10)
}

func TestGIFLineArt(t *testing.T) {
	t.Parallel()
	g, err := gif.DecodeAll(bytes.NewReader(GIFLineArt(370, 285, 4)))
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Image) != 4 {
		t.Fatalf("%d frames, want 4", len(g.Image))
	}
	inked := func(f *image.Paletted) int {
		n := 0
		for _, i := range f.Pix {
			if i != f.Pix[0] {
				n++
			}
		}
		return n
	}
	first := g.Image[0]
	checkDims(t, first, 370, 285)
	if n := inked(first); n == 0 || n*100 >= len(first.Pix) {
		t.Errorf("first frame: %d of %d pixels inked, want some but under 1%%", n, len(first.Pix))
	}
	for i := 1; i < len(g.Image); i++ {
		if inked(g.Image[i]) <= inked(g.Image[i-1]) {
			t.Errorf("frame %d adds nothing to frame %d", i, i-1)
		}
	}
}

func TestGlyphPNG(t *testing.T) {
	t.Parallel()
	ink, paper := color.NRGBA{255, 255, 255, 255}, color.NRGBA{255, 255, 255, 0}
	img, err := png.Decode(bytes.NewReader(GlyphPNG(100, 60, ink, paper)))
	if err != nil {
		t.Fatal(err)
	}
	checkDims(t, img, 100, 60)
	// image/png keeps the colour under alpha 0 in an NRGBA image.
	for _, p := range []struct {
		x, y int
		want color.NRGBA
	}{{50, 30, ink}, {50, 16, ink}, {50, 14, paper}, {0, 0, paper}, {99, 59, paper}} {
		if got := img.(*image.NRGBA).NRGBAAt(p.x, p.y); got != p.want {
			t.Errorf("(%d,%d) = %v, want %v", p.x, p.y, got, p.want)
		}
	}
}

func TestHiddenGradientPNG(t *testing.T) {
	t.Parallel()
	img, err := png.Decode(bytes.NewReader(HiddenGradientPNG(64, 32)))
	if err != nil {
		t.Fatal(err)
	}
	checkDims(t, img, 64, 32)
	n := img.(*image.NRGBA)
	for i := 3; i < len(n.Pix); i += 4 {
		if n.Pix[i] != 0 {
			t.Fatalf("alpha %d at byte %d", n.Pix[i], i)
		}
	}
	if c := distinctColours(img); c < 64*32/2 {
		t.Errorf("%d colours stored under alpha 0", c)
	}
}

func TestGIFManyFrames(t *testing.T) {
	t.Parallel()
	b := GIFManyFrames(5000)
	if len(b) > 200<<10 {
		t.Errorf("%d bytes, want a small file", len(b))
	}
	g, err := gif.DecodeAll(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Image) != 5000 {
		t.Errorf("%d frames, want 5000", len(g.Image))
	}
	if g.Config.Width != 16 || g.Config.Height != 16 {
		t.Errorf("screen %dx%d", g.Config.Width, g.Config.Height)
	}
}

func TestGIFHTMLPolyglot(t *testing.T) {
	t.Parallel()
	b := GIFHTMLPolyglot()
	if !bytes.HasPrefix(b, []byte("GIF89a")) || !bytes.Contains(b, []byte("<html><body><script>")) {
		t.Fatalf("not a GIF/HTML polyglot: %q", b)
	}
	img, err := gif.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	checkDims(t, img, 1, 1)
}

func TestJPEG(t *testing.T) {
	t.Parallel()
	img, err := jpeg.Decode(bytes.NewReader(JPEG(130, 70, 80)))
	if err != nil {
		t.Fatal(err)
	}
	checkDims(t, img, 130, 70)
	if c := distinctColours(img); c < 1000 {
		t.Errorf("only %d distinct colours", c)
	}
}

// exifOrientationOf finds the APP1 segment that must directly follow SOI
// and returns its Orientation tag.
func exifOrientationOf(t *testing.T, b []byte) int {
	t.Helper()
	if !bytes.HasPrefix(b, []byte{0xff, 0xd8, 0xff, 0xe1}) {
		t.Fatalf("no APP1 right after SOI: % x", b[:4])
	}
	n := int(binary.BigEndian.Uint16(b[4:]))
	seg := b[6 : 4+n]
	if !bytes.HasPrefix(seg, []byte("Exif\x00\x00")) {
		t.Fatal("APP1 is not EXIF")
	}
	tiff := seg[6:]
	var order binary.ByteOrder
	switch string(tiff[:2]) {
	case "MM":
		order = binary.BigEndian
	case "II":
		order = binary.LittleEndian
	default:
		t.Fatalf("bad TIFF byte order %q", tiff[:2])
	}
	if order.Uint16(tiff[2:]) != 42 {
		t.Fatal("bad TIFF magic")
	}
	ifd := tiff[order.Uint32(tiff[4:]):]
	for i := range int(order.Uint16(ifd)) {
		e := ifd[2+12*i:]
		if order.Uint16(e) == 0x0112 {
			if typ, cnt := order.Uint16(e[2:]), order.Uint32(e[4:]); typ != 3 || cnt != 1 {
				t.Fatalf("Orientation type %d count %d", typ, cnt)
			}
			return int(order.Uint16(e[8:]))
		}
	}
	t.Fatal("no Orientation tag")
	return 0
}

func TestJPEGWithOrientation(t *testing.T) {
	t.Parallel()
	const w, h = 80, 60
	for o := 1; o <= 8; o++ {
		for _, f := range []func(int, int, int) []byte{JPEGWithOrientation, JPEGWithOrientationLE} {
			b := f(w, h, o)
			if got := exifOrientationOf(t, b); got != o {
				t.Errorf("orientation %d, want %d", got, o)
			}
			img, err := jpeg.Decode(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			checkDims(t, img, w, h)
			// The red marker sits in the stored top-left corner.
			r, g, bl, _ := img.At(w/8, h/8).RGBA()
			if r>>8 < 200 || g>>8 > 60 || bl>>8 > 60 {
				t.Errorf("top-left pixel %d,%d,%d, want red", r>>8, g>>8, bl>>8)
			}
		}
	}
}

func TestJPEGSize(t *testing.T) {
	t.Parallel()
	targets := []int{20 << 10, 100 << 10}
	if !testing.Short() {
		targets = append(targets, 1<<20)
	}
	for _, target := range targets {
		b := JPEGSize(target)
		if d := absDiff(len(b), target); d*10 > target {
			t.Errorf("JPEGSize(%d) = %d bytes", target, len(b))
		}
		decodeConfig(t, b)
	}
}

func TestJPEGLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("4000x3000 encode")
	}
	t.Parallel()
	b := JPEGLarge()
	cfg, format := decodeConfig(t, b)
	if format != "jpeg" || cfg.Width != 4000 || cfg.Height != 3000 {
		t.Errorf("%s %dx%d", format, cfg.Width, cfg.Height)
	}
	if len(b) < 3<<20 || len(b) > 4<<20 {
		t.Errorf("%d bytes, want 3-4 MB", len(b))
	}
}

func TestCMYKJPEG(t *testing.T) {
	t.Parallel()
	for _, sz := range []image.Point{{64, 48}, {37, 21}} {
		b := CMYKJPEG(sz.X, sz.Y)
		if findMarker(b, 0xee) < 0 {
			t.Error("no Adobe APP14 marker")
		}
		img, err := jpeg.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		c, ok := img.(*image.CMYK)
		if !ok {
			t.Fatalf("decoded %T, want *image.CMYK", img)
		}
		checkDims(t, c, sz.X, sz.Y)
		// Compare with the source to catch inversion, channel order or DCT
		// mistakes; lossy coding of noisy content allows a small error.
		ref := paint(sz.X, sz.Y, style{noise: photoNoise})
		var sum int
		for y := range sz.Y {
			for x := range sz.X {
				i := ref.PixOffset(x, y)
				want := color.CMYKModel.Convert(color.RGBA{ref.Pix[i], ref.Pix[i+1], ref.Pix[i+2], 255}).(color.CMYK)
				got := c.CMYKAt(x, y)
				sum += absDiff(int(got.C), int(want.C)) + absDiff(int(got.M), int(want.M)) +
					absDiff(int(got.Y), int(want.Y)) + absDiff(int(got.K), int(want.K))
			}
		}
		if mean := float64(sum) / float64(4*sz.X*sz.Y); mean > 6 {
			t.Errorf("%v: mean absolute error %.2f", sz, mean)
		}
	}
}

func TestBMP(t *testing.T) {
	t.Parallel()
	for bpp, b := range map[int][]byte{24: BMP(30, 20), 32: BMPAlpha(30, 20)} {
		if got := binary.LittleEndian.Uint16(b[28:]); int(got) != bpp {
			t.Errorf("bpp %d, want %d", got, bpp)
		}
		img, err := bmp.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		checkDims(t, img, 30, 20)
	}
}

type icoDirEntry struct {
	w, h      int
	bpp       int
	size, off int
}

func parseICO(t *testing.T, b []byte) []icoDirEntry {
	t.Helper()
	le := binary.LittleEndian
	if le.Uint16(b) != 0 || le.Uint16(b[2:]) != 1 {
		t.Fatal("bad ICONDIR")
	}
	var es []icoDirEntry
	for i := range int(le.Uint16(b[4:])) {
		e := b[6+16*i:]
		dim := func(v byte) int {
			if v == 0 {
				return 256
			}
			return int(v)
		}
		de := icoDirEntry{dim(e[0]), dim(e[1]), int(le.Uint16(e[6:])), int(le.Uint32(e[8:])), int(le.Uint32(e[12:]))}
		if de.off+de.size > len(b) {
			t.Fatalf("entry %d overruns file", i)
		}
		es = append(es, de)
	}
	return es
}

func TestICO(t *testing.T) {
	t.Parallel()
	sizes := []int{16, 32, 256}
	b := ICO(sizes...)
	es := parseICO(t, b)
	if len(es) != len(sizes) {
		t.Fatalf("%d entries", len(es))
	}
	end := 6 + 16*len(es)
	for i, e := range es {
		if e.w != sizes[i] || e.h != sizes[i] || e.bpp != 32 || e.off != end {
			t.Errorf("entry %d: %+v", i, e)
		}
		end = e.off + e.size
		img, err := png.Decode(bytes.NewReader(b[e.off : e.off+e.size]))
		if err != nil {
			t.Fatal(err)
		}
		checkDims(t, img, sizes[i], sizes[i])
	}
	if end != len(b) {
		t.Errorf("%d trailing bytes", len(b)-end)
	}
}

func TestICOBMP(t *testing.T) {
	t.Parallel()
	const size = 20 // not a multiple of 32: exercises mask row padding
	b := ICOBMP(size)
	es := parseICO(t, b)
	if len(es) != 1 || es[0].w != size || es[0].off+es[0].size != len(b) {
		t.Fatalf("entries %+v", es)
	}
	dib := b[es[0].off:]
	le := binary.LittleEndian
	if le.Uint32(dib) != 40 || le.Uint32(dib[4:]) != size || le.Uint32(dib[8:]) != 2*size ||
		le.Uint16(dib[12:]) != 1 || le.Uint16(dib[14:]) != 32 || le.Uint32(dib[16:]) != 0 {
		t.Fatalf("bad BITMAPINFOHEADER % x", dib[:40])
	}
	if want := 40 + 4*size*size + 4*size; len(dib) != want { // 20-bit mask rows pad to 4 bytes
		t.Fatalf("DIB %d bytes, want %d", len(dib), want)
	}
	// Bottom-up BGRA: the first stored row is the image's last.
	ref := paint(size, size, style{alpha: true, noise: pngNoise})
	for x := range size {
		p := ref.Pix[ref.PixOffset(x, size-1):]
		if q := dib[40+4*x:]; q[0] != p[2] || q[1] != p[1] || q[2] != p[0] || q[3] != p[3] {
			t.Fatalf("pixel %d: % x, want BGRA of % x", x, q[:4], p[:4])
		}
	}
	mask := dib[40+4*size*size:]
	if bytes.Count(mask, []byte{0}) == len(mask) {
		t.Error("AND mask is empty despite transparent pixels")
	}
}

func svgRoot(t *testing.T, b []byte) map[string]string {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = false // tolerate the custom entities of the hostile fixtures
	for {
		tok, err := d.Token()
		if err != nil {
			t.Fatal(err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if se.Name.Local != "svg" {
				t.Fatalf("root element %s", se.Name.Local)
			}
			attrs := map[string]string{}
			for _, a := range se.Attr {
				attrs[a.Name.Local] = a.Value
			}
			return attrs
		}
	}
}

func TestSVG(t *testing.T) {
	t.Parallel()
	a := svgRoot(t, SVG(321, 123))
	if a["width"] != "321" || a["height"] != "123" {
		t.Errorf("svg attributes %v", a)
	}
	if err := xml.Unmarshal(SVG(321, 123), new(struct{})); err != nil {
		t.Errorf("SVG is not well-formed: %v", err)
	}

	s := SVGWithScript()
	if a := svgRoot(t, s); a["onload"] == "" || !bytes.Contains(s, []byte("<script")) {
		t.Error("SVGWithScript lacks onload or <script>")
	}
	if a := svgRoot(t, SVGHuge()); a["width"] != "100000" || a["height"] != "100000" {
		t.Errorf("SVGHuge attributes %v", a)
	}

	bomb := SVGEntityBomb()
	svgRoot(t, bomb)
	if n := bytes.Count(bomb, []byte("<!ENTITY")); n != 10 {
		t.Errorf("%d entities, want 10", n)
	}
	if !bytes.Contains(bomb, []byte("&lol9;")) {
		t.Error("entity bomb never expanded")
	}

	const url = `http://example.invalid/a.png?x=1&y="2"`
	ext := SVGExternalRef(url)
	svgRoot(t, ext)
	for _, want := range []string{
		`<!ENTITY xxe SYSTEM "http://example.invalid/a.png?x=1&y=%222%22">`,
		`href="http://example.invalid/a.png?x=1&amp;y=&#34;2&#34;"`,
		`&xxe;`,
	} {
		if !bytes.Contains(ext, []byte(want)) {
			t.Errorf("SVGExternalRef lacks %s", want)
		}
	}
}

func TestWAV(t *testing.T) {
	t.Parallel()
	b := WAV(0.5)
	le := binary.LittleEndian
	if string(b[:4]) != "RIFF" || string(b[8:16]) != "WAVEfmt " || int(le.Uint32(b[4:])) != len(b)-8 {
		t.Fatalf("bad RIFF header % x", b[:16])
	}
	if string(b[36:40]) != "data" || le.Uint32(b[40:]) != 2*22050 || len(b) != 44+2*22050 {
		t.Fatalf("bad data chunk")
	}
	var peak int16
	for i := 44; i < len(b); i += 2 {
		peak = max(peak, int16(le.Uint16(b[i:])))
	}
	if peak < 16000 {
		t.Errorf("peak %d: not a sine wave", peak)
	}
}

// walkBoxes returns the top-level ISO BMFF box types, requiring the sizes
// to tile the file exactly.
func walkBoxes(t *testing.T, b []byte) []string {
	t.Helper()
	var types []string
	for p := b; len(p) > 0; {
		n := int(binary.BigEndian.Uint32(p))
		if n < 8 || n > len(p) {
			t.Fatalf("box size %d with %d bytes left", n, len(p))
		}
		types = append(types, string(p[4:8]))
		p = p[n:]
	}
	return types
}

func TestMP4(t *testing.T) {
	t.Parallel()
	b := MP4(20 << 20)
	if len(b) != 20<<20 {
		t.Fatalf("%d bytes, want %d", len(b), 20<<20)
	}
	if got := strings.Join(walkBoxes(t, b), ","); got != "ftyp,free,mdat" {
		t.Errorf("boxes %s", got)
	}
	if got := string(b[8:12]) + string(b[16:32]); got != "isomisomiso2avc1mp41" {
		t.Errorf("brands %q", got)
	}
	if len(MP4(48)) != 48 {
		t.Error("minimum size")
	}
	if z := bytes.Count(b[len(b)-4096:], []byte{0}); z > 64 {
		t.Errorf("payload not random: %d zero bytes in 4 KiB", z)
	}

	m := M4A()
	if got := strings.Join(walkBoxes(t, m), ","); got != "ftyp,mdat" || string(m[8:12]) != "M4A " {
		t.Errorf("M4A boxes %s, brand %q", got, m[8:12])
	}
}

// readVint reads an EBML variable-length integer; keepMarker keeps the
// length marker bit (element IDs are written with it).
func readVint(b []byte, keepMarker bool) (v uint64, n int) {
	n = 1
	for n <= 8 && b[0]&(0x80>>(n-1)) == 0 {
		n++
	}
	v = uint64(b[0])
	if !keepMarker {
		v &^= 0x80 >> (n - 1)
	}
	for i := 1; i < n; i++ {
		v = v<<8 | uint64(b[i])
	}
	return v, n
}

func TestWebM(t *testing.T) {
	t.Parallel()
	b := WebM()
	var ids []uint64
	for p := b; len(p) > 0; {
		id, n := readVint(p, true)
		size, m := readVint(p[n:], false)
		if n+m+int(size) > len(p) {
			t.Fatalf("element %x overruns", id)
		}
		if id == 0x1a45dfa3 && !bytes.Contains(p[n+m:n+m+int(size)], []byte("\x42\x82\x84webm")) {
			t.Error("EBML header lacks DocType webm")
		}
		ids = append(ids, id)
		p = p[n+m+int(size):]
	}
	if len(ids) != 2 || ids[0] != 0x1a45dfa3 || ids[1] != 0x18538067 {
		t.Errorf("top-level elements %x", ids)
	}
}

func TestOgg(t *testing.T) {
	t.Parallel()
	// CRC-32 with poly 0x04c11db7, init 0, no reflection or XOR: the check
	// value is the complement of CRC-32/POSIX's 0x765e7680.
	if got := oggCRC([]byte("123456789")); got != 0x89a1897f {
		t.Fatalf("oggCRC check value %08x", got)
	}
	b := Ogg()
	var pages int
	for p := b; len(p) > 0; pages++ {
		if string(p[:4]) != "OggS" {
			t.Fatalf("page %d: bad capture pattern", pages)
		}
		nseg := int(p[26])
		n := 27 + nseg
		for _, l := range p[27 : 27+nseg] {
			n += int(l)
		}
		page := bytes.Clone(p[:n])
		want := binary.LittleEndian.Uint32(page[22:])
		clear(page[22:26])
		if got := oggCRC(page); got != want {
			t.Errorf("page %d CRC %08x, want %08x", pages, want, got)
		}
		if pages == 0 && (p[5] != 2 || !bytes.HasPrefix(p[27+nseg:], []byte("OpusHead"))) {
			t.Error("first page is not a BOS OpusHead page")
		}
		p = p[n:]
	}
	if pages != 3 {
		t.Errorf("%d pages", pages)
	}
}

func TestMP3(t *testing.T) {
	t.Parallel()
	b := MP3()
	if string(b[:3]) != "ID3" {
		t.Fatal("no ID3 tag")
	}
	tag := 10 + int(b[6])<<21 | int(b[7])<<14 | int(b[8])<<7 | int(b[9])
	frames := 0
	for p := b[tag:]; len(p) > 0; p = p[384:] {
		if p[0] != 0xff || p[1] != 0xfb {
			t.Fatalf("frame %d: no sync", frames)
		}
		frames++
	}
	if frames != 10 {
		t.Errorf("%d frames", frames)
	}
}

func TestFLAC(t *testing.T) {
	t.Parallel()
	if crc8([]byte("123456789")) != 0xf4 || crc16([]byte("123456789")) != 0xfee8 {
		t.Fatal("CRC check values")
	}
	b := FLAC()
	if string(b[:4]) != "fLaC" || b[4] != 0x80 || b[7] != 34 {
		t.Fatalf("bad header % x", b[:8])
	}
	si := b[8:42]
	v := binary.BigEndian.Uint64(si[10:])
	if rate, bps, total := v>>44, v>>36&31+1, v&(1<<36-1); rate != 44100 || bps != 16 || total != 40960 {
		t.Errorf("STREAMINFO rate %d bps %d samples %d", rate, bps, total)
	}
	frames := b[42:]
	flen := int(si[9])
	if len(frames) != 10*flen {
		t.Fatalf("frames %d bytes, want 10x%d", len(frames), flen)
	}
	for i := range 10 {
		f := frames[i*flen : (i+1)*flen]
		if crc8(f[:5]) != f[5] || crc16(f[:flen-2]) != binary.BigEndian.Uint16(f[flen-2:]) {
			t.Errorf("frame %d CRC mismatch", i)
		}
	}
}

func TestPDF(t *testing.T) {
	t.Parallel()
	b := PDF()
	if !bytes.HasPrefix(b, []byte("%PDF-1.4\n")) || !bytes.HasSuffix(b, []byte("%%EOF\n")) {
		t.Fatal("bad PDF framing")
	}
	s := string(b)
	i := strings.Index(s, "xref\n")
	if !strings.HasSuffix(strings.TrimSuffix(s, "\n%%EOF\n"), "\n"+strconv.Itoa(i)) {
		t.Error("startxref does not point at xref")
	}
	lines := strings.Split(s[i:], "\n")[3:7]
	for n, l := range lines {
		off, err := strconv.Atoi(l[:10])
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(s[off:], strconv.Itoa(n+1)+" 0 obj") {
			t.Errorf("xref entry %d points at %q", n+1, s[off:off+8])
		}
	}
}

func TestBroken(t *testing.T) {
	t.Parallel()
	p := PNG(64, 64)
	if tr := Truncate(p, 100); len(tr) != 100 || !bytes.Equal(tr, p[:100]) {
		t.Error("Truncate")
	}
	if len(Truncate(p, 1<<30)) != len(p) || len(Truncate(p, -1)) != 0 {
		t.Error("Truncate bounds")
	}
	if _, err := png.Decode(bytes.NewReader(Truncate(p, len(p)/2))); err == nil {
		t.Error("truncated PNG decodes")
	}
	if _, err := jpeg.Decode(bytes.NewReader(Truncate(JPEG(64, 64, 80), 1000))); err == nil {
		t.Error("truncated JPEG decodes")
	}
	for name, b := range map[string][]byte{"png": p, "jpeg": JPEG(64, 64, 80), "gif": GIFStatic(8, 8)} {
		c := CorruptHeader(b)
		if !bytes.Equal(c[:4], b[:4]) || len(c) != len(b) {
			t.Errorf("%s: magic bytes changed", name)
		}
		if _, _, err := image.DecodeConfig(bytes.NewReader(c)); err == nil {
			t.Errorf("%s: corrupt header still decodes", name)
		}
	}
}

func TestPNGBomb(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		w, h, maxLen int
		full         bool
	}{
		{16000, 16000, 64 << 10, true},
		{65536, 65536, 600 << 10, false}, // header only: inflating 512 MB is too slow for a unit test
	} {
		b := PNGBomb(tc.w, tc.h)
		if len(b) > tc.maxLen {
			t.Errorf("%dx%d: %d bytes", tc.w, tc.h, len(b))
		}
		cfg, _ := decodeConfig(t, b)
		if cfg.Width != tc.w || cfg.Height != tc.h {
			t.Errorf("declared %dx%d, want %dx%d", cfg.Width, cfg.Height, tc.w, tc.h)
		}
		if tc.full {
			chunks := parsePNG(t, b)
			raw := inflate(t, chunks[1].data)
			if want := (1 + (tc.w+7)/8) * tc.h; len(raw) != want || bytes.Count(raw, []byte{0}) != want {
				t.Errorf("IDAT inflates to %d bytes, want %d zeros", len(raw), want)
			}
		}
	}
	// Small enough to decode fully with image/png.
	img, err := png.Decode(bytes.NewReader(PNGBomb(1000, 700)))
	if err != nil {
		t.Fatal(err)
	}
	checkDims(t, img, 1000, 700)

	tb := PNGBombTruncated(65536, 65536)
	if len(tb) > 1024 {
		t.Errorf("truncated bomb %d bytes", len(tb))
	}
	if cfg, _ := decodeConfig(t, tb); cfg.Width != 65536 || cfg.Height != 65536 {
		t.Errorf("truncated bomb declares %dx%d", cfg.Width, cfg.Height)
	}
}

func TestJPEGBomb(t *testing.T) {
	t.Parallel()
	b := JPEGBomb(20000, 14000)
	if len(b) > 8<<10 {
		t.Errorf("%d bytes", len(b))
	}
	cfg, format := decodeConfig(t, b)
	if format != "jpeg" || cfg.Width != 20000 || cfg.Height != 14000 {
		t.Errorf("%s %dx%d", format, cfg.Width, cfg.Height)
	}
}

func TestAll(t *testing.T) {
	t.Parallel()
	all := All()
	if len(all) != len(Names()) {
		t.Fatalf("All has %d fixtures, Names %d", len(all), len(Names()))
	}
	for name, b := range all {
		if len(b) == 0 && name != "empty" {
			t.Errorf("%s is empty", name)
		}
	}
	for _, name := range []string{
		"png", "png16", "apng", "apng-ops", "gif-animated", "gif-static", "jpeg", "jpeg-exif6", "cmyk-jpeg",
		"bmp", "ico", "svg", "svg-script", "wav", "mp4", "webm", "ogg", "mp3", "flac", "m4a",
		"html", "pdf", "empty", "truncated-png", "truncated-jpeg", "png-bomb", "jpeg-bomb",
		"gif-many-frames", "polyglot",
	} {
		if _, ok := all[name]; !ok {
			t.Errorf("missing fixture %q", name)
		}
	}
	if a, b := Get("png"), All()["png"]; &a[0] != &b[0] {
		t.Error("fixtures are regenerated instead of shared")
	}
	if got := exifOrientationOf(t, all["jpeg-exif6"]); got != 6 {
		t.Errorf("jpeg-exif6 orientation %d", got)
	}

	// Independent sniffers agree on what each fixture is.
	for name, want := range map[string]string{
		"png": "image/png", "apng": "image/png", "gif-animated": "image/gif", "polyglot": "image/gif",
		"jpeg": "image/jpeg", "cmyk-jpeg": "image/jpeg", "bmp": "image/bmp", "ico": "image/x-icon",
		"wav": "audio/wave", "mp4": "video/mp4", "webm": "video/webm", "ogg": "application/ogg",
		"mp3": "audio/mpeg", "pdf": "application/pdf", "html": "text/html; charset=utf-8",
		"svg": "text/xml; charset=utf-8",
	} {
		if got := http.DetectContentType(all[name]); got != want {
			t.Errorf("http.DetectContentType(%s) = %s, want %s", name, got, want)
		}
	}
	for name, want := range map[string]string{
		"png": "png", "gif-animated": "gif", "jpeg": "jpg", "bmp": "bmp", "ico": "ico",
		"wav": "wav", "mp4": "mp4", "m4a": "m4a", "webm": "webm", "ogg": "ogg",
		"mp3": "mp3", "flac": "flac", "pdf": "pdf",
	} {
		kind, err := filetype.Match(all[name])
		if err != nil || kind.Extension != want {
			t.Errorf("filetype.Match(%s) = %s, %v; want %s", name, kind.Extension, err, want)
		}
	}
}
