package transform

import (
	"bytes"
	"testing"

	"github.com/misskey-lambda/media-proxy/shared/testmedia"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

// SetSmartSubsample(false) (MEDIA_PROXY_WEBP_SMART_SUBSAMPLE=false) takes
// libwebp's plain RGB to YUV conversion: another encoding, fewer bytes;
// the default stays the reference's.
func TestSmartSubsampleSetting(t *testing.T) {
	src := testmedia.PNG(512, 512)
	sharp, err := apply(t, New(DefaultLimits, 1, nil), src, variant.Emoji)
	if err != nil {
		t.Fatal(err)
	}
	plainTr := New(DefaultLimits, 1, nil)
	plainTr.SetSmartSubsample(false)
	plain, err := apply(t, plainTr, src, variant.Emoji)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(sharp.Data, plain.Data) || len(plain.Data) >= len(sharp.Data) {
		t.Errorf("plain subsampling gave %d bytes, sharp YUV %d: want another, smaller encoding", len(plain.Data), len(sharp.Data))
	}
	if plain.Width != 128 || plain.Height != 128 {
		t.Errorf("plain: %dx%d, want 128x128", plain.Width, plain.Height)
	}
	again := New(DefaultLimits, 1, nil)
	again.SetSmartSubsample(true)
	if out, err := apply(t, again, src, variant.Emoji); err != nil || !bytes.Equal(out.Data, sharp.Data) {
		t.Errorf("SetSmartSubsample(true) is not the default encoding (%v)", err)
	}
}
