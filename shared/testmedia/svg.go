package testmedia

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"strings"
)

// SVG returns w×h vector art (gradient background, shapes, a path) with
// width and height attributes and a matching viewBox. It uses no text, so
// rasterisation does not depend on installed fonts.
func SVG(w, h int) []byte {
	checkSize(w, h)
	return fmt.Appendf(nil, `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="%[1]d" height="%[2]d" viewBox="0 0 %[1]d %[2]d">
  <defs>
    <linearGradient id="bg" x1="0" y1="0" x2="1" y2="1">
      <stop offset="0" stop-color="#3b82f6"/>
      <stop offset="1" stop-color="#f43f5e"/>
    </linearGradient>
    <radialGradient id="glow">
      <stop offset="0" stop-color="#fff" stop-opacity="0.9"/>
      <stop offset="1" stop-color="#fff" stop-opacity="0"/>
    </radialGradient>
  </defs>
  <rect width="%[1]d" height="%[2]d" fill="url(#bg)"/>
  <circle cx="%[3]d" cy="%[4]d" r="%[5]d" fill="url(#glow)"/>
  <rect x="%[6]d" y="%[7]d" width="%[8]d" height="%[9]d" rx="%[10]d" fill="#facc15" stroke="#1e293b" stroke-width="2" transform="rotate(12 %[3]d %[4]d)"/>
  <ellipse cx="%[11]d" cy="%[12]d" rx="%[8]d" ry="%[10]d" fill="#10b981" fill-opacity="0.7"/>
  <path d="M0 %[2]d L%[3]d %[4]d L%[1]d %[2]d Z" fill="#0f172a" fill-opacity="0.5"/>
</svg>
`, w, h, w/2, h/2, min(w, h)/3, w/8, h/8, max(w/4, 1), max(h/4, 1), max(min(w, h)/16, 1), w*3/4, h*3/4)
}

// SVGWithScript returns an SVG with an onload handler and a <script>
// element, for sanitiser and Content-Security-Policy tests.
func SVGWithScript() []byte {
	return []byte(`<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100" viewBox="0 0 100 100" onload="alert(document.cookie)">
  <script type="text/javascript">alert(document.domain)</script>
  <rect width="100" height="100" fill="#e11d48" onclick="alert(1)"/>
</svg>
`)
}

// SVGHuge returns an SVG declaring a 100000×100000 canvas; rasterising it at
// its intrinsic size would need 40 GB.
func SVGHuge() []byte {
	return []byte(`<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="100000" height="100000" viewBox="0 0 100 100">
  <rect width="100" height="100" fill="#22c55e"/>
  <circle cx="50" cy="50" r="40" fill="#1d4ed8"/>
</svg>
`)
}

// SVGEntityBomb returns a "billion laughs" SVG: ten levels of internal
// entities, each expanding to ten of the previous, 10^9 "lol"s in total.
func SVGEntityBomb() []byte {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE svg [
  <!ENTITY lol "lol">
`)
	prev := "lol"
	for i := 1; i <= 9; i++ {
		name := fmt.Sprintf("lol%d", i)
		fmt.Fprintf(&b, "  <!ENTITY %s \"%s\">\n", name, strings.Repeat("&"+prev+";", 10))
		prev = name
	}
	b.WriteString(`]>
<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">
  <text x="0" y="20">&lol9;</text>
</svg>
`)
	return []byte(b.String())
}

// SVGExternalRef returns an SVG that references url twice: as an <image>
// href (and xlink:href) and as an external (XXE) entity expanded in a text
// node. Rendering it must not make the proxy fetch url.
func SVGExternalRef(url string) []byte {
	var attr bytes.Buffer
	must(0, xml.EscapeText(&attr, []byte(url)))
	// A SYSTEM literal cannot be escaped; percent-encode its delimiter.
	sys := strings.ReplaceAll(url, `"`, "%22")
	return fmt.Appendf(nil, `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE svg [
  <!ENTITY xxe SYSTEM "%[1]s">
]>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="100" height="100">
  <image href="%[2]s" xlink:href="%[2]s" x="0" y="0" width="100" height="100"/>
  <text x="0" y="50">&xxe;</text>
</svg>
`, sys, attr.String())
}

// SVGSlow returns a 2048×2048 SVG of n large translucent circles: a few
// kilobytes per hundred circles that take librsvg seconds per thousand to
// render at full size (about 8 s for 1000 on one core here), for tests of
// the transform deadline.
func SVGSlow(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`<svg xmlns="http://www.w3.org/2000/svg" width="2048" height="2048">`)
	for i := range n {
		fmt.Fprintf(&b, `<circle cx="%d" cy="%d" r="900" fill="#%06x" opacity="0.5"/>`, (i*37)%2048, (i*91)%2048, i*7919%0xffffff)
	}
	b.WriteString(`</svg>`)
	return b.Bytes()
}
