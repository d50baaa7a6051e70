// Package transform turns a fetched image into the variant Misskey asked for:
// resized WebP (animation kept where asked), a static first frame, or a
// badge mask. Every decode goes through libvips except BMP and ICO, which are
// decoded in Go so libvips' untrusted loaders stay blocked, and APNG, which
// libvips cannot animate (its PNG loader sees the default image only).
package transform

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/draw"
	"time"

	"golang.org/x/image/bmp"

	"github.com/misskey-lambda/media-proxy/shared/sniff"
	"github.com/misskey-lambda/media-proxy/shared/variant"
	"github.com/misskey-lambda/media-proxy/shared/vips"
)

// Errors callers map to HTTP statuses.
var (
	// ErrNotConvertible: the bytes are not an image this proxy converts (404).
	ErrNotConvertible = errors.New("transform: not a convertible image")
	// ErrUndecodable: a convertible type that fails to decode (422).
	ErrUndecodable = errors.New("transform: image cannot be decoded")
	// ErrTooLarge: over the pixel or frame limit (422).
	ErrTooLarge = errors.New("transform: image is over the pixel or frame limit")
	// ErrNoEntropy: a badge mask with almost no information (404).
	ErrNoEntropy = errors.New("transform: badge mask has no information")
)

// Limits bound what a decode may cost.
type Limits struct {
	// MaxPixels counts every frame decoded.
	MaxPixels int64
	MaxFrames int
	// Timeout bounds one transform, decode to encode (0: no bound).
	Timeout time.Duration
}

// DefaultLimits are the documented defaults.
var DefaultLimits = Limits{MaxPixels: 100_000_000, MaxFrames: 1000}

// Output encoding, as the reference proxy uses it.
const (
	webpQuality      = 77
	webpAlphaQuality = 95
	webpEffort       = 2
	badgeSize        = 96
	badgeContrast    = 1.75
	badgeMinEntropy  = 0.1
	// heightOnlyMaxWidth bounds the width of emoji and avatars, which are
	// sized by height only, so a 1x100000 image cannot explode.
	heightOnlyMaxWidth = 4096
)

// Output is an encoded variant.
type Output struct {
	Data          []byte
	MIME, Ext     string
	Width, Height int // Height is one frame's height
	Frames        int
}

// Transformer runs transforms with at most a fixed number decoding at once,
// which bounds memory under a burst of large images.
type Transformer struct {
	limits Limits
	slots  chan struct{}
}

// New returns a Transformer; concurrency below 1 means 1.
func New(limits Limits, concurrency int) *Transformer {
	if limits.MaxPixels <= 0 {
		limits.MaxPixels = DefaultLimits.MaxPixels
	}
	if limits.MaxFrames <= 0 {
		limits.MaxFrames = DefaultLimits.MaxFrames
	}
	return &Transformer{limits: limits, slots: make(chan struct{}, max(1, concurrency))}
}

// Apply produces kind k of src, whose sniffed type is typ. For Original it
// rasterises SVG; other types have no Original transform.
func (t *Transformer) Apply(ctx context.Context, src []byte, typ sniff.Type, k variant.Kind) (*Output, error) {
	if !typ.Convertible() || (k == variant.Original && !typ.IsSVG()) {
		return nil, ErrNotConvertible
	}
	mime := typ.MIME
	// The sniffed head can end before an APNG's acTL chunk (after large
	// metadata); the whole file settles it.
	if mime == "image/png" && sniff.Detect(src).MIME == "image/apng" {
		mime = "image/apng"
	}
	select {
	case t.slots <- struct{}{}:
		defer func() { <-t.slots }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	box := k.Box()
	fit := vips.Fit{
		Width:  box.Width,
		Height: box.Height,
		// Vector art is rendered at the size the variant needs; a badge
		// is always 96x96.
		Enlarge:  mime == "image/svg+xml" && k != variant.Original || k == variant.Badge,
		AllPages: box.Animated && (mime == "image/gif" || mime == "image/webp"),
		FailOn:   vips.FailOnTruncated,
	}
	if fit.Width == 0 {
		fit.Width = heightOnlyMaxWidth
	}

	var im *vips.Image
	var err error
	switch mime {
	case "image/bmp", "image/x-icon":
		im, err = t.thumbnailGo(src, mime, fit)
	case "image/apng":
		im, err = t.thumbnailAPNG(ctx, src, fit, box.Animated)
	default:
		im, err = t.thumbnail(src, mime, fit)
	}
	if err != nil {
		return nil, err
	}
	defer im.Close()

	if k == variant.Badge {
		return badge(im)
	}
	data, err := im.WebP(vips.WebPOptions{Quality: webpQuality, AlphaQuality: webpAlphaQuality, Effort: webpEffort})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	return &Output{
		Data: data, MIME: "image/webp", Ext: "webp",
		Width: im.Width(), Height: im.PageHeight(), Frames: im.Pages(),
	}, nil
}

// thumbnail checks the header against the limits, then decodes with
// shrink-on-load. The check comes first so a pixel bomb costs a header read.
func (t *Transformer) thumbnail(src []byte, mime string, fit vips.Fit) (*vips.Image, error) {
	h, err := vips.Header(src, fit.AllPages)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	w, total, frames := int64(h.Width()), int64(h.Height()), h.Pages()
	if mime == "image/jpeg" && !fit.Enlarge {
		fit.JPEGShrink = jpegShrink(int(w), int(total), h.Orientation(), fit)
	}
	h.Close()
	// An SVG is rendered at the output size, not its nominal one.
	if mime != "image/svg+xml" {
		if frames > t.limits.MaxFrames {
			return nil, fmt.Errorf("%w: %d frames", ErrTooLarge, frames)
		}
		if w*total > t.limits.MaxPixels {
			return nil, fmt.Errorf("%w: %dx%d", ErrTooLarge, w, total)
		}
	}
	im, err := vips.Thumbnail(src, fit)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	return im, nil
}

// jpegShrink picks the JPEG shrink-on-load factor the way sharp does: the
// largest of 8, 4 and 2 the image is at least that many times over the box
// (in its displayed orientation). libvips alone would stop one step
// earlier and spend twice the decode work for no visible gain at these sizes.
func jpegShrink(w, h, orientation int, fit vips.Fit) int {
	if orientation >= 5 { // rotated by 90° or 270° for display
		w, h = h, w
	}
	// The side that binds decides how much the image shrinks.
	scale := max(float64(w)/float64(fit.Width), float64(h)/float64(fit.Height))
	for _, s := range []int{8, 4, 2} {
		if scale >= float64(s) {
			return s
		}
	}
	return 1
}

// thumbnailGo decodes BMP and ICO in Go and hands the pixels to libvips.
func (t *Transformer) thumbnailGo(src []byte, mime string, fit vips.Fit) (*vips.Image, error) {
	var img image.Image
	var err error
	if mime == "image/x-icon" {
		img, err = decodeICO(src, t.limits.MaxPixels)
	} else {
		var cfg image.Config
		cfg, err = bmp.DecodeConfig(bytes.NewReader(src))
		if err == nil && int64(cfg.Width)*int64(cfg.Height) > t.limits.MaxPixels {
			return nil, fmt.Errorf("%w: %dx%d", ErrTooLarge, cfg.Width, cfg.Height)
		}
		if err == nil {
			img, err = bmp.Decode(bytes.NewReader(src))
		}
	}
	if errors.Is(err, ErrTooLarge) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	nrgba, ok := img.(*image.NRGBA)
	if !ok {
		nrgba = image.NewNRGBA(img.Bounds())
		draw.Draw(nrgba, nrgba.Bounds(), img, img.Bounds().Min, draw.Src)
	}
	return thumbnailNRGBA(nrgba, fit)
}

// thumbnailNRGBA hands a whole image decoded in Go to libvips and resizes it.
func thumbnailNRGBA(img *image.NRGBA, fit vips.Fit) (*vips.Image, error) {
	b := img.Bounds()
	full, err := vips.FromRGBA(img.Pix, b.Dx(), b.Dy())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	defer full.Close()
	im, err := full.Thumbnail(fit)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	return im, nil
}

func badge(im *vips.Image) (*Output, error) {
	mask, entropy, err := im.Badge(badgeSize, badgeContrast)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	defer mask.Close()
	if entropy < badgeMinEntropy {
		return nil, ErrNoEntropy
	}
	data, err := mask.PNG()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	return &Output{Data: data, MIME: "image/png", Ext: "png", Width: mask.Width(), Height: mask.Height(), Frames: 1}, nil
}
