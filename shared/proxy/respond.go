package proxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/spool"
	"github.com/misskey-lambda/media-proxy/shared/store"
)

// cacheSuccess is what every stored or produced variant is served with:
// the bytes of a variant of a URL never change.
const cacheSuccess = "max-age=31536000, immutable"

// cacheStreamed is what a body streamed from the origin as it arrives is
// served with. Should the origin break off after the headers, the
// response ends without its last chunk (Lambda: with error trailers);
// whether CloudFront then keeps the short body as a complete one has not
// been measured on a real deployment, so a CDN may keep a streamed body a
// minute at most. The next request finds the stored copy, answered with
// cacheSuccess.
const cacheStreamed = "max-age=60"

// write writes rp.
func (h *Handler) write(w http.ResponseWriter, r *http.Request, rec *record, rp reply, fallback bool) {
	switch rp.kind {
	case replyError:
		h.writeError(w, r, rec, rp, fallback)
	case replyBytes:
		serveContent(w, r, rec, rp.meta, bytes.NewReader(rp.data), cacheSuccess)
	case replyEntry:
		h.writeEntry(w, r, rec, rp.entry, rp.body)
	case replyStream:
		h.writeStream(w, r, rec, rp.meta, rp.body, cacheStreamed)
	case replySpool:
		h.writeSpool(w, r, rec, rp.meta, rp.spool, fallback)
	}
}

func setSuccess(hd http.Header, m store.Meta) {
	hd.Set("Cache-Control", cacheSuccess)
	hd.Set("Content-Type", m.ContentType)
	hd.Set("Content-Disposition", m.Disposition)
	if m.ETag != "" {
		hd.Set("ETag", m.ETag)
	}
}

// serveContent answers with a seekable body through http.ServeContent,
// which brings HEAD, If-None-Match (304), Range (206, 416, multipart for
// several ranges) and If-Range against the ETag. cacheControl is
// cacheSuccess, or cacheStreamed for a body still arriving.
func serveContent(w http.ResponseWriter, r *http.Request, rec *record, m store.Meta, body io.ReadSeeker, cacheControl string) {
	setSuccess(w.Header(), m)
	w.Header().Set("Cache-Control", cacheControl)
	cw := &countingWriter{ResponseWriter: w}
	http.ServeContent(cw, r, "", time.Time{}, body)
	rec.status, rec.bytesOut = cw.status, cw.n
}

// writeEntry answers with a stored object: a redirect to it, or body, its
// bytes already opened by the policy.
func (h *Handler) writeEntry(w http.ResponseWriter, r *http.Request, rec *record, e *store.Entry, body io.Reader) {
	if e.RedirectURL != "" {
		w.Header().Set("Location", e.RedirectURL)
		w.Header().Set("Cache-Control", "max-age="+strconv.Itoa(int(e.RedirectMaxAge.Seconds())))
		rec.status = http.StatusFound
		w.WriteHeader(rec.status)
		return
	}
	if rs, ok := body.(io.ReadSeeker); ok {
		serveContent(w, r, rec, e.Meta, rs, cacheSuccess)
		return
	}
	// Not seekable (an object read through the store's API): the whole
	// body, which still honours If-None-Match.
	h.writeStream(w, r, rec, e.Meta, body, cacheSuccess)
}

// writeSpool answers from a download's spool, read as it grows. A GET
// waits for the first byte it asks for: a body that breaks before it
// gets the error, with a status. A body of known length then goes through
// http.ServeContent like a stored one (HEAD, ranges, If-Range), each
// write flushed as it is made, so a range is answered as soon as its
// bytes are there. A body of unknown length is streamed whole (a range
// waits for its end, which gives the length). m.ETag is set only when the
// body was complete as the request came: a body still arriving has no
// ETag yet, so If-None-Match never matches and If-Range with any tag gets
// the whole body (RFC 9110: a validator that cannot be matched), and it
// is cached as a streamed body is (cacheStreamed). A break after the
// headers aborts the response.
func (h *Handler) writeSpool(w http.ResponseWriter, r *http.Request, rec *record, m store.Meta, body *spool.Reader, fallback bool) {
	if r.Method != http.MethodHead {
		if err := body.Ready(firstWanted(r, m)); err != nil {
			rec.err = err
			h.writeError(w, r, rec, failed(err), fallback)
			return
		}
	}
	cc := cacheSuccess
	if m.ETag == "" {
		cc = cacheStreamed
	}
	if m.Size < 0 && r.Header.Get("Range") == "" {
		h.writeStream(w, r, rec, m, body, cc)
		return
	}
	serveContent(flushEach{w, http.NewResponseController(w)}, r, rec, m, body, cc)
	if err := body.Err(); err != nil {
		rec.aborted, rec.err = true, err
	}
}

// firstWanted is the offset of the first byte r's answer sends: the
// lowest start of its ranges, 0 without (or when If-Range cannot match,
// or the ranges do not parse, which http.ServeContent answers itself).
func firstWanted(r *http.Request, m store.Meta) int64 {
	spec, ok := strings.CutPrefix(r.Header.Get("Range"), "bytes=")
	if !ok || (r.Header.Get("If-Range") != "" && m.ETag == "") {
		return 0
	}
	first := int64(-1)
	for part := range strings.SplitSeq(spec, ",") {
		a, _, _ := strings.Cut(strings.TrimSpace(part), "-")
		var start int64
		if a == "" {
			// A suffix: the last n bytes.
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(part), "-")), 10, 64)
			if err != nil || m.Size < 0 {
				return 0
			}
			start = max(m.Size-n, 0)
		} else {
			v, err := strconv.ParseInt(a, 10, 64)
			if err != nil {
				return 0
			}
			start = v
		}
		if first < 0 || start < first {
			first = start
		}
	}
	return max(first, 0)
}

// flushEach is a ResponseWriter that flushes after every write.
type flushEach struct {
	http.ResponseWriter
	rc *http.ResponseController
}

func (f flushEach) Write(p []byte) (int, error) {
	n, err := f.ResponseWriter.Write(p)
	if err == nil {
		if ferr := f.rc.Flush(); !errors.Is(ferr, http.ErrNotSupported) {
			err = ferr
		}
	}
	return n, err
}

func (f flushEach) Unwrap() http.ResponseWriter { return f.ResponseWriter }

// writeStream answers 200 with a body read as it goes, ignoring Range: a
// stream cannot seek. A read error after the headers aborts the response.
// Each write is flushed, so bytes leave as they arrive. cacheControl is
// cacheSuccess for a stored object, cacheStreamed for one still arriving.
func (h *Handler) writeStream(w http.ResponseWriter, r *http.Request, rec *record, m store.Meta, body io.Reader, cacheControl string) {
	if notModified(w, r, rec, m.ETag) {
		return
	}
	setSuccess(w.Header(), m)
	w.Header().Set("Cache-Control", cacheControl)
	if m.Size >= 0 {
		w.Header().Set("Content-Length", strconv.FormatInt(m.Size, 10))
	}
	rec.status = http.StatusOK
	w.WriteHeader(rec.status)
	fw := flushEach{w, http.NewResponseController(w)}
	fw.rc.Flush()
	if r.Method == http.MethodHead {
		return
	}
	n, err := io.Copy(fw, body)
	rec.bytesOut = n
	if err != nil {
		rec.aborted, rec.err = true, err
	}
}

// notModified answers 304 when If-None-Match names etag (for bodies that
// do not go through http.ServeContent).
func notModified(w http.ResponseWriter, r *http.Request, rec *record, etag string) bool {
	if etag == "" || r.Header.Get("If-None-Match") == "" {
		return false
	}
	for _, t := range splitETags(r.Header.Get("If-None-Match")) {
		if t == etag || t == "*" {
			w.Header().Set("ETag", etag)
			w.Header().Set("Cache-Control", cacheSuccess)
			rec.status = http.StatusNotModified
			w.WriteHeader(rec.status)
			return true
		}
	}
	return false
}

// splitETags reads an If-None-Match list; weak tags compare by their
// opaque part, as RFC 9110's weak comparison says.
func splitETags(s string) []string {
	tags := strings.Split(s, ",")
	for i, t := range tags {
		tags[i] = strings.TrimPrefix(strings.TrimSpace(t), "W/")
	}
	return tags
}

// writeBody writes a complete in-memory body (none for HEAD) with 200.
func writeBody(w http.ResponseWriter, r *http.Request, b []byte) int64 {
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return 0
	}
	n, _ := w.Write(b)
	return int64(n)
}

// countingWriter records the status and body bytes written, and keeps a
// 416's headers to what an error needs (no year-long caching of it, no
// file name).
type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (c *countingWriter) WriteHeader(status int) {
	if c.status == 0 {
		c.status = status
		if status == http.StatusRequestedRangeNotSatisfiable {
			c.Header().Set("Cache-Control", "no-store")
			c.Header().Del("Content-Disposition")
		}
	}
	c.ResponseWriter.WriteHeader(status)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// maxWriteStall is the longest a response may go without a write making
// progress, whatever WriteTimeout says: 0 means this, not "never", so a
// client that stops reading is always dropped and never pins a response
// (nor what it holds) for good.
const maxWriteStall = 10 * time.Minute

// writeStall is how long a response may go without progress: WriteTimeout,
// or maxWriteStall for 0.
func writeStall(d time.Duration) time.Duration {
	if d <= 0 {
		return maxWriteStall
	}
	return d
}

// deadlines wraps w so that every write, header and flush must make
// progress within the handler's write stall: a client that stops reading
// is dropped instead of pinning its body in memory, while a slow but
// reading client can take as long as it needs. The deadline moves with
// each of them, not once from the request's start, so an answer that
// waited (for a slow origin, a decode slot, a stored copy) still gets the
// whole stall to leave. extend moves it once more: for what net/http
// writes after the handler returns (a HEAD's, a 302's or a 304's headers,
// a chunked body's end). Where the connection has no deadlines (Lambda's
// adapter), w is returned as is.
func (h *Handler) deadlines(w http.ResponseWriter) (dw http.ResponseWriter, extend func()) {
	rc := http.NewResponseController(w)
	d := &deadlineWriter{ResponseWriter: w, rc: rc, idle: h.writeStall}
	if err := d.extend(); errors.Is(err, http.ErrNotSupported) {
		return w, func() {}
	}
	return d, func() { d.extend() }
}

// writeChunk is how much one write may carry before the deadline moves.
const writeChunk = 64 << 10

type deadlineWriter struct {
	http.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration
}

func (d *deadlineWriter) extend() error {
	return d.rc.SetWriteDeadline(time.Now().Add(d.idle))
}

func (d *deadlineWriter) WriteHeader(status int) {
	d.extend()
	d.ResponseWriter.WriteHeader(status)
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	var written int
	for len(p) > 0 {
		chunk := p[:min(len(p), writeChunk)]
		d.extend()
		n, err := d.ResponseWriter.Write(chunk)
		written += n
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// FlushError is what http.ResponseController.Flush calls.
func (d *deadlineWriter) FlushError() error {
	d.extend()
	return d.rc.Flush()
}

func (d *deadlineWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }
