// Command prewarm pre-computes the emoji variants of a Misskey instance's
// custom emoji; run it with --help, or through scripts/prewarm, which sets
// up libvips first.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/misskey-lambda/media-proxy/shared/prewarm"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := prewarm.Main(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
