// Command proxy serves the media proxy: as a plain HTTP server on PORT, or,
// when started by AWS Lambda, as a Function URL handler (build with
// -tags lambda.norpc for the provided.al2023 runtime).
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/misskey-lambda/media-proxy/shared/config"
	"github.com/misskey-lambda/media-proxy/shared/functionurl"
	"github.com/misskey-lambda/media-proxy/shared/service"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "proxy:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		return err
	}
	log := service.NewLogger(cfg.LogLevel)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	svc, err := service.New(ctx, cfg, log)
	if err != nil {
		return err
	}

	if cfg.OnLambda {
		// The Lambda runtime owns the process from here on.
		lambda.StartWithOptions(functionurl.Handler(svc.Handler, log), lambda.WithContext(ctx))
		return nil
	}

	srv := &http.Server{
		Addr:              ":" + cfg.Port,
		Handler:           svc.Handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Info("listening", "addr", srv.Addr, "store", cfg.Store)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	// Finish the precompute jobs still queued in process, within the same deadline.
	return svc.Close(sctx)
}
