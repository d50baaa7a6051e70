package variant

import (
	"net/url"
	"strings"
	"testing"
)

func TestFromQueryPrecedence(t *testing.T) {
	tests := []struct {
		query string
		want  Kind
	}{
		{"", Original},
		{"emoji=1", Emoji},
		{"emoji", Emoji},
		{"emoji=0", Emoji}, // present means on, whatever the value
		{"emoji=1&static=1", EmojiStatic},
		{"avatar=1", Avatar},
		{"avatar=1&static=1", AvatarStatic},
		{"emoji=1&avatar=1", Emoji},
		{"static=1", Static},
		{"static=1&preview=1", Static},
		{"preview=1", Preview},
		{"preview=1&badge=1", Preview},
		{"badge=1", Badge},
		{"fallback=1", Original},
	}
	for _, tt := range tests {
		q, _ := url.ParseQuery(tt.query)
		if got := FromQuery(q); got != tt.want {
			t.Errorf("FromQuery(%q) = %s, want %s", tt.query, got, tt.want)
		}
	}
}

func TestQueryRoundTrip(t *testing.T) {
	for _, k := range Kinds {
		q, err := url.ParseQuery(k.Query())
		if err != nil {
			t.Fatal(err)
		}
		if got := FromQuery(q); got != k {
			t.Errorf("FromQuery(%q) = %s, want %s", k.Query(), got, k)
		}
		if p, ok := Parse(string(k)); !ok || p != k {
			t.Errorf("Parse(%q) = %s, %v", k, p, ok)
		}
	}
	if _, ok := Parse("nope"); ok {
		t.Error("Parse accepted an unknown kind")
	}
}

func TestKeys(t *testing.T) {
	a := Key("https://example.com/a.png", Emoji)
	if a != Key("https://example.com/a.png", Emoji) {
		t.Error("key is not deterministic")
	}
	if a == Key("https://example.com/a.png", EmojiStatic) || a == Key("https://example.com/b.png", Emoji) {
		t.Error("different inputs share a key")
	}
	if !strings.HasPrefix(a, "v1/emoji/") || len(a) != len("v1/emoji/")+64 {
		t.Errorf("unexpected key shape %q", a)
	}
	if f := FailureKey("https://example.com/a.png", Emoji); !strings.HasPrefix(f, "failed/emoji/") {
		t.Errorf("unexpected failure key %q", f)
	}
}

func TestSiblings(t *testing.T) {
	if s := Emoji.Siblings(); len(s) != 1 || s[0] != EmojiStatic {
		t.Errorf("emoji siblings = %v", s)
	}
	if s := Avatar.Siblings(); len(s) != 1 || s[0] != AvatarStatic {
		t.Errorf("avatar siblings = %v", s)
	}
	if s := Preview.Siblings(); len(s) != 0 {
		t.Errorf("preview siblings = %v", s)
	}
}
