// Package problem is the proxy's one error type: a failure made where it
// happens, carrying the HTTP status the client gets, and Status, the one
// function that maps any error to a status. The fetcher, the pipeline,
// the HTTP handler and the precompute jobs all use it, so they never
// disagree about a failure.
package problem

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// StatusClientGone is the status logged for work whose client went away
// (its context was canceled): nobody sees the answer. It is nginx's
// "client closed request"; the work's own deadline is 504.
const StatusClientGone = 499

// Error is a failure with what the client is to be told. Its text is for
// logs: the client gets the status (and its status text) only.
type Error struct {
	// Status is the HTTP status answered.
	Status int
	// Msg says what went wrong, without the cause; may be empty.
	Msg string
	// RetryAfter, when set, is when to come back: the origin said so (429
	// or 503 with Retry-After), or the proxy is out of memory budget.
	RetryAfter time.Duration
	// Source is set when fetching or converting the source failed, which
	// says something about the URL (see package failure); otherwise the
	// proxy could not do the work just now and nothing is to be remembered.
	Source bool
	// Err is the cause; may be nil.
	Err error
}

func (e *Error) Error() string {
	switch {
	case e.Msg == "":
		return fmt.Sprintf("%d: %v", e.Status, e.Err)
	case e.Err == nil:
		return e.Msg
	}
	return e.Msg + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Status is the HTTP status for err: the first *Error's in its chain; a
// canceled context (the client went away) is StatusClientGone, a deadline
// 504, anything else 502 (the proxy could not get an answer). nil is 200.
func Status(err error) int {
	var e *Error
	switch {
	case err == nil:
		return http.StatusOK
	case errors.As(err, &e):
		return e.Status
	case errors.Is(err, context.Canceled):
		return StatusClientGone
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// RetryAfter is the Retry-After of the first *Error in err's chain, or 0.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// IsSource reports whether err is a failure of the source itself.
func IsSource(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Source
}
