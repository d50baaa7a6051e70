package fetch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrBlocked: the destination address is refused by the SSRF policy.
	ErrBlocked = errors.New("destination address is not allowed")
	// ErrTooLarge: the response is larger than Config.MaxSize.
	ErrTooLarge = errors.New("response too large")
	// ErrBadURL: the URL is not an absolute http(s) URL we are willing to fetch.
	ErrBadURL = errors.New("invalid URL")
	// ErrTooManyRedirects: more than Config.MaxRedirects redirects.
	ErrTooManyRedirects = errors.New("too many redirects")
	// ErrTimeout: a connect, response-header or overall deadline passed.
	ErrTimeout = errors.New("timed out")
	// ErrRemoteStatus: the remote answered with a non-2xx status.
	ErrRemoteStatus = errors.New("unexpected remote status")
)

// Error carries the HTTP status the proxy should answer with.
type Error struct {
	Status int    // HTTP status for the proxy's own response
	Msg    string // what went wrong, without the cause
	Err    error  // cause; may be nil
	// RetryAfter is the origin's Retry-After (capped at one hour) when it
	// answered 429 or 503 with a valid one; 0 otherwise.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Msg
	}
	return e.Msg + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// StatusOf returns the status carried by the first *Error in err's chain,
// or 0 if there is none.
func StatusOf(err error) int {
	var fe *Error
	if errors.As(err, &fe) {
		return fe.Status
	}
	return 0
}

func badURL(msg string, err error) *Error {
	if err == nil {
		err = ErrBadURL
	} else {
		err = fmt.Errorf("%w: %w", ErrBadURL, err)
	}
	return &Error{Status: http.StatusBadRequest, Msg: msg, Err: err}
}

func blocked(host string, addr fmt.Stringer) *Error {
	msg := "refusing to connect to " + addr.String()
	if host != "" && host != addr.String() {
		msg = fmt.Sprintf("refusing to connect to %s (%s)", host, addr)
	}
	return &Error{Status: http.StatusForbidden, Msg: msg, Err: ErrBlocked}
}

func tooLarge(limit int64) *Error {
	return &Error{
		Status: http.StatusRequestEntityTooLarge,
		Msg:    fmt.Sprintf("response exceeds %d bytes", limit),
		Err:    ErrTooLarge,
	}
}

// classify wraps a transport-level error in an *Error with the status the
// proxy should answer with. ctx is the request context, whose deadline is the
// overall timeout.
func classify(ctx context.Context, msg string, err error) *Error {
	var fe *Error
	if errors.As(err, &fe) {
		// Raised by our own hooks (dial policy, redirect checks, size limit);
		// keep their status but the full chain for the message.
		return &Error{Status: fe.Status, Msg: msg, Err: err}
	}
	if isTimeout(ctx, err) {
		return &Error{Status: http.StatusGatewayTimeout, Msg: msg, Err: fmt.Errorf("%w: %w", ErrTimeout, err)}
	}
	// Refused, reset, DNS failure, TLS failure, caller cancellation...
	return &Error{Status: http.StatusBadGateway, Msg: msg, Err: err}
}

func isTimeout(ctx context.Context, err error) bool {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
