package fetch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/misskey-lambda/media-proxy/shared/problem"
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
	// ErrDowngrade: an https URL redirected to plain http.
	ErrDowngrade = errors.New("redirect from https to http")
)

func badURL(msg string, err error) *problem.Error {
	if err == nil {
		err = ErrBadURL
	} else {
		err = fmt.Errorf("%w: %w", ErrBadURL, err)
	}
	return &problem.Error{Status: http.StatusBadRequest, Msg: msg, Err: err}
}

func blocked(host string, addr fmt.Stringer) *problem.Error {
	msg := "refusing to connect to " + addr.String()
	if host != "" && host != addr.String() {
		msg = fmt.Sprintf("refusing to connect to %s (%s)", host, addr)
	}
	return &problem.Error{Status: http.StatusForbidden, Msg: msg, Err: ErrBlocked}
}

func tooLarge(limit int64) *problem.Error {
	return &problem.Error{
		Status: http.StatusRequestEntityTooLarge,
		Msg:    fmt.Sprintf("response exceeds %d bytes", limit),
		Err:    ErrTooLarge,
	}
}

// classify wraps a transport-level error in an *problem.Error with the status the
// proxy should answer with. ctx is the request context, whose deadline is the
// overall timeout.
func classify(ctx context.Context, msg string, err error) *problem.Error {
	var fe *problem.Error
	if errors.As(err, &fe) {
		// Raised by our own hooks (dial policy, redirect checks, size limit);
		// keep their status but the full chain for the message.
		return &problem.Error{Status: fe.Status, Msg: msg, Err: err}
	}
	switch {
	case isTimeout(ctx, err):
		return &problem.Error{Status: http.StatusGatewayTimeout, Msg: msg, Err: fmt.Errorf("%w: %w", ErrTimeout, err)}
	case ctx.Err() != nil:
		// The caller went away.
		return &problem.Error{Status: problem.Status(ctx.Err()), Msg: msg, Err: err}
	}
	// Refused, reset, DNS failure, TLS failure...
	return &problem.Error{Status: http.StatusBadGateway, Msg: msg, Err: err}
}

func isTimeout(ctx context.Context, err error) bool {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
