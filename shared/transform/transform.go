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

	"github.com/misskey-lambda/media-proxy/shared/apng"
	"github.com/misskey-lambda/media-proxy/shared/budget"
	"github.com/misskey-lambda/media-proxy/shared/pngcolour"
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
	// ErrTooSlow: over the time limit (422); the decode was stopped.
	ErrTooSlow = errors.New("transform: image is over the time limit")
	// ErrBusy: no decode slot came free within Limits.SlotWait. It says
	// nothing about the image: the proxy answers 503 with Retry-After and
	// remembers nothing.
	ErrBusy = errors.New("transform: no decode slot free in time")
)

// Limits bound what a decode may cost.
type Limits struct {
	// MaxPixels counts every frame decoded.
	MaxPixels int64
	MaxFrames int
	// Timeout bounds the work of one transform, from taking its decode
	// slot to the encoded bytes (0: no bound). Time spent waiting for
	// memory or a slot is not the image's and does not count.
	Timeout time.Duration
	// SlotWait bounds the wait for a decode slot (default
	// DefaultSlotWait); past it the transform fails with ErrBusy.
	SlotWait time.Duration
}

// DefaultLimits are the documented defaults.
var DefaultLimits = Limits{MaxPixels: 100_000_000, MaxFrames: 1000}

// DefaultSlotWait is how long a transform waits for a decode slot: as
// long as the memory budget lets a request wait for memory.
const DefaultSlotWait = budget.DefaultMaxWait

// Header reads hold a few bookkeeping bytes per frame of an animation
// (libvips' GIF and WebP loaders keep an entry for each frame in the
// file while they read the header); Plan takes them before it reads.
const (
	headerBase     = 64 << 10
	headerPerFrame = 256
)

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
// which bounds CPU and memory under a burst of large images, each within
// the memory it was granted and the time limit.
type Transformer struct {
	limits Limits
	slots  chan struct{}
	mem    *budget.Budget
	// plainSubsample drops sharp YUV from WebP (SetSmartSubsample).
	plainSubsample bool
}

// SetSmartSubsample chooses WebP's RGB to YUV conversion: sharp YUV (the
// reference's, and the default) or the plain one, which costs about half
// the encoder's CPU and bleeds colour edges. Call it before any Apply.
func (t *Transformer) SetSmartSubsample(on bool) { t.plainSubsample = !on }

// New returns a Transformer; concurrency below 1 means 1. Decodes take
// their estimated memory from mem (nil: not accounted).
func New(limits Limits, concurrency int, mem *budget.Budget) *Transformer {
	if limits.MaxPixels <= 0 {
		limits.MaxPixels = DefaultLimits.MaxPixels
	}
	if limits.MaxFrames <= 0 {
		limits.MaxFrames = DefaultLimits.MaxFrames
	}
	if limits.SlotWait <= 0 {
		limits.SlotWait = DefaultSlotWait
	}
	return &Transformer{limits: limits, slots: make(chan struct{}, max(1, concurrency)), mem: mem}
}

// Plan is a transform as its headers describe it, read before any pixel
// is decoded and before a decode slot is taken.
type Plan struct {
	src  []byte
	typ  sniff.Type
	mime string
	kind variant.Kind
	fit  vips.Fit
	// memory is what the decode and encode are expected to hold.
	memory int64
	// childOutput bounds what an SVG's renderer may write back.
	childOutput int64
	// source describes the image as it is, for keepSource; zero when
	// unknown.
	source sourceShape
}

// Memory is what running the plan holds at most, besides the source.
func (p *Plan) Memory() int64 { return p.memory }

// sourceShape is the source image as a browser would show it.
type sourceShape struct {
	width, height, frames int
	// plain: no EXIF rotation and no CMYK, so a browser shows the bytes
	// as the variant would.
	plain bool
}

// Apply produces kind k of src, whose sniffed type is typ, for a caller
// that holds no memory budget besides src: Plan, then the decode's memory
// (waiting for it), then Run.
func (t *Transformer) Apply(ctx context.Context, src []byte, typ sniff.Type, k variant.Kind) (*Output, error) {
	var held int64
	take := func(n int64) error {
		if t.mem == nil {
			return nil
		}
		got, err := t.mem.Acquire(ctx, n)
		held += got
		return err
	}
	release := func() {
		if t.mem != nil {
			t.mem.Release(held)
		}
		held = 0
	}
	defer release()
	p, err := t.Plan(src, typ, k, take)
	// The header read's memory is free again once Plan returns.
	release()
	if err != nil {
		return nil, err
	}
	if err := take(p.Memory()); err != nil {
		return nil, err
	}
	return t.Run(ctx, p)
}

// Plan reads the headers of src (whose sniffed type is typ) for kind k,
// checks the limits and estimates the memory Run will hold. For Original
// it rasterises SVG; other types have no Original transform. Before it
// reads headers with libvips, it asks take for what that read holds (at
// most a few bytes a frame); take's error is returned as it is.
func (t *Transformer) Plan(src []byte, typ sniff.Type, k variant.Kind, take func(int64) error) (*Plan, error) {
	if !typ.Convertible() || (k == variant.Original && !typ.IsSVG()) {
		return nil, ErrNotConvertible
	}
	return t.plan(src, typ, k, take)
}

// Run waits for a decode slot, at most Limits.SlotWait (ErrBusy), then
// decodes and encodes p within Limits.Timeout (ErrTooSlow). Memory is the
// caller's: Plan says how much.
func (t *Transformer) Run(ctx context.Context, p *Plan) (*Output, error) {
	wait := time.NewTimer(t.limits.SlotWait)
	defer wait.Stop()
	select {
	case t.slots <- struct{}{}:
		defer func() { <-t.slots }()
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-wait.C:
		return nil, fmt.Errorf("%w: %d busy for %v", ErrBusy, cap(t.slots), t.limits.SlotWait)
	}
	// The deadline measures the work alone, from here.
	wctx := ctx
	if t.limits.Timeout > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, t.limits.Timeout)
		defer cancel()
	}
	var out *Output
	var err error
	if p.mime == "image/svg+xml" {
		out, err = renderSVGChild(wctx, p, t.limits.MaxPixels)
	} else {
		out, err = t.run(wctx, p)
	}
	if err != nil && ctx.Err() == nil && errors.Is(wctx.Err(), context.DeadlineExceeded) {
		return nil, fmt.Errorf("%w: %v", ErrTooSlow, t.limits.Timeout)
	}
	return out, err
}

// plan reads the headers, checks the limits and estimates the memory.
// take (nil: nothing to account) is asked for the header read's memory
// before libvips reads.
func (t *Transformer) plan(src []byte, typ sniff.Type, k variant.Kind, take func(int64) error) (*Plan, error) {
	p := &Plan{src: src, typ: typ, mime: typ.MIME, kind: k}
	// The sniffed head can end before an APNG's acTL chunk (after large
	// metadata); the whole file settles it.
	if p.mime == "image/png" && sniff.Detect(src).MIME == "image/apng" {
		p.mime = "image/apng"
	}
	box := k.Box()
	p.fit = vips.Fit{
		Width:  box.Width,
		Height: box.Height,
		// Vector art is rendered at the size the variant needs; a badge
		// is always 96x96.
		Enlarge:  p.mime == "image/svg+xml" && k != variant.Original || k == variant.Badge,
		AllPages: box.Animated && (p.mime == "image/gif" || p.mime == "image/webp"),
		FailOn:   vips.FailOnTruncated,
	}
	if p.fit.Width == 0 {
		p.fit.Width = heightOnlyMaxWidth
	}
	out := int64(p.fit.Width) * int64(p.fit.Height) * 4 // one output frame, at most
	switch p.mime {
	case "image/svg+xml":
		// Rendered at the output size (not its nominal one) in a child
		// process: the rendering and the encoder's copy there, and the
		// encoded bytes read back here (at most one raw frame).
		p.childOutput = childOutputLimit(out)
		p.memory = 2*out + p.childOutput
		return p, nil
	case "image/bmp", "image/x-icon":
		w, h, err := goDecodedSize(src, p.mime)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUndecodable, err)
		}
		if w*h > t.limits.MaxPixels {
			return nil, fmt.Errorf("%w: %dx%d", ErrTooLarge, w, h)
		}
		// Decoded in Go, converted to NRGBA, copied into libvips.
		p.memory = 3*4*w*h + out
		return p, nil
	case "image/apng":
		cfg, err := apng.DecodeConfig(src)
		if err != nil {
			return nil, apngError(err)
		}
		frames := int64(1)
		if box.Animated {
			frames = int64(cfg.Frames)
		}
		p.source = sourceShape{width: cfg.Width, height: cfg.Height, frames: cfg.Frames, plain: true}
		if err := (apng.Limits{MaxPixels: t.limits.MaxPixels, MaxFrames: t.limits.MaxFrames}).Check(cfg, int(frames)); err != nil {
			return nil, apngError(err)
		}
		// A few canvases at a time, and every resized frame twice: as
		// collected, and as libvips' copy the animation is encoded from.
		canvas := 4 * int64(cfg.Width) * int64(cfg.Height)
		p.memory = 3*canvas + 2*frames*min(out, canvas)
		return p, nil
	}
	// libvips' GIF and WebP loaders keep an entry for every frame in the
	// file while they read the header: count the frames first (walking
	// the blocks allocates nothing), refuse an animation over the limit
	// before libvips sees it, and account for what the read holds.
	inFile := countFrames(src, p.mime)
	if p.fit.AllPages && inFile > t.limits.MaxFrames {
		return nil, fmt.Errorf("%w: %d frames", ErrTooLarge, inFile)
	}
	if take != nil {
		if err := take(headerBase + headerPerFrame*int64(inFile)); err != nil {
			return nil, err
		}
	}
	h, err := vips.Header(src, p.fit.AllPages)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	w, total, frames := int64(h.Width()), int64(h.Height()), int64(h.Pages())
	if p.mime == "image/jpeg" && !p.fit.Enlarge {
		p.fit.JPEGShrink = jpegShrink(int(w), int(total), h.Orientation(), p.fit)
	}
	p.source = sourceShape{
		width: int(w), height: h.PageHeight(), frames: h.PagesInFile(),
		plain: h.Orientation() <= 1 && !h.IsCMYK(),
	}
	h.Close()
	if frames > int64(t.limits.MaxFrames) {
		return nil, fmt.Errorf("%w: %d frames", ErrTooLarge, frames)
	}
	if w*total > t.limits.MaxPixels {
		return nil, fmt.Errorf("%w: %dx%d", ErrTooLarge, w, total)
	}
	// One frame as decoded (after JPEG shrink-on-load), which loaders of
	// interlaced or progressive files hold whole, plus the output frames.
	shrink := int64(max(1, p.fit.JPEGShrink))
	frame := 4 * (w / shrink) * (total / frames / shrink)
	p.memory = frame + frames*min(out, 4*w*total/frames)
	if k == variant.Badge {
		p.memory += 4 * w * total / frames // the shape test decodes the first frame whole
	}
	return p, nil
}

// run decodes and encodes a planned transform in this process. Every
// libvips computation on the image stops at ctx's end.
func (t *Transformer) run(ctx context.Context, p *Plan) (*Output, error) {
	var im *vips.Image
	var err error
	switch p.mime {
	case "image/bmp", "image/x-icon":
		im, err = t.thumbnailGo(p.src, p.mime, p.fit, p.kind == variant.Badge)
	case "image/apng":
		im, err = t.thumbnailAPNG(ctx, p.src, p.fit, p.kind)
	default:
		if p.kind == variant.Badge {
			if err := t.checkShapeOf(ctx, p.src, p.fit.FailOn); err != nil {
				return nil, err
			}
		}
		im, err = vips.Thumbnail(p.src, p.fit)
		if err == nil && p.mime == "image/png" && !im.HasICC() {
			// libvips reads iCCP but not cHRM and gAMA.
			im, err = withICC(im, pngcolour.Profile(p.src))
		}
		if err != nil {
			err = fmt.Errorf("%w: %w", ErrUndecodable, err)
		}
	}
	if err != nil {
		return nil, err
	}
	// Every path, whoever decoded it, ends in sRGB.
	if im, err = toSRGB(im); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	defer im.Close()
	stop := im.KillOn(ctx)
	defer stop()
	out, err := encode(im, p.kind, t.plainSubsample)
	if err != nil {
		return nil, err
	}
	if keepSource(p, out) {
		s := p.source
		return &Output{Data: p.src, MIME: p.typ.MIME, Ext: p.typ.Ext, Width: s.width, Height: s.height, Frames: s.frames}, nil
	}
	return out, nil
}

// keepSource reports whether the source itself is the better answer: it
// already fits the variant's box, has the animation the variant wants
// (one frame for a static one), is an image type browsers show as it is,
// and the encoded variant is not smaller. Re-encoding a small emoji can
// only add bytes and lose quality. A badge is always a mask, and SVG
// always rasterised (never run here).
func keepSource(p *Plan, out *Output) bool {
	s, box := p.source, p.kind.Box()
	if p.kind == variant.Badge || !s.plain || s.width == 0 || !p.typ.BrowserSafe() {
		return false
	}
	if s.width > p.fit.Width || s.height > p.fit.Height {
		return false
	}
	if !box.Animated && s.frames != 1 {
		return false
	}
	return len(out.Data) >= len(p.src)
}

// toSRGB brings a thumbnail that still carries a colour profile (Display
// P3 from phones, Adobe RGB, ...) into sRGB: the encoders strip profiles,
// and browsers read untagged pixels as sRGB. Thumbnailing converts CMYK
// by itself but leaves RGB profiles alone. The transform runs on the
// small thumbnail, not the source. Images decoded in Go get their file's
// profile attached first (withICC), so every format is converted alike.
// im is closed.
func toSRGB(im *vips.Image) (*vips.Image, error) {
	if !im.HasICC() || im.Bands() < 3 {
		return im, nil
	}
	out, err := im.ToSRGB()
	im.Close()
	return out, err
}

// withICC attaches profile to im as if its loader had found it; nil
// (sRGB, or nothing said) leaves im as it is. im is closed.
func withICC(im *vips.Image, profile []byte) (*vips.Image, error) {
	if profile == nil {
		return im, nil
	}
	out, err := im.WithICC(profile)
	im.Close()
	return out, err
}

// renderInProcess is the whole transform without slots, budget or time
// limit: the SVG child's side.
func renderInProcess(src []byte, typ sniff.Type, k variant.Kind, limits Limits) (*Output, error) {
	t := New(limits, 1, nil)
	p, err := t.plan(src, typ, k, nil)
	if err != nil {
		return nil, err
	}
	return t.run(context.Background(), p)
}

// encode writes the variant: a badge's PNG mask, or WebP.
func encode(im *vips.Image, k variant.Kind, plainSubsample bool) (*Output, error) {
	if k == variant.Badge {
		return badge(im)
	}
	data, err := im.WebP(vips.WebPOptions{Quality: webpQuality, AlphaQuality: webpAlphaQuality, Effort: webpEffort, PlainSubsample: plainSubsample})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	return &Output{
		Data: data, MIME: "image/webp", Ext: "webp",
		Width: im.Width(), Height: im.PageHeight(), Frames: im.Pages(),
	}, nil
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

// thumbnailGo decodes BMP and ICO in Go and hands the pixels to libvips,
// with the colour profile the file embeds. For a badge, the decoded
// image's shape is checked first.
func (t *Transformer) thumbnailGo(src []byte, mime string, fit vips.Fit, badge bool) (*vips.Image, error) {
	var img image.Image
	var profile []byte
	var err error
	if mime == "image/x-icon" {
		img, profile, err = decodeICO(src, t.limits.MaxPixels)
	} else {
		profile = bmpProfile(src)
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
	return thumbnailNRGBA(nrgba, profile, fit, badge)
}

// thumbnailNRGBA hands a whole image decoded in Go to libvips and resizes
// it; the result carries profile, the ICC profile of the pixels (nil for
// sRGB). For a badge, the whole image's shape is checked first.
func thumbnailNRGBA(img *image.NRGBA, profile []byte, fit vips.Fit, badge bool) (*vips.Image, error) {
	b := img.Bounds()
	full, err := vips.FromRGBA(img.Pix, b.Dx(), b.Dy())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	defer full.Close()
	if badge {
		if err := checkShape(full); err != nil {
			return nil, err
		}
	}
	im, err := full.Thumbnail(fit)
	if err == nil {
		im, err = withICC(im, profile)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	return im, nil
}

// checkShapeOf checks the shape (see checkShape) of the first frame of an
// image libvips decodes, read whole at its full size; an SVG at its own
// size, within the pixel limit. That is a second decode besides the
// thumbnail's, stopped like it when ctx ends.
func (t *Transformer) checkShapeOf(ctx context.Context, src []byte, failOn vips.FailOn) error {
	frame, err := vips.LoadFirst(src, failOn)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	defer frame.Close()
	if int64(frame.Width())*int64(frame.Height()) > t.limits.MaxPixels {
		return fmt.Errorf("%w: %dx%d", ErrTooLarge, frame.Width(), frame.Height())
	}
	stop := frame.KillOn(ctx)
	defer stop()
	return checkShape(frame)
}

// checkShape answers ErrNoEntropy for an image too uniform to make a badge
// of, by the reference proxy's test: the entropy of the histogram of the
// first frame's grey values, at its full size and before any of the
// badge's operations (sharp's stats(), which it uses, reads the input
// file, not the mask built from it). Testing the 96x96 mask instead lets
// the letterbox alone add up to a bit: a line drawing on a flat
// background would get a badge that the reference answers 404.
func checkShape(frame *vips.Image) error {
	entropy, err := frame.Entropy()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	if entropy < badgeMinEntropy {
		return ErrNoEntropy
	}
	return nil
}

// badge encodes the mask of a thumbnail whose shape has been checked.
func badge(im *vips.Image) (*Output, error) {
	mask, err := im.Badge(badgeSize, badgeContrast)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	defer mask.Close()
	data, err := mask.PNG()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	return &Output{Data: data, MIME: "image/png", Ext: "png", Width: mask.Width(), Height: mask.Height(), Frames: 1}, nil
}
