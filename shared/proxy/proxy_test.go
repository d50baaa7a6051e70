package proxy_test

import (
	"bytes"
	"fmt"
	"image/color"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/image/tiff"

	"github.com/misskey-lambda/media-proxy/shared/testmedia"
	"github.com/misskey-lambda/media-proxy/shared/vips"
)

const csp = "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'"

// origin is a real HTTP server on loopback serving fixtures by path.
type origin struct {
	*httptest.Server
	mu    sync.Mutex
	files map[string]originFile
	hits  map[string]*atomic.Int64
}

type originFile struct {
	body        []byte
	status      int
	disposition string
	delay       time.Duration
	contentType string
}

func newOrigin(t *testing.T) *origin {
	o := &origin{files: map[string]originFile{}, hits: map[string]*atomic.Int64{}}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		f, ok := o.files[r.URL.Path]
		if o.hits[r.URL.Path] == nil {
			o.hits[r.URL.Path] = new(atomic.Int64)
		}
		o.hits[r.URL.Path].Add(1)
		o.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		time.Sleep(f.delay)
		if f.disposition != "" {
			w.Header().Set("Content-Disposition", f.disposition)
		}
		// A lying Content-Type: the proxy must sniff, never copy it.
		ct := f.contentType
		if ct == "" {
			ct = "text/html"
		}
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Content-Length", fmt.Sprint(len(f.body)))
		if f.status != 0 {
			w.WriteHeader(f.status)
		}
		w.Write(f.body)
	}))
	t.Cleanup(o.Close)
	return o
}

func (o *origin) add(path string, body []byte) string {
	return o.addFile(path, originFile{body: body})
}

func (o *origin) addFile(path string, f originFile) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.files[path] = f
	return o.URL + path
}

func (o *origin) hitCount(path string) int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	if c := o.hits[path]; c != nil {
		return c.Load()
	}
	return 0
}

// newProxy serves the real wired service on loopback (see newService).
func newProxy(t *testing.T, env map[string]string) *httptest.Server {
	t.Helper()
	srv, _, _ := newService(t, env)
	return srv
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func request(t *testing.T, method, rawURL string, hdr ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, body}
}

func get(t *testing.T, proxy *httptest.Server, src, flags string) response {
	t.Helper()
	u := proxy.URL + "/image.webp?url=" + url.QueryEscape(src)
	if flags != "" {
		u += "&" + flags
	}
	return request(t, http.MethodGet, u)
}

// decoded is what libvips reads back from a response body.
type decoded struct {
	loader                string
	width, height, frames int
	bands                 int
	delays                []int
}

func decode(t *testing.T, b []byte) decoded {
	t.Helper()
	im, err := vips.Header(b, false)
	if err != nil {
		t.Fatalf("output does not decode: %v", err)
	}
	if l := im.Loader(); l == "webpload_buffer" || l == "gifload_buffer" {
		im.Close()
		if im, err = vips.Header(b, true); err != nil {
			t.Fatal(err)
		}
	}
	defer im.Close()
	return decoded{im.Loader(), im.Width(), im.PageHeight(), im.Pages(), im.Bands(), im.Delays()}
}

func checkCommon(t *testing.T, r response) {
	t.Helper()
	for k, want := range map[string]string{
		"Content-Security-Policy":      csp,
		"Access-Control-Allow-Origin":  "*",
		"Access-Control-Allow-Headers": "*",
		"Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
	} {
		if got := r.header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

func checkSuccess(t *testing.T, r response, contentType string) {
	t.Helper()
	checkCommon(t, r)
	if r.status != http.StatusOK {
		t.Fatalf("status %d (%q), want 200", r.status, r.body)
	}
	if got := r.header.Get("Content-Type"); got != contentType {
		t.Errorf("Content-Type = %q, want %q", got, contentType)
	}
	if got := r.header.Get("Cache-Control"); got != "max-age=31536000, immutable" {
		t.Errorf("Cache-Control = %q", got)
	}
	if got := r.header.Get("Content-Length"); got != fmt.Sprint(len(r.body)) {
		t.Errorf("Content-Length = %q, body is %d bytes", got, len(r.body))
	}
	if etag := r.header.Get("ETag"); !strings.HasPrefix(etag, `"`) {
		t.Errorf("ETag = %q, want a strong tag", etag)
	}
	if d := r.header.Get("Content-Disposition"); !strings.HasPrefix(d, "inline;") {
		t.Errorf("Content-Disposition = %q", d)
	}
}

// errorCache is how long an error about the source may be cached: as long
// as it is remembered.
func errorCache(status int) string {
	switch {
	case status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable:
		return "no-store"
	case status >= 500:
		return "max-age=10"
	}
	return "max-age=300"
}

// checkErrorCache checks an error's Cache-Control: errorCache's for a
// failure found now, or for one remembered from moments ago what is left
// of it (in whole seconds, so one less).
func checkErrorCache(t *testing.T, r response, status int) {
	t.Helper()
	got, want := r.header.Get("Cache-Control"), errorCache(status)
	if got == want {
		return
	}
	if full, ok := strings.CutPrefix(want, "max-age="); ok {
		if n, _ := strconv.Atoi(full); got == "max-age="+strconv.Itoa(n-1) {
			return
		}
	}
	t.Errorf("Cache-Control = %q, want %s (or a second less, remembered)", got, want)
}

func checkError(t *testing.T, r response, status int) {
	t.Helper()
	checkCommon(t, r)
	if r.status != status {
		t.Fatalf("status %d (%q), want %d", r.status, r.body, status)
	}
	checkErrorCache(t, r, status)
	for _, leak := range []string{"vips", "/", "goroutine", ".go:"} {
		if bytes.Contains(r.body, []byte(leak)) {
			t.Errorf("error body leaks %q: %q", leak, r.body)
		}
	}
}

func dispositionName(t *testing.T, r response) string {
	t.Helper()
	_, params, err := mime.ParseMediaType(r.header.Get("Content-Disposition"))
	if err != nil {
		t.Fatalf("Content-Disposition %q: %v", r.header.Get("Content-Disposition"), err)
	}
	return params["filename"]
}

// webpFixture encodes fixture through libvips, for inputs Go cannot write.
func webpFixture(t *testing.T, src []byte, animated bool) []byte {
	t.Helper()
	im, err := vips.Thumbnail(src, vips.Fit{Width: 10000, Height: 10000, AllPages: animated})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	b, err := im.WebP(vips.WebPOptions{Quality: 80, AlphaQuality: 90, Effort: 0})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func avifFixture(t *testing.T, src []byte) []byte {
	t.Helper()
	im, err := vips.Thumbnail(src, vips.Fit{Width: 10000, Height: 10000})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	b, err := im.AVIF()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVariants(t *testing.T) {
	o := newOrigin(t)
	p := newProxy(t, nil)
	tests := []struct {
		name, fixture string
		src           []byte
		flags         string
		mime          string
		loader        string
		w, h, frames  int
	}{
		{name: "emoji png", src: testmedia.PNG(512, 512), flags: "emoji=1", mime: "image/webp", loader: "webpload_buffer", w: 128, h: 128, frames: 1},
		{name: "emoji small never enlarged", src: testmedia.PNG(64, 32), flags: "emoji=1", mime: "image/webp", loader: "webpload_buffer", w: 64, h: 32, frames: 1},
		{name: "emoji animated gif", src: testmedia.GIF(256, 256, 12), flags: "emoji=1", mime: "image/webp", loader: "webpload_buffer", w: 128, h: 128, frames: 12},
		{name: "emoji animated webp", src: webpFixture(t, testmedia.GIF(200, 100, 6), true), flags: "emoji=1", mime: "image/webp", loader: "webpload_buffer", w: 200, h: 100, frames: 6},
		{name: "emoji static of animated gif", src: testmedia.GIF(256, 256, 12), flags: "emoji=1&static=1", mime: "image/webp", loader: "webpload_buffer", w: 128, h: 128, frames: 1},
		{name: "emoji apng animated", src: testmedia.APNG(200, 150, 6), flags: "emoji=1", mime: "image/webp", loader: "webpload_buffer", w: 171, h: 128, frames: 6},
		{name: "emoji exif 6 rotated", src: testmedia.JPEGWithOrientation(640, 480, 6), flags: "emoji=1", mime: "image/webp", loader: "webpload_buffer", w: 96, h: 128, frames: 1},
		{name: "emoji exif 8 rotated", src: testmedia.JPEGWithOrientation(640, 480, 8), flags: "emoji=1", mime: "image/webp", loader: "webpload_buffer", w: 96, h: 128, frames: 1},
		{name: "emoji cmyk jpeg", src: testmedia.CMYKJPEG(320, 240), flags: "emoji=1", mime: "image/webp", loader: "webpload_buffer", w: 171, h: 128, frames: 1},
		{name: "emoji large cmyk jpeg (shrink-on-load)", src: testmedia.CMYKJPEG(1600, 1200), flags: "emoji=1", mime: "image/webp", loader: "webpload_buffer", w: 171, h: 128, frames: 1},
		{name: "emoji 16-bit png", src: testmedia.PNG16(320, 240), flags: "emoji=1", mime: "image/webp", loader: "webpload_buffer", w: 171, h: 128, frames: 1},
		{name: "emoji avif", src: avifFixture(t, testmedia.PNGOpaque(300, 200)), flags: "emoji=1", mime: "image/webp", loader: "webpload_buffer", w: 192, h: 128, frames: 1},
		{name: "emoji bmp", src: testmedia.BMP(320, 240), flags: "emoji=1", mime: "image/webp", loader: "webpload_buffer", w: 171, h: 128, frames: 1},
		{name: "emoji ico", src: testmedia.ICO(16, 32, 256), flags: "emoji=1", mime: "image/webp", loader: "webpload_buffer", w: 128, h: 128, frames: 1},
		{name: "emoji ico bitmap entry", src: testmedia.ICOBMP(32), flags: "emoji=1", mime: "image/webp", loader: "webpload_buffer", w: 32, h: 32, frames: 1},
		{name: "emoji svg rendered at size", src: testmedia.SVG(36, 36), flags: "emoji=1", mime: "image/webp", loader: "webpload_buffer", w: 128, h: 128, frames: 1},
		{name: "avatar jpeg", src: testmedia.JPEG(800, 600, 85), flags: "avatar=1", mime: "image/webp", loader: "webpload_buffer", w: 427, h: 320, frames: 1},
		{name: "avatar animated gif", src: testmedia.GIF(400, 400, 5), flags: "avatar=1", mime: "image/webp", loader: "webpload_buffer", w: 320, h: 320, frames: 5},
		{name: "avatar static", src: testmedia.GIF(400, 400, 5), flags: "avatar=1&static=1", mime: "image/webp", loader: "webpload_buffer", w: 320, h: 320, frames: 1},
		{name: "static fits 498x422", src: testmedia.GIF(1000, 500, 3), flags: "static=1", mime: "image/webp", loader: "webpload_buffer", w: 498, h: 249, frames: 1},
		{name: "static tall", src: testmedia.JPEG(400, 1000, 80), flags: "static=1", mime: "image/webp", loader: "webpload_buffer", w: 169, h: 422, frames: 1},
		{name: "preview fits 200x200", src: testmedia.JPEG(1024, 768, 80), flags: "preview=1", mime: "image/webp", loader: "webpload_buffer", w: 200, h: 150, frames: 1},
		{name: "badge", src: testmedia.PNG(300, 200), flags: "badge=1", mime: "image/png", loader: "pngload_buffer", w: 96, h: 96, frames: 1},
		{name: "svg without flags becomes webp", src: testmedia.SVG(400, 300), mime: "image/webp", loader: "webpload_buffer", w: 400, h: 300, frames: 1},
		{name: "svg with script becomes webp", src: testmedia.SVGWithScript(), mime: "image/webp", loader: "webpload_buffer", frames: 1},
		{name: "huge svg fits 2048", src: testmedia.SVGHuge(), mime: "image/webp", loader: "webpload_buffer", w: 2048, h: 2048, frames: 1},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := o.add(fmt.Sprintf("/v%d/source.png", i), tt.src)
			r := get(t, p, src, tt.flags)
			checkSuccess(t, r, tt.mime)
			d := decode(t, r.body)
			if d.loader != tt.loader {
				t.Errorf("loader %s, want %s", d.loader, tt.loader)
			}
			if tt.w != 0 && (d.width != tt.w || d.height != tt.h) {
				t.Errorf("size %dx%d, want %dx%d", d.width, d.height, tt.w, tt.h)
			}
			if d.frames != tt.frames {
				t.Errorf("%d frames, want %d", d.frames, tt.frames)
			}
			wantExt := ".webp"
			if tt.mime == "image/png" {
				wantExt = ".png"
			}
			if name := dispositionName(t, r); name != "source"+wantExt {
				t.Errorf("filename %q, want source%s", name, wantExt)
			}
		})
	}
}

func TestAnimationKeepsDelays(t *testing.T) {
	o := newOrigin(t)
	p := newProxy(t, nil)
	r := get(t, p, o.add("/anim.gif", testmedia.GIF(256, 256, 6)), "emoji=1")
	checkSuccess(t, r, "image/webp")
	d := decode(t, r.body)
	want := []int{40, 50, 60, 40, 50, 60} // testmedia: 4+i%3 hundredths
	if fmt.Sprint(d.delays) != fmt.Sprint(want) {
		t.Errorf("delays %v, want %v", d.delays, want)
	}
}

func TestExifOrientationApplied(t *testing.T) {
	// The fixture's stored top-left corner is red; orientation 6 means
	// rotate 90° clockwise for display, which puts it top-right.
	o := newOrigin(t)
	p := newProxy(t, nil)
	r := get(t, p, o.add("/exif6.jpg", testmedia.JPEGWithOrientation(640, 480, 6)), "avatar=1")
	checkSuccess(t, r, "image/webp")
	im, err := vips.Thumbnail(r.body, vips.Fit{Width: 3, Height: 4, Enlarge: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	png, err := im.PNG()
	if err != nil {
		t.Fatal(err)
	}
	img := decodePNG(t, png)
	tr := color.NRGBAModel.Convert(img.At(img.Bounds().Dx()-1, 0)).(color.NRGBA)
	tl := color.NRGBAModel.Convert(img.At(0, 0)).(color.NRGBA)
	if !(tr.R > 150 && tr.G < 100 && tr.B < 100) {
		t.Errorf("top-right pixel %v is not red: orientation not applied", tr)
	}
	if tl.R > 150 && tl.G < 100 && tl.B < 100 {
		t.Errorf("top-left pixel %v is still red", tl)
	}
}

func TestBadge(t *testing.T) {
	o := newOrigin(t)
	p := newProxy(t, nil)
	r := get(t, p, o.add("/shape.png", testmedia.PNG(300, 200)), "badge=1")
	checkSuccess(t, r, "image/png")
	img := decodePNG(t, r.body)
	if b := img.Bounds(); b.Dx() != 96 || b.Dy() != 96 {
		t.Fatalf("badge is %v", b)
	}
	// Contained and centred: the letterbox rows are fully transparent, the
	// middle is not.
	if _, _, _, a := img.At(48, 2).RGBA(); a != 0 {
		t.Errorf("letterbox alpha %d, want 0", a)
	}
	var opaque int
	for x := range 96 {
		if _, _, _, a := img.At(x, 48).RGBA(); a > 0 {
			opaque++
		}
	}
	if opaque == 0 {
		t.Error("the mask is empty in the middle row")
	}

	for _, name := range []string{"flat", "transparent"} {
		src := testmedia.FlatPNG(256, 256, color.NRGBA{0x86, 0xb3, 0x00, 0xff})
		if name == "transparent" {
			src = testmedia.TransparentPNG(256, 256)
		}
		checkError(t, get(t, p, o.add("/"+name+".png", src), "badge=1"), http.StatusNotFound)
	}
}

func TestPassthrough(t *testing.T) {
	o := newOrigin(t)
	p := newProxy(t, nil)
	tests := []struct {
		fixture, mime, name, wantName string
	}{
		{"png", "image/png", "a.png", "a.png"},
		{"jpeg", "image/jpeg", "photo.jpeg", "photo.jpeg"},
		{"jpeg", "image/jpeg", "photo.png", "photo.jpg"},
		{"gif-animated", "image/gif", "anim.gif", "anim.gif"},
		{"apng", "image/apng", "anim.png", "anim.png"},
		{"bmp", "image/bmp", "b.bmp", "b.bmp"},
		{"ico", "image/x-icon", "favicon.ico", "favicon.ico"},
		{"polyglot", "image/gif", "page.html", "page.gif"},
		{"wav", "audio/wav", "sound.wav", "sound.wav"},
		{"mp4", "video/mp4", "clip.mp4", "clip.mp4"},
		{"webm", "video/webm", "clip.webm", "clip.webm"},
		{"ogg", "audio/ogg", "voice.ogg", "voice.ogg"},
		{"mp3", "audio/mpeg", "song", "song.mp3"},
		{"flac", "audio/flac", "song.flac", "song.flac"},
		{"m4a", "audio/x-m4a", "song.m4a", "song.m4a"},
		{"truncated-jpeg", "image/jpeg", "cut.jpg", "cut.jpg"},
	}
	for _, tt := range tests {
		t.Run(tt.fixture+"/"+tt.name, func(t *testing.T) {
			body := testmedia.Get(tt.fixture)
			r := get(t, p, o.add("/pass/"+tt.fixture+"/"+tt.name, body), "")
			checkSuccess(t, r, tt.mime)
			if !bytes.Equal(r.body, body) {
				t.Errorf("body differs from the origin's (%d vs %d bytes)", len(r.body), len(body))
			}
			if name := dispositionName(t, r); name != tt.wantName {
				t.Errorf("filename %q, want %q", name, tt.wantName)
			}
		})
	}
}

func TestRefusedTypes(t *testing.T) {
	o := newOrigin(t)
	p := newProxy(t, nil)
	for _, tt := range []struct {
		fixture, flags string
		status         int
	}{
		{"html", "", http.StatusForbidden},
		{"pdf", "", http.StatusForbidden},
		{"empty", "", http.StatusForbidden},
		{"html", "emoji=1", http.StatusNotFound},
		{"wav", "emoji=1", http.StatusNotFound},
		{"mp4", "static=1", http.StatusNotFound},
		{"empty", "avatar=1", http.StatusNotFound},
		{"truncated-png", "emoji=1", http.StatusUnprocessableEntity},
		{"truncated-jpeg", "preview=1", http.StatusUnprocessableEntity},
		{"corrupt-png", "emoji=1", http.StatusUnprocessableEntity},
		{"corrupt-jpeg", "static=1", http.StatusUnprocessableEntity},
		{"png-bomb", "emoji=1", http.StatusUnprocessableEntity},
		{"png-bomb-truncated", "avatar=1", http.StatusUnprocessableEntity},
		{"jpeg-bomb", "static=1", http.StatusUnprocessableEntity},
		{"gif-many-frames", "emoji=1", http.StatusUnprocessableEntity},
	} {
		t.Run(tt.fixture+"?"+tt.flags, func(t *testing.T) {
			r := get(t, p, o.add("/refuse/"+tt.fixture, testmedia.Get(tt.fixture)), tt.flags)
			checkError(t, r, tt.status)
		})
	}
	// TIFF passes through but has no variants.
	var buf bytes.Buffer
	if err := tiff.Encode(&buf, decodePNG(t, testmedia.PNG(64, 48)), nil); err != nil {
		t.Fatal(err)
	}
	tiff := buf.Bytes()
	checkSuccess(t, get(t, p, o.add("/scan.tiff", tiff), ""), "image/tiff")
	checkError(t, get(t, p, o.add("/scan2.tiff", tiff), "emoji=1"), http.StatusNotFound)
}

func TestRequestErrors(t *testing.T) {
	o := newOrigin(t)
	p := newProxy(t, nil)
	src := o.add("/ok.png", testmedia.PNG(32, 32))
	for _, tt := range []struct {
		path   string
		status int
	}{
		{"/image.webp", http.StatusBadRequest},
		{"/image.webp?emoji=1", http.StatusBadRequest},
		{"/image.webp?url=" + url.QueryEscape(src) + "&url=" + url.QueryEscape(src), http.StatusBadRequest},
		{"/image.webp?url=ftp%3A%2F%2Fexample.com%2Fa.png", http.StatusBadRequest},
		{"/image.webp?url=%2Frelative.png", http.StatusBadRequest},
		{"/image.webp?url=" + url.QueryEscape(o.URL+"/missing.png"), http.StatusNotFound},
		{"/a/b?url=" + url.QueryEscape(src), http.StatusNotFound},
	} {
		checkError(t, request(t, http.MethodGet, p.URL+tt.path), tt.status)
	}
	o.addFile("/boom.png", originFile{status: http.StatusInternalServerError, body: []byte("oops")})
	checkError(t, get(t, p, o.URL+"/boom.png", ""), http.StatusBadGateway)
	o.addFile("/gone.png", originFile{status: http.StatusGone, body: []byte("gone")})
	checkError(t, get(t, p, o.URL+"/gone.png", "emoji=1"), http.StatusGone)

	// The /proxy/ mount works like the root.
	r := request(t, http.MethodGet, p.URL+"/proxy/x.webp?emoji=1&url="+url.QueryEscape(src))
	checkSuccess(t, r, "image/webp")
}

func TestFallback(t *testing.T) {
	o := newOrigin(t)
	p := newProxy(t, nil)
	for _, src := range []string{o.URL + "/missing.png", o.add("/page.html", testmedia.HTML())} {
		r := get(t, p, src, "emoji=1&fallback=1")
		checkCommon(t, r)
		if r.status != http.StatusOK || r.header.Get("Content-Type") != "image/png" {
			t.Fatalf("fallback answered %d %s", r.status, r.header.Get("Content-Type"))
		}
		if r.header.Get("Cache-Control") != "max-age=300" {
			t.Errorf("fallback Cache-Control = %q", r.header.Get("Cache-Control"))
		}
		if d := decode(t, r.body); d.width == 0 {
			t.Error("fallback image does not decode")
		}
	}
}

func TestSSRFRefusedByDefault(t *testing.T) {
	o := newOrigin(t)
	// No allow-list: loopback is private, so the origin must never be hit.
	p := newProxy(t, map[string]string{"MEDIA_PROXY_ALLOWED_PRIVATE_NETWORKS": ""})
	for _, src := range []string{
		o.add("/secret.png", testmedia.PNG(8, 8)),
		"http://169.254.169.254/latest/meta-data/",
		"http://[::1]:1/x.png",
	} {
		checkError(t, get(t, p, src, ""), http.StatusForbidden)
	}
	if n := o.hitCount("/secret.png"); n != 0 {
		t.Errorf("origin on loopback was reached %d times", n)
	}
}

func TestSizeCap(t *testing.T) {
	o := newOrigin(t)
	p := newProxy(t, map[string]string{"MEDIA_PROXY_MAX_SIZE": "10000"})
	checkError(t, get(t, p, o.add("/big.mp4", testmedia.MP4(20000)), ""), http.StatusRequestEntityTooLarge)
	checkSuccess(t, get(t, p, o.add("/small.mp4", testmedia.MP4(5000)), ""), "video/mp4")
}

func TestHeadOptionsAndConditional(t *testing.T) {
	o := newOrigin(t)
	p := newProxy(t, nil)
	src := o.add("/h.png", testmedia.PNG(300, 300))
	u := p.URL + "/x.webp?emoji=1&url=" + url.QueryEscape(src)

	g := request(t, http.MethodGet, u)
	checkSuccess(t, g, "image/webp")
	h := request(t, http.MethodHead, u)
	if h.status != http.StatusOK || len(h.body) != 0 {
		t.Fatalf("HEAD: %d with %d body bytes", h.status, len(h.body))
	}
	for _, k := range []string{"Content-Type", "Content-Length", "ETag", "Cache-Control", "Content-Disposition", "Content-Security-Policy"} {
		if h.header.Get(k) != g.header.Get(k) {
			t.Errorf("HEAD %s = %q, GET had %q", k, h.header.Get(k), g.header.Get(k))
		}
	}
	nm := request(t, http.MethodGet, u, "If-None-Match", g.header.Get("ETag"))
	if nm.status != http.StatusNotModified || len(nm.body) != 0 {
		t.Errorf("If-None-Match: %d with %d bytes", nm.status, len(nm.body))
	}
	if other := request(t, http.MethodGet, u, "If-None-Match", `"other"`); other.status != http.StatusOK {
		t.Errorf("non-matching If-None-Match: %d", other.status)
	}
	opt := request(t, http.MethodOptions, u, "Origin", "https://misskey.example", "Access-Control-Request-Method", "GET")
	checkCommon(t, opt)
	if opt.status != http.StatusNoContent {
		t.Errorf("OPTIONS: %d", opt.status)
	}
	if post := request(t, http.MethodPost, u); post.status != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", post.status)
	}
	health := request(t, http.MethodGet, p.URL+"/")
	if health.status != http.StatusOK || !strings.HasPrefix(health.header.Get("Content-Type"), "text/plain") || len(health.body) == 0 {
		t.Errorf("health: %d %q %q", health.status, health.header.Get("Content-Type"), health.body)
	}
}

func TestFilenames(t *testing.T) {
	o := newOrigin(t)
	p := newProxy(t, nil)
	png := testmedia.PNG(40, 40)
	o.add("/絵文字.png", png)
	r := get(t, p, o.URL+"/%E7%B5%B5%E6%96%87%E5%AD%97.png", "emoji=1")
	checkSuccess(t, r, "image/webp")
	if name := dispositionName(t, r); name != "絵文字.webp" {
		t.Errorf("filename %q, want 絵文字.webp", name)
	}
	if d := r.header.Get("Content-Disposition"); !strings.Contains(d, "filename*=UTF-8''%E7%B5%B5%E6%96%87%E5%AD%97.webp") {
		t.Errorf("Content-Disposition %q lacks the RFC 5987 name", d)
	}
	src := o.addFile("/download", originFile{body: png, disposition: `attachment; filename="remote name.gif"`})
	if name := dispositionName(t, get(t, p, src, "")); name != "remote name.png" {
		t.Errorf("filename %q, want the remote name with the real extension", name)
	}
	if d := get(t, p, o.add("/empty", nil), "").header.Get("Content-Disposition"); d != "" {
		t.Errorf("an error response named a file: %q", d)
	}
}

func TestCacheAndCoalescing(t *testing.T) {
	o := newOrigin(t)
	p := newProxy(t, nil)
	src := o.addFile("/slow.png", originFile{body: testmedia.PNG(512, 512), delay: 300 * time.Millisecond})
	var wg sync.WaitGroup
	bodies := make([][]byte, 8)
	for i := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := get(t, p, src, "emoji=1")
			if r.status == http.StatusOK {
				bodies[i] = r.body
			}
		}()
	}
	wg.Wait()
	if n := o.hitCount("/slow.png"); n != 1 {
		t.Errorf("8 identical concurrent requests fetched %d times, want 1", n)
	}
	for i, b := range bodies {
		if !bytes.Equal(b, bodies[0]) || len(b) == 0 {
			t.Fatalf("response %d differs", i)
		}
	}
	again := get(t, p, src, "emoji=1")
	checkSuccess(t, again, "image/webp")
	if !bytes.Equal(again.body, bodies[0]) || o.hitCount("/slow.png") != 1 {
		t.Errorf("a stored variant went back to the origin (%d fetches)", o.hitCount("/slow.png"))
	}
	// Another variant is another key.
	checkSuccess(t, get(t, p, src, "preview=1"), "image/webp")
	if n := o.hitCount("/slow.png"); n != 2 {
		t.Errorf("preview fetched the origin %d times in all, want 2", n)
	}
}

func TestFailureMemory(t *testing.T) {
	o := newOrigin(t)
	p, _, svc := newService(t, nil)
	for range 3 {
		checkError(t, get(t, p, o.URL+"/dead.png", "emoji=1"), http.StatusNotFound)
	}
	if n := o.hitCount("/dead.png"); n != 1 {
		t.Errorf("a dead link was fetched %d times, want 1", n)
	}
	// A remembered failure may be cached for what is left of it, not for
	// its whole life again: 100 s on, 200 s.
	later := time.Now().Add(100 * time.Second)
	svc.Runner.Failures.SetClock(func() time.Time { return later })
	r := get(t, p, o.URL+"/dead.png", "emoji=1")
	if r.status != http.StatusNotFound || r.header.Get("Cache-Control") != "max-age=199" && r.header.Get("Cache-Control") != "max-age=200" {
		t.Errorf("100 s on: %d, Cache-Control %q; want 404 with max-age=200 (or a second less)", r.status, r.header.Get("Cache-Control"))
	}
	// And the fallback placeholder that stands for it, too.
	r = get(t, p, o.URL+"/dead.png", "emoji=1&fallback=1")
	if r.status != http.StatusOK || r.header.Get("Cache-Control") != "max-age=199" && r.header.Get("Cache-Control") != "max-age=200" {
		t.Errorf("fallback 100 s on: %d, Cache-Control %q; want max-age=200 (or a second less)", r.status, r.header.Get("Cache-Control"))
	}
	if n := o.hitCount("/dead.png"); n != 1 {
		t.Errorf("a dead link was fetched %d times, want 1", n)
	}
}

func TestLargePassthroughThroughStore(t *testing.T) {
	o := newOrigin(t)
	video := testmedia.MP4(20 << 20)
	src := o.add("/big.mp4", video)
	for _, store := range []string{"", "none"} {
		env := map[string]string{}
		if store != "" {
			env["MEDIA_PROXY_STORE"] = store
		}
		p := newProxy(t, env)
		r := get(t, p, src, "")
		checkCommon(t, r)
		if r.status != http.StatusOK || r.header.Get("Content-Type") != "video/mp4" || !bytes.Equal(r.body, video) {
			t.Fatalf("store %q: %d %s, %d bytes, equal=%v", store, r.status, r.header.Get("Content-Type"), len(r.body), bytes.Equal(r.body, video))
		}
		if r.header.Get("Content-Length") != fmt.Sprint(len(video)) {
			t.Errorf("store %q: Content-Length %q", store, r.header.Get("Content-Length"))
		}
	}
}
