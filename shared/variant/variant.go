// Package variant maps the query flags Misskey sends onto the output the
// proxy produces, and names each output with a deterministic store key.
package variant

import (
	"crypto/sha256"
	"encoding/hex"
	"net/url"
)

// Kind is one output a source URL can be turned into.
type Kind string

// The kinds, in the order the flags take precedence: emoji, avatar, static,
// preview, badge.
const (
	Original     Kind = "original" // no flag: passthrough, or SVG rasterised
	Emoji        Kind = "emoji"
	EmojiStatic  Kind = "emoji-static"
	Avatar       Kind = "avatar"
	AvatarStatic Kind = "avatar-static"
	Static       Kind = "static"
	Preview      Kind = "preview"
	Badge        Kind = "badge"
)

// Kinds lists every kind.
var Kinds = []Kind{Original, Emoji, EmojiStatic, Avatar, AvatarStatic, Static, Preview, Badge}

// QueryParameters are every query parameter the proxy reads: the source
// URL, the flags FromQuery reads, and fallback. Nothing else in a query
// changes an answer, so a CDN's cache key (infra/template.yaml) holds
// these and no others.
var QueryParameters = []string{"url", "emoji", "avatar", "static", "preview", "badge", "fallback"}

// FromQuery picks the kind the flags in q ask for. A flag is on when present,
// whatever its value, as in the reference proxy.
func FromQuery(q url.Values) Kind {
	has := func(flag string) bool { _, ok := q[flag]; return ok }
	static := has("static")
	switch {
	case has("emoji") && static:
		return EmojiStatic
	case has("emoji"):
		return Emoji
	case has("avatar") && static:
		return AvatarStatic
	case has("avatar"):
		return Avatar
	case static:
		return Static
	case has("preview"):
		return Preview
	case has("badge"):
		return Badge
	}
	return Original
}

// Parse turns a kind's name back into a Kind.
func Parse(s string) (Kind, bool) {
	for _, k := range Kinds {
		if string(k) == s {
			return k, true
		}
	}
	return "", false
}

// Query is the query string flags that ask for k (without url).
func (k Kind) Query() string {
	switch k {
	case EmojiStatic:
		return "emoji=1&static=1"
	case AvatarStatic:
		return "avatar=1&static=1"
	case Original:
		return ""
	}
	return string(k) + "=1"
}

// Box is the size an output must fit in. Zero width means "any width".
type Box struct {
	Width, Height int
	// Animated keeps every frame.
	Animated bool
}

// Box is the output size for k. Original has no box: passthrough, except
// SVG which is rasterised to fit 2048x2048.
func (k Kind) Box() Box {
	switch k {
	case Emoji:
		return Box{Height: 128, Animated: true}
	case EmojiStatic:
		return Box{Height: 128}
	case Avatar:
		return Box{Height: 320, Animated: true}
	case AvatarStatic:
		return Box{Height: 320}
	case Static:
		return Box{Width: 498, Height: 422}
	case Preview:
		return Box{Width: 200, Height: 200}
	case Badge:
		return Box{Width: 96, Height: 96}
	}
	return Box{Width: 2048, Height: 2048}
}

// Siblings are the kinds usually requested soon after k for the same URL:
// Misskey shows emoji and avatars animated to most users and static to
// those who turned animation off. This is the one place the rule lives.
func (k Kind) Siblings() []Kind {
	switch k {
	case Emoji:
		return []Kind{EmojiStatic}
	case Avatar:
		return []Kind{AvatarStatic}
	}
	return nil
}

// Key is where the output of kind k of a source URL is stored. The URL
// must be in its canonical form (fetch.Client.Canonical), which is also
// exactly what is fetched: two spellings share a key only when they fetch
// the same thing. It is versioned so a change in the pipeline can start
// afresh; golden_test.go pins it.
func Key(canonicalURL string, k Kind) string {
	return "v1/" + string(k) + "/" + hashURL(canonicalURL)
}

// FailureKey is where a recent failure for (url, k) is remembered; a separate
// prefix lets storage expire these quickly.
func FailureKey(canonicalURL string, k Kind) string {
	return "failed/" + string(k) + "/" + hashURL(canonicalURL)
}

func hashURL(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
