package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/netutil"
)

// shutdownTimeout is how long a stopping server lets requests in progress
// and the in-process queue's jobs finish.
const shutdownTimeout = 30 * time.Second

// Listen opens the local server's socket: MEDIA_PROXY_BIND_ADDRESS and
// PORT, at most MEDIA_PROXY_MAX_CONNECTIONS connections open at once (more
// wait in the kernel's accept queue rather than each costing a goroutine
// and buffers).
func (s *Service) Listen() (net.Listener, error) {
	addr := net.JoinHostPort(s.Config.BindAddress, s.Config.Port)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return netutil.LimitListener(ln, s.Config.MaxConnections), nil
}

// Serve runs the local HTTP server on ln until ctx ends, then shuts down:
// requests in progress and queued precompute jobs get shutdownTimeout.
// Response writes have their own per-write deadline (WriteTimeout in the
// handler), so a client that stops reading is dropped.
func (s *Service) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.Logger.Info("listening", "addr", ln.Addr().String(), "store", s.Config.Store.String(),
		"max_connections", s.Config.MaxConnections, "memory_budget", s.Config.MemoryBudget, "memory_budget_from", s.Config.MemoryFrom)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.Logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return s.Close(sctx)
}
