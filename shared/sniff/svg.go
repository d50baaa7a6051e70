package sniff

import "bytes"

// isSVG reports whether the first element of an XML document is <svg>.
// It skips what may legally precede it: a BOM, whitespace, the XML
// declaration and other processing instructions, comments and a DOCTYPE.
// Anything else first (an <html> element, text, a truncated prolog) is not SVG.
func isSVG(b []byte) bool {
	b = bytes.TrimPrefix(b, []byte("\xEF\xBB\xBF"))
	for {
		b = bytes.TrimLeft(b, " \t\r\n")
		switch {
		case bytes.HasPrefix(b, []byte("<?")):
			i := bytes.Index(b, []byte("?>"))
			if i < 0 {
				return false
			}
			b = b[i+2:]
		case bytes.HasPrefix(b, []byte("<!--")):
			i := bytes.Index(b[4:], []byte("-->"))
			if i < 0 {
				return false
			}
			b = b[4+i+3:]
		case hasPrefixFold(b, "<!doctype"):
			n := doctypeLen(b)
			if n < 0 {
				return false
			}
			b = b[n:]
		default:
			return isSVGStart(b, "<svg") || isSVGStart(b, "<svg:svg")
		}
	}
}

// isSVGStart reports whether b starts with the tag name tag followed by
// something that ends a name.
func isSVGStart(b []byte, tag string) bool {
	if !hasPrefixFold(b, tag) || len(b) == len(tag) {
		return false
	}
	switch b[len(tag)] {
	case ' ', '\t', '\r', '\n', '>', '/':
		return true
	}
	return false
}

// doctypeLen returns the length of the <!DOCTYPE ...> declaration at the
// start of b, or -1 if it does not end within b. Quoted strings and the
// internal subset [...] may contain '>', so they are skipped as units.
func doctypeLen(b []byte) int {
	inSubset := false
	for i := len("<!doctype"); i < len(b); i++ {
		switch c := b[i]; {
		case c == '"' || c == '\'':
			j := bytes.IndexByte(b[i+1:], c)
			if j < 0 {
				return -1
			}
			i += 1 + j
		case inSubset && bytes.HasPrefix(b[i:], []byte("<!--")):
			j := bytes.Index(b[i+4:], []byte("-->"))
			if j < 0 {
				return -1
			}
			i += 4 + j + 2
		case c == '[':
			inSubset = true
		case c == ']':
			inSubset = false
		case c == '>' && !inSubset:
			return i + 1
		}
	}
	return -1
}

func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && bytes.EqualFold(b[:len(prefix)], []byte(prefix))
}
