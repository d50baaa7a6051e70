// Package vips is the project's thin cgo layer over libvips: only the calls
// the proxy needs, with Go-owned inputs pinned for as long as libvips reads them.
package vips

/*
#cgo pkg-config: vips
#include "vips.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"unsafe"
)

// Options configure libvips once per process.
type Options struct {
	// Concurrency is libvips' worker threads per pipeline; 0 keeps its default.
	Concurrency int
}

var startOnce struct {
	sync.Once
	err error
}

// Start initialises libvips. Only the first call's options apply; every
// other function in this package calls Start with default options itself.
func Start(o Options) error {
	startOnce.Do(func() {
		if C.mp_start(C.int(o.Concurrency)) != 0 {
			startOnce.err = fmt.Errorf("vips: start: %w", lastError())
		}
	})
	return startOnce.err
}

// Error is a libvips failure. Its text comes from libvips and is meant for
// logs only, never for response bodies.
type Error struct{ Op, Detail string }

func (e *Error) Error() string { return "vips " + e.Op + ": " + e.Detail }

// lastError takes libvips' (process-wide) error buffer.
func lastError() error {
	p := C.vips_error_buffer_copy()
	defer C.g_free(C.gpointer(p))
	return errors.New(strings.TrimSpace(C.GoString(p)))
}

func opError(op string) error {
	return &Error{Op: op, Detail: lastError().Error()}
}

// Image is a libvips image. Images are lazy: the input buffer stays pinned
// until Close, because libvips reads it only when the output is computed.
type Image struct {
	c      *C.VipsImage
	pinner *runtime.Pinner
}

func newImage(c *C.VipsImage, pinner *runtime.Pinner) *Image {
	return &Image{c: c, pinner: pinner}
}

// derived wraps c, an image computed from im, and hands it im's pinned
// input, which c reads as lazily as im does: im may then be closed first.
func (im *Image) derived(c *C.VipsImage) *Image {
	out := newImage(c, im.pinner)
	im.pinner = nil
	return out
}

// Close releases the image and unpins its input.
func (im *Image) Close() {
	if im == nil || im.c == nil {
		return
	}
	C.g_object_unref(C.gpointer(im.c))
	im.c = nil
	if im.pinner != nil {
		im.pinner.Unpin()
		im.pinner = nil
	}
}

// Width is the image width in pixels.
func (im *Image) Width() int { return int(im.c.Xsize) }

// Height is the height of all pages stacked.
func (im *Image) Height() int { return int(im.c.Ysize) }

// Bands is the number of bands, alpha included.
func (im *Image) Bands() int { return int(im.c.Bands) }

// PageHeight is the height of one frame.
func (im *Image) PageHeight() int { return int(C.vips_image_get_page_height(im.c)) }

// Pages is the number of frames loaded (the file may hold more).
func (im *Image) Pages() int { return im.Height() / max(1, im.PageHeight()) }

// HasAlpha reports whether the last band is alpha.
func (im *Image) HasAlpha() bool { return C.vips_image_hasalpha(im.c) != 0 }

// Orientation is the EXIF orientation, 1 to 8.
func (im *Image) Orientation() int { return int(C.vips_image_get_orientation(im.c)) }

// Loader names the libvips loader that read the image, e.g. "gifload_buffer".
func (im *Image) Loader() string { return C.GoString(C.mp_loader(im.c)) }

// Loop is the animation loop count (0 = forever).
func (im *Image) Loop() int { return int(C.mp_loop(im.c)) }

// Delays are the frame delays in milliseconds, if the image has any.
func (im *Image) Delays() []int {
	var p *C.int
	var n C.int
	if C.mp_delays(im.c, &p, &n) != 0 || p == nil {
		return nil
	}
	out := make([]int, int(n))
	for i, d := range unsafe.Slice(p, int(n)) {
		out[i] = int(d)
	}
	return out
}

// Header reads an image's header without decoding pixels. allPages counts
// every frame of an animation into Height.
func Header(buf []byte, allPages bool) (*Image, error) {
	if err := Start(Options{}); err != nil {
		return nil, err
	}
	if len(buf) == 0 {
		return nil, &Error{Op: "header", Detail: "empty input"}
	}
	pinner := new(runtime.Pinner)
	pinner.Pin(&buf[0])
	var out *C.VipsImage
	if C.mp_header(unsafe.Pointer(&buf[0]), C.size_t(len(buf)), cbool(allPages), &out) != 0 {
		pinner.Unpin()
		return nil, opError("header")
	}
	return newImage(out, pinner), nil
}

// FailOn is how strict decoding is about damaged input.
type FailOn int

// Values match libvips' VipsFailOn.
const (
	FailOnNone      FailOn = C.VIPS_FAIL_ON_NONE
	FailOnTruncated FailOn = C.VIPS_FAIL_ON_TRUNCATED
	FailOnError     FailOn = C.VIPS_FAIL_ON_ERROR
	FailOnWarning   FailOn = C.VIPS_FAIL_ON_WARNING
)

// Fit describes a thumbnail box.
type Fit struct {
	Width, Height int
	// Enlarge lets the image grow to the box (vector input, badges).
	Enlarge bool
	// AllPages keeps every frame of an animation.
	AllPages bool
	FailOn   FailOn
	// JPEGShrink, when above 1, decodes a JPEG at 1/2, 1/4 or 1/8 size
	// (as sharp does) instead of letting libvips keep a factor of two
	// above the target for its own reduce step.
	JPEGShrink int
}

// Thumbnail decodes buf with shrink-on-load and resizes it to fit the box,
// applying EXIF orientation and importing CMYK to sRGB (images with an RGB
// colour profile keep it: see ToSRGB).
func Thumbnail(buf []byte, f Fit) (*Image, error) {
	return thumbnail(buf, f, pathAny)
}

// Thumbnail's implementations (see thumbnail).
const (
	pathAny     C.int = C.MP_THUMBNAIL_ANY
	pathFast    C.int = C.MP_THUMBNAIL_FAST
	pathLibvips C.int = C.MP_THUMBNAIL_LIBVIPS
)

// errNotFast: thumbnail's fast path (pathFast) does not apply.
var errNotFast = errors.New("vips: the 8-bit RGBA thumbnail path does not apply")

// thumbnail is Thumbnail with its implementation chosen: for 8-bit RGBA
// PNG and GIF (most emoji), vips.c's own path, which premultiplies alpha
// in 8 bits; otherwise vips_thumbnail. Tests force either (path).
func thumbnail(buf []byte, f Fit, path C.int) (*Image, error) {
	if err := Start(Options{}); err != nil {
		return nil, err
	}
	if len(buf) == 0 {
		return nil, &Error{Op: "thumbnail", Detail: "empty input"}
	}
	pinner := new(runtime.Pinner)
	pinner.Pin(&buf[0])
	var out *C.VipsImage
	var r C.int
	if f.JPEGShrink > 1 && !f.Enlarge {
		r = C.mp_thumbnail_jpeg(unsafe.Pointer(&buf[0]), C.size_t(len(buf)), &out,
			C.int(f.JPEGShrink), C.int(f.Width), C.int(f.Height), C.int(f.FailOn))
	} else {
		r = C.mp_thumbnail_buffer(unsafe.Pointer(&buf[0]), C.size_t(len(buf)), &out,
			C.int(f.Width), C.int(f.Height), cbool(f.Enlarge), cbool(f.AllPages), C.int(f.FailOn), path)
	}
	if r > 0 {
		pinner.Unpin()
		return nil, errNotFast
	}
	if r != 0 {
		pinner.Unpin()
		return nil, opError("thumbnail")
	}
	return newImage(out, pinner), nil
}

// FromRGBA copies 8-bit RGBA pixels (as image.NRGBA holds them) into a new image.
func FromRGBA(pix []byte, width, height int) (*Image, error) {
	if err := Start(Options{}); err != nil {
		return nil, err
	}
	if width <= 0 || height <= 0 || len(pix) < width*height*4 {
		return nil, &Error{Op: "from rgba", Detail: "bad dimensions"}
	}
	out := C.mp_from_rgba(unsafe.Pointer(&pix[0]), C.size_t(width*height*4), C.int(width), C.int(height))
	if out == nil {
		return nil, opError("from rgba")
	}
	return newImage(out, nil), nil
}

// FromRGBAFrames copies an animation into a new image: len(delays) frames
// of 8-bit RGBA, each width x pageHeight, stacked top to bottom. delays
// are in milliseconds and loop is the play count (0 = forever), which
// WebP keeps.
func FromRGBAFrames(pix []byte, width, pageHeight int, delays []int, loop int) (*Image, error) {
	if err := Start(Options{}); err != nil {
		return nil, err
	}
	pages := len(delays)
	if width <= 0 || pageHeight <= 0 || pages == 0 || len(pix) < width*pageHeight*pages*4 {
		return nil, &Error{Op: "from rgba frames", Detail: "bad dimensions"}
	}
	cdelays := make([]C.int, pages)
	for i, d := range delays {
		cdelays[i] = C.int(d)
	}
	out := C.mp_from_rgba_frames(unsafe.Pointer(&pix[0]), C.size_t(width*pageHeight*pages*4),
		C.int(width), C.int(pageHeight), C.int(pages), &cdelays[0], C.int(loop))
	if out == nil {
		return nil, opError("from rgba frames")
	}
	return newImage(out, nil), nil
}

// RGBA renders the image as packed 8-bit sRGB with alpha (opaque images
// get alpha 255), every page stacked.
func (im *Image) RGBA() ([]byte, error) {
	var p unsafe.Pointer
	var n C.size_t
	if C.mp_to_rgba(im.c, &p, &n) != 0 {
		return nil, opError("to rgba")
	}
	return takeBuffer(p, n), nil
}

// Thumbnail resizes an image already in memory to fit the box.
func (im *Image) Thumbnail(f Fit) (*Image, error) {
	var out *C.VipsImage
	if C.mp_thumbnail_image(im.c, &out, C.int(f.Width), C.int(f.Height), cbool(f.Enlarge)) != 0 {
		return nil, opError("thumbnail image")
	}
	return newImage(out, nil), nil
}

// WebPOptions are the encoder settings.
type WebPOptions struct {
	Quality, AlphaQuality, Effort int
	// PlainSubsample converts RGB to YUV 4:2:0 by plain averaging
	// instead of libwebp's sharp YUV: much cheaper, colour edges bleed.
	PlainSubsample bool
}

// WebP encodes the image (all frames, with their delays and loop count).
func (im *Image) WebP(o WebPOptions) ([]byte, error) {
	var p unsafe.Pointer
	var n C.size_t
	if C.mp_webpsave(im.c, &p, &n, C.int(o.Quality), C.int(o.AlphaQuality), C.int(o.Effort), cbool(!o.PlainSubsample)) != 0 {
		return nil, opError("webpsave")
	}
	return takeBuffer(p, n), nil
}

// PNG encodes the image as PNG.
func (im *Image) PNG() ([]byte, error) {
	var p unsafe.Pointer
	var n C.size_t
	if C.mp_pngsave(im.c, &p, &n) != 0 {
		return nil, opError("pngsave")
	}
	return takeBuffer(p, n), nil
}

// AVIF encodes the image as AVIF (first frame), at the fastest setting.
func (im *Image) AVIF() ([]byte, error) {
	var p unsafe.Pointer
	var n C.size_t
	if C.mp_avifsave(im.c, &p, &n) != 0 {
		return nil, opError("avifsave")
	}
	return takeBuffer(p, n), nil
}

// Badge makes a size x size two-band image (white plus a mask as alpha)
// from the shape of a thumbnail that fits the square.
func (im *Image) Badge(size int, contrast float64) (*Image, error) {
	var out *C.VipsImage
	if C.mp_badge(im.c, &out, C.int(size), C.double(contrast)) != 0 {
		return nil, opError("badge")
	}
	return newImage(out, nil), nil
}

// Entropy is the entropy, in bits, of the histogram of the image's grey
// values (alpha ignored). It reads the whole image once: an image from
// LoadFirst cannot be read again afterwards.
func (im *Image) Entropy() (float64, error) {
	var e C.double
	if C.mp_entropy(im.c, &e) != 0 {
		return 0, opError("entropy")
	}
	return float64(e), nil
}

// LoadFirst opens the first frame of buf at its full size (an SVG at its
// own size, 72 dpi), without resizing, for one top-to-bottom read.
func LoadFirst(buf []byte, failOn FailOn) (*Image, error) {
	if err := Start(Options{}); err != nil {
		return nil, err
	}
	if len(buf) == 0 {
		return nil, &Error{Op: "load", Detail: "empty input"}
	}
	pinner := new(runtime.Pinner)
	pinner.Pin(&buf[0])
	var out *C.VipsImage
	if C.mp_load_first(unsafe.Pointer(&buf[0]), C.size_t(len(buf)), C.int(failOn), &out) != 0 {
		pinner.Unpin()
		return nil, opError("load")
	}
	return newImage(out, pinner), nil
}

func takeBuffer(p unsafe.Pointer, n C.size_t) []byte {
	defer C.g_free(C.gpointer(p))
	return C.GoBytes(p, C.int(n))
}

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// KillOn makes any computation of the image (an encode, a copy to memory)
// fail soon after ctx is done. libvips checks the image's kill flag
// between tiles, so a runaway render (an SVG built to take minutes)
// really stops instead of holding a thread and a decode slot. Images
// made from this one later (in an encoder) share the flag. Call the
// returned stop before Close.
func (im *Image) KillOn(ctx context.Context) (stop func()) {
	// Progress reporting is what makes downstream images check this
	// image's kill flag.
	C.vips_image_set_progress(im.c, C.TRUE)
	c := im.c
	fired := make(chan struct{})
	stopAfter := context.AfterFunc(ctx, func() {
		defer close(fired)
		C.vips_image_set_kill(c, C.TRUE)
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			if !stopAfter() {
				<-fired // the kill is running: let it finish before Close
			}
		})
	}
}

// PagesInFile is the number of pages (frames) the file holds, however
// many were loaded.
func (im *Image) PagesInFile() int { return int(C.vips_image_get_n_pages(im.c)) }

// IsCMYK reports whether the image's pixels are CMYK, which browsers do
// not all show alike.
func (im *Image) IsCMYK() bool {
	return C.vips_image_guess_interpretation(im.c) == C.VIPS_INTERPRETATION_CMYK
}

// HasICC reports whether the image carries an embedded colour profile.
func (im *Image) HasICC() bool { return C.mp_has_icc(im.c) != 0 }

// ToSRGB transforms an image with an embedded colour profile (Display P3,
// Adobe RGB, ...) into sRGB. Encoders strip profiles, so without this a
// wide-gamut photo would be shown with its values read as sRGB: dull.
// The result takes over im's input, so im may be closed first.
func (im *Image) ToSRGB() (*Image, error) {
	var out *C.VipsImage
	if C.mp_to_srgb(im.c, &out) != 0 {
		return nil, opError("to srgb")
	}
	return im.derived(out), nil
}

// WithICC is a copy of the image with an ICC colour profile attached, as
// if its loader had found it embedded: for pixels decoded in Go (APNG,
// BMP, ICO), so that ToSRGB treats them as libvips-decoded images. The
// result takes over im's input, so im may be closed first.
func (im *Image) WithICC(profile []byte) (*Image, error) {
	if len(profile) == 0 {
		return nil, &Error{Op: "with icc", Detail: "empty profile"}
	}
	var out *C.VipsImage
	if C.mp_with_icc(im.c, unsafe.Pointer(&profile[0]), C.size_t(len(profile)), &out) != 0 {
		return nil, opError("with icc")
	}
	return im.derived(out), nil
}

// PNGInProfile encodes the image (taken as sRGB) as a PNG whose pixels
// are in the named profile ("p3", "srgb", "cmyk" or a file) and which
// embeds that profile: fixtures for colour management.
func (im *Image) PNGInProfile(profile string) ([]byte, error) {
	cs := C.CString(profile)
	defer C.free(unsafe.Pointer(cs))
	var p unsafe.Pointer
	var n C.size_t
	if C.mp_png_in_profile(im.c, cs, &p, &n) != 0 {
		return nil, opError("png in profile")
	}
	return takeBuffer(p, n), nil
}
