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

// ExpensiveAfter is how long a failure must have taken to find for a
// marker in the store to pay: a stored marker costs a PUT (and a HEAD on
// every later miss of any instance), finding the failure again costs
// this much compute. A remote 404 found in 50 ms is cheaper to find
// again than to store, so a flood of such URLs writes nothing; a timeout,
// a slow transform or a long download that ends in a refusal is stored
// for every instance.
const ExpensiveAfter = time.Second

// Stored reports whether a failure that took took to find is worth a
// marker in the store, besides the process's own memory.
func Stored(took time.Duration) bool { return took >= ExpensiveAfter }
