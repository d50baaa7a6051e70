// Package proxytest holds what tests of the proxy's downloads share: an
// origin that trickles a large body, as a slow remote server sends a video.
// The proxy's own tests, the Lambda function's, the browser test and the
// in-flight benchmark all use it.
package proxytest

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Piece is how much of the body a Trickle sends at a time.
const Piece = 256 << 10

// Trickle serves one body at every path, its length declared, in Piece
// bytes at a time with a pause between them, so that it takes about the
// time it was given. It can hold the body back at given offsets until the
// test lets it go, and cut it; it counts its requests and notes when its
// bytes went out.
type Trickle struct {
	*httptest.Server
	Body []byte
	// CutAt > 0 drops the connection once that many bytes have gone out,
	// as an origin that breaks mid-body. Set it before the first request.
	CutAt int

	pause time.Duration
	hits  atomic.Int64
	holds []*Hold
	// sending is how far the body has gone out: set before each write,
	// so no client can have a byte past it.
	sending atomic.Int64

	mu           sync.Mutex
	first, last  time.Time
	sent         map[string][]time.Time // path -> when each piece went out
	finished     chan struct{}
	finishedOnce sync.Once
}

// Hold keeps a Trickle's body from going past an offset until let go.
type Hold struct {
	at      int
	reached chan struct{}
	once    sync.Once
	release chan struct{}
	letOnce sync.Once
}

// Reached is closed once a response got to the hold's offset.
func (h *Hold) Reached() <-chan struct{} { return h.reached }

// Let lets the body go on past the hold.
func (h *Hold) Let() { h.letOnce.Do(func() { close(h.release) }) }

// StartTrickle starts an origin sending body over about over, closed when
// the test ends.
func StartTrickle(t testing.TB, body []byte, over time.Duration) *Trickle {
	o := NewTrickle(body, over)
	t.Cleanup(o.Close)
	return o
}

// NewTrickle starts an origin sending body over about over; the caller
// closes it.
func NewTrickle(body []byte, over time.Duration) *Trickle {
	pieces := (len(body) + Piece - 1) / Piece
	o := &Trickle{Body: body, pause: over / time.Duration(max(pieces, 1)), sent: map[string][]time.Time{}, finished: make(chan struct{})}
	o.Server = httptest.NewServer(http.HandlerFunc(o.serve))
	return o
}

func (o *Trickle) serve(w http.ResponseWriter, r *http.Request) {
	o.hits.Add(1)
	w.Header().Set("Content-Length", strconv.Itoa(len(o.Body)))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := o.Body
	if o.CutAt > 0 {
		send = send[:o.CutAt]
	}
	for off := 0; off < len(send); {
		end := min(off+Piece, len(send))
		for _, h := range o.holds {
			if h.at > off && h.at < end {
				end = h.at
			}
			if h.at == off {
				h.once.Do(func() { close(h.reached) })
				select {
				case <-h.release:
				case <-r.Context().Done():
					return
				}
			}
		}
		o.sending.Store(int64(end))
		if _, err := w.Write(send[off:end]); err != nil {
			return
		}
		rc.Flush()
		off = end
		now := time.Now()
		o.mu.Lock()
		if o.first.IsZero() {
			o.first = now
		}
		if off == len(send) {
			o.last = now
		}
		o.sent[r.URL.Path] = append(o.sent[r.URL.Path], now)
		o.mu.Unlock()
		if off < len(send) {
			time.Sleep(o.pause)
		}
	}
	o.finishedOnce.Do(func() { close(o.finished) })
	if o.CutAt > 0 {
		if conn, _, err := rc.Hijack(); err == nil {
			conn.Close()
		}
	}
}

// HoldAt makes the body wait at offset at until the hold is let go. Call
// it before the first request.
func (o *Trickle) HoldAt(at int) *Hold {
	h := &Hold{at: at, reached: make(chan struct{}), release: make(chan struct{})}
	o.holds = append(o.holds, h)
	return h
}

// Holds are the holds made with HoldAt, in order.
func (o *Trickle) Holds() []*Hold { return o.holds }

// Hits is how many requests the origin has had.
func (o *Trickle) Hits() int64 { return o.hits.Load() }

// Sending is how far the body has gone out (or is going out now).
func (o *Trickle) Sending() int64 { return o.sending.Load() }

// Finished is closed once a response has sent everything it was to send.
func (o *Trickle) Finished() <-chan struct{} { return o.finished }

// Held reports whether no response has sent everything yet.
func (o *Trickle) Held() bool {
	select {
	case <-o.finished:
		return false
	default:
		return true
	}
}

// Times waits (at most 10 s) for a response to have sent everything (a
// client may read the last byte before the origin notes it), and says
// when the first and the last piece went out.
func (o *Trickle) Times() (first, last time.Time) {
	select {
	case <-o.finished:
	case <-time.After(10 * time.Second):
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.first, o.last
}

// SentAt is when the first n bytes of path had gone out (zero: not yet),
// for an origin without holds (which split pieces).
func (o *Trickle) SentAt(path string, n int) time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	i := (n + Piece - 1) / Piece
	if s := o.sent[path]; len(s) >= i && i > 0 {
		return s[i-1]
	}
	return time.Time{}
}

// Close lets every hold go and stops the server.
func (o *Trickle) Close() {
	for _, h := range o.holds {
		h.Let()
	}
	o.Server.Close()
}
