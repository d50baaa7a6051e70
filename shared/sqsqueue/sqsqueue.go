// Package sqsqueue sends precompute jobs to an Amazon SQS queue, where the
// worker function picks them up.
package sqsqueue

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/misskey-lambda/media-proxy/shared/jobs"
)

// maxBatch is SendMessageBatch's limit on entries per call.
const maxBatch = 10

// API is the part of the SQS client the Sender uses.
type API interface {
	SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, opts ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error)
}

// Sender enqueues jobs on one queue. It implements jobs.Enqueuer.
type Sender struct {
	client   API
	queueURL string
}

// New returns a Sender for queueURL through client.
func New(client API, queueURL string) *Sender {
	return &Sender{client: client, queueURL: queueURL}
}

// Close returns at once: the jobs sent are in the queue, not in this
// process.
func (s *Sender) Close(context.Context) error { return nil }

// Open returns a Sender configured the SDK's standard way (environment,
// shared config, the Lambda role); AWS_ENDPOINT_URL_SQS overrides the
// endpoint. Without a configured region, the queue URL's is used.
func Open(ctx context.Context, queueURL string) (*Sender, error) {
	if !IsQueueURL(queueURL) {
		return nil, fmt.Errorf("sqsqueue: %q is not an SQS queue URL", queueURL)
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("sqsqueue: load AWS config: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = RegionOf(queueURL)
	}
	return New(sqs.NewFromConfig(cfg), queueURL), nil
}

// IsQueueURL reports whether s looks like a queue URL (as opposed to the
// words "local" or "none").
func IsQueueURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" && strings.Trim(u.Path, "/") != ""
}

// RegionOf reads the region from an AWS queue URL,
// https://sqs.<region>.amazonaws.com/<account>/<name>, or "" for others.
func RegionOf(queueURL string) string {
	u, err := url.Parse(queueURL)
	if err != nil {
		return ""
	}
	parts := strings.Split(u.Hostname(), ".")
	if len(parts) >= 4 && parts[0] == "sqs" && parts[2] == "amazonaws" {
		return parts[1]
	}
	return ""
}

// Enqueue sends js in batches of up to ten messages. Entries SQS rejects
// for its own reasons are sent once more; what still fails is reported.
func (s *Sender) Enqueue(ctx context.Context, js []jobs.Job) error {
	var errs []error
	for len(js) > 0 {
		n := min(len(js), maxBatch)
		if err := s.sendBatch(ctx, js[:n]); err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
		js = js[n:]
	}
	return errors.Join(errs...)
}

func (s *Sender) sendBatch(ctx context.Context, js []jobs.Job) error {
	entries := make([]types.SendMessageBatchRequestEntry, 0, len(js))
	for i, j := range js {
		body, err := jobs.Encode(j)
		if err != nil {
			return fmt.Errorf("sqsqueue: %w", err)
		}
		entries = append(entries, types.SendMessageBatchRequestEntry{
			Id:          aws.String(strconv.Itoa(i)),
			MessageBody: aws.String(string(body)),
		})
	}
	for attempt := 0; ; attempt++ {
		out, err := s.client.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(s.queueURL), Entries: entries})
		if err != nil {
			return fmt.Errorf("sqsqueue: send %d jobs: %w", len(entries), err)
		}
		if len(out.Failed) == 0 {
			return nil
		}
		retry := entries[:0:0]
		var senderFaults []string
		for _, f := range out.Failed {
			if f.SenderFault {
				senderFaults = append(senderFaults, aws.ToString(f.Code)+": "+aws.ToString(f.Message))
				continue
			}
			for _, e := range entries {
				if aws.ToString(e.Id) == aws.ToString(f.Id) {
					retry = append(retry, e)
				}
			}
		}
		if len(senderFaults) > 0 {
			return fmt.Errorf("sqsqueue: %d of %d jobs refused: %s", len(senderFaults), len(entries), strings.Join(senderFaults, "; "))
		}
		if attempt == 1 {
			return fmt.Errorf("sqsqueue: %d of %d jobs failed twice: %s: %s", len(retry), len(entries), aws.ToString(out.Failed[0].Code), aws.ToString(out.Failed[0].Message))
		}
		entries = retry
	}
}
