package disposition

import (
	"mime"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

var (
	jpeg = []string{"jpg", "jpeg"}
	tiff = []string{"tiff", "tif"}
	webp = []string{"webp"}
	png  = []string{"png"}
)

func TestFilename(t *testing.T) {
	tests := []struct {
		name   string
		header string
		url    string
		exts   []string
		want   string
	}{
		// Extension correction.
		{"matching ext kept", "", "https://a.example/img/photo.png", png, "photo.png"},
		{"wrong ext replaced", "", "https://a.example/img/photo.png", webp, "photo.webp"},
		{"jpeg spelling kept", "", "https://a.example/a.jpeg", jpeg, "a.jpeg"},
		{"jpg spelling kept", "", "https://a.example/a.jpg", jpeg, "a.jpg"},
		{"uppercase ext kept", "", "https://a.example/A.JPG", jpeg, "A.JPG"},
		{"jpeg for png replaced", "", "https://a.example/a.jpeg", png, "a.png"},
		{"tif spelling kept", "", "https://a.example/scan.tif", tiff, "scan.tif"},
		{"no ext appended", "", "https://a.example/noext", webp, "noext.webp"},
		{"trailing dot", "", "https://a.example/photo.", webp, "photo.webp"},
		{"dotfile", "", "https://a.example/.png", png, "untitled.png"},
		{"dotted name not an ext", "", "https://a.example/v1.2%20final", webp, "v1.2 final.webp"},
		{"numeric suffix not an ext", "", "https://a.example/IMG_2024.01", jpeg, "IMG_2024.01.jpg"},
		{"multiple dots", "", "https://a.example/archive.tar.png", webp, "archive.tar.webp"},
		{"unknown", "", "https://a.example/page.html", []string{"unknown"}, "page.unknown"},
		{"no exts", "", "https://a.example/page.html", nil, "page.unknown"},
		{"query ignored", "", "https://a.example/a.png?w=100&x=y.gif", png, "a.png"},

		// URL paths.
		{"percent-encoded segment", "", "https://a.example/%E7%B5%B5%E6%96%87%E5%AD%97.png", png, "絵文字.png"},
		{"raw unicode segment", "", "https://a.example/絵文字.png", png, "絵文字.png"},
		{"encoded space", "", "https://a.example/my%20cat.gif", []string{"gif"}, "my cat.gif"},
		{"encoded slash is still a directory", "", "https://a.example/dir%2Fcat.gif", []string{"gif"}, "cat.gif"},
		{"encoded backslash", "", "https://a.example/..%5C..%5Cevil.png", png, "evil.png"},
		{"encoded newline", "", "https://a.example/a%0D%0Ab.png", png, "ab.png"},
		{"encoded nul", "", "https://a.example/a%00b.png", png, "ab.png"},
		{"trailing slash", "", "https://a.example/images/", webp, "untitled.webp"},
		{"root", "", "https://a.example/", webp, "untitled.webp"},
		{"no path", "", "https://a.example", webp, "untitled.webp"},
		{"bidi override stripped", "", "https://a.example/%E2%80%AEgnp.exe", png, "gnp.png"},

		// Remote Content-Disposition.
		{"remote filename", `attachment; filename="remote.png"`, "https://a.example/x.png", png, "remote.png"},
		{"remote filename corrected", `inline; filename="remote.png"`, "https://a.example/x", webp, "remote.webp"},
		{"remote token filename", `attachment; filename=remote.gif`, "https://a.example/x", []string{"gif"}, "remote.gif"},
		{"remote filename*", `attachment; filename*=UTF-8''%E7%B5%B5%E6%96%87%E5%AD%97.png`, "https://a.example/x", png, "絵文字.png"},
		{"remote filename* preferred", `attachment; filename="fallback.png"; filename*=UTF-8''%E7%8C%AB.png`, "https://a.example/x", png, "猫.png"},
		{"remote filename* unsupported charset", `attachment; filename="fallback.png"; filename*=ISO-8859-1''caf%E9.png`, "https://a.example/x", png, "fallback.png"},
		{"remote path stripped", `attachment; filename="../../etc/passwd"`, "https://a.example/x", png, "passwd.png"},
		{"remote windows path stripped", `attachment; filename*=UTF-8''C%3A%5Cdir%5Ca.png`, "https://a.example/x", png, "a.png"},
		{"remote escaped quote", `attachment; filename="a\"b.png"`, "https://a.example/x", png, `a"b.png`},
		{"remote without filename", `inline`, "https://a.example/u.png", png, "u.png"},
		{"remote empty filename", `attachment; filename=""`, "https://a.example/u.png", png, "u.png"},
		{"remote unparseable", `attachment; filename="unterminated`, "https://a.example/u.png", png, "u.png"},
		{"remote only a path", `attachment; filename="dir/"`, "https://a.example/u.png", png, "u.png"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Filename(tt.header, mustURL(t, tt.url), tt.exts)
			if got != tt.want {
				t.Errorf("Filename() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFilenameNilURL(t *testing.T) {
	if got := Filename("", nil, png); got != "untitled.png" {
		t.Errorf("Filename() = %q", got)
	}
}

func TestFilenameLong(t *testing.T) {
	tests := []struct {
		name, base string
	}{
		{"ascii", strings.Repeat("a", 500)},
		{"japanese", strings.Repeat("絵", 200)},
		{"mixed", "x" + strings.Repeat("文", 200)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := &url.URL{Scheme: "https", Host: "a.example", Path: "/" + tt.base + ".png"}
			got := Filename("", u, webp)
			if len(got) > maxLen {
				t.Errorf("len = %d, want <= %d", len(got), maxLen)
			}
			if len(got) < maxLen-4 {
				t.Errorf("len = %d, cut more than needed", len(got))
			}
			if !utf8.ValidString(got) {
				t.Errorf("not valid UTF-8: %q", got)
			}
			if !strings.HasSuffix(got, ".webp") || !strings.HasPrefix(tt.base, strings.TrimSuffix(got, ".webp")) {
				t.Errorf("Filename() = %q", got)
			}
		})
	}
}

func TestInline(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"photo.png", `inline; filename="photo.png"; filename*=UTF-8''photo.png`},
		{"絵文字.png", `inline; filename="___.png"; filename*=UTF-8''%E7%B5%B5%E6%96%87%E5%AD%97.png`},
		{"my cat.gif", `inline; filename="my cat.gif"; filename*=UTF-8''my%20cat.gif`},
		{`a"b\c.png`, `inline; filename="a_b_c.png"; filename*=UTF-8''a%22b%5Cc.png`},
		{"a\r\nb.png", `inline; filename="a__b.png"; filename*=UTF-8''a%0D%0Ab.png`},
		{"a;b=c'd%.png", `inline; filename="a;b=c'd%.png"; filename*=UTF-8''a%3Bb%3Dc%27d%25.png`},
		{"caf\xe9.png", `inline; filename="caf_.png"; filename*=UTF-8''caf_.png`},
		{"", `inline; filename="untitled"; filename*=UTF-8''untitled`},
	}
	for _, tt := range tests {
		got := Inline(tt.in)
		if got != tt.want {
			t.Errorf("Inline(%q) =\n  %s\nwant\n  %s", tt.in, got, tt.want)
		}
		if strings.ContainsAny(got, "\r\n") {
			t.Errorf("Inline(%q) contains a line break", tt.in)
		}
	}
}

// The header we emit must parse back to the name we meant.
func TestInlineRoundTrip(t *testing.T) {
	for _, name := range []string{"photo.png", "絵文字.png", `a"b\c.png`, "my cat (1).jpg", "ü ö ä.webp", "🎉.gif"} {
		typ, params, err := mime.ParseMediaType(Inline(name))
		if err != nil {
			t.Fatalf("ParseMediaType(Inline(%q)): %v", name, err)
		}
		if typ != "inline" || params["filename"] != name {
			t.Errorf("round trip of %q = %q %q", name, typ, params["filename"])
		}
	}
}
