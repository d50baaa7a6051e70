package prewarm

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/config"
	"github.com/misskey-lambda/media-proxy/shared/service"
	"github.com/misskey-lambda/media-proxy/shared/sqsqueue"
	"github.com/misskey-lambda/media-proxy/shared/store"
)

const usage = `Usage: prewarm [flags] <Misskey instance URL>
       prewarm [flags] --file <file of URLs>

Pre-computes the emoji and emoji-static variants of every custom emoji a
Misskey instance lists (POST <instance>/api/emojis), or of the image URLs
in a file (one per line; blank lines and lines starting with # are
skipped; - reads standard input).

Variants already in the store (MEDIA_PROXY_STORE; with S3 a HEAD each) are
skipped, so it can be run again at no cost but the checks. The missing ones
are sent to an SQS queue for the worker function, or, with --local,
produced here into the store. Images are fetched by the proxy's own
pipeline, with its address checks and limits.

Flags:
`

const footer = `
Progress goes to standard error; --dry-run's list to standard output.
Settings come from the proxy's MEDIA_PROXY_* variables (see the README) and,
for S3 and SQS, the AWS SDK's (AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL_SQS,
...). Exit status: 0 when every job was queued or finished (sources that
cannot give an emoji are reported, not errors), 1 on errors a re-run may get
past, 2 on bad usage.
`

// instanceTimeout bounds the emoji list request.
const instanceTimeout = 2 * time.Minute

// Main runs the command with args (without the program name) and returns
// its exit status.
func Main(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("prewarm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("file", "", "read source URLs from `path` instead of asking an instance")
	queueURL := fs.String("queue", "", "SQS queue `url` to send jobs to (default: MEDIA_PROXY_QUEUE when it is a queue URL)")
	local := fs.Bool("local", false, "produce the variants here, into MEDIA_PROXY_STORE, instead of queueing them")
	concurrency := fs.Int("concurrency", 4, "store checks, and with --local jobs, run at once")
	rate := fs.Float64("rate", 20, "most jobs queued or started per second (0: no limit)")
	dryRun := fs.Bool("dry-run", false, "print the jobs that would be queued or run, and change nothing")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
		fmt.Fprint(stderr, footer)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	bad := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "prewarm: "+format+"\n", a...)
		fs.Usage()
		return 2
	}
	switch {
	case *file == "" && fs.NArg() != 1:
		return bad("want one instance URL, or --file")
	case *file != "" && fs.NArg() != 0:
		return bad("want either an instance URL or --file, not both")
	case *local && *queueURL != "":
		return bad("want either --queue or --local, not both")
	case *concurrency <= 0 || *rate < 0:
		return bad("--concurrency must be positive and --rate not negative")
	}

	if err := run(ctx, cliOptions{
		instance: fs.Arg(0), file: *file, queueURL: *queueURL, local: *local,
		concurrency: *concurrency, rate: *rate, dryRun: *dryRun,
	}, getenv, stdout, stderr); err != nil {
		service.PrintError(stderr, "prewarm", err)
		if errors.Is(err, errUsage) {
			return 2
		}
		return 1
	}
	return 0
}

var errUsage = errors.New("usage")

type cliOptions struct {
	instance, file, queueURL string
	local, dryRun            bool
	concurrency              int
	rate                     float64
}

func run(ctx context.Context, o cliOptions, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	if o.queueURL == "" && !o.local && cfg.Queue.Kind == config.QueueSQS {
		o.queueURL = cfg.Queue.URL
	}
	if o.queueURL == "" && !o.local && !o.dryRun {
		return fmt.Errorf("%w: no queue: pass --queue <SQS queue URL> (or set MEDIA_PROXY_QUEUE to one), or --local", errUsage)
	}
	if o.queueURL != "" && !sqsqueue.IsQueueURL(o.queueURL) {
		return fmt.Errorf("%w: --queue %q is not an SQS queue URL", errUsage, o.queueURL)
	}

	urls, err := sources(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "prewarm: %d source URLs, %d variants each; store %s\n", len(urls), len(Kinds), cfg.Store)

	opts := Options{
		Canonical:   service.NewFetcher(cfg).Canonical,
		Concurrency: o.concurrency,
		Rate:        o.rate,
		DryRun:      o.dryRun,
		Out:         stdout,
		Progress:    stderr,
	}
	if o.local {
		// The worker's wiring: the same store and pipeline as the proxy.
		cfg.Queue = config.Queue{Kind: config.QueueNone}
		log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: max(cfg.LogLevel, slog.LevelWarn)}))
		svc, err := service.New(ctx, cfg, log)
		if err != nil {
			return err
		}
		opts.Store, opts.Runner = svc.Store, svc.Runner
	} else {
		var st store.Store
		if st, err = service.OpenStore(ctx, cfg, nil); err != nil {
			return err
		}
		opts.Store = st
		if !o.dryRun {
			q, err := sqsqueue.Open(ctx, o.queueURL)
			if err != nil {
				return err
			}
			opts.Queue = q
		}
	}
	_, err = Run(ctx, opts, urls)
	return err
}

// sources lists the URLs to pre-warm, from the file or the instance.
func sources(ctx context.Context, o cliOptions) ([]string, error) {
	if o.file != "" {
		r := io.Reader(os.Stdin)
		if o.file != "-" {
			f, err := os.Open(o.file)
			if err != nil {
				return nil, err
			}
			defer f.Close()
			r = f
		}
		urls, err := ReadURLs(r)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", o.file, err)
		}
		return urls, nil
	}
	ctx, cancel := context.WithTimeout(ctx, instanceTimeout)
	defer cancel()
	return EmojiURLs(ctx, http.DefaultClient, o.instance)
}
