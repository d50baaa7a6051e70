// Command proxy serves the media proxy: as a plain HTTP server on PORT, or,
// when started by AWS Lambda, as a Function URL handler (build with
// -tags lambda.norpc for the provided.al2023 runtime).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/misskey-lambda/media-proxy/shared/config"
	"github.com/misskey-lambda/media-proxy/shared/functionurl"
	"github.com/misskey-lambda/media-proxy/shared/service"
)

func main() {
	if err := run(); err != nil {
		service.PrintError(os.Stderr, "proxy", err)
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
		// The Lambda runtime owns the process from here on. The Function
		// URL is in RESPONSE_STREAM invoke mode (infra/template.yaml).
		lambda.StartWithOptions(functionurl.Handler(svc.Handler, log, svc.Handler.CommonHeaders()), lambda.WithContext(ctx))
		return nil
	}

	ln, err := svc.Listen()
	if err != nil {
		return err
	}
	return svc.Serve(ctx, ln)
}
