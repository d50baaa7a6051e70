package variant_test

import (
	"testing"

	"github.com/misskey-lambda/media-proxy/shared/fetch"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

// canonical is the proxy's canonical form, with every port allowed.
var canonical = fetch.New(fetch.Config{AllowedPorts: []fetch.PortRange{{Lo: 1, Hi: 65535}}}).Canonical

// TestGoldenKeys pins how a requested URL and variant become a store key.
// Every stored variant in every deployment is named this way: a change
// here orphans all of them, so it must be deliberate (bump the "v1/"
// prefix, or keep the old keys working) and show up as a failure here.
// The ASCII cases are the keys the proxy used before the canonical form
// followed what is fetched; IDNA spellings now key on their ASCII host.
func TestGoldenKeys(t *testing.T) {
	for _, g := range []struct {
		url       string
		kind      variant.Kind
		canonical string
		key       string
	}{
		{"https://misskey.example/files/emoji.png", variant.Emoji, "https://misskey.example/files/emoji.png", "v1/emoji/2b0538b37c3e0d0bda0848dbef041cc089286ed9b366b85367afd56e2f53cc2f"},
		{"https://misskey.example/files/emoji.png", variant.EmojiStatic, "https://misskey.example/files/emoji.png", "v1/emoji-static/2b0538b37c3e0d0bda0848dbef041cc089286ed9b366b85367afd56e2f53cc2f"},
		{"https://Misskey.Example:443/files/emoji.png", variant.Emoji, "https://misskey.example/files/emoji.png", "v1/emoji/2b0538b37c3e0d0bda0848dbef041cc089286ed9b366b85367afd56e2f53cc2f"},
		{"https://media.example/avatar/a.webp?v=123", variant.Avatar, "https://media.example/avatar/a.webp?v=123", "v1/avatar/9ab7f049dd12e2c06d896594e10ee5ced8d4de6924ea94458c84a2f0af49890f"},
		{"https://media.example/avatar/a.webp?v=123", variant.AvatarStatic, "https://media.example/avatar/a.webp?v=123", "v1/avatar-static/9ab7f049dd12e2c06d896594e10ee5ced8d4de6924ea94458c84a2f0af49890f"},
		{"http://media.example:8080/a%20b.gif", variant.Static, "http://media.example:8080/a%20b.gif", "v1/static/0149af290a242a1cf1e47f0ff0ec29ea39eb346caece413e911aeca43768e165"},
		{"https://media.example", variant.Preview, "https://media.example/", "v1/preview/fc0a3d7b9689b14182d9bb12abe2dd7c2329d00cfd2566938fe72a66fffe3aed"},
		{"https://media.example/icon.svg#frag", variant.Badge, "https://media.example/icon.svg", "v1/badge/3a4948136f1d273bbf0fedfb1ff0a37c7cd8825daa4e2dc8236e09be2f79203e"},
		{"https://media.example/clip.mp4", variant.Original, "https://media.example/clip.mp4", "v1/original/7c697d8ffa0048099067aef31cdec4681e946cbef1bbb6fc22febe6e95b5fa8b"},
		{"https://[2001:DB8::1]/x.png", variant.Emoji, "https://[2001:db8::1]/x.png", "v1/emoji/6e2b4a4cf202cbd0f6dddd5ff4ef81da48598c53757ba55f48231429d0f28c98"},
		{"https://media.example./x.png", variant.Emoji, "https://media.example/x.png", "v1/emoji/40c8535f51d37c577ede754e4f8ddc64f5ab5a696a0267b325dae59d650b9b7f"},
		{"https://media.example/%E7%B5%B5.png", variant.Emoji, "https://media.example/%E7%B5%B5.png", "v1/emoji/c17e03e92189bb381bc1a2bc403db5d5366a18696d1718299a149be0ec110969"},
		// Spellings that differ only by IDNA mapping fetch different
		// hosts, so they get different keys.
		{"https://faß.example/e.png", variant.Emoji, "https://xn--fa-hia.example/e.png", "v1/emoji/06912de8bf0b7c5942dbd102c20c5fc0a7fdc83e3e30a4029b8ee9d54b60fab0"},
		{"https://faẞ.example/e.png", variant.Emoji, "https://fass.example/e.png", "v1/emoji/9c51e4ee82a2a4d76e15772021890493d29765763cd2bdb51bff179877c73ccc"},
	} {
		c, err := canonical(g.url)
		if err != nil {
			t.Errorf("%s: %v", g.url, err)
			continue
		}
		if c.String() != g.canonical {
			t.Errorf("%s: canonical %q, want %q", g.url, c, g.canonical)
		}
		if got := variant.Key(c.String(), g.kind); got != g.key {
			t.Errorf("%s %s: key %s, want %s", g.url, g.kind, got, g.key)
		}
	}
}

// TestRefusedSpellingsHaveNoKey: a spelling the URL check refuses never
// reaches the key of the URL it resembles.
func TestRefusedSpellingsHaveNoKey(t *testing.T) {
	for _, raw := range []string{"https://x@misskey.example/files/emoji.png", "https://misskey.example:25/files/emoji.png"} {
		if c, err := fetch.New(fetch.Config{}).Canonical(raw); err == nil {
			t.Errorf("%s was given the canonical form %s", raw, c)
		}
	}
}
