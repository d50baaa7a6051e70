package transform

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/apng"
	"github.com/misskey-lambda/media-proxy/shared/pngcolour"
	"github.com/misskey-lambda/media-proxy/shared/variant"
	"github.com/misskey-lambda/media-proxy/shared/vips"
)

// WebP stores a frame's duration in 24 bits and the loop count in 16.
const (
	maxWebPDelay = 1<<24 - 1 // ms
	maxWebPLoop  = 1<<16 - 1
)

// thumbnailAPNG decodes an APNG in Go and resizes it frame by frame, so
// memory stays at a few canvases however long the animation is. The limits
// are checked from the headers before any pixel is decoded. The result
// carries the file's colour profile (iCCP, or one made from cHRM and
// gAMA), for the one conversion to sRGB every image gets.
func (t *Transformer) thumbnailAPNG(ctx context.Context, src []byte, fit vips.Fit, k variant.Kind) (*vips.Image, error) {
	lim := apng.Limits{MaxPixels: t.limits.MaxPixels, MaxFrames: t.limits.MaxFrames}
	profile := pngcolour.Profile(src)
	if !k.Box().Animated {
		// The first frame of the animation, even when the file's default
		// (IDAT) image is a separate still: animation-aware decoders, the
		// browsers Misskey users see the APNG in among them, never show
		// that image, and it is often a "not supported" notice.
		img, err := apng.DecodeFirst(src, lim)
		if err != nil {
			return nil, apngError(err)
		}
		return thumbnailNRGBA(img, profile, fit, k == variant.Badge)
	}

	d, err := apng.NewDecoder(src, lim)
	if err != nil {
		return nil, apngError(err)
	}
	cfg := d.Config()
	var (
		pix    []byte
		delays []int
		w, h   int
	)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		f, err := d.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, apngError(err)
		}
		im, err := thumbnailNRGBA(f.Image, nil, fit, false)
		if err != nil {
			return nil, err
		}
		rgba, err := im.RGBA()
		fw, fh := im.Width(), im.Height()
		im.Close()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUndecodable, err)
		}
		if pix == nil {
			w, h = fw, fh
			pix = make([]byte, 0, len(rgba)*cfg.Frames)
		} else if fw != w || fh != h {
			return nil, fmt.Errorf("%w: apng frame %d resized to %dx%d, frame 0 to %dx%d", ErrUndecodable, len(delays), fw, fh, w, h)
		}
		pix = append(pix, rgba...)
		delays = append(delays, webpDelay(f.Delay, cfg.Frames))
	}
	// The profile goes on the whole animation, converted in one pass.
	im, err := vips.FromRGBAFrames(pix, w, h, delays, min(cfg.Plays, maxWebPLoop))
	if err == nil {
		im, err = withICC(im, profile)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	return im, nil
}

// webpDelay is a frame delay in the milliseconds WebP stores, bounded so
// that libvips' running total of the delays (a C int) cannot overflow.
func webpDelay(d time.Duration, frames int) int {
	ms := d.Round(time.Millisecond).Milliseconds()
	return int(min(ms, maxWebPDelay, math.MaxInt32/int64(frames)))
}

func apngError(err error) error {
	if errors.Is(err, apng.ErrTooLarge) {
		return fmt.Errorf("%w: %w", ErrTooLarge, err)
	}
	return fmt.Errorf("%w: %w", ErrUndecodable, err)
}
