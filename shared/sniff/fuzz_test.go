package sniff

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzSniff feeds Detect arbitrary leading bytes and checks what the rest
// of the proxy relies on (FuzzDetect in sniff_test.go only checks that a
// type comes back). The seed corpus in
// testdata/fuzz/FuzzSniff holds the first bytes of every testmedia
// fixture (images, audio, video, documents, bombs, polyglots).
func FuzzSniff(f *testing.F) {
	for _, s := range []string{
		"", "\x89PNG\r\n\x1a\n", "GIF89a", "\xff\xd8\xff", "RIFF\x00\x00\x00\x00WEBP",
		"\x00\x00\x00\x1cftypavif", "BM", "\x00\x00\x01\x00\x01\x00", "<svg", "<?xml?><svg/>",
		"<!DOCTYPE svg [<!ENTITY a '>'>]><svg>", "\xef\xbb\xbf<svg xmlns='http://www.w3.org/2000/svg'>",
		"<html><svg>", "ID3", "\xff\xfb\x90\x00", "OggS", "%PDF-1.4",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, head []byte) {
		orig := bytes.Clone(head)
		typ := Detect(head)
		if !bytes.Equal(head, orig) {
			t.Fatal("Detect modified its input")
		}
		if again := Detect(head); again != typ {
			t.Fatalf("Detect is not deterministic: %+v then %+v", typ, again)
		}
		if typ.MIME == "" || typ.Ext == "" {
			t.Fatalf("Detect = %+v: empty MIME or extension", typ)
		}
		exts := typ.Exts()
		if len(exts) == 0 {
			t.Fatalf("%s has no extensions", typ.MIME)
		}
		if exts[0] != typ.Ext {
			t.Errorf("%s: Exts()[0] = %q, Ext = %q", typ.MIME, exts[0], typ.Ext)
		}
		// Extensions end up in file names: letters and digits only (some
		// come from filetype in upper case, e.g. compress's "Z").
		for _, e := range exts {
			if e == "" || strings.Trim(e, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" {
				t.Errorf("%s: extension %q is not alphanumeric", typ.MIME, e)
			}
		}
		// Passed through as is, so it must be media a browser never
		// treats as a document.
		if typ.BrowserSafe() {
			m := typ.MIME
			media := strings.HasPrefix(m, "image/") || strings.HasPrefix(m, "audio/") ||
				strings.HasPrefix(m, "video/") || m == "application/ogg"
			if !media || strings.Contains(m, "svg") || strings.Contains(m, "xml") || strings.Contains(m, "html") || strings.Contains(m, "script") {
				t.Errorf("%s would be passed through", m)
			}
		}
		if typ.Convertible() && !typ.IsImage() {
			t.Errorf("%s is convertible but not an image", typ.MIME)
		}
		if typ.IsSVG() && typ.BrowserSafe() {
			t.Error("SVG would be passed through")
		}
	})
}
