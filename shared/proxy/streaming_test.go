package proxy_test

// Streaming a large miss to its client while the store copy is written
// (a tee): the first byte leaves when the origin sends it, the bytes are
// the origin's, the store ends up with the complete object or nothing,
// and neither a slow store nor a slow or departed client stalls the other
// side. Against a loopback origin that trickles 20 MB over about 5 s, on
// the dir store and the S3 stand-in.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/misskey-lambda/media-proxy/shared/s3store"
	"github.com/misskey-lambda/media-proxy/shared/store"
	"github.com/misskey-lambda/media-proxy/shared/testmedia"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

// trickleOrigin sends a body in 256 KiB chunks with a pause between them,
// and notes when it sent its first byte and its last.
type trickleOrigin struct {
	*httptest.Server
	body  []byte
	pause time.Duration
	cutAt int // > 0: close the connection after this many bytes
	hits  atomic.Int64

	mu           sync.Mutex
	first, last  time.Time
	finished     chan struct{}
	finishedOnce sync.Once
}

func newTrickleOrigin(t *testing.T, body []byte, over time.Duration) *trickleOrigin {
	chunks := (len(body) + 256<<10 - 1) / (256 << 10)
	o := &trickleOrigin{body: body, pause: over / time.Duration(chunks), finished: make(chan struct{})}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.hits.Add(1)
		w.Header().Set("Content-Length", strconv.Itoa(len(o.body)))
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		send := o.body
		if o.cutAt > 0 {
			send = send[:o.cutAt]
		}
		for len(send) > 0 {
			n := min(len(send), 256<<10)
			if _, err := w.Write(send[:n]); err != nil {
				return
			}
			rc.Flush()
			send = send[n:]
			o.mu.Lock()
			if o.first.IsZero() {
				o.first = time.Now()
			}
			if len(send) == 0 {
				o.last = time.Now()
			}
			o.mu.Unlock()
			if len(send) > 0 {
				time.Sleep(o.pause)
			}
		}
		o.finishedOnce.Do(func() { close(o.finished) })
		if o.cutAt > 0 {
			if conn, _, err := rc.Hijack(); err == nil {
				conn.Close()
			}
		}
	}))
	t.Cleanup(o.Close)
	return o
}

// times waits for the origin's handler to have finished sending (a client
// may read the last byte before the handler notes it).
func (o *trickleOrigin) times() (first, last time.Time) {
	select {
	case <-o.finished:
	case <-time.After(10 * time.Second):
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.first, o.last
}

// streamed is one client's view of a response.
type streamed struct {
	status           int
	header           http.Header
	body             []byte
	err              error         // reading the body
	headers          time.Duration // the response's headers
	firstByte, total time.Duration // its body's first and last bytes
	start, firstAt   time.Time
}

// streamGet requests src and reads the body, noting when its first byte
// came; stopAfter > 0 reads only that much and hangs up; pause, when set,
// is called once pauseAt bytes have been read.
func streamGet(t *testing.T, proxyURL, src string, stopAfter, pauseAt int, pause func()) streamed {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, proxyURL+"/v.mp4?url="+url.QueryEscape(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := streamed{start: time.Now()}
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	s.headers = time.Since(s.start)
	s.status, s.header = resp.StatusCode, resp.Header
	var body bytes.Buffer
	buf := make([]byte, 32<<10)
	paused := false
	for {
		if pause != nil && !paused && body.Len() >= pauseAt {
			paused = true
			pause()
		}
		n, err := resp.Body.Read(buf)
		if n > 0 && s.firstAt.IsZero() {
			s.firstAt = time.Now()
			s.firstByte = s.firstAt.Sub(s.start)
		}
		body.Write(buf[:n])
		if stopAfter > 0 && body.Len() >= stopAfter {
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
	s.body = body.Bytes()
	return s
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
			st := s3store.New(c, nil, s3store.Config{Bucket: bucket, Prefix: "tee/"})
			leftovers := func() int {
				ups, err := c.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: &bucket})
				if err != nil {
					t.Errorf("list multipart uploads: %v", err)
					return 0
				}
				return len(ups.Uploads)
			}
			return streamStore{"s3", map[string]string{"MEDIA_PROXY_STORE": "s3://" + bucket + "/tee", "MEDIA_PROXY_S3_PATH_STYLE": "true"}, st, leftovers}
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

// waitStored polls st until key holds want (the tee finishes its store
// copy just after the client's last byte).
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

// TestStreamedMiss: a 20 MB video the origin trickles over about 5 s
// reaches the client from its first byte (within a second of the origin's,
// and long before the origin's last), byte for byte; the store then holds
// it complete and the next request is a hit.
func TestStreamedMiss(t *testing.T) {
	video := testmedia.MP4(20 << 20)
	for _, sc := range streamStores() {
		t.Run(sc.name, func(t *testing.T) {
			ss := sc.open(t)
			p, logs, _ := newService(t, ss.env)
			o := newTrickleOrigin(t, video, 5*time.Second)
			src := o.URL + "/v.mp4"
			s := streamGet(t, p.URL, src, 0, 0, nil)
			if s.err != nil || s.status != http.StatusOK || !bytes.Equal(s.body, video) {
				t.Fatalf("answered %d, %d bytes (err %v), want 200 and the origin's %d bytes", s.status, len(s.body), s.err, len(video))
			}
			if s.header.Get("Content-Length") != strconv.Itoa(len(video)) || s.header.Get("Content-Type") != "video/mp4" {
				t.Errorf("headers: %v", s.header)
			}
			oFirst, oLast := o.times()
			t.Logf("%s: origin first byte %v, last %v; proxy first byte %v, last %v (after the request)",
				ss.name, oFirst.Sub(s.start).Round(time.Millisecond), oLast.Sub(s.start).Round(time.Millisecond),
				s.firstByte.Round(time.Millisecond), s.total.Round(time.Millisecond))
			if d := s.firstAt.Sub(oFirst); d > time.Second {
				t.Errorf("the client's first byte came %v after the origin's, want within a second", d)
			}
			if !s.firstAt.Before(oFirst.Add(oLast.Sub(oFirst) / 2)) {
				t.Errorf("the client's first byte came after the origin had sent half its body")
			}
			key, _ := keysOf(t, src, variant.Original)
			waitStored(t, ss.st, key, video)
			r := getWithin(t, p.URL, src, "")
			if r.status == http.StatusFound {
				r = request(t, http.MethodGet, r.header.Get("Location"))
			}
			if r.status != http.StatusOK || !bytes.Equal(r.body, video) {
				t.Errorf("the next request: %d, %d bytes", r.status, len(r.body))
			}
			if n := o.hits.Load(); n != 1 {
				t.Errorf("the origin was asked %d times, want once", n)
			}
			if !bytes.Contains(logs.bytes(), []byte(`"cache":"hit"`)) {
				t.Errorf("the next request was not a hit:\n%s", logs.bytes())
			}
			if !bytes.Contains(logs.bytes(), []byte(`"ttfb_ms":`)) {
				t.Errorf("no ttfb in the request line:\n%s", logs.bytes())
			}
		})
	}
}

// TestStreamedMissClientLeaves: a client that hangs up at 10 % leaves a
// complete stored object all the same.
func TestStreamedMissClientLeaves(t *testing.T) {
	video := testmedia.MP4(20 << 20)
	for _, sc := range streamStores() {
		t.Run(sc.name, func(t *testing.T) {
			ss := sc.open(t)
			p, _, svc := newService(t, ss.env)
			o := newTrickleOrigin(t, video, 4*time.Second)
			src := o.URL + "/v.mp4"
			s := streamGet(t, p.URL, src, len(video)/10, 0, nil)
			if s.status != http.StatusOK || !bytes.Equal(s.body, video[:len(s.body)]) {
				t.Fatalf("answered %d, %d bytes not the origin's", s.status, len(s.body))
			}
			key, _ := keysOf(t, src, variant.Original)
			waitStored(t, ss.st, key, video)
			// The tee's memory is given back.
			deadline := time.Now().Add(10 * time.Second)
			for svc.Budget.Held() != 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if n := svc.Budget.Held(); n != 0 {
				t.Errorf("%d bytes of memory budget still held", n)
			}
		})
	}
}

// TestStreamLimit: Config.StreamLimit streams a large miss only up to a
// declared size; a larger one is stored first and answered from the store
// (here a dir store: its file, with an ETag and ranges). A streamed miss
// answers the whole-body Range browsers send for media ("bytes=0-") with
// 200 and the whole body.
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
			p := newStack(t, stackOptions{allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, store: dir, streamLimit: c.limit})
			o := newTrickleOrigin(t, video, time.Second)
			src := o.URL + "/v.mp4"
			r := request(t, http.MethodGet, p.URL+"/v.mp4?url="+url.QueryEscape(src), "Range", "bytes=0-")
			key, _ := keysOf(t, src, variant.Original)
			if c.streamed {
				if r.status != http.StatusOK || !bytes.Equal(r.body, video) || r.header.Get("ETag") != "" {
					t.Fatalf("streamed: %d, %d bytes, ETag %q; want 200, the whole body, no ETag", r.status, len(r.body), r.header.Get("ETag"))
				}
				waitStored(t, dir, key, video)
				return
			}
			if r.status != http.StatusPartialContent || !bytes.Equal(r.body, video) || r.header.Get("ETag") == "" {
				t.Fatalf("stored first: %d, %d bytes, ETag %q; want 206 from the stored file", r.status, len(r.body), r.header.Get("ETag"))
			}
			if got, err := storedBytes(t, dir, key); err != nil || !bytes.Equal(got, video) {
				t.Errorf("stored %d bytes (%v) before answering, want the origin's", len(got), err)
			}
		})
	}
}

// TestStreamedMissPartialRange: a miss asked for part of the body (Safari's
// first request for a video is "bytes=0-1", and it plays only after a 206)
// is not streamed whole: it is stored first and answered 206 with just
// that part.
func TestStreamedMissPartialRange(t *testing.T) {
	video := testmedia.MP4(12 << 20)
	dir, err := store.NewDir(t.TempDir(), store.DirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := newStack(t, stackOptions{allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, store: dir})
	o := newTrickleOrigin(t, video, time.Second)
	src := o.URL + "/v.mp4"
	r := request(t, http.MethodGet, p.URL+"/v.mp4?url="+url.QueryEscape(src), "Range", "bytes=0-1")
	want := fmt.Sprintf("bytes 0-1/%d", len(video))
	if r.status != http.StatusPartialContent || !bytes.Equal(r.body, video[:2]) || r.header.Get("Content-Range") != want {
		t.Fatalf("bytes=0-1 on a miss: %d, %d bytes, Content-Range %q; want 206, 2 bytes, %q", r.status, len(r.body), r.header.Get("Content-Range"), want)
	}
	key, _ := keysOf(t, src, variant.Original)
	if got, err := storedBytes(t, dir, key); err != nil || !bytes.Equal(got, video) {
		t.Errorf("stored %d bytes (%v), want the origin's", len(got), err)
	}
}

// TestStreamedMissOriginCut: an origin that cuts the body at 50 % leaves
// no stored object (nor anything half written), and the client sees a
// broken transfer, not a clean short 200.
func TestStreamedMissOriginCut(t *testing.T) {
	video := testmedia.MP4(20 << 20)
	for _, sc := range streamStores() {
		t.Run(sc.name, func(t *testing.T) {
			ss := sc.open(t)
			p, _, _ := newService(t, ss.env)
			o := newTrickleOrigin(t, video, 4*time.Second)
			o.cutAt = len(video) / 2
			src := o.URL + "/v.mp4"
			s := streamGet(t, p.URL, src, 0, 0, nil)
			if s.status != http.StatusOK || s.err == nil {
				t.Fatalf("a body cut at 50%% answered %d with %d bytes and err %v, want a broken 200", s.status, len(s.body), s.err)
			}
			t.Logf("%s: client read %d bytes, then %v", ss.name, len(s.body), s.err)
			key, failKey := keysOf(t, src, variant.Original)
			// The store write is aborted as the cut arrives; give it time
			// to clean up, then nothing may be there.
			deadline := time.Now().Add(10 * time.Second)
			for ss.leftovers() != 0 && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if n := ss.leftovers(); n != 0 {
				t.Errorf("%d unfinished writes left behind", n)
			}
			if got, err := storedBytes(t, ss.st, key); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("after a cut body the key holds %d bytes (%v), want nothing", len(got), err)
			}
			// Remembered as any cut body is, a 502 for seconds; found two
			// seconds in, in the store too, for the other instances.
			if status, _, err := ss.st.Failure(t.Context(), failKey); err != nil || status != http.StatusBadGateway {
				t.Errorf("failure marker: %d, %v; want 502", status, err)
			}
		})
	}
}

// stuckStore's writes of variants never read their body and return only
// when their context ends (the tee gives up on them).
type stuckStore struct{ store.Store }

func (s stuckStore) Put(ctx context.Context, key string, m store.Meta, body io.Reader) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestStreamedMissStoreNeverStallsClient: a store that hangs or fails
// costs the client nothing: it gets every byte as the origin sends them,
// and nothing is stored.
func TestStreamedMissStoreNeverStallsClient(t *testing.T) {
	video := testmedia.MP4(20 << 20)
	for _, name := range []string{"stuck", "failing"} {
		t.Run(name, func(t *testing.T) {
			dir, err := store.NewDir(t.TempDir(), store.DirOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var st store.Store = stuckStore{dir}
			if name == "failing" {
				f := &faultyStore{Store: dir}
				f.broken.Store(true)
				st = f
			}
			p := newStack(t, stackOptions{allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, store: st})
			o := newTrickleOrigin(t, video, 4*time.Second)
			src := o.URL + "/v.mp4"
			s := streamGet(t, p.URL, src, 0, 0, nil)
			if s.err != nil || s.status != http.StatusOK || !bytes.Equal(s.body, video) {
				t.Fatalf("answered %d, %d bytes (err %v), want 200 and the origin's %d bytes", s.status, len(s.body), s.err, len(video))
			}
			_, oLast := o.times()
			lastAt := s.start.Add(s.total)
			t.Logf("%s store: the client's last byte %v after the origin's", name, lastAt.Sub(oLast).Round(time.Millisecond))
			// The store is waited for at most a second (teeGrace); a
			// client it stalled would wait out the store's StreamTimeout
			// (minutes). The margin is for a busy machine.
			if lastAt.Sub(oLast) > 5*time.Second {
				t.Errorf("the client finished %v after the origin: the store held it back", lastAt.Sub(oLast))
			}
			key, _ := keysOf(t, src, variant.Original)
			if got, err := storedBytes(t, dir, key); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("the key holds %d bytes (%v), want nothing", len(got), err)
			}
		})
	}
}

// TestStreamedMissSlowClient: a client that stops reading early does not
// hold the origin back: the download (and the store copy) completes while
// the client is paused, and the client then gets the rest from the store.
func TestStreamedMissSlowClient(t *testing.T) {
	video := testmedia.MP4(20 << 20)
	for _, sc := range streamStores() {
		t.Run(sc.name, func(t *testing.T) {
			ss := sc.open(t)
			p, _, _ := newService(t, ss.env)
			o := newTrickleOrigin(t, video, 4*time.Second)
			src := o.URL + "/v.mp4"
			key, _ := keysOf(t, src, variant.Original)
			s := streamGet(t, p.URL, src, 0, 1<<20, func() {
				select {
				case <-o.finished:
				case <-time.After(30 * time.Second):
					t.Error("the origin did not finish while the client was paused: the client paced it")
				}
				waitStored(t, ss.st, key, video)
			})
			if s.err != nil || s.status != http.StatusOK || !bytes.Equal(s.body, video) {
				t.Fatalf("answered %d, %d bytes (err %v), want 200 and the origin's %d bytes", s.status, len(s.body), s.err, len(video))
			}
		})
	}
}

// TestStreamedMissShared: requests for a URL that is streaming wait for
// its stored copy (see proxy's tee) instead of fetching it again.
func TestStreamedMissShared(t *testing.T) {
	video := testmedia.MP4(20 << 20)
	p, _, _ := newService(t, nil)
	o := newTrickleOrigin(t, video, 3*time.Second)
	src := o.URL + "/v.mp4"
	var wg sync.WaitGroup
	results := make([]streamed, 3)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 500 * time.Millisecond)
			results[i] = streamGet(t, p.URL, src, 0, 0, nil)
		}()
	}
	wg.Wait()
	for i, s := range results {
		if s.err != nil || s.status != http.StatusOK || !bytes.Equal(s.body, video) {
			t.Errorf("request %d: %d, %d bytes (err %v)", i, s.status, len(s.body), s.err)
		}
		t.Logf("request %d: first byte %v, last %v", i, s.firstByte.Round(time.Millisecond), s.total.Round(time.Millisecond))
	}
	if n := o.hits.Load(); n != 1 {
		t.Errorf("the origin was asked %d times, want once", n)
	}
}
