package proxy_test

// Hostile media through the real wiring: decompression bombs, frame bombs,
// SVG tricks, truncated and corrupt files of every format, polyglots and
// lying names. Each must get its proper status well before a generous
// deadline, and a burst of bombs must not blow up the process's memory.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/fetch"
	"github.com/misskey-lambda/media-proxy/shared/proxy"
	"github.com/misskey-lambda/media-proxy/shared/store"
	"github.com/misskey-lambda/media-proxy/shared/testmedia"
	"github.com/misskey-lambda/media-proxy/shared/vips/vipstest"
)

// hostileDeadline bounds every hostile request. It is generous on purpose:
// the point is that nothing hangs or grinds through a full decode, not a
// benchmark.
const hostileDeadline = 10 * time.Second

// getWithin fetches src through p and fails if the answer takes longer
// than hostileDeadline.
func getWithin(t *testing.T, p string, src, flags string) response {
	t.Helper()
	r, err := fetchWithin(p, src, flags, hostileDeadline)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// noRedirects answers redirects (to a stored object) as they are.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// fetchWithin is getWithin for other goroutines than the test's, with its
// own deadline.
func fetchWithin(p string, src, flags string, deadline time.Duration) (response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	u := p + "/image.webp?url=" + url.QueryEscape(src)
	if flags != "" {
		u += "&" + flags
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return response{}, err
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		return response{}, fmt.Errorf("no answer within %v: %w", deadline, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("body not read within %v: %w", deadline, err)
	}
	return response{resp.StatusCode, resp.Header, body}, nil
}

// bmpBomb is a small 24-bit BMP whose header claims w×h.
func bmpBomb(w, h int) []byte {
	b := bytes.Clone(testmedia.BMP(64, 48))
	binary.LittleEndian.PutUint32(b[18:], uint32(w))
	binary.LittleEndian.PutUint32(b[22:], uint32(h))
	return b
}

// bmp1Bomb is a complete 1-bit BMP of w×h, all black: one bit per pixel
// on the wire, 4 bytes per pixel once decoded (12000×12000 is an 18 MB
// file, under the size cap, and 576 MB as RGBA).
func bmp1Bomb(w, h int) []byte {
	le := binary.LittleEndian
	stride := (w + 31) / 32 * 4
	const headers = 14 + 40 + 8
	b := make([]byte, headers, headers+stride*h)
	b[0], b[1] = 'B', 'M'
	le.PutUint32(b[2:], uint32(headers+stride*h))
	le.PutUint32(b[10:], headers)
	le.PutUint32(b[14:], 40)
	le.PutUint32(b[18:], uint32(w))
	le.PutUint32(b[22:], uint32(h))
	le.PutUint16(b[26:], 1) // planes
	le.PutUint16(b[28:], 1) // bits per pixel
	le.PutUint32(b[46:], 2) // colours used
	copy(b[58:], []byte{0xff, 0xff, 0xff, 0})
	return append(b, make([]byte, stride*h)...)
}

// icoWrapping is an ICO whose single entry is data (a PNG or a DIB).
func icoWrapping(data []byte) []byte {
	le := binary.LittleEndian
	var b bytes.Buffer
	b.Write([]byte{0, 0, 1, 0})
	b.Write(le.AppendUint16(nil, 1))
	b.Write([]byte{0, 0, 0, 0}) // 256x256 in the directory; the PNG says otherwise
	b.Write(le.AppendUint16(nil, 1))
	b.Write(le.AppendUint16(nil, 32))
	b.Write(le.AppendUint32(nil, uint32(len(data))))
	b.Write(le.AppendUint32(nil, 22))
	b.Write(data)
	return b.Bytes()
}

// webpBomb patches a simple lossy WebP's VP8 frame header to claim
// 16383×16383 (the format's maximum), about 268 megapixels.
func webpBomb(t *testing.T) []byte {
	b := bytes.Clone(vipstest.WebP(t, testmedia.PNGOpaque(64, 48), false, fixtureWebP))
	i := bytes.Index(b, []byte{0x9d, 0x01, 0x2a})
	if string(b[12:16]) != "VP8 " || i < 0 {
		t.Fatalf("webp fixture is not simple lossy VP8: %q", b[12:16])
	}
	binary.LittleEndian.PutUint16(b[i+3:], 0x3fff)
	binary.LittleEndian.PutUint16(b[i+5:], 0x3fff)
	return b
}

// avifBomb patches an AVIF's ispe box (the declared image size) to claim
// 20000×20000.
func avifBomb(t *testing.T) []byte {
	b := bytes.Clone(vipstest.AVIF(t, testmedia.PNGOpaque(64, 48)))
	i := bytes.Index(b, []byte("ispe"))
	if i < 0 {
		t.Fatal("no ispe box in the AVIF fixture")
	}
	// ispe: version and flags (4 bytes), then width and height.
	binary.BigEndian.PutUint32(b[i+8:], 20000)
	binary.BigEndian.PutUint32(b[i+12:], 20000)
	return b
}

// svgExternalImage references url from <image>, <use>, a CSS @import and a
// fill paint server, without an external entity.
func svgExternalImage(url string) []byte {
	return fmt.Appendf(nil, `<?xml version="1.0" encoding="UTF-8"?>
<?xml-stylesheet href="%[1]s.css"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="120" height="90">
  <style>@import url("%[1]s.css"); rect { fill: url("%[1]s#paint") }</style>
  <rect width="120" height="90"/>
  <image href="%[1]s" x="0" y="0" width="60" height="45"/>
  <image xlink:href="%[1]s?xlink" x="60" y="45" width="60" height="45"/>
  <use href="%[1]s.svg#shape"/>
  <circle cx="60" cy="45" r="30" fill="#1d4ed8"/>
</svg>
`, url)
}

type hostileCase struct {
	name   string
	body   func() []byte
	flags  string
	status int
	mime   string // for 200s: the type served
}

func bombCases(t *testing.T) []hostileCase {
	const too = http.StatusUnprocessableEntity
	// Made here, on the test's goroutine, since making them can fail.
	webp, avif := webpBomb(t), avifBomb(t)
	return []hostileCase{
		{"png bomb 16000x16000", func() []byte { return testmedia.PNGBomb(16000, 16000) }, "emoji=1", too, ""},
		{"png bomb 65536x65536", func() []byte { return testmedia.PNGBomb(65536, 65536) }, "avatar=1", too, ""},
		{"png bomb 65536x65536 truncated", func() []byte { return testmedia.PNGBombTruncated(65536, 65536) }, "static=1", too, ""},
		{"png bomb as badge", func() []byte { return testmedia.PNGBomb(16000, 16000) }, "badge=1", too, ""},
		{"jpeg bomb 20000x14000", func() []byte { return testmedia.JPEGBomb(20000, 14000) }, "preview=1", too, ""},
		{"jpeg bomb 65535x65535", func() []byte { return testmedia.JPEGBomb(65535, 65535) }, "emoji=1", too, ""},
		{"gif 5000 frames", func() []byte { return testmedia.GIFManyFrames(5000) }, "emoji=1", too, ""},
		{"gif 5000 frames as avatar", func() []byte { return testmedia.GIFManyFrames(5000) }, "avatar=1", too, ""},
		{"webp bomb 16383x16383", func() []byte { return webp }, "emoji=1", too, ""},
		{"avif bomb 20000x20000", func() []byte { return avif }, "emoji=1", too, ""},
		{"bmp bomb 30000x30000", func() []byte { return bmpBomb(30000, 30000) }, "emoji=1", too, ""},
		{"bmp 1-bit 12000x12000", func() []byte { return bmp1Bomb(12000, 12000) }, "avatar=1", too, ""},
		{"ico wrapping a png bomb", func() []byte { return icoWrapping(testmedia.PNGBomb(16000, 16000)) }, "emoji=1", too, ""},
		{"svg entity bomb", testmedia.SVGEntityBomb, "", too, ""},
		{"svg entity bomb as emoji", testmedia.SVGEntityBomb, "emoji=1", too, ""},
	}
}

func TestHostileMedia(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	p := newProxy(t, map[string]string{"MEDIA_PROXY_TRANSFORM_CONCURRENCY": "2"})

	// The external reference points at a listener of ours, which must
	// never hear from the renderer.
	extLn := &countingListener{Listener: newListener(t, "127.0.0.1:0")}
	t.Cleanup(func() { extLn.Close() })
	go func() {
		for {
			c, err := extLn.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	extURL := "http://" + extLn.Addr().String() + "/external.png"

	formats := map[string][]byte{
		"png":  testmedia.Get("png"),
		"jpeg": testmedia.Get("jpeg"),
		"gif":  testmedia.Get("gif-animated"),
		"webp": vipstest.WebP(t, testmedia.GIF(160, 120, 4), true, fixtureWebP),
		"avif": vipstest.AVIF(t, testmedia.PNGOpaque(320, 240)),
		"bmp":  testmedia.Get("bmp"),
		"ico":  testmedia.Get("ico"),
		"svg":  testmedia.Get("svg"),
	}
	const (
		ok      = http.StatusOK
		refused = http.StatusForbidden
		noconv  = http.StatusNotFound
		broken  = http.StatusUnprocessableEntity
	)
	cases := bombCases(t)
	cases = append(cases,
		// Only the first frame of a frame bomb is decoded for static.
		hostileCase{"gif 5000 frames static", func() []byte { return testmedia.GIFManyFrames(5000) }, "static=1", ok, "image/webp"},
		// A huge canvas is rendered at the size asked for, not its own.
		hostileCase{"svg 100000x100000", testmedia.SVGHuge, "", ok, "image/webp"},
		hostileCase{"svg 100000x100000 as emoji", testmedia.SVGHuge, "emoji=1", ok, "image/webp"},
		// An external entity (XXE) makes librsvg refuse the document; a
		// plain external <image> is left out of the rendering. Neither is
		// ever fetched (checked below).
		hostileCase{"svg external entity and image", func() []byte { return testmedia.SVGExternalRef(extURL) }, "", broken, ""},
		hostileCase{"svg external entity and image as avatar", func() []byte { return testmedia.SVGExternalRef(extURL) }, "avatar=1", broken, ""},
		hostileCase{"svg external image", func() []byte { return svgExternalImage(extURL) }, "", ok, "image/webp"},
		hostileCase{"svg external image as emoji", func() []byte { return svgExternalImage(extURL) }, "emoji=1", ok, "image/webp"},
		// Scripts never reach the client as SVG.
		hostileCase{"svg with script", testmedia.SVGWithScript, "", ok, "image/webp"},
	)
	// Truncated and corrupt files of every format. Converting one is
	// undecodable (422), unless the damage also hides what it is (404: not
	// an image we convert). Passthrough never decodes: a damaged raster
	// image is passed on as what its magic says; an unrecognisable one is
	// refused (403). SVG is rasterised even without flags, so a damaged SVG
	// is 422 either way.
	for _, f := range []struct {
		format                   string
		truncFlag, truncPass     int
		corruptFlag, corruptPass int
		first16                  int
		passMIME                 string
	}{
		{"png", broken, ok, broken, ok, broken, "image/png"},
		{"jpeg", broken, ok, broken, ok, broken, "image/jpeg"},
		// libvips' GIF loader keeps the frames that are complete and treats
		// a cut-off frame as the end of the animation: a shorter animation.
		{"gif", ok, ok, broken, ok, broken, "image/gif"},
		// The corruption hits the RIFF form type, the ftyp box and the DIB
		// header size, which is all sniffing has to go on.
		{"webp", broken, ok, noconv, refused, broken, "image/webp"},
		{"avif", broken, ok, noconv, refused, broken, "image/avif"},
		{"bmp", broken, ok, noconv, refused, noconv, "image/bmp"},
		{"ico", broken, ok, broken, ok, broken, "image/x-icon"},
		// The XML declaration's end survives the corruption, so it is still
		// an SVG, one librsvg refuses; 16 bytes end inside the declaration.
		{"svg", broken, broken, broken, broken, noconv, "image/webp"},
	} {
		src := formats[f.format]
		trunc := func() []byte { return testmedia.Truncate(src, len(src)/2) }
		corrupt := func() []byte { return testmedia.CorruptHeader(src) }
		first16 := func() []byte { return testmedia.Truncate(src, 16) }
		add := func(name string, body func() []byte, flags string, status int) {
			mime := ""
			switch {
			case status != ok:
			case flags == "":
				mime = f.passMIME
			default:
				mime = "image/webp"
			}
			cases = append(cases, hostileCase{name, body, flags, status, mime})
		}
		add("truncated "+f.format, trunc, "emoji=1", f.truncFlag)
		add("truncated "+f.format+" passthrough", trunc, "", f.truncPass)
		add("corrupt "+f.format, corrupt, "preview=1", f.corruptFlag)
		add("corrupt "+f.format+" passthrough", corrupt, "", f.corruptPass)
		add("first 16 bytes of "+f.format, first16, "static=1", f.first16)
	}
	cases = append(cases,
		hostileCase{"html", testmedia.HTML, "", refused, ""},
		hostileCase{"html as emoji", testmedia.HTML, "emoji=1", noconv, ""},
		hostileCase{"pdf", testmedia.PDF, "", refused, ""},
	)

	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := o.add(fmt.Sprintf("/hostile/%d/file.png", i), c.body())
			start := time.Now()
			r := getWithin(t, p.URL, src, c.flags)
			took := time.Since(start)
			checkCommon(t, r)
			if r.header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("X-Content-Type-Options = %q", r.header.Get("X-Content-Type-Options"))
			}
			if r.status != c.status {
				t.Fatalf("status %d (%s, %d bytes), want %d", r.status, r.header.Get("Content-Type"), len(r.body), c.status)
			}
			if c.status != ok {
				checkError(t, r, c.status)
			} else {
				checkSuccess(t, r, c.mime)
			}
			t.Logf("%d %s in %v", r.status, r.header.Get("Content-Type"), took.Round(time.Millisecond))
		})
	}
	if got := noNewConns(t, extLn, 0); len(got) != 0 {
		t.Errorf("rendering an SVG connected to its external reference %d time(s)", len(got))
	}
}

// TestDisguisedMedia checks that types come from the bytes, never from the
// remote name or Content-Type.
func TestDisguisedMedia(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	p := newProxy(t, nil)

	// A GIF that is also an HTML page, announced as HTML.
	poly := testmedia.GIFHTMLPolyglot()
	r := getWithin(t, p.URL, o.addFile("/page.html", originFile{body: poly, contentType: "text/html; charset=utf-8"}), "")
	checkSuccess(t, r, "image/gif")
	if r.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Error("polyglot served without nosniff")
	}
	if name := dispositionName(t, r); name != "page.gif" {
		t.Errorf("polyglot named %q, want page.gif", name)
	}
	if !bytes.Equal(r.body, poly) {
		t.Error("polyglot bytes changed")
	}

	// A JPEG named .txt and announced as text.
	jpeg := testmedia.Get("jpeg")
	r = getWithin(t, p.URL, o.addFile("/notes.txt", originFile{body: jpeg, contentType: "text/plain"}), "")
	checkSuccess(t, r, "image/jpeg")
	if name := dispositionName(t, r); name != "notes.jpg" {
		t.Errorf("JPEG named %q, want notes.jpg", name)
	}
	// Also when the remote Content-Disposition insists on .txt.
	r = getWithin(t, p.URL, o.addFile("/dl", originFile{body: jpeg, contentType: "text/plain", disposition: `attachment; filename="evil.txt"`}), "")
	checkSuccess(t, r, "image/jpeg")
	if name := dispositionName(t, r); name != "evil.jpg" {
		t.Errorf("JPEG named %q, want evil.jpg", name)
	}

	// An HTML page named .png and announced as PNG.
	for _, flags := range []string{"", "emoji=1"} {
		r = getWithin(t, p.URL, o.addFile("/photo"+flags+".png", originFile{body: testmedia.HTML(), contentType: "image/png"}), flags)
		want := http.StatusForbidden
		if flags != "" {
			want = http.StatusNotFound
		}
		checkError(t, r, want)
		if strings.Contains(string(r.body), "<") {
			t.Errorf("refused HTML leaked markup: %q", r.body)
		}
	}
	// An SVG (script inside) announced as image/svg+xml is never served as SVG.
	r = getWithin(t, p.URL, o.addFile("/icon.svg", originFile{body: testmedia.SVGWithScript(), contentType: "image/svg+xml"}), "")
	checkSuccess(t, r, "image/webp")
	if name := dispositionName(t, r); name != "icon.webp" {
		t.Errorf("SVG named %q, want icon.webp", name)
	}
}

// procStatus reads a field of /proc/self/status in bytes.
func procStatus(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return -1
			}
			return kb << 10
		}
	}
	return -1
}

// rssCeiling is how much the process may grow while 16 bombs are served
// at once. A single 16000x16000 RGBA decode is 1 GiB, so a ceiling of
// 1.5 GiB fails as soon as two bombs are really decoded at the same time,
// yet leaves room for libvips' and Go's own arenas.
func rssCeiling(t *testing.T) int64 {
	if v := os.Getenv("MEDIA_PROXY_TEST_RSS_CEILING_MB"); v != "" {
		mb, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("MEDIA_PROXY_TEST_RSS_CEILING_MB: %v", err)
		}
		return mb << 20
	}
	return 1536 << 20
}

// TestConcurrentBombsMemory serves 16 bombs at once with two decode slots
// and checks that the process stays under the memory ceiling.
func TestConcurrentBombsMemory(t *testing.T) {
	if runtime.GOOS != "linux" || procStatus("VmRSS") < 0 {
		t.Skip("needs /proc/self/status")
	}
	o := newOrigin(t)
	p := newProxy(t, map[string]string{"MEDIA_PROXY_TRANSFORM_CONCURRENCY": "2"})
	// Every bomb once, plus more of the kinds decoded in Go (ICO and BMP),
	// whose full decode would hold gigabytes of Go heap.
	bombs := bombCases(t)
	var inGo []hostileCase
	for _, c := range bombs {
		if strings.HasPrefix(c.name, "ico") || strings.HasPrefix(c.name, "bmp 1-bit") {
			inGo = append(inGo, c)
		}
	}
	for i := 0; len(bombs) < 16; i++ {
		bombs = append(bombs, inGo[i%len(inGo)])
	}
	type job struct {
		src, flags string
		status     int
	}
	var jobs []job
	for i, c := range bombs {
		jobs = append(jobs, job{o.add(fmt.Sprintf("/burst/%d", i), c.body()), c.flags, c.status})
	}
	// Warm libvips up so its one-off allocations are in the baseline.
	checkSuccess(t, getWithin(t, p.URL, o.add("/warm.png", testmedia.PNG(256, 256)), "emoji=1"), "image/webp")

	runtime.GC()
	debug.FreeOSMemory()
	base := procStatus("VmRSS")
	// Resetting the high-water mark needs Linux 4.0+ and is not available
	// everywhere (gVisor); sampling covers the rest.
	hwmReset := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil && procStatus("VmHWM") <= base+(8<<20)

	var peak atomic.Int64
	peak.Store(base)
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			if v := procStatus("VmRSS"); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()

	start := time.Now()
	var wg sync.WaitGroup
	statuses := make([]int, len(jobs))
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The burst gets longer than one bomb alone: were the bombs
			// decoded, the memory they take is what this test is after.
			r, err := fetchWithin(p.URL, j.src, j.flags, 3*hostileDeadline)
			if err != nil {
				t.Errorf("bomb %d (%s): %v", i, j.flags, err)
			}
			statuses[i] = r.status
		}()
	}
	wg.Wait()
	took := time.Since(start)
	close(stop)
	<-sampled
	if hwmReset {
		if hwm := procStatus("VmHWM"); hwm > peak.Load() {
			peak.Store(hwm)
		}
	}
	for i, j := range jobs {
		if statuses[i] != j.status {
			t.Errorf("bomb %d (%s): status %d, want %d", i, j.flags, statuses[i], j.status)
		}
	}
	growth := peak.Load() - base
	ceiling := rssCeiling(t)
	t.Logf("16 concurrent bombs in %v: RSS %d MiB before, peak %d MiB (+%d MiB, ceiling +%d MiB, high-water mark reset: %v)",
		took.Round(time.Millisecond), base>>20, peak.Load()>>20, growth>>20, ceiling>>20, hwmReset)
	if growth > ceiling {
		t.Errorf("RSS grew by %d MiB serving 16 bombs, over the %d MiB ceiling", growth>>20, ceiling>>20)
	}
	// The proxy still works afterwards.
	checkSuccess(t, getWithin(t, p.URL, o.add("/after.png", testmedia.PNG(300, 200)), "emoji=1"), "image/webp")
}

// TestInvalidHostCharacters: url.Parse lets '"', '<' and '>' into a host
// name, which net/http refuses to send ("invalid Host header"). A URL that
// can never be fetched is the client's error, 400, not a 502 remembered as
// if the origin were down. (The stack's resolver answers nothing, so no
// name is looked up for real.)
func TestInvalidHostCharacters(t *testing.T) {
	p := newStack(t, stackOptions{})
	for _, host := range []string{`a"b.example`, "a<b.example", "a>b.example"} {
		checkError(t, get(t, p, "http://"+host+"/a.png", ""), http.StatusBadRequest)
	}
}

// FuzzHandlerQuery feeds the handler arbitrary query strings. Whatever the
// query, the answer is never a 5xx (the origin always answers with a small
// PNG) and always carries the security headers. Every fetch goes through a
// trap proxy on loopback, which serves that PNG (tunnelling https to a
// local TLS server), so no URL the fuzzer makes up is ever connected to.
func FuzzHandlerQuery(f *testing.F) {
	for _, s := range []string{
		"url=https%3A%2F%2Fexample.com%2Femoji.png&emoji=1",
		"url=http://example.com/a.png&avatar=1&static=1",
		"url=http://example.com/a.png&preview&badge&fallback",
		"url=http://8.8.8.8/a.png",
		"url=https://example.com:8443/a.png?x=1%26y%3D2",
		"url=http://127.0.0.1/&fallback=1",
		"url=http://127.1/", "url=http://[::1]/", "url=http://[fe80::1%25lo]/",
		"url=file:///etc/passwd", "url=javascript:alert(1)", "url=//example.com/",
		"url=http://a@example.com/", "url=a&url=b", "url=%zz", "url=http://%E4%BE%8B.jp/%E7%B5%B5.png",
		"url=http://example.com:99999/", "url=http://exa%20mple.com/", "emoji=1", "", ";;;&&&==",
	} {
		f.Add(s)
	}
	tlsOrigin := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(testmedia.PNG(24, 16))
	}))
	f.Cleanup(tlsOrigin.Close)
	png := testmedia.PNG(24, 16)
	trap := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			w.Header().Set("Content-Type", "text/html") // never trusted
			w.Write(png)
			return
		}
		// Tunnel to the local TLS origin, whatever the target.
		up, err := net.Dial("tcp", tlsOrigin.Listener.Addr().String())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			up.Close()
			return
		}
		conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
		go func() { io.Copy(up, buf); up.Close() }()
		go func() { io.Copy(conn, up); conn.Close() }()
	}))
	f.Cleanup(trap.Close)
	trapURL, _ := url.Parse(trap.URL)
	public := []netip.Addr{netip.MustParseAddr("8.8.8.8")} // never dialled: the trap proxy is
	fetcher := fetch.New(fetch.Config{
		ConnectTimeout:  5 * time.Second,
		ResponseTimeout: 5 * time.Second,
		Timeout:         10 * time.Second,
		Proxy:           func(*http.Request) (*url.URL, error) { return trapURL, nil },
		Resolver: resolverFunc(func(context.Context, string, string) ([]netip.Addr, error) {
			return public, nil
		}),
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the local origin's test certificate
	})
	f.Cleanup(fetcher.CloseIdleConnections)
	h := proxy.New(proxy.Config{
		Pipeline:  testPipeline(fetcher),
		Canonical: fetcher.Canonical,
		Store:     store.None{},
		Headers:   testHeaders,
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	f.Fuzz(func(t *testing.T, raw string) {
		req := httptest.NewRequest(http.MethodGet, "/image.webp", nil)
		req.URL.RawQuery = raw
		req.RequestURI = ""
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("query %q answered %d %q", raw, rec.Code, rec.Body.Bytes())
		}
		hd := rec.Header()
		if hd.Get("Content-Security-Policy") != testHeaders.ContentSecurityPolicy || hd.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("query %q: security headers missing: %v", raw, hd)
		}
		ct := hd.Get("Content-Type")
		if rec.Code == http.StatusOK && !strings.HasPrefix(ct, "image/") {
			t.Fatalf("query %q served %s", raw, ct)
		}
		if rec.Code >= 400 && (bytes.Contains(rec.Body.Bytes(), []byte("/")) || bytes.Contains(rec.Body.Bytes(), []byte("vips"))) {
			t.Fatalf("query %q: error body leaks %q", raw, rec.Body.Bytes())
		}
	})
}
