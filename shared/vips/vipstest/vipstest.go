// Package vipstest encodes test fixtures through libvips, for the formats
// Go cannot write (AVIF, WebP); the transform and proxy tests share it.
package vipstest

import (
	"testing"

	"github.com/misskey-lambda/media-proxy/shared/vips"
)

// AVIF encodes src (any image libvips reads) as a single-image AVIF.
func AVIF(t testing.TB, src []byte) []byte {
	t.Helper()
	im := load(t, src, false)
	defer im.Close()
	b, err := im.AVIF()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// WebP encodes src as WebP with o; allPages keeps every frame of an
// animation, else only the first.
func WebP(t testing.TB, src []byte, allPages bool, o vips.WebPOptions) []byte {
	t.Helper()
	im := load(t, src, allPages)
	defer im.Close()
	b, err := im.WebP(o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// load decodes src at its own size.
func load(t testing.TB, src []byte, allPages bool) *vips.Image {
	t.Helper()
	im, err := vips.Thumbnail(src, vips.Fit{Width: 10000, Height: 10000, AllPages: allPages})
	if err != nil {
		t.Fatal(err)
	}
	return im
}
