package proxy

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/store"
)

// TestReplies writes every kind of success reply for GET and HEAD, with
// and without If-None-Match, Range and If-Range, and checks status,
// headers and body against what HTTP says.
func TestReplies(t *testing.T) {
	body := []byte("0123456789abcdefghij") // 20 bytes
	meta := store.Meta{ContentType: "video/mp4", Disposition: `inline; filename="v.mp4"`, ETag: `"14-abc"`, Size: int64(len(body))}
	h := New(Config{Headers: Headers{ContentSecurityPolicy: "default-src 'none'", AllowOrigin: "*"}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})

	kinds := map[string]func() reply{
		"bytes": func() reply { return reply{kind: replyBytes, meta: meta, data: body} },
		"entry": func() reply {
			return reply{kind: replyEntry, entry: &store.Entry{Meta: meta}, body: readSeekCloser{bytes.NewReader(body)}}
		},
		// A store body that cannot seek, and a stream from the origin:
		// whole bodies only.
		"entry-unseekable": func() reply {
			return reply{kind: replyEntry, entry: &store.Entry{Meta: meta}, body: io.NopCloser(bytes.NewReader(body))}
		},
		"stream": func() reply { return reply{kind: replyStream, meta: meta, body: bytes.NewReader(body)} },
	}
	type want struct {
		status int
		body   string
		crange string
	}
	cases := []struct {
		name   string
		header []string
		seek   want // bytes, entry
		whole  want // entry-unseekable, stream
	}{
		{"plain", nil, want{200, string(body), ""}, want{200, string(body), ""}},
		{"if-none-match", []string{"If-None-Match", `"14-abc"`}, want{304, "", ""}, want{304, "", ""}},
		{"if-none-match weak list", []string{"If-None-Match", `"x", W/"14-abc"`}, want{304, "", ""}, want{304, "", ""}},
		{"if-none-match other", []string{"If-None-Match", `"x"`}, want{200, string(body), ""}, want{200, string(body), ""}},
		{"range a-b", []string{"Range", "bytes=2-5"}, want{206, "2345", "bytes 2-5/20"}, want{200, string(body), ""}},
		{"range a-", []string{"Range", "bytes=15-"}, want{206, "fghij", "bytes 15-19/20"}, want{200, string(body), ""}},
		{"range -n", []string{"Range", "bytes=-3"}, want{206, "hij", "bytes 17-19/20"}, want{200, string(body), ""}},
		{"range past the end", []string{"Range", "bytes=30-40"}, want{416, "", "bytes */20"}, want{200, string(body), ""}},
		{"if-range matches", []string{"Range", "bytes=0-1", "If-Range", `"14-abc"`}, want{206, "01", "bytes 0-1/20"}, want{200, string(body), ""}},
		{"if-range stale", []string{"Range", "bytes=0-1", "If-Range", `"old"`}, want{200, string(body), ""}, want{200, string(body), ""}},
	}
	for kind, mk := range kinds {
		for _, c := range cases {
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				t.Run(kind+"/"+c.name+"/"+method, func(t *testing.T) {
					w := c.seek
					if kind == "entry-unseekable" || kind == "stream" {
						w = c.whole
					}
					req := httptest.NewRequest(method, "/v.mp4?url=x", nil)
					for i := 0; i+1 < len(c.header); i += 2 {
						req.Header.Set(c.header[i], c.header[i+1])
					}
					rec := httptest.NewRecorder()
					r := &record{}
					h.write(rec, req, r, mk(), false)
					res := rec.Result()
					got, _ := io.ReadAll(res.Body)
					if res.StatusCode != w.status || r.status != w.status {
						t.Fatalf("status %d (logged %d), want %d", res.StatusCode, r.status, w.status)
					}
					wantBody := w.body
					if method == http.MethodHead {
						wantBody = ""
					}
					if w.status == 416 {
						if !strings.Contains(res.Header.Get("Cache-Control"), "no-store") || res.Header.Get("Content-Disposition") != "" {
							t.Errorf("416 headers: %v", res.Header)
						}
					} else if string(got) != wantBody {
						t.Errorf("body %q, want %q", got, wantBody)
					}
					if cr := res.Header.Get("Content-Range"); cr != w.crange {
						t.Errorf("Content-Range %q, want %q", cr, w.crange)
					}
					switch w.status {
					case 200, 206:
						// A body still arriving from the origin is cached
						// briefly (cacheStreamed); one from the store, a year.
						cache := cacheSuccess
						if kind == "stream" {
							cache = cacheStreamed
						}
						if res.Header.Get("ETag") != meta.ETag || res.Header.Get("Cache-Control") != cache || res.Header.Get("Content-Type") != meta.ContentType {
							t.Errorf("success headers: %v", res.Header)
						}
						if n := len(w.body); res.Header.Get("Content-Length") != strconv.Itoa(n) {
							t.Errorf("Content-Length %q, want %d", res.Header.Get("Content-Length"), n)
						}
						if (kind == "bytes" || kind == "entry") && res.Header.Get("Accept-Ranges") != "bytes" {
							t.Errorf("no Accept-Ranges on a seekable body: %v", res.Header)
						}
					case 304:
						if res.Header.Get("ETag") != meta.ETag || len(got) != 0 {
							t.Errorf("304: %v, %d bytes", res.Header, len(got))
						}
					}
				})
			}
		}
	}
}

type readSeekCloser struct{ *bytes.Reader }

func (readSeekCloser) Close() error { return nil }

func TestRedirectReply(t *testing.T) {
	h := New(Config{})
	rec := httptest.NewRecorder()
	r := &record{}
	h.write(rec, httptest.NewRequest("GET", "/x", nil), r, reply{kind: replyEntry, entry: &store.Entry{RedirectURL: "https://cdn.example/v1/emoji/ab", RedirectMaxAge: time.Hour}}, false)
	if rec.Code != http.StatusFound || rec.Header().Get("Location") != "https://cdn.example/v1/emoji/ab" || rec.Header().Get("Cache-Control") != "max-age=3600" {
		t.Errorf("redirect: %d %v", rec.Code, rec.Header())
	}
}

func TestErrorReplies(t *testing.T) {
	h := New(Config{})
	for _, c := range []struct {
		rp          reply
		status      int
		cache, wait string
	}{
		{errorReply(http.StatusBadRequest), 400, "max-age=300", ""},
		{reply{status: 404, source: true}, 404, "max-age=300", ""},
		{reply{status: 502, source: true}, 502, "max-age=10", ""},
		{reply{status: 504, source: true}, 504, "max-age=10", ""},
		{reply{status: 429, source: true}, 429, "no-store", ""},
		{reply{status: 502}, 502, "no-store", ""}, // a store fault
		{reply{status: 503, source: true, retryAfter: 90 * time.Second}, 503, "no-store", "90"},
		{reply{status: 503, retryAfter: 1500 * time.Millisecond}, 503, "no-store", "2"},
	} {
		rec := httptest.NewRecorder()
		h.writeError(rec, httptest.NewRequest("GET", "/x", nil), &record{}, c.rp, false)
		if rec.Code != c.status || rec.Header().Get("Cache-Control") != c.cache || rec.Header().Get("Retry-After") != c.wait {
			t.Errorf("%+v: %d, Cache-Control %q, Retry-After %q", c.rp, rec.Code, rec.Header().Get("Cache-Control"), rec.Header().Get("Retry-After"))
		}
	}
	// The fallback image is cached no longer than the error it replaces.
	rec := httptest.NewRecorder()
	h.writeError(rec, httptest.NewRequest("GET", "/x", nil), &record{}, reply{status: 502, source: true}, true)
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "image/png" || rec.Header().Get("Cache-Control") != "max-age=10" {
		t.Errorf("fallback: %d %v", rec.Code, rec.Header())
	}
}

// TestNoWriteTimeoutStillBounded: MEDIA_PROXY_WRITE_TIMEOUT=0 does not
// mean never: a response that makes no progress is dropped after
// maxWriteStall. (With no deadline at all, a client that never reads held
// its response, and what the response holds, for good.) The stall is
// shortened here to see the drop happen.
func TestNoWriteTimeoutStillBounded(t *testing.T) {
	h := New(Config{WriteTimeout: 0})
	if h.writeStall != maxWriteStall {
		t.Fatalf("WriteTimeout 0: responses may stall %v, want %v", h.writeStall, maxWriteStall)
	}
	h.writeStall = 200 * time.Millisecond
	done := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dw, extend := h.deadlines(w)
		_, err := dw.Write(make([]byte, 64<<20))
		extend()
		done <- err
	}))
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: proxy\r\n\r\n") // and never read
	select {
	case err := <-done:
		if err == nil {
			t.Error("64 MiB written to a client that reads nothing")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a client that never reads still holds its response after 30 s")
	}
}
