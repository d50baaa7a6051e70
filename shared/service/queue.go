package service

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/misskey-lambda/media-proxy/shared/config"
	"github.com/misskey-lambda/media-proxy/shared/jobs"
	"github.com/misskey-lambda/media-proxy/shared/localqueue"
	"github.com/misskey-lambda/media-proxy/shared/sqsqueue"
)

// OpenQueue builds where precompute jobs go, as MEDIA_PROXY_QUEUE says:
// "local" runs them in this process with r, an SQS queue URL sends them to
// the worker function, "none" (or a store that keeps nothing) drops them,
// which OpenQueue reports as a nil Enqueuer.
func OpenQueue(ctx context.Context, cfg config.Config, r *jobs.Runner, log *slog.Logger) (jobs.Enqueuer, error) {
	if !r.Store.Keeps() {
		return nil, nil
	}
	switch cfg.Queue.Kind {
	case config.QueueNone:
		return nil, nil
	case config.QueueLocal:
		return localqueue.New(r, localqueue.Options{}, log), nil
	case config.QueueSQS:
		q, err := sqsqueue.Open(ctx, cfg.Queue.URL)
		if err != nil {
			return nil, fmt.Errorf("MEDIA_PROXY_QUEUE: %w", err)
		}
		return q, nil
	}
	return nil, fmt.Errorf("queue %q: not a config.Queue from config.Load", cfg.Queue)
}

// Close lets the downloads in flight finish their store copies, and the
// queue the jobs this process holds, by ctx's deadline.
func (s *Service) Close(ctx context.Context) error {
	if err := s.Handler.Wait(ctx); err != nil {
		return fmt.Errorf("downloads in flight: %w", err)
	}
	if s.Queue == nil {
		return nil
	}
	return s.Queue.Close(ctx)
}
