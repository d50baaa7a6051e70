// Command inflight measures how the local server answers requests for a
// large miss while it downloads: a loopback origin trickles a video, and
// requests arrive as a Misskey timeline's viewers would (a second GET, a
// HEAD, a GET after a HEAD, Safari's bytes=0-1 probe, a range in the
// middle). It prints one markdown table.
//
//	go run ./scripts/bench.d/inflight -proxy bin/proxy [-size 20971520] [-over 16s]
//
// The proxy binary runs with a fresh dir store (or MEDIA_PROXY_STORE from
// the environment) and every MEDIA_PROXY_* variable of the environment.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/testmedia"
)

func main() {
	bin := flag.String("proxy", "bin/proxy", "the proxy binary")
	size := flag.Int("size", 20<<20, "video size in bytes")
	over := flag.Duration("over", 16*time.Second, "how long the origin takes to send it")
	flag.Parse()
	log.SetFlags(0)

	body := testmedia.MP4(*size)
	o := newOrigin(body, *over)
	proxyURL, stop := startProxy(*bin)
	defer stop()

	type result struct {
		name, answer string
	}
	var mu sync.Mutex
	var results []result
	add := func(name, answer string) {
		mu.Lock()
		results = append(results, result{name, answer})
		mu.Unlock()
	}
	u := func(path string) string {
		return proxyURL + "/v.mp4?url=" + url.QueryEscape(o.url+path)
	}
	client := &http.Client{Timeout: 3 * *over, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	var wg sync.WaitGroup
	run := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	// Each case has its own URL, so they run side by side.
	run(func() {
		go timed(client, "GET", u("/a.mp4"), "")
		time.Sleep(time.Second)
		r := timed(client, "GET", u("/a.mp4"), "")
		add("a second GET (1 s after the first)", r.String())
	})
	run(func() {
		go timed(client, "GET", u("/b.mp4"), "")
		time.Sleep(time.Second)
		r := timed(client, "HEAD", u("/b.mp4"), "")
		add("a HEAD (1 s after the first GET)", r.String())
	})
	run(func() {
		go timed(client, "HEAD", u("/c.mp4"), "")
		time.Sleep(300 * time.Millisecond)
		r := timed(client, "GET", u("/c.mp4"), "")
		add("a GET 0.3 s after a HEAD that started the fetch", r.String())
	})
	run(func() {
		r := timed(client, "GET", u("/d.mp4"), "bytes=0-1")
		add("Safari's bytes=0-1 probe, first request for the URL", r.String())
	})
	run(func() {
		go timed(client, "GET", u("/e.mp4"), "")
		time.Sleep(time.Second)
		r := timed(client, "GET", u("/e.mp4"), "bytes=0-1")
		add("Safari's bytes=0-1 probe, 1 s after a GET", r.String())
	})
	run(func() {
		start := time.Now()
		r := timed(client, "GET", u("/f.mp4"), "bytes=1000000-1999999")
		sent := o.sentAt("/f.mp4", 2000000).Sub(start)
		add("bytes=1000000-1999999, first request for the URL", fmt.Sprintf("%s (the origin had sent byte 1999999 at %v)", r, sent.Round(time.Millisecond)))
	})
	run(func() {
		r := timed(client, "GET", u("/g.mp4"), "")
		add("the first GET", r.String())
	})
	wg.Wait()

	fmt.Printf("%d bytes trickled over %v by a loopback origin; times from each request\n\n", *size, *over)
	fmt.Println("| request | answered |")
	fmt.Println("|---|---|")
	for _, r := range results {
		fmt.Printf("| %s | %s |\n", r.name, r.answer)
	}
}

// measured is one request's view.
type measured struct {
	status    int
	length    string
	headers   time.Duration // status line and headers
	firstByte time.Duration // first body byte (0: none)
	total     time.Duration
	bytes     int64
	err       error
}

func (m measured) String() string {
	if m.status == 0 {
		return fmt.Sprintf("no answer after %v (%v)", m.total.Round(time.Millisecond), m.err)
	}
	s := fmt.Sprintf("%d after %v", m.status, m.headers.Round(time.Millisecond))
	if m.firstByte > 0 {
		s += fmt.Sprintf(", first byte %v", m.firstByte.Round(time.Millisecond))
	}
	s += fmt.Sprintf(", %d bytes by %v", m.bytes, m.total.Round(time.Millisecond))
	if m.length != "" {
		s += ", Content-Length " + m.length
	}
	if m.err != nil {
		s += fmt.Sprintf(" (%v)", m.err)
	}
	return s
}

func timed(c *http.Client, method, u, rangeHeader string) measured {
	req, err := http.NewRequestWithContext(context.Background(), method, u, nil)
	if err != nil {
		log.Fatal(err)
	}
	if rangeHeader != "" {
		req.Header.Set("Range", rangeHeader)
	}
	start := time.Now()
	var m measured
	resp, err := c.Do(req)
	if err != nil {
		m.total, m.err = time.Since(start), err
		return m
	}
	defer resp.Body.Close()
	m.status, m.headers, m.length = resp.StatusCode, time.Since(start), resp.Header.Get("Content-Length")
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 && m.firstByte == 0 {
			m.firstByte = time.Since(start)
		}
		m.bytes += int64(n)
		if err != nil {
			if err != io.EOF {
				m.err = err
			}
			break
		}
	}
	m.total = time.Since(start)
	return m
}

// origin trickles body in 256 KiB pieces over a given time, with its
// length declared, and notes when each path's bytes went out.
type origin struct {
	url  string
	body []byte
	over time.Duration

	mu   sync.Mutex
	sent map[string][]time.Time // path -> when each piece was written
}

const piece = 256 << 10

func newOrigin(body []byte, over time.Duration) *origin {
	o := &origin{body: body, over: over, sent: map[string][]time.Time{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	o.url = "http://" + ln.Addr().String()
	pieces := (len(body) + piece - 1) / piece
	pause := over / time.Duration(pieces)
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		rc := http.NewResponseController(w)
		for off := 0; off < len(body); off += piece {
			if _, err := w.Write(body[off:min(off+piece, len(body))]); err != nil {
				return
			}
			rc.Flush()
			o.mu.Lock()
			o.sent[r.URL.Path] = append(o.sent[r.URL.Path], time.Now())
			o.mu.Unlock()
			time.Sleep(pause)
		}
	}))
	return o
}

// sentAt is when the origin had sent the first n bytes of path.
func (o *origin) sentAt(path string, n int) time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	i := (n + piece - 1) / piece
	if s := o.sent[path]; len(s) >= i && i > 0 {
		return s[i-1]
	}
	return time.Time{}
}

// startProxy runs the binary on a free port and waits for its health text.
func startProxy(bin string) (string, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	dir, err := os.MkdirTemp("", "inflight-")
	if err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"PORT="+port,
		"MEDIA_PROXY_BIND_ADDRESS=127.0.0.1",
		"MEDIA_PROXY_ALLOWED_PRIVATE_NETWORKS=127.0.0.0/8",
		"MEDIA_PROXY_ALLOWED_PORTS=1-65535",
		"MEDIA_PROXY_QUEUE=none",
		"MEDIA_PROXY_LOG_LEVEL=warn",
	)
	if os.Getenv("MEDIA_PROXY_STORE") == "" {
		cmd.Env = append(cmd.Env, "MEDIA_PROXY_STORE=dir:"+dir)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	base := "http://127.0.0.1:" + port
	for i := 0; ; i++ {
		resp, err := http.Get(base + "/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if i > 300 {
			log.Fatalf("the proxy did not start: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return base, func() {
		cmd.Process.Kill()
		cmd.Wait()
		os.RemoveAll(dir)
	}
}
