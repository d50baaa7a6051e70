package proxy_test

// A large miss is downloaded once into a spool that every request for it
// reads while it grows (see proxy's download): GETs stream from the first
// byte, a HEAD is answered once the headers are known, a Range as soon as
// its bytes are there; a slow reader or store holds nobody back; a body
// that breaks off breaks every reader and leaves nothing behind. Against
// loopback origins that trickle 20 MB, on the dir store and the S3
// stand-in. Where the order of events is the point, the origin holds its
// body back until the test has seen what it waits for, rather than the
// test measuring time.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/misskey-lambda/media-proxy/shared/proxy"
	"github.com/misskey-lambda/media-proxy/shared/proxy/proxytest"
	"github.com/misskey-lambda/media-proxy/shared/s3store"
	"github.com/misskey-lambda/media-proxy/shared/service"
	"github.com/misskey-lambda/media-proxy/shared/store"
	"github.com/misskey-lambda/media-proxy/shared/testmedia"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

// piece is how much the trickling origins send at a time.
const piece = proxytest.Piece

// streamed is one client's view of a response.
type streamed struct {
	status           int
	header           http.Header
	body             []byte // kept unless streamOpts.digest
	n                int64
	sum              []byte // SHA-256 of the body
	err              error  // reading the body
	headers          time.Duration
	firstByte, total time.Duration
	start, firstAt   time.Time
}

// streamOpts shape a request: its method and headers, and what the client
// does while it reads.
type streamOpts struct {
	method string
	header []string // name, value, ...
	client *http.Client
	// onHeaders and onFirst are called when the response's headers and
	// its first body bytes arrive.
	onHeaders, onFirst func()
	// stopAfter > 0 hangs up once that much was read; pause, when set,
	// is called once pauseAt bytes have been read.
	stopAfter, pauseAt int
	pause              func()
	// digest keeps only the body's hash, not its bytes.
	digest bool
}

func (s streamed) same(want []byte) bool {
	sum := sha256.Sum256(want)
	return s.n == int64(len(want)) && bytes.Equal(s.sum, sum[:])
}

// getStream requests src from the proxy and reads the body as it comes.
func getStream(t *testing.T, proxyURL, src string, o streamOpts) streamed {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if o.method == "" {
		o.method = http.MethodGet
	}
	req, err := http.NewRequestWithContext(ctx, o.method, proxyURL+"/v.mp4?url="+url.QueryEscape(src), nil)
	if err != nil {
		t.Error(err)
		return streamed{}
	}
	for i := 0; i+1 < len(o.header); i += 2 {
		req.Header.Set(o.header[i], o.header[i+1])
	}
	client := o.client
	if client == nil {
		client = noRedirects
	}
	s := streamed{start: time.Now()}
	resp, err := client.Do(req)
	if err != nil {
		s.err = err
		return s
	}
	defer resp.Body.Close()
	s.headers = time.Since(s.start)
	s.status, s.header = resp.StatusCode, resp.Header
	if o.onHeaders != nil {
		o.onHeaders()
	}
	var body bytes.Buffer
	var h hash.Hash = sha256.New()
	buf := make([]byte, 32<<10)
	paused := false
	for {
		if o.pause != nil && !paused && s.n >= int64(o.pauseAt) {
			paused = true
			o.pause()
		}
		n, err := resp.Body.Read(buf)
		if n > 0 && s.firstAt.IsZero() {
			s.firstAt = time.Now()
			s.firstByte = s.firstAt.Sub(s.start)
			if o.onFirst != nil {
				o.onFirst()
			}
		}
		s.n += int64(n)
		h.Write(buf[:n])
		if !o.digest {
			body.Write(buf[:n])
		}
		if o.stopAfter > 0 && s.n >= int64(o.stopAfter) {
			break
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			s.err = err
			break
		}
	}
	s.total = time.Since(s.start)
	s.body, s.sum = body.Bytes(), h.Sum(nil)
	return s
}

// streamGet GETs src, reading the whole body; stopAfter > 0 reads only
// that much and hangs up; pause, when set, is called once pauseAt bytes
// have been read.
func streamGet(t *testing.T, proxyURL, src string, stopAfter, pauseAt int, pause func()) streamed {
	t.Helper()
	return getStream(t, proxyURL, src, streamOpts{stopAfter: stopAfter, pauseAt: pauseAt, pause: pause})
}

// smallWindowClient reads through a socket whose receive buffer is a few
// KiB, so a client that stops reading stops the bytes within a few KiB
// (plus the server's send buffer), whatever the kernel's defaults.
func smallWindowClient() *http.Client {
	d := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 8<<10)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	return &http.Client{
		Transport:     &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// inEachStore runs f on the dir store and on the S3 stand-in, each time
// with a service of its own on that store.
func inEachStore(t *testing.T, f func(t *testing.T, ss streamStore, p *httptest.Server, logs *logBuffer, svc *service.Service)) {
	for _, sc := range streamStores() {
		t.Run(sc.name, func(t *testing.T) {
			ss := sc.open(t)
			p, logs, svc := newService(t, ss.env)
			f(t, ss, p, logs, svc)
		})
	}
}

// checkBudgetGiven fails if any of the memory budget is still held.
func checkBudgetGiven(t *testing.T, svc *service.Service) {
	t.Helper()
	if n := svc.Budget.Held(); n != 0 {
		t.Errorf("%d bytes of memory budget still held", n)
	}
}

// streamStore is a service's store, opened by the test too.
type streamStore struct {
	name string
	env  map[string]string
	st   store.Store
	// leftovers counts unfinished writes (temporary files, multipart
	// uploads).
	leftovers func() int
}

type streamStoreCase struct {
	name string
	open func(t *testing.T) streamStore
}

func streamStores() []streamStoreCase {
	return []streamStoreCase{
		{"dir", func(t *testing.T) streamStore {
			root := t.TempDir()
			st, err := store.NewDir(root, store.DirOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return streamStore{"dir", map[string]string{"MEDIA_PROXY_STORE": "dir:" + root}, st, func() int { return countTempFiles(root) }}
		}},
		{"s3", func(t *testing.T) streamStore {
			e := s3StandinFromEnv(t)
			bucket := e.bucket(t)
			setAWSEnv(t, e, e.endpoint)
			c := e.client(e.endpoint)
			st := s3store.New(c, nil, s3store.Config{Bucket: bucket, Prefix: "spool/"})
			leftovers := func() int {
				ups, err := c.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: &bucket})
				if err != nil {
					t.Errorf("list multipart uploads: %v", err)
					return 0
				}
				return len(ups.Uploads)
			}
			return streamStore{"s3", map[string]string{"MEDIA_PROXY_STORE": "s3://" + bucket + "/spool", "MEDIA_PROXY_S3_PATH_STYLE": "true"}, st, leftovers}
		}},
	}
}

func countTempFiles(root string) int {
	n := 0
	filepath.WalkDir(root, func(_ string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".tmp-") {
			n++
		}
		return nil
	})
	return n
}

// checkNothingKept fails if the dir store in root holds key, a temporary
// file, or a failure remembered under failKey.
func checkNothingKept(t *testing.T, dir *store.Dir, root, key, failKey string) {
	t.Helper()
	if got, err := storedBytes(t, dir, key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the key holds %d bytes (%v), want nothing", len(got), err)
	}
	if n := countTempFiles(root); n != 0 {
		t.Errorf("%d temporary files left", n)
	}
	if _, _, err := dir.Failure(t.Context(), failKey); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a failure was remembered: %v", err)
	}
}

// waitStored polls st until key holds want (the store copy ends just
// after the download's last byte).
func waitStored(t *testing.T, st store.Store, key string, want []byte) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := storedBytes(t, st, key)
		if err == nil && bytes.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store holds %d bytes (%v), want the origin's %d", len(got), err, len(want))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFor polls cond until it holds; what says what it waits for.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s after 30 s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// await waits for ch, failing after 30 s (a defence that broke, not a
// slow machine).
func await(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("still waiting for %s after 30 s", what)
	}
}

// TestDownloadReaders: three GETs for a 20 MB video that its origin
// trickles each get their first bytes while the origin holds all but its
// first 256 KiB back (so: with the origin's first bytes, not after the
// download), then the whole body, identical, from one origin fetch; the
// store then holds it, and the next request is a hit.
func TestDownloadReaders(t *testing.T) {
	video := testmedia.MP4(20 << 20)
	inEachStore(t, func(t *testing.T, ss streamStore, p *httptest.Server, logs *logBuffer, svc *service.Service) {
		o := proxytest.StartTrickle(t, video, 3*time.Second)
		gate := o.HoldAt(piece)
		src := o.URL + "/v.mp4"
		results := make([]streamed, 3)
		firsts := make([]chan struct{}, 3)
		var wg sync.WaitGroup
		start := func(i int) {
			firsts[i] = make(chan struct{})
			wg.Go(func() {
				results[i] = getStream(t, p.URL, src, streamOpts{digest: true, onFirst: func() { close(firsts[i]) }})
			})
		}
		start(0)
		await(t, firsts[0], "the first GET's first bytes")
		start(1)
		start(2)
		await(t, firsts[1], "the second GET's first bytes")
		await(t, firsts[2], "the third GET's first bytes")
		if !o.Held() {
			t.Fatal("the origin finished before the readers got their first bytes")
		}
		if st := svc.Handler.Stats(); st.Readers != 3 || st.Downloads != 1 {
			t.Errorf("while held: %+v, want 3 readers of 1 download", st)
		}
		gate.Let()
		wg.Wait()
		for i, s := range results {
			if s.err != nil || s.status != http.StatusOK || !s.same(video) {
				t.Errorf("GET %d: %d, %d bytes (err %v), want 200 and the origin's %d bytes", i, s.status, s.n, s.err, len(video))
			}
			if s.header.Get("Content-Length") != strconv.Itoa(len(video)) || s.header.Get("Content-Type") != "video/mp4" {
				t.Errorf("GET %d headers: %v", i, s.header)
			}
			t.Logf("%s: GET %d: first byte %v, last %v", ss.name, i, s.firstByte.Round(time.Millisecond), s.total.Round(time.Millisecond))
		}
		key, _ := keysOf(t, src, variant.Original)
		waitStored(t, ss.st, key, video)
		waitFor(t, "the download to end", func() bool { return svc.Handler.Stats().Downloads == 0 })
		st := svc.Handler.Stats()
		if st.Spooled != int64(len(video)) || st.Stored != 1 || st.StoreFailed != 0 || st.Readers != 0 {
			t.Errorf("after: %+v, want %d bytes spooled once, 1 stored, no reader left", st, len(video))
		}
		if n := o.Hits(); n != 1 {
			t.Errorf("the origin was asked %d times, want once", n)
		}
		r := getWithin(t, p.URL, src, "")
		if r.status == http.StatusFound {
			r = request(t, http.MethodGet, r.header.Get("Location"))
		}
		if r.status != http.StatusOK || !bytes.Equal(r.body, video) {
			t.Errorf("the next request: %d, %d bytes", r.status, len(r.body))
		}
		if !bytes.Contains(logs.bytes(), []byte(`"cache":"hit"`)) {
			t.Errorf("the next request was not a hit:\n%s", logs.bytes())
		}
		if !bytes.Contains(logs.bytes(), []byte(`"ttfb_ms":`)) {
			t.Errorf("no ttfb in the request line:\n%s", logs.bytes())
		}
		checkBudgetGiven(t, svc)
	})
}

// TestDownloadHEADAndRanges: while the origin holds the body back, a HEAD
// is answered with the length and type, a GET after a HEAD that started
// the fetch streams, Safari's first "bytes=0-1" is a 206, and a range in
// the middle starts once the origin has sent its first byte and ends
// while the origin holds the rest back. While it downloads there is no
// ETag to match.
func TestDownloadHEADAndRanges(t *testing.T) {
	video := testmedia.MP4(20 << 20)
	inEachStore(t, func(t *testing.T, ss streamStore, p *httptest.Server, _ *logBuffer, _ *service.Service) {

		t.Run("HEAD during a GET", func(t *testing.T) {
			o := proxytest.StartTrickle(t, video, 2*time.Second)
			gate := o.HoldAt(piece)
			src := o.URL + "/v.mp4"
			first := make(chan struct{})
			done := make(chan streamed)
			go func() { done <- getStream(t, p.URL, src, streamOpts{digest: true, onFirst: func() { close(first) }}) }()
			await(t, first, "the GET's first bytes")
			h := getStream(t, p.URL, src, streamOpts{method: http.MethodHead})
			checkHead(t, h, len(video), o.Held())
			gate.Let()
			if s := <-done; !s.same(video) {
				t.Errorf("the GET got %d bytes, not the origin's", s.n)
			}
		})

		t.Run("GET after a HEAD that started the fetch", func(t *testing.T) {
			o := proxytest.StartTrickle(t, video, 2*time.Second)
			gate := o.HoldAt(piece)
			src := o.URL + "/v.mp4"
			h := getStream(t, p.URL, src, streamOpts{method: http.MethodHead})
			checkHead(t, h, len(video), o.Held())
			first := make(chan struct{})
			done := make(chan streamed)
			go func() { done <- getStream(t, p.URL, src, streamOpts{digest: true, onFirst: func() { close(first) }}) }()
			await(t, first, "the GET's first bytes")
			if !o.Held() {
				t.Error("the GET's first bytes came after the whole download")
			}
			gate.Let()
			if s := <-done; !s.same(video) || s.status != http.StatusOK {
				t.Errorf("the GET: %d, %d bytes, not the origin's", s.status, s.n)
			}
			if n := o.Hits(); n != 1 {
				t.Errorf("the origin was asked %d times, want once", n)
			}
		})

		t.Run("Safari", func(t *testing.T) {
			o := proxytest.StartTrickle(t, video, 2*time.Second)
			gate := o.HoldAt(piece)
			// Pieces end at 2 MiB: bytes up to 1999999 are there, the
			// rest held back.
			mid := o.HoldAt(8 * piece)
			src := o.URL + "/v.mp4"
			probe := getStream(t, p.URL, src, streamOpts{header: []string{"Range", "bytes=0-1"}})
			want := fmt.Sprintf("bytes 0-1/%d", len(video))
			if probe.status != http.StatusPartialContent || !bytes.Equal(probe.body, video[:2]) || probe.header.Get("Content-Range") != want {
				t.Fatalf("bytes=0-1: %d, %q, Content-Range %q; want 206, 2 bytes, %q", probe.status, probe.body, probe.header.Get("Content-Range"), want)
			}
			if !o.Held() {
				t.Error("the probe was answered after the whole download")
			}
			gate.Let()
			var sentThen int64
			r := getStream(t, p.URL, src, streamOpts{header: []string{"Range", "bytes=1000000-1999999"}, onHeaders: func() { sentThen = o.Sending() }})
			if r.status != http.StatusPartialContent || !bytes.Equal(r.body, video[1000000:2000000]) {
				t.Fatalf("bytes=1000000-1999999: %d, %d bytes", r.status, len(r.body))
			}
			// Its answer starts with its first byte, and ends while
			// the origin holds the rest of the body back.
			if sentThen <= 1000000 {
				t.Errorf("the range was answered when the origin had sent %d bytes, before its first", sentThen)
			}
			if !o.Held() {
				t.Error("the range was answered only after the whole download")
			}
			// What Safari asks next: the rest, in ranges.
			mid.Let()
			r = getStream(t, p.URL, src, streamOpts{header: []string{"Range", "bytes=2000000-"}})
			if r.status != http.StatusPartialContent || !bytes.Equal(r.body, video[2000000:]) {
				t.Errorf("bytes=2000000-: %d, %d bytes", r.status, len(r.body))
			}
			if n := o.Hits(); n != 1 {
				t.Errorf("the origin was asked %d times, want once", n)
			}
		})

		t.Run("validators", func(t *testing.T) {
			o := proxytest.StartTrickle(t, video, time.Second)
			gate := o.HoldAt(piece)
			src := o.URL + "/v.mp4"
			// While it downloads there is no ETag: If-Range with any
			// tag gets the whole body, If-None-Match never matches. Both
			// are answered while the origin holds the body back (once it
			// is stored, S3 answers with a redirect).
			answered := make(chan struct{}, 2)
			get := func(out chan<- streamed, header ...string) {
				out <- getStream(t, p.URL, src, streamOpts{digest: true, header: header, onHeaders: func() { answered <- struct{}{} }})
			}
			ifRange, ifNoneMatch := make(chan streamed, 1), make(chan streamed, 1)
			go get(ifRange, "Range", "bytes=0-9", "If-Range", `"stale"`)
			<-gate.Reached()
			go get(ifNoneMatch, "If-None-Match", `"stale"`)
			await(t, answered, "an answer's headers")
			await(t, answered, "the other answer's headers")
			gate.Let()
			if s := <-ifRange; s.status != http.StatusOK || !s.same(video) || s.header.Get("ETag") != "" {
				t.Errorf("If-Range during the download: %d, %d bytes, ETag %q; want 200, the whole body, no ETag", s.status, s.n, s.header.Get("ETag"))
			}
			if r := <-ifNoneMatch; r.status != http.StatusOK || !r.same(video) {
				t.Errorf("If-None-Match: %d, %d bytes", r.status, r.n)
			}
		})
	})
}

// checkHead checks a HEAD answered while the origin held its body back.
func checkHead(t *testing.T, h streamed, size int, held bool) {
	t.Helper()
	if h.status != http.StatusOK || h.header.Get("Content-Length") != strconv.Itoa(size) || h.header.Get("Content-Type") != "video/mp4" || h.header.Get("Accept-Ranges") != "bytes" || h.n != 0 {
		t.Errorf("HEAD: %d, %d bytes, %v", h.status, h.n, h.header)
	}
	if !held {
		t.Error("the HEAD was answered after the whole download")
	}
}

// TestDownloadSlowReader: a client that stops reading (its receive
// window a few KiB) after 1 MiB holds back neither the origin nor another
// client: both finish while it is paused. It falls behind on disk: the
// memory budget holds a reader's chunk for it, no more, and the heap does
// not grow by its backlog. It then reads the rest, and nothing about it
// is remembered as the origin's failure.
func TestDownloadSlowReader(t *testing.T) {
	video := testmedia.MP4(20 << 20)
	inEachStore(t, func(t *testing.T, ss streamStore, p *httptest.Server, _ *logBuffer, svc *service.Service) {
		o := proxytest.StartTrickle(t, video, 3*time.Second)
		src := o.URL + "/v.mp4"
		key, failKey := keysOf(t, src, variant.Original)
		other := make(chan streamed)
		otherFirst := make(chan struct{})
		go func() {
			other <- getStream(t, p.URL, src, streamOpts{digest: true, onFirst: func() { close(otherFirst) }})
		}()
		await(t, otherFirst, "the other client's first bytes")
		var heldAtPause, peakHeld int64
		var heapGrowth int64
		slow := getStream(t, p.URL, src, streamOpts{client: smallWindowClient(), digest: true, pauseAt: 1 << 20, pause: func() {
			heldAtPause = svc.Budget.Held()
			before := heapAlloc()
			stop := sampleHeld(svc.Budget.Held, &peakHeld)
			await(t, o.Finished(), "the origin to finish while a client is paused (did the client pace it?)")
			if s := <-other; !s.same(video) {
				t.Errorf("the other client got %d bytes, not the origin's", s.n)
			}
			waitFor(t, "the download to end", func() bool { return svc.Handler.Stats().Downloads == 0 })
			stop()
			heapGrowth = heapAlloc() - before
		}})
		if slow.err != nil || slow.status != http.StatusOK || !slow.same(video) {
			t.Fatalf("the paused client: %d, %d bytes (err %v), want the origin's", slow.status, slow.n, slow.err)
		}
		t.Logf("%s: budget held %d at the pause, at most %d during it; heap grew %d", ss.name, heldAtPause, peakHeld, heapGrowth)
		if peakHeld > heldAtPause {
			t.Errorf("the memory budget grew from %d to %d while a client was paused", heldAtPause, peakHeld)
		}
		if heapGrowth > 4<<20 {
			t.Errorf("the heap grew by %d bytes while a client fell %d bytes behind", heapGrowth, len(video)-1<<20)
		}
		if st := svc.Handler.Stats(); st.Spooled != int64(len(video)) || st.StoreFailed != 0 {
			t.Errorf("%+v: want the body spooled once, and stored", st)
		}
		waitStored(t, ss.st, key, video)
		if _, _, err := ss.st.Failure(t.Context(), failKey); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a failure was remembered for a slow client: %v", err)
		}
	})
}

// sampleHeld notes the peak of held() until stop.
func sampleHeld(held func() int64, peak *int64) (stop func()) {
	done, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if n := held(); n > *peak {
				*peak = n
			}
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	return func() {
		close(done)
		<-sampled
	}
}

func heapAlloc() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// TestDownloadCut: an origin that cuts its body at 50 % breaks the
// transfer of every reader (one from the start, one that joined late, one
// asking for a range past the cut), stores nothing, leaves no temporary
// file or multipart upload, and is remembered as any cut body is.
func TestDownloadCut(t *testing.T) {
	video := testmedia.MP4(20 << 20)
	inEachStore(t, func(t *testing.T, ss streamStore, p *httptest.Server, _ *logBuffer, svc *service.Service) {
		o := proxytest.StartTrickle(t, video, 4*time.Second)
		o.CutAt = len(video) / 2
		gate := o.HoldAt(piece)
		src := o.URL + "/v.mp4"
		var wg sync.WaitGroup
		results := make([]streamed, 3)
		firsts := make([]chan struct{}, 2)
		for i, opts := range []streamOpts{{digest: true}, {digest: true}, {header: []string{"Range", fmt.Sprintf("bytes=%d-", len(video)*3/4)}}} {
			if i < 2 {
				firsts[i] = make(chan struct{})
				opts.onFirst = func() { close(firsts[i]) }
			}
			wg.Go(func() { results[i] = getStream(t, p.URL, src, opts) })
			if i < 2 {
				await(t, firsts[i], "a reader's first bytes")
			}
		}
		gate.Let()
		wg.Wait()
		for i, s := range results {
			t.Logf("%s: reader %d: %d, %d bytes, then %v", ss.name, i, s.status, s.n, s.err)
			if i < 2 && (s.status != http.StatusOK || s.err == nil) {
				t.Errorf("reader %d: %d with %d bytes and a clean end, want a broken transfer", i, s.status, s.n)
			}
		}
		// Its answer had not started: it says why.
		if r := results[2]; r.status != http.StatusBadGateway || r.header.Get("Cache-Control") != "max-age=10" {
			t.Errorf("a range past the cut: %d %v, want 502 cached for the failure's 10 s", r.status, r.header)
		}
		key, failKey := keysOf(t, src, variant.Original)
		waitFor(t, "the download to end", func() bool { return svc.Handler.Stats().Downloads == 0 })
		waitFor(t, "the unfinished writes to go", func() bool { return ss.leftovers() == 0 })
		if got, err := storedBytes(t, ss.st, key); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("after a cut body the key holds %d bytes (%v), want nothing", len(got), err)
		}
		// Remembered as any cut body is: a 502 for seconds.
		if status, _, err := ss.st.Failure(t.Context(), failKey); err != nil || status != http.StatusBadGateway {
			t.Errorf("failure marker: %d, %v; want 502", status, err)
		}
		if st := svc.Handler.Stats(); st.Stored != 0 || st.StoreFailed != 0 || st.Readers != 0 {
			t.Errorf("%+v: want nothing stored and no reader left", st)
		}
		checkBudgetGiven(t, svc)
	})
}

// TestStreamedMissClientLeaves: a client that hangs up at 10 % leaves a
// complete stored object all the same, and gives its memory back.
func TestStreamedMissClientLeaves(t *testing.T) {
	video := testmedia.MP4(20 << 20)
	inEachStore(t, func(t *testing.T, ss streamStore, p *httptest.Server, _ *logBuffer, svc *service.Service) {
		o := proxytest.StartTrickle(t, video, 4*time.Second)
		src := o.URL + "/v.mp4"
		s := streamGet(t, p.URL, src, len(video)/10, 0, nil)
		if s.status != http.StatusOK || !bytes.Equal(s.body, video[:len(s.body)]) {
			t.Fatalf("answered %d, %d bytes not the origin's", s.status, len(s.body))
		}
		key, _ := keysOf(t, src, variant.Original)
		waitStored(t, ss.st, key, video)
		waitFor(t, "the memory budget to be given back", func() bool { return svc.Budget.Held() == 0 })
	})
}

// TestReaderGoneIsNotABreak: a client that hangs up while its reader waits
// for bytes the origin has not sent yet ends its own request, not the
// download: its line says the client went away (information, status as
// answered), never that the body broke off, and the others read on.
func TestReaderGoneIsNotABreak(t *testing.T) {
	video := testmedia.MP4(20 << 20)
	p, logs, svc := newService(t, nil)
	o := proxytest.StartTrickle(t, video, time.Second)
	gate := o.HoldAt(piece)
	src := o.URL + "/v.mp4"
	other := make(chan streamed)
	go func() { other <- getStream(t, p.URL, src, streamOpts{digest: true}) }()
	// Hangs up once it has what the origin sent: its reader is waiting.
	s := getStream(t, p.URL, src, streamOpts{header: []string{"X-Request-Id", "gone"}, stopAfter: piece})
	if s.status != http.StatusOK || !bytes.Equal(s.body, video[:len(s.body)]) {
		t.Fatalf("the client that hangs up: %d, %d bytes", s.status, len(s.body))
	}
	waitFor(t, "the request line of the client that hung up", func() bool {
		return bytes.Contains(logs.bytes(), []byte(`"client_request_id":"gone"`))
	})
	gate.Let()
	if r := <-other; !r.same(video) {
		t.Errorf("the other client got %d bytes, not the origin's", r.n)
	}
	for _, l := range logLines(t, logs.bytes()) {
		if l["client_request_id"] != "gone" {
			continue
		}
		e, _ := l["err"].(string)
		if l["status"] != 200.0 || l["level"] != "INFO" || l["aborted"] != nil || !strings.Contains(e, "the client went away") {
			t.Errorf("request line %v; want status 200 at INFO, not aborted, err saying the client went away", l)
		}
	}
	waitFor(t, "the download to end", func() bool { return svc.Handler.Stats().Downloads == 0 })
	if st := svc.Handler.Stats(); st.Stored != 1 {
		t.Errorf("%+v: want the body stored", st)
	}
}

// TestStreamLimit: Config.StreamLimit answers a large miss from its spool
// only up to a declared size; a larger one is answered once stored (here
// a dir store: its file, with an ETag and ranges). Either way, the
// whole-body range browsers send for media ("bytes=0-") gets 206 and the
// whole body; from the spool, without an ETag while it downloads.
func TestStreamLimit(t *testing.T) {
	video := testmedia.MP4(12 << 20)
	for _, c := range []struct {
		name     string
		limit    int64
		streamed bool
	}{
		{"under the limit", 16 << 20, true},
		{"over the limit", 10 << 20, false},
		{"never", -1, false},
		{"always", 0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir, err := store.NewDir(t.TempDir(), store.DirOptions{})
			if err != nil {
				t.Fatal(err)
			}
			p, _ := newStackHandler(t, stackOptions{allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, store: dir, streamLimit: c.limit})
			o := proxytest.StartTrickle(t, video, time.Second)
			gate := o.HoldAt(piece)
			src := o.URL + "/v.mp4"
			first := make(chan struct{})
			done := make(chan streamed)
			go func() {
				done <- getStream(t, p.URL, src, streamOpts{header: []string{"Range", "bytes=0-"}, onHeaders: func() { close(first) }})
			}()
			key, _ := keysOf(t, src, variant.Original)
			if c.streamed {
				await(t, first, "the answer's headers")
				if !o.Held() {
					t.Error("answered after the whole download")
				}
				gate.Let()
				r := <-done
				if r.status != http.StatusPartialContent || !bytes.Equal(r.body, video) || r.header.Get("ETag") != "" {
					t.Fatalf("streamed: %d, %d bytes, ETag %q; want 206, the whole body, no ETag", r.status, len(r.body), r.header.Get("ETag"))
				}
				waitStored(t, dir, key, video)
				return
			}
			gate.Let()
			r := <-done
			if r.status != http.StatusPartialContent || !bytes.Equal(r.body, video) || r.header.Get("ETag") == "" {
				t.Fatalf("stored first: %d, %d bytes, ETag %q; want 206 from the stored file", r.status, len(r.body), r.header.Get("ETag"))
			}
			if got, err := storedBytes(t, dir, key); err != nil || !bytes.Equal(got, video) {
				t.Errorf("stored %d bytes (%v) before answering, want the origin's", len(got), err)
			}
		})
	}
}

// stuckStore's writes of variants wait until the test lets them go, then
// store as the store below does.
type stuckStore struct {
	store.Store
	release chan struct{}
}

func (s stuckStore) Put(ctx context.Context, key string, m store.Meta, body io.Reader) error {
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Store.Put(ctx, key, m, body)
}

// TestDownloadStoreNeverStallsReaders: a store copy that has not read a
// byte, or one that fails after writing part of the body, costs the
// client nothing: it gets every byte as the origin sends them. The stuck
// one, let go, then stores the whole; the failing one stores nothing,
// and that is counted, not remembered.
func TestDownloadStoreNeverStallsReaders(t *testing.T) {
	video := testmedia.MP4(20 << 20)
	for _, name := range []string{"stuck", "failing"} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			dir, err := store.NewDir(root, store.DirOptions{})
			if err != nil {
				t.Fatal(err)
			}
			release := make(chan struct{})
			var st store.Store = stuckStore{dir, release}
			if name == "failing" {
				f := &faultyStore{Store: dir}
				f.broken.Store(true)
				st = f
			}
			p, h := newStackHandler(t, stackOptions{allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, store: st})
			o := proxytest.StartTrickle(t, video, 2*time.Second)
			src := o.URL + "/v.mp4"
			s := streamGet(t, p.URL, src, 0, 0, nil)
			if s.err != nil || s.status != http.StatusOK || !bytes.Equal(s.body, video) {
				t.Fatalf("answered %d, %d bytes (err %v), want 200 and the origin's %d bytes", s.status, len(s.body), s.err, len(video))
			}
			key, failKey := keysOf(t, src, variant.Original)
			if name == "stuck" {
				if st := h.Stats(); st.Stored != 0 || st.Downloads != 1 {
					t.Errorf("the client finished with %+v, want the store copy still waiting", st)
				}
				close(release)
				waitStored(t, dir, key, video)
				waitFor(t, "the store copy to end", func() bool { return h.Stats().Downloads == 0 })
				if st := h.Stats(); st.Stored != 1 {
					t.Errorf("%+v: want 1 stored", st)
				}
				return
			}
			waitFor(t, "the store copy to fail", func() bool { return h.Stats().StoreFailed == 1 })
			checkNothingKept(t, dir, root, key, failKey)
		})
	}
}

// TestDownloadClientNeverReads: under the longest write timeout (the
// stack's default, MEDIA_PROXY_WRITE_TIMEOUT=0: 10 minutes) and with a
// store that fails, a client that never reads a byte holds back neither
// the download nor later requests: the download ends while it sits
// there, and the next request fetches and gets the whole body.
func TestDownloadClientNeverReads(t *testing.T) {
	video := testmedia.MP4(20 << 20)
	dir, err := store.NewDir(t.TempDir(), store.DirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := &faultyStore{Store: dir}
	st.broken.Store(true)
	p, h := newStackHandler(t, stackOptions{allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, store: st})
	o := proxytest.StartTrickle(t, video, 2*time.Second)
	src := o.URL + "/v.mp4"
	req, err := http.NewRequest(http.MethodGet, p.URL+"/v.mp4?url="+url.QueryEscape(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := smallWindowClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close() // never read
	await(t, o.Finished(), "the origin to finish while a client never reads")
	waitFor(t, "the download to end", func() bool { return h.Stats().Downloads == 0 })
	r := getWithin(t, p.URL, src, "")
	if r.status != http.StatusOK || !bytes.Equal(r.body, video) {
		t.Errorf("the next request: %d, %d bytes", r.status, len(r.body))
	}
	if n := o.Hits(); n != 2 {
		t.Errorf("the origin was asked %d times, want twice (the store failed)", n)
	}
}

// lingeringStore starts work of its own on each hit and leaves it running
// past the lookup, as s3store's renewal of an object near its end does;
// the work ends when the test lets it go.
type lingeringStore struct {
	store.Store
	started chan struct{}
	release chan struct{}
	running sync.WaitGroup
}

func (s *lingeringStore) Lookup(ctx context.Context, key string) (*store.Entry, error) {
	e, err := s.Store.Lookup(ctx, key)
	if err == nil {
		s.running.Go(func() {
			s.started <- struct{}{}
			<-s.release
		})
	}
	return e, err
}

func (s *lingeringStore) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.running.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestWaitCoversStoreWork: Handler.Wait, with which a Lambda invocation
// ends (nothing runs once it has), waits for the work a hit left running
// in the store (an S3 renewal) as it does for downloads; the hit itself is
// answered without waiting for it.
func TestWaitCoversStoreWork(t *testing.T) {
	dir, err := store.NewDir(t.TempDir(), store.DirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := &lingeringStore{Store: dir, started: make(chan struct{}, 1), release: make(chan struct{})}
	p, h := newStackHandler(t, stackOptions{allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, store: st})
	o := newOrigin(t)
	src := o.add("/e.png", testmedia.PNG(64, 64))
	if r := getWithin(t, p.URL, src, "emoji=1"); r.status != http.StatusOK {
		t.Fatalf("miss: %d", r.status)
	}
	if r := getWithin(t, p.URL, src, "emoji=1"); r.status != http.StatusOK {
		t.Fatalf("hit: %d", r.status)
	}
	await(t, st.started, "the store's work on the hit")
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := h.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait with the store's work held: %v, want its context's deadline", err)
	}
	close(st.release)
	if err := h.Wait(t.Context()); err != nil {
		t.Errorf("Wait once the store's work can end: %v", err)
	}
}

// TestDownloadEndsBeforeDeadline: on Lambda a request's context ends with
// the invocation, after which nothing runs (the process is frozen, or
// killed past the function's timeout). A download the request started,
// which outlives its clients otherwise, ends a little before that and
// cleanly: its reader's transfer is broken, nothing is stored or left
// behind, nothing is remembered (the proxy's own limit, not the origin's),
// and Wait, which the invocation ends with, returns; all while the origin
// still holds its body back.
func TestDownloadEndsBeforeDeadline(t *testing.T) {
	video := testmedia.MP4(20 << 20)
	root := t.TempDir()
	dir, err := store.NewDir(root, store.DirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, h := newStackHandler(t, stackOptions{allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, store: dir})
	// As functionurl serves it: the request's context has the invocation's
	// deadline.
	const deadline = 5 * time.Second
	p := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), deadline)
		defer cancel()
		h.ServeHTTP(w, r.WithContext(ctx))
	}))
	t.Cleanup(p.Close)
	o := proxytest.StartTrickle(t, video, time.Second)
	o.HoldAt(2 * piece) // never let go
	src := o.URL + "/v.mp4"
	start := time.Now()
	s := getStream(t, p.URL, src, streamOpts{digest: true})
	if s.status != http.StatusOK || s.err == nil || s.n >= int64(len(video)) {
		t.Errorf("the reader: %d, %d bytes, ended by %v; want 200 and a broken transfer", s.status, s.n, s.err)
	}
	waitFor(t, "the download to end", func() bool { return h.Stats().Downloads == 0 })
	ended := time.Since(start)
	if err := h.Wait(t.Context()); err != nil {
		t.Errorf("Wait: %v", err)
	}
	if !o.Held() {
		t.Error("the origin sent its whole body: the download did not end early")
	}
	t.Logf("the download ended %v after the request, its deadline %v", ended.Round(time.Millisecond), deadline)
	if ended >= deadline {
		t.Errorf("the download ended %v after the request, not before its deadline (%v)", ended, deadline)
	}
	key, failKey := keysOf(t, src, variant.Original)
	checkNothingKept(t, dir, root, key, failKey)
}

// TestDownloadsWithinDiskLimit: parallel large misses stay within the
// room they may take on disk, their spools included: in the dir store's
// folder, MEDIA_PROXY_STORE_MAX_SIZE; in the temporary folder (any other
// store), Config.SpoolRoom. Those that fit stream; the others are told to
// come back (503, Retry-After, not cached, not remembered) instead of
// filling the disk.
func TestDownloadsWithinDiskLimit(t *testing.T) {
	const limit = 48 << 20 // two 20 MiB downloads fit, not three
	video := testmedia.MP4(20 << 20)
	t.Run("dir store", func(t *testing.T) {
		root := t.TempDir()
		p, _, svc := newService(t, map[string]string{"MEDIA_PROXY_STORE": "dir:" + root, "MEDIA_PROXY_STORE_MAX_SIZE": strconv.Itoa(limit)})
		var peak atomic.Int64
		stopSampling := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			for {
				if n := diskUse(t, root); n > peak.Load() {
					peak.Store(n)
				}
				select {
				case <-stopSampling:
					return
				case <-time.After(2 * time.Millisecond):
				}
			}
		}()
		parallelMisses(t, p.URL, video, svc.Handler, svc.Store)
		close(stopSampling)
		<-sampled
		t.Logf("limit %d: peak %d bytes in the folder", limit, peak.Load())
		if peak.Load() > limit {
			t.Errorf("%d bytes in the store's folder at a peak, over its limit of %d", peak.Load(), limit)
		}
	})
	t.Run("temporary folder", func(t *testing.T) {
		dir, err := store.NewDir(t.TempDir(), store.DirOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// Not the dir store itself: it spools in the temporary folder.
		st := &faultyStore{Store: dir}
		p, h := newStackHandler(t, stackOptions{allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, store: st, spoolRoom: limit})
		parallelMisses(t, p.URL, video, h, st)
	})
}

// parallelMisses asks for five 20 MiB misses at once, each origin holding
// its body back until all are answered or refused: two fit.
func parallelMisses(t *testing.T, proxyURL string, video []byte, h *proxy.Handler, st store.Store) {
	t.Helper()
	const misses = 5
	var wg sync.WaitGroup
	results := make([]streamed, misses)
	headers := make([]chan struct{}, misses)
	origins := make([]*proxytest.Trickle, misses)
	for i := range misses {
		origins[i] = proxytest.StartTrickle(t, video, time.Second)
		origins[i].HoldAt(piece)
		headers[i] = make(chan struct{})
		wg.Go(func() {
			results[i] = getStream(t, proxyURL, origins[i].URL+"/v.mp4", streamOpts{digest: true, onHeaders: func() { close(headers[i]) }})
		})
	}
	for i := range misses {
		await(t, headers[i], "an answer's headers")
	}
	for _, o := range origins {
		o.Holds()[0].Let()
	}
	wg.Wait()
	waitFor(t, "the downloads to end", func() bool { return h.Stats().Downloads == 0 })
	ok, refused := 0, 0
	for i, s := range results {
		switch s.status {
		case http.StatusOK:
			ok++
			if !s.same(video) || s.err != nil {
				t.Errorf("miss %d: %d bytes (%v), not the origin's", i, s.n, s.err)
			}
		case http.StatusServiceUnavailable:
			refused++
			if s.header.Get("Retry-After") == "" || s.header.Get("Cache-Control") != "no-store" {
				t.Errorf("miss %d refused with %v", i, s.header)
			}
			_, failKey := keysOf(t, origins[i].URL+"/v.mp4", variant.Original)
			if _, _, err := st.Failure(t.Context(), failKey); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("a refusal for room was remembered: %v", err)
			}
		default:
			t.Errorf("miss %d: %d", i, s.status)
		}
	}
	t.Logf("%d streamed, %d refused", ok, refused)
	if ok != 2 || refused != misses-2 {
		t.Errorf("%d streamed and %d refused; want 2 (what fits) and %d", ok, refused, misses-2)
	}
}

// TestStoredFirstNotPacedByStore: a miss answered only once stored
// (Config.StreamLimit, as on Lambda over its limit) is downloaded at the
// origin's pace however slow the store: here the store has not read a
// byte when the origin has sent its last, so no fetch timeout can be
// blamed on the origin. Once the store goes on, the answer comes from it.
func TestStoredFirstNotPacedByStore(t *testing.T) {
	video := testmedia.MP4(12 << 20)
	dir, err := store.NewDir(t.TempDir(), store.DirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	p, h := newStackHandler(t, stackOptions{allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, store: stuckStore{dir, release}, streamLimit: -1})
	o := proxytest.StartTrickle(t, video, time.Second)
	src := o.URL + "/v.mp4"
	done := make(chan streamed)
	go func() { done <- getStream(t, p.URL, src, streamOpts{header: []string{"Range", "bytes=0-"}}) }()
	await(t, o.Finished(), "the origin to finish while the store has read nothing (did the store pace it?)")
	waitFor(t, "the whole body in the spool", func() bool { return h.Stats().Spooled == int64(len(video)) })
	if st := h.Stats(); st.Stored != 0 {
		t.Errorf("with the body downloaded: %+v, want it not yet stored", st)
	}
	close(release)
	r := <-done
	if r.status != http.StatusPartialContent || !bytes.Equal(r.body, video) || r.header.Get("ETag") == "" {
		t.Fatalf("answered %d, %d bytes, ETag %q; want 206 from the stored file", r.status, len(r.body), r.header.Get("ETag"))
	}
	_, failKey := keysOf(t, src, variant.Original)
	if _, _, err := dir.Failure(t.Context(), failKey); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a failure was remembered: %v", err)
	}
}

// TestDownloadOfUnknownLength: a large body sent without a length is
// spooled once past the 8 MB held in memory and streamed whole (chunked,
// no Content-Length) from the spool before the origin is done; the store
// gets the complete body.
func TestDownloadOfUnknownLength(t *testing.T) {
	video := testmedia.MP4(12 << 20)
	root := t.TempDir()
	p, _, svc := newService(t, map[string]string{"MEDIA_PROXY_STORE": "dir:" + root})
	first := make(chan struct{})
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		for off := 0; off < len(video); off += piece {
			w.Write(video[off:min(off+piece, len(video))]) // chunked: no length
			rc.Flush()
			if off == 9<<20 {
				// Past the in-memory size: wait for the client's first bytes.
				await(t, first, "the client's first bytes")
			}
		}
	}))
	t.Cleanup(origin.Close)
	src := origin.URL + "/v.mp4"
	done := make(chan streamed)
	go func() {
		done <- getStream(t, p.URL, src, streamOpts{onFirst: func() { close(first) }})
	}()
	r := <-done
	if r.status != http.StatusOK || !bytes.Equal(r.body, video) || r.header.Get("Content-Length") != "" {
		t.Fatalf("GET: %d, %d bytes, Content-Length %q; want 200, the whole body, no length", r.status, len(r.body), r.header.Get("Content-Length"))
	}
	key, _ := keysOf(t, src, variant.Original)
	waitStored(t, svc.Store, key, video)
	if st := svc.Handler.Stats(); st.Spooled != int64(len(video)) {
		t.Errorf("%+v: want the whole body spooled", st)
	}
}
