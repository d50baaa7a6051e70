package disposition

import (
	"mime"
	"net/url"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// extLists are the extension lists sniff.Type.Exts hands to Filename.
var extLists = [][]string{
	{"png"}, {"jpg", "jpeg"}, {"gif"}, {"webp"}, {"png", "apng"}, {"svg"},
	{"tiff", "tif"}, {"mp4"}, {"mpg", "mpeg"}, {"unknown"}, nil,
}

func FuzzDisposition(f *testing.F) {
	for _, s := range [][2]string{
		{"", "https://example.com/emoji/blobcat.png"},
		{`attachment; filename="remote name.gif"`, "https://example.com/download"},
		{`attachment; filename*=UTF-8''%E7%8C%AB.jpeg`, "https://example.com/x"},
		{`inline; filename="..\\..\\evil.exe"`, "https://example.com/a%2Fb%5Cc.png"},
		{"attachment; filename=\"a\u202egnp.exe\"", "https://example.com/%E2%80%AEfdp.png"},
		{`attachment; filename="` + strings.Repeat("長", 120) + `.png"`, "https://example.com/"},
		{"garbage;;;", "https://example.com/%00%0d%0aSet-Cookie:x.png"},
		{`attachment; filename=". . ."`, "https://example.com/.htaccess"},
		{"", "https://example.com/IMG_2024.01"},
		{"", "https://example.com/v1.2%20final"},
	} {
		for i := range extLists {
			f.Add(s[0], s[1], uint8(i))
		}
	}
	f.Fuzz(func(t *testing.T, remote, rawURL string, which uint8) {
		exts := extLists[int(which)%len(extLists)]
		var u *url.URL
		if p, err := url.Parse(rawURL); err == nil {
			u = p
		}
		name := Filename(remote, u, exts)
		if name == "" || !utf8.ValidString(name) {
			t.Fatalf("Filename = %q: empty or invalid UTF-8", name)
		}
		if len(name) > maxLen {
			t.Fatalf("Filename is %d bytes, over %d", len(name), maxLen)
		}
		if strings.ContainsAny(name, `/\`) {
			t.Fatalf("Filename %q has a directory part", name)
		}
		for _, r := range name {
			if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
				t.Fatalf("Filename %q holds control character %U", name, r)
			}
		}
		if !hasExt(name, exts) {
			t.Fatalf("Filename %q does not end in one of %v", name, exts)
		}
		checkInline(t, name, name)
	})
}

// FuzzInline formats any string, as Inline may be handed names from
// elsewhere than Filename.
func FuzzInline(f *testing.F) {
	for _, s := range []string{"a.png", "", "絵文字.webp", "\"quoted\".gif", "back\\slash", "a\r\nb: c", "\xff\xfe.png", "%41.png", "'; filename=x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := strings.ToValidUTF8(s, "_")
		if want == "" {
			want = fallbackBase
		}
		checkInline(t, s, want)
	})
}

// checkInline asserts that Inline(name) is a clean ASCII header that
// mime.ParseMediaType reads back as an inline disposition of want.
func checkInline(t *testing.T, name, want string) {
	t.Helper()
	h := Inline(name)
	for i := 0; i < len(h); i++ {
		if h[i] < 0x20 || h[i] >= 0x7f {
			t.Fatalf("Inline(%q) = %q: byte %#x at %d", name, h, h[i], i)
		}
	}
	typ, params, err := mime.ParseMediaType(h)
	if err != nil {
		t.Fatalf("Inline(%q) = %q does not parse: %v", name, h, err)
	}
	if typ != "inline" {
		t.Fatalf("Inline(%q) = %q: disposition %q", name, h, typ)
	}
	if params["filename"] != want {
		t.Fatalf("Inline(%q) = %q reads back as %q, want %q", name, h, params["filename"], want)
	}
}

func hasExt(name string, exts []string) bool {
	if len(exts) == 0 || exts[0] == "" {
		return strings.HasSuffix(name, "."+unknownExt)
	}
	for _, e := range exts {
		if len(name) > len(e) && strings.EqualFold(name[len(name)-len(e)-1:], "."+e) {
			return true
		}
	}
	return false
}
