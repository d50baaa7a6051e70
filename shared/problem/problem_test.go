package problem

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"
)

func TestStatus(t *testing.T) {
	inner := &Error{Status: http.StatusNotFound, Msg: "remote returned 404", RetryAfter: time.Second}
	for _, tt := range []struct {
		err  error
		want int
	}{
		{nil, http.StatusOK},
		{errors.New("connection refused"), http.StatusBadGateway},
		{fmt.Errorf("fetch: %w", context.DeadlineExceeded), http.StatusGatewayTimeout},
		{fmt.Errorf("fetch: %w", context.Canceled), StatusClientGone},
		{fmt.Errorf("produce: %w", inner), http.StatusNotFound},
		// The outermost *Error decides: it was made where the failure was
		// understood best.
		{&Error{Status: http.StatusServiceUnavailable, Err: inner}, http.StatusServiceUnavailable},
		{&Error{Status: http.StatusGatewayTimeout, Err: context.Canceled}, http.StatusGatewayTimeout},
	} {
		if got := Status(tt.err); got != tt.want {
			t.Errorf("Status(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
	if RetryAfter(fmt.Errorf("x: %w", inner)) != time.Second || RetryAfter(errors.New("x")) != 0 {
		t.Error("RetryAfter does not read the chain")
	}
	if IsSource(inner) || !IsSource(fmt.Errorf("x: %w", &Error{Status: 422, Source: true})) {
		t.Error("IsSource does not read the chain")
	}
}

func TestErrorText(t *testing.T) {
	for _, tt := range []struct {
		err  *Error
		want string
	}{
		{&Error{Status: 404, Msg: "remote returned 404"}, "remote returned 404"},
		{&Error{Status: 502, Msg: "fetch", Err: errors.New("refused")}, "fetch: refused"},
		{&Error{Status: 422, Err: errors.New("undecodable")}, "422: undecodable"},
	} {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("%#v: %q, want %q", tt.err, got, tt.want)
		}
	}
}
