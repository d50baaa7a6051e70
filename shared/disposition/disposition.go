// Package disposition builds the Content-Disposition header of proxied
// responses, so a saved file gets a sensible name whose extension matches
// what the bytes really are.
package disposition

import (
	"mime"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

const (
	// maxLen caps the filename in bytes; file systems commonly allow 255.
	maxLen = 200
	// fallbackBase names files whose remote name is empty or unusable.
	fallbackBase = "untitled"
	unknownExt   = "unknown"
)

// Filename picks the name the browser should save: the filename from the
// remote Content-Disposition header if any, else the URL path's last segment
// (percent-decoded), with its extension corrected to exts[0]. Extensions
// matching any of exts (case-insensitively) are kept as-is, so "a.jpeg" stays
// "a.jpeg" for exts ["jpg", "jpeg"]. Empty exts or exts[0] == "unknown" gives
// ".unknown".
func Filename(remoteDisposition string, u *url.URL, exts []string) string {
	name := clean(remoteName(remoteDisposition))
	if name == "" && u != nil {
		name = clean(lastSegment(u))
	}

	base, ext := splitExt(name)
	if !contains(exts, ext) {
		ext = unknownExt
		if len(exts) > 0 && exts[0] != "" {
			ext = exts[0]
		}
	}
	// Trailing dots and spaces are dropped by Windows and make odd names.
	base = strings.TrimRight(truncate(base, maxLen-len(ext)-1), ". ")
	if base == "" {
		base = fallbackBase
	}
	return base + "." + ext
}

// remoteName returns the filename parameter of a Content-Disposition header.
// mime.ParseMediaType decodes filename* (RFC 2231) and prefers it over
// filename. Unparseable headers are ignored.
func remoteName(header string) string {
	if header == "" {
		return ""
	}
	_, params, err := mime.ParseMediaType(header)
	if err != nil {
		return ""
	}
	return params["filename"]
}

// lastSegment returns the last segment of the URL path. url.URL.Path is
// already percent-decoded; a decoded "%2F" is treated as a separator, like
// any other directory part.
func lastSegment(u *url.URL) string {
	return u.Path[strings.LastIndexByte(u.Path, '/')+1:]
}

// clean drops directory parts, control characters and bidi overrides (which
// can make "exe.png" display as "gnp.exe") and makes the name valid UTF-8.
func clean(name string) string {
	name = strings.ToValidUTF8(name, "_")
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
			return -1
		}
		return r
	}, name)
	return strings.TrimSpace(name)
}

// splitExt splits name at its extension. Only a short alphanumeric suffix
// with a letter counts, so "v1.2 final" or "IMG_2024.01" get an extension
// appended rather than part of the name replaced.
func splitExt(name string) (base, ext string) {
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return name, ""
	}
	ext = name[i+1:]
	if len(ext) == 0 || len(ext) > 8 {
		return name, ""
	}
	letter := false
	for _, c := range []byte(ext) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
			letter = true
		case '0' <= c && c <= '9':
		default:
			return name, ""
		}
	}
	if !letter {
		return name, ""
	}
	return name[:i], ext
}

func contains(exts []string, ext string) bool {
	if ext == "" {
		return false
	}
	for _, e := range exts {
		if strings.EqualFold(e, ext) {
			return true
		}
	}
	return false
}

// truncate cuts s to at most n bytes without splitting a rune.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Inline formats an inline Content-Disposition for filename: an ASCII
// fallback for old clients plus the exact name as RFC 5987 filename*.
func Inline(filename string) string {
	filename = strings.ToValidUTF8(filename, "_")
	if filename == "" {
		filename = fallbackBase
	}
	return `inline; filename="` + asciiFallback(filename) + `"; filename*=UTF-8''` + encode5987(filename)
}

// asciiFallback replaces everything that cannot appear verbatim in a quoted
// string of an ASCII header with '_', one per character.
func asciiFallback(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r >= 0x7F || r == '"' || r == '\\' {
			return '_'
		}
		return r
	}, s)
}

// encode5987 percent-encodes s as an RFC 5987 value-chars.
func encode5987(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAttrChar(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0x0F])
	}
	return b.String()
}

// isAttrChar reports whether c is an RFC 5987 attr-char.
func isAttrChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$&+-.^_`|~", c) >= 0
}
