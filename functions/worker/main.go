// Command worker is the precompute function: triggered by the SQS queue
// the proxy (and the pre-warm command) send jobs to, it produces each
// job's variant into the store. Build with -tags lambda.norpc for the
// provided.al2023 runtime; the event source mapping must report batch
// item failures.
package main

import (
	"context"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/misskey-lambda/media-proxy/shared/config"
	"github.com/misskey-lambda/media-proxy/shared/service"
	"github.com/misskey-lambda/media-proxy/shared/worker"
)

func main() {
	if err := run(); err != nil {
		service.PrintError(os.Stderr, "worker", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		return err
	}
	// The worker only runs jobs; it must not queue more of them.
	cfg.Queue = config.Queue{Kind: config.QueueNone}
	log := service.NewLogger(cfg.LogLevel)
	svc, err := service.New(context.Background(), cfg, log)
	if err != nil {
		return err
	}
	h := worker.New(svc.Runner, cfg.WorkerConcurrency, log)
	h.Metrics = cfg.Metrics
	lambda.Start(h.Handle)
	return nil
}
