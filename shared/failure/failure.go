// Package failure decides which failed fetches and conversions are worth
// remembering, and for how long. The proxy and the precompute jobs apply
// the same rules, so a request and a job never disagree about a source.
//
// Only failures of the source (the fetch or the transform) are
// remembered; the proxy's own faults (a store or queue error, an exhausted
// memory budget) never are, since they say nothing about the URL.
package failure

import (
	"net/http"
	"time"
)

const (
	// PermanentTTL is how long a failure no retry can fix is remembered:
	// the source is gone (404, 410) or refused by the remote (other 4xx),
	// its type is refused, it is over the size cap, undecodable, or over
	// the pixel, frame or time limits. A dead emoji requested by every
	// viewer then costs one fetch per five minutes.
	PermanentTTL = 5 * time.Minute
	// TransientTTL is how long a failure that may pass is remembered: a
	// remote 5xx, an unreachable or timed-out origin. Long enough to spare
	// a struggling origin a burst of identical requests, short enough that
	// an origin back on its feet is used again at once.
	TransientTTL = 10 * time.Second
)

// TTL is how long a failure answered with HTTP status is remembered; 0
// means not at all. 408 and 429 are the remote asking us to come back
// later, which a marker would turn into a refusal of every later request.
func TTL(status int) time.Duration {
	switch {
	case status == http.StatusRequestTimeout, status == http.StatusTooManyRequests:
		return 0
	case status >= 400 && status < 500:
		return PermanentTTL
	case status >= 500 && status < 600:
		return TransientTTL
	}
	return 0
}

// Permanent reports whether a failure with status cannot pass by retrying.
func Permanent(status int) bool { return TTL(status) == PermanentTTL }
