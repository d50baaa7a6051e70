package browsertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"html/template"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/misskey-lambda/media-proxy/shared/jobs/jobstest"
	"github.com/misskey-lambda/media-proxy/shared/testmedia"
	"github.com/misskey-lambda/media-proxy/shared/vips"
)

const (
	// holdLimit bounds how long the page's load event waits for its script
	// (see pageServer); past it Chromium dumps whatever the script wrote.
	holdLimit = 20 * time.Second
	// browserLimit is when a Chromium that never exits is killed.
	browserLimit = 45 * time.Second
)

// item is one element of the page: a file on the origin and the proxy
// request a Misskey client would make for it.
type item struct {
	name    string // the proxy path's file name, and the element's id
	path    string // on the origin
	origin  string // "" for the test's origin
	body    []byte
	flags   string // the query flags, "" for a passthrough
	video   bool
	width   int // what the browser must show: natural or video size
	height  int
	frames  int     // frames in the proxy's answer (images)
	seconds float64 // a video's duration
	// miss: the browser's requests are the first for it in every mode,
	// answered from the download's spool as it arrives.
	miss bool
}

// mode is one wiring of the service behind the page.
type mode struct {
	name, title string
	proxy       *httptest.Server
	seen        *recorder
}

// TestBrowser loads one page in headless Chromium with every kind of
// element Misskey shows, from the local server with its on-disk store and
// from the S3 wiring, where a stored answer is a 302 to a presigned URL,
// and checks what a person would see: every image decoded at the size its
// variant has, the animated ones with all their frames (counted by the
// browser's own decoder and, in the proxy's answer, by libvips), and the
// videos playing and seeking to the middle.
func TestBrowser(t *testing.T) {
	chromium := tool(t, "chromium", "chromium")
	ffmpeg := tool(t, "ffmpeg", "ffmpeg")
	bucket := useS3(t)
	start := time.Now()

	mp4, webm, big := makeVideos(t, ffmpeg)
	// Trickled over seconds: the browser plays and seeks it while it
	// downloads.
	trickle := newTrickleOrigin(t, big, 3*time.Second)
	items := []item{
		{name: "emoji.webp", path: "/emoji.png", body: testmedia.PNG(300, 200), flags: "emoji=1", width: 192, height: 128, frames: 1},
		{name: "avatar.webp", path: "/avatar.jpg", body: testmedia.JPEG(600, 480, 85), flags: "avatar=1", width: 400, height: 320, frames: 1},
		{name: "gif-avatar.webp", path: "/anim.gif", body: testmedia.GIF(480, 400, 6), flags: "avatar=1", width: 384, height: 320, frames: 6},
		{name: "apng-emoji.webp", path: "/anim.png", body: testmedia.APNG(240, 160, 5), flags: "emoji=1", width: 192, height: 128, frames: 5},
		// SVG is rendered at the size the variant needs, so it grows.
		{name: "svg-emoji.webp", path: "/emoji.svg", body: testmedia.SVG(96, 64), flags: "emoji=1", width: 192, height: 128, frames: 1},
		{name: "clip.mp4", path: "/clip.mp4", body: mp4, video: true, width: videoWidth, height: videoHeight, seconds: videoSeconds},
		{name: "clip.webm", path: "/clip.webm", body: webm, video: true, width: videoWidth, height: videoHeight, seconds: videoSeconds},
		// Over the 8 MB held in memory: a miss streamed from its spool.
		{name: "big.mp4", path: "/big.mp4", origin: trickle.URL, body: big, video: true, width: bigWidth, height: bigHeight, seconds: bigSeconds, miss: true},
	}
	origin := jobstest.NewOrigin(t)
	for _, it := range items {
		origin.Add(it.path, it.body)
	}
	src := func(m mode, it item) string {
		from := origin.URL
		if it.origin != "" {
			from = it.origin
		}
		u := m.proxy.URL + "/" + it.name + "?url=" + url.QueryEscape(from+it.path)
		if it.flags != "" {
			u += "&" + it.flags
		}
		return u
	}

	logger, _ := jobstest.NewLogs(t)
	dir := newMode(t, "dir", "local server, on-disk store", jobstest.Service(t, nil, logger).Handler)
	s3mode := newMode(t, "s3", "S3 store (versitygw): stored answers are 302s to presigned URLs",
		jobstest.Service(t, map[string]string{
			"MEDIA_PROXY_STORE":         "s3://" + bucket + "/browser",
			"MEDIA_PROXY_S3_PATH_STYLE": "true",
		}, logger).Handler)
	modes := []mode{dir, s3mode}

	// The S3 answers are stored before the browser asks, so that every
	// element there is reached through the 302 (a Lambda's hit), but for
	// the big video, a miss in both modes; the browser's requests to the
	// local server are misses, converted while it waits, and those answers
	// are read back from the store after it. Both times the test checks
	// the bytes for size and frame count. Then a Safari-like client plays
	// a new URL of the big video in both modes, while it downloads.
	check := func(m mode, misses bool) {
		for _, it := range items {
			if misses || !it.miss {
				checkAnswer(t, m.name, it, fetch(t, src(m, it)))
			}
		}
	}
	check(s3mode, false)

	page := newPageServer(t, modes, items, src)
	shot := filepath.Join(t.ArtifactDir(), "page.png")
	dom, chromiumLog := runChromium(t, chromium, page.URL+"/", shot)
	t.Logf("screenshot of the page: %s", shot)

	check(dir, true)
	for _, m := range modes {
		safariLike(t, m, trickle.URL+"/safari.mp4", big)
	}
	results := parseResults(t, dom)
	for _, m := range modes {
		for _, it := range items {
			id := m.name + "-" + it.name
			r, ok := results[id]
			if !ok || r.Pending {
				t.Errorf("%s: the page's script had not finished with it when the page was captured", id)
				continue
			}
			if it.video {
				checkVideo(t, id, it, r)
			} else {
				checkImage(t, id, it, r)
			}
			checkStatuses(t, m, it, id)
		}
	}
	if _, err := os.Stat(shot); err != nil {
		t.Errorf("no screenshot: %v", err)
	}
	if t.Failed() {
		// The page's console messages (CORS refusals, media errors) are there.
		t.Logf("Chromium's log:\n%s", tail(chromiumLog, 8000))
	}
	t.Logf("whole test: %v", time.Since(start).Round(time.Millisecond))
}

// need fails t under scripts/test (MEDIA_PROXY_TEST_REQUIRE_STANDINS=1),
// where a missing tool is a broken setup, and skips it elsewhere.
func need(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("MEDIA_PROXY_TEST_REQUIRE_STANDINS") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// tool is the path of a command from a Debian package scripts/test
// installs.
func tool(t *testing.T, command, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(command)
	if err != nil {
		need(t, "%s not found: apt-get install %s (scripts/test installs it)", command, pkg)
	}
	return p
}

// useS3 points the AWS SDK, as the service loads it, at the S3 stand-in
// and returns a new bucket with the deployed bucket's CORS rule
// (infra/template.yaml): the page's script fetches redirected answers.
func useS3(t *testing.T) string {
	t.Helper()
	jobstest.UseS3(t)
	c := jobstest.S3Client(t)
	bucket := jobstest.NewBucket(t, c)
	_, err := c.PutBucketCors(t.Context(), &s3.PutBucketCorsInput{
		Bucket: aws.String(bucket),
		CORSConfiguration: &s3types.CORSConfiguration{CORSRules: []s3types.CORSRule{{
			AllowedMethods: []string{"GET", "HEAD"},
			AllowedOrigins: []string{"*"},
			AllowedHeaders: []string{"*"},
			MaxAgeSeconds:  aws.Int32(86400),
		}}},
	})
	if err != nil {
		t.Fatalf("bucket CORS: %v", err)
	}
	return bucket
}

const (
	videoWidth, videoHeight = 128, 72
	videoSeconds            = 2.0
	bigWidth, bigHeight     = 640, 360
	bigSeconds              = 4.0
	// inMemory is the largest passthrough the local server holds in
	// memory (shared/service); the big video must be over it.
	inMemory = 8 << 20
)

// makeVideos encodes two seconds of ffmpeg's test pattern as an H.264 MP4,
// its index first as uploads from phones have it, and a VP9 WebM, and
// four seconds of it under noise at a high bitrate, an MP4 over the size
// the proxy holds in memory. A key frame every half second keeps seeking
// cheap.
func makeVideos(t *testing.T, ffmpeg string) (mp4, webm, big []byte) {
	t.Helper()
	dir := t.TempDir()
	encode := func(name, source string, codec ...string) []byte {
		out := filepath.Join(dir, name)
		args := []string{"-hide_banner", "-loglevel", "error", "-nostdin",
			"-f", "lavfi", "-i", source, "-an", "-g", "5"}
		args = append(append(args, codec...), out)
		if b, err := exec.Command(ffmpeg, args...).CombinedOutput(); err != nil {
			t.Fatalf("ffmpeg %s: %v\n%s", name, err, b)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	small := fmt.Sprintf("testsrc=size=%dx%d:rate=10:duration=%g", videoWidth, videoHeight, videoSeconds)
	h264 := []string{"-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-movflags", "+faststart"}
	mp4 = encode("clip.mp4", small, h264...)
	webm = encode("clip.webm", small, "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k")
	// Noise does not compress: the bitrate makes the size.
	big = encode("big.mp4", fmt.Sprintf("testsrc=size=%dx%d:rate=10:duration=%g,noise=alls=60:allf=t", bigWidth, bigHeight, bigSeconds),
		append(h264, "-b:v", "24M", "-maxrate", "24M", "-bufsize", "48M")...)
	if len(big) <= inMemory {
		t.Fatalf("the big video is %d bytes, not over the %d held in memory", len(big), inMemory)
	}
	return mp4, webm, big
}

// trickleOrigin serves one body at every path, its length declared, in
// 256 KiB pieces spread over a few seconds.
type trickleOrigin struct {
	*httptest.Server
}

func newTrickleOrigin(t *testing.T, body []byte, over time.Duration) *trickleOrigin {
	const piece = 256 << 10
	pause := over / time.Duration((len(body)+piece-1)/piece)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		rc := http.NewResponseController(w)
		for off := 0; off < len(body); off += piece {
			if _, err := w.Write(body[off:min(off+piece, len(body))]); err != nil {
				return
			}
			rc.Flush()
			time.Sleep(pause)
		}
	}))
	t.Cleanup(srv.Close)
	return &trickleOrigin{srv}
}

// safariLike asks for src as Safari plays a video: "bytes=0-1" first (it
// plays only after a 206 that says the length), then the start, which it
// abandons, and ranges further in as it seeks; all while the proxy is
// still downloading it (a new URL: a miss). Where the proxy answers with
// a redirect to the stored copy (S3, once stored), the range goes there.
func safariLike(t *testing.T, m mode, src string, body []byte) {
	t.Helper()
	u := m.proxy.URL + "/safari.mp4?url=" + url.QueryEscape(src)
	n := len(body)
	for _, rg := range []struct {
		header     string
		start, end int // the bytes expected
		stopAfter  int // hang up after this many (0: read all)
	}{
		{"bytes=0-1", 0, 1, 0},
		{"bytes=0-", 0, n - 1, 256 << 10},
		{fmt.Sprintf("bytes=%d-%d", n/2, n/2+65535), n / 2, n/2 + 65535, 0},
		{fmt.Sprintf("bytes=%d-", n-65536), n - 65536, n - 1, 0},
	} {
		status, contentRange, got, via := rangeGet(t, u, rg.header, rg.stopAfter)
		want := body[rg.start : rg.end+1]
		if rg.stopAfter > 0 {
			want = want[:min(len(want), len(got))]
		}
		wantRange := fmt.Sprintf("bytes %d-%d/%d", rg.start, rg.end, n)
		if status != http.StatusPartialContent || contentRange != wantRange || !bytes.Equal(got, want) || len(got) == 0 {
			t.Errorf("%s: Safari-like %s%s: %d, Content-Range %q, %d bytes (equal %v); want 206, %q", m.name, rg.header, via, status, contentRange, len(got), bytes.Equal(got, want), wantRange)
		}
	}
}

// rangeGet GETs u with a Range header, following one redirect with the
// same header as a browser does; stopAfter > 0 reads only that much.
func rangeGet(t *testing.T, u, rangeHeader string, stopAfter int) (status int, contentRange string, body []byte, via string) {
	t.Helper()
	client := &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	for hop := 0; ; hop++ {
		req, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Range", rangeHeader)
		req.Header.Set("User-Agent", "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusFound && hop == 0 {
			resp.Body.Close()
			u, via = resp.Header.Get("Location"), " (redirected to the stored copy)"
			continue
		}
		var r io.Reader = resp.Body
		if stopAfter > 0 {
			r = io.LimitReader(resp.Body, int64(stopAfter))
		}
		body, err = io.ReadAll(r)
		resp.Body.Close()
		if err != nil {
			t.Errorf("%s: reading: %v", rangeHeader, err)
		}
		return resp.StatusCode, resp.Header.Get("Content-Range"), body, via
	}
}

// recorder keeps the status of each request the browser made, by path.
type recorder struct {
	mu     sync.Mutex
	status map[string][]int
}

func (rec *recorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		// The test's own requests are Go's; only the browser's are kept,
		// as their status goes out (a streamed answer may go on after the
		// browser is done).
		if strings.Contains(r.UserAgent(), "Chrome/") {
			sw.sent = func(status int) {
				rec.mu.Lock()
				rec.status[r.URL.Path] = append(rec.status[r.URL.Path], status)
				rec.mu.Unlock()
			}
		}
		h.ServeHTTP(sw, r)
		if !sw.wroteHeader {
			sw.WriteHeader(http.StatusOK) // a handler that wrote nothing
		}
	})
}

func (rec *recorder) statuses(path string) []int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return slices.Clone(rec.status[path])
}

type statusWriter struct {
	http.ResponseWriter
	sent        func(status int) // nil: not recorded
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader && code >= 200 {
		w.wroteHeader = true
		if w.sent != nil {
			w.sent(code)
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the real writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func newMode(t *testing.T, name, title string, h http.Handler) mode {
	rec := &recorder{status: map[string][]int{}}
	srv := httptest.NewServer(rec.wrap(h))
	t.Cleanup(srv.Close)
	return mode{name: name, title: title, proxy: srv, seen: rec}
}

// fetch GETs u as the test, without following redirects: it must be the
// proxy's own 200.
func fetch(t *testing.T, u string) []byte {
	t.Helper()
	client := &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, b)
	}
	return b
}

// checkAnswer checks the bytes the proxy answers for it: a passthrough is
// the original, a variant is a WebP of the variant's size with every
// frame of the animation.
func checkAnswer(t *testing.T, mode string, it item, b []byte) {
	t.Helper()
	if it.video {
		if !bytes.Equal(b, it.body) {
			t.Errorf("%s %s: the proxy changed the video (%d bytes, sent %d)", mode, it.name, len(b), len(it.body))
		}
		return
	}
	im, err := vips.Header(b, true)
	if err != nil {
		t.Errorf("%s %s: the answer does not decode: %v", mode, it.name, err)
		return
	}
	defer im.Close()
	if l := im.Loader(); l != "webpload_buffer" {
		t.Errorf("%s %s: answered %s, want a WebP", mode, it.name, l)
	}
	if im.Width() != it.width || im.PageHeight() != it.height || im.Pages() != it.frames {
		t.Errorf("%s %s: %dx%d with %d frames, want %dx%d with %d", mode, it.name,
			im.Width(), im.PageHeight(), im.Pages(), it.width, it.height, it.frames)
	}
}

// pageServer serves the page, and holds its load event (with a hidden
// <img src=/hold>) until the page's script has written its results:
// headless Chromium captures the DOM and the screenshot once the page has
// loaded. So the page says when it is done, in real time, rather than
// --virtual-time-budget, whose deadline need not wait for media, which
// Chromium loads and decodes on threads of its own.
type pageServer struct {
	*httptest.Server
	done     chan struct{}
	doneOnce sync.Once
}

func newPageServer(t *testing.T, modes []mode, items []item, src func(mode, item) string) *pageServer {
	t.Helper()
	type element struct {
		ID, URL, Caption string
		Video            bool
	}
	type section struct {
		Title    string
		Elements []element
	}
	var sections []section
	for _, m := range modes {
		s := section{Title: m.title}
		for _, it := range items {
			caption := it.path[1:]
			if it.flags != "" {
				caption += " ?" + it.flags
			}
			s.Elements = append(s.Elements, element{
				ID: m.name + "-" + it.name, URL: src(m, it), Caption: caption,
				Video: it.video,
			})
		}
		sections = append(sections, s)
	}
	var page bytes.Buffer
	if err := pageTemplate.Execute(&page, sections); err != nil {
		t.Fatal(err)
	}
	p := &pageServer{done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(page.Bytes())
	})
	mux.HandleFunc("GET /hold", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-p.done:
		case <-time.After(holdLimit):
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /done", func(w http.ResponseWriter, r *http.Request) {
		p.doneOnce.Do(func() { close(p.done) })
		w.WriteHeader(http.StatusNoContent)
	})
	p.Server = httptest.NewServer(mux)
	t.Cleanup(p.Close)
	return p
}

// pageTemplate is the page: for each mode, the elements as Misskey renders
// them, then a script that checks each one and writes a JSON object
// (element id to findings) into #result. The script's fetches need CORS,
// which the proxy and the bucket both answer.
var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>media proxy in a browser</title>
<style>
body { font: 12px sans-serif; margin: 10px; background: #f4f4f5; }
h2 { font-size: 13px; margin: 8px 0 4px; }
section { display: flex; gap: 10px; align-items: flex-end; }
figure { margin: 0; }
figure img, figure video { display: block; height: 100px;
  background: repeating-conic-gradient(#ddd 0 25%, #fff 0 50%) 0 0 / 16px 16px; }
figcaption { color: #555; font-size: 11px; }
pre { font-size: 10px; white-space: pre-wrap; word-break: break-all; }
</style></head><body>
{{range .}}<h2>{{.Title}}</h2>
<section>
{{range .Elements}}<figure>
{{if .Video}}<video id="{{.ID}}" src="{{.URL}}" muted preload="auto" data-check="video"></video>
{{else}}<img id="{{.ID}}" src="{{.URL}}" data-check="image">
{{end}}<figcaption>{{.Caption}}</figcaption></figure>
{{end}}</section>
{{end}}
<pre id="result">running</pre>
<img src="/hold" hidden alt="">
<script>
const results = {};
const show = () => { document.getElementById('result').textContent = JSON.stringify(results); };
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const once = (el, name) => new Promise((resolve) => el.addEventListener(name, () => resolve(name), { once: true }));

// The browser's own decoder (WebCodecs) on the same answer: how many
// frames it finds, each decoded. The <img> itself cannot tell: Chromium
// animates images on the compositor, and a canvas only ever gets frame 0.
// (ImageDecoder needs a secure context: a loopback page is one.)
// no-store: the <img>'s response from the bucket, cached, has no CORS
// headers and no Vary: Origin (versitygw sends both only to requests with
// an Origin), so a cached copy would fail this CORS fetch.
async function frames(url) {
  const resp = await fetch(url, { cache: 'no-store' });
  if (!resp.ok) throw new Error('fetch: ' + resp.status);
  const dec = new ImageDecoder({ data: resp.body, type: resp.headers.get('Content-Type') });
  await dec.completed;
  const track = dec.tracks.selectedTrack;
  let decoded = 0;
  for (let i = 0; i < track.frameCount; i++) {
    const { image } = await dec.decode({ frameIndex: i });
    if (image.displayWidth > 0) decoded++;
    image.close();
  }
  dec.close();
  return { frameCount: track.frameCount, framesDecoded: decoded, animated: track.animated };
}

async function image(img) {
  const r = {};
  try {
    await img.decode();
    r.decoded = true;
  } catch (e) {
    r.error = String(e);
  }
  r.naturalWidth = img.naturalWidth;
  r.naturalHeight = img.naturalHeight;
  try {
    Object.assign(r, await frames(img.src));
  } catch (e) {
    r.error = (r.error ? r.error + '; ' : '') + 'ImageDecoder: ' + e;
  }
  return r;
}

async function video(v) {
  const r = {};
  if (v.readyState < 2 && !v.error) await Promise.race([once(v, 'loadeddata'), once(v, 'error')]);
  r.readyState = v.readyState;
  if (v.error) r.error = 'media error ' + v.error.code + ': ' + v.error.message;
  if (v.readyState < 2) return r;
  r.videoWidth = v.videoWidth;
  r.videoHeight = v.videoHeight;
  r.duration = v.duration;
  const seeked = once(v, 'seeked');
  v.currentTime = v.duration / 2;
  r.seek = await Promise.race([seeked, once(v, 'error')]);
  r.currentTime = v.currentTime;
  r.readyStateAfterSeek = v.readyState;
  return r;
}

(async () => {
  const elements = [...document.querySelectorAll('[data-check]')];
  // In page order, and "pending" until checked, for whoever reads #result.
  for (const el of elements) results[el.id] = { pending: true };
  show();
  await Promise.all(elements.map(async (el) => {
    try {
      results[el.id] = await (el.dataset.check === 'video' ? video(el) : image(el));
    } catch (e) {
      results[el.id] = { error: 'script: ' + e };
    }
    show();
  }));
  show();
  await fetch('/done', { method: 'POST' });
})();
</script>
</body></html>
`))

// runChromium loads pageURL in one headless Chromium, saves a screenshot
// to shot and returns the DOM once the page has loaded, and Chromium's log.
func runChromium(t *testing.T, chromium, pageURL, shot string) (dom, log string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), browserLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium,
		"--headless=new", "--no-sandbox", "--disable-gpu",
		// Nothing outside this machine is reachable; without these,
		// Chromium keeps trying Google's services.
		"--disable-quic", "--no-first-run", "--disable-background-networking",
		"--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(),
		"--mute-audio", "--hide-scrollbars", "--window-size=1200,520",
		// The page's console messages go to stderr, logged on failure.
		"--enable-logging=stderr",
		"--screenshot="+shot, "--dump-dom", pageURL)
	// Chromium starts helper processes; on timeout the whole group goes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	began := time.Now()
	err := cmd.Run()
	t.Logf("Chromium ran %v", time.Since(began).Round(time.Millisecond))
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("killed after %v: %w", browserLimit, err)
		}
		t.Fatalf("chromium: %v\n%s", err, tail(stderr.String(), 8000))
	}
	return stdout.String(), stderr.String()
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// finding is what the page's script reports for one element.
type finding struct {
	Pending bool   `json:"pending"`
	Error   string `json:"error"`
	// Images.
	Decoded       bool `json:"decoded"`
	NaturalWidth  int  `json:"naturalWidth"`
	NaturalHeight int  `json:"naturalHeight"`
	FrameCount    int  `json:"frameCount"`
	FramesDecoded int  `json:"framesDecoded"`
	Animated      bool `json:"animated"`
	// Videos.
	ReadyState          int     `json:"readyState"`
	VideoWidth          int     `json:"videoWidth"`
	VideoHeight         int     `json:"videoHeight"`
	Duration            float64 `json:"duration"`
	Seek                string  `json:"seek"`
	CurrentTime         float64 `json:"currentTime"`
	ReadyStateAfterSeek int     `json:"readyStateAfterSeek"`
}

var resultElement = regexp.MustCompile(`(?s)<pre id="result">(.*?)</pre>`)

func parseResults(t *testing.T, dom string) map[string]finding {
	t.Helper()
	m := resultElement.FindStringSubmatch(dom)
	if m == nil {
		t.Fatalf("no #result in the page Chromium dumped:\n%s", tail(dom, 4000))
	}
	text := html.UnescapeString(m[1])
	var out map[string]finding
	if err := json.Unmarshal([]byte(text), &out); err != nil {
		t.Fatalf("#result is not the script's JSON (%v): %q", err, tail(text, 2000))
	}
	return out
}

func checkImage(t *testing.T, id string, it item, r finding) {
	t.Helper()
	if !r.Decoded || r.Error != "" {
		t.Errorf("%s: not decoded: %s", id, r.Error)
	}
	if r.NaturalWidth != it.width || r.NaturalHeight != it.height {
		t.Errorf("%s: the browser shows %dx%d, want %dx%d", id, r.NaturalWidth, r.NaturalHeight, it.width, it.height)
	}
	if r.FrameCount != it.frames || r.FramesDecoded != it.frames || r.Animated != (it.frames > 1) {
		t.Errorf("%s: the browser's decoder found %d frames (animated %v) and decoded %d, want %d",
			id, r.FrameCount, r.Animated, r.FramesDecoded, it.frames)
	}
}

func checkVideo(t *testing.T, id string, it item, r finding) {
	t.Helper()
	// HAVE_CURRENT_DATA: a frame is on screen.
	if r.ReadyState < 2 || r.Error != "" {
		t.Errorf("%s: readyState %d, %s", id, r.ReadyState, r.Error)
		return
	}
	if r.VideoWidth != it.width || r.VideoHeight != it.height || math.Abs(r.Duration-it.seconds) > 0.1 {
		t.Errorf("%s: %dx%d, %gs; want %dx%d, %gs", id, r.VideoWidth, r.VideoHeight, r.Duration, it.width, it.height, it.seconds)
	}
	if r.Seek != "seeked" || math.Abs(r.CurrentTime-r.Duration/2) > 0.05 || r.ReadyStateAfterSeek < 2 {
		t.Errorf("%s: seeking to the middle: %q, at %gs with readyState %d", id, r.Seek, r.CurrentTime, r.ReadyStateAfterSeek)
	}
}

// checkStatuses checks how the proxy answered the browser: on the local
// server, the bytes themselves, videos as the ranges Chromium asks for
// (it seeks a small, fully buffered video even without them, as long as
// Accept-Ranges is there); with S3, a redirect to the stored object every
// time, but for a miss, whose first answer is the ranges from its spool
// (and later ones, once it is stored, redirects).
func checkStatuses(t *testing.T, m mode, it item, id string) {
	t.Helper()
	got := m.seen.statuses("/" + it.name)
	if len(got) == 0 {
		t.Errorf("%s: the browser never asked the proxy", id)
	}
	want := http.StatusOK
	switch {
	case m.name == "s3" && it.miss:
		t.Logf("%s: the proxy answered the browser %v", id, got)
		if len(got) > 0 && got[0] != http.StatusPartialContent {
			t.Errorf("%s: the proxy first answered the browser %d, want 206 from the download", id, got[0])
		}
		for _, s := range got {
			if s != http.StatusPartialContent && s != http.StatusFound {
				t.Errorf("%s: the proxy answered the browser %v, want 206 while downloading, then 302", id, got)
				break
			}
		}
		return
	case m.name == "s3":
		want = http.StatusFound
	case it.video:
		want = http.StatusPartialContent
	}
	for _, s := range got {
		if s != want {
			t.Errorf("%s: the proxy answered the browser %v, want only %d", id, got, want)
			break
		}
	}
}
