package proxy

import (
	"net/http"
	"strconv"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/failure"
)

// errorCacheControl is how long an error may be cached: as long as the
// proxy remembers it (five minutes for a failure no retry can fix, a few
// seconds for one that may pass; for a failure remembered earlier, what
// is left of that), and not at all when it says nothing about the source
// (a store fault, no memory budget free, an origin asking to come back
// later), so a CDN never keeps a passing fault for minutes.
func errorCacheControl(rp reply) string {
	if rp.source && rp.retryAfter == 0 {
		ttl := failure.TTL(rp.status)
		if rp.left > 0 && ttl > 0 {
			ttl = min(rp.left, ttl)
		}
		if ttl > 0 {
			return "max-age=" + strconv.Itoa(int(ttl/time.Second))
		}
	}
	return "no-store"
}

// writeError answers rp's status with a short status text (never
// internals), or with fallback the placeholder image and 200.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, rec *record, rp reply, fallback bool) {
	hd := w.Header()
	hd.Set("Cache-Control", errorCacheControl(rp))
	if fallback {
		hd.Set("Content-Type", "image/png")
		hd.Set("Content-Disposition", `inline; filename="fallback.png"`)
		rec.status = http.StatusOK
		rec.bytesOut = writeBody(w, r, h.placeholder)
		return
	}
	if rp.retryAfter > 0 {
		hd.Set("Retry-After", strconv.Itoa(int((rp.retryAfter+time.Second-1)/time.Second)))
	}
	body := []byte(http.StatusText(rp.status) + "\n")
	hd.Set("Content-Type", "text/plain; charset=utf-8")
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	rec.status = rp.status
	w.WriteHeader(rp.status)
	if r.Method != http.MethodHead {
		w.Write(body)
		rec.bytesOut = int64(len(body))
	}
}
