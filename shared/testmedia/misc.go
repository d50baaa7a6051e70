package testmedia

import (
	"bytes"
	"fmt"
)

// HTML returns a small HTML page with a script, for "not media" rejection
// tests.
func HTML() []byte {
	return []byte(`<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>testmedia</title></head>
<body>
<h1>Not an image</h1>
<script>document.title = "script ran";</script>
</body>
</html>
`)
}

// PDF returns a minimal one-page PDF 1.4 document with a correct
// cross-reference table.
func PDF() []byte {
	objects := []string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
		"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents 4 0 R >>",
		"<< /Length 35 >>\nstream\n0 0 1 rg 50 50 100 100 re f\nendstream", // fill a blue square
	}
	var b bytes.Buffer
	b.WriteString("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n") // binary comment marks the file as binary
	offsets := make([]int, len(objects))
	for i, o := range objects {
		offsets[i] = b.Len()
		fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", i+1, o)
	}
	xref := b.Len()
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f \n", len(objects)+1)
	for _, off := range offsets {
		fmt.Fprintf(&b, "%010d 00000 n \n", off)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(objects)+1, xref)
	return b.Bytes()
}

// Truncate returns a copy of the first n bytes of b (all of b if shorter).
func Truncate(b []byte, n int) []byte {
	return bytes.Clone(b[:max(min(n, len(b)), 0)])
}

// CorruptHeader returns a copy of b with bytes 4..31 inverted. The first
// four bytes survive, so magic-number sniffing still names the format
// ("\x89PNG", "GIF8", JPEG SOI+marker, "RIFF", ...), but the rest of the
// signature and the header fields that follow are garbage.
func CorruptHeader(b []byte) []byte {
	out := bytes.Clone(b)
	for i := 4; i < min(len(out), 32); i++ {
		out[i] ^= 0xff
	}
	return out
}
