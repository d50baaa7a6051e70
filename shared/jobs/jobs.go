// Package jobs describes precompute work: one variant of one source URL,
// produced ahead of the request that will want it. The proxy enqueues jobs
// for a variant's siblings on a cache miss, the pre-warm command enqueues
// them for an instance's emoji, and a Runner executes them (in the SQS
// worker, or in-process for the embedded server).
package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"

	"github.com/misskey-lambda/media-proxy/shared/fetch"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

// Version is the job format written by Encode. Decode refuses other
// versions, so a worker never guesses at a body it does not understand.
const Version = 1

// ErrMalformed marks a body that is not a job this code can run. Retrying
// it cannot help.
var ErrMalformed = errors.New("malformed job")

// Job asks for one variant of one source URL.
type Job struct {
	URL     string
	Variant variant.Kind
}

// Enqueuer accepts jobs to run later, elsewhere. Implementations: an SQS
// queue (sqsqueue) and an in-process queue (localqueue).
type Enqueuer interface {
	Enqueue(ctx context.Context, jobs []Job) error
	// Close stops accepting jobs and lets those this process holds finish,
	// by ctx's deadline. A queue that sends jobs elsewhere holds none and
	// returns at once.
	Close(ctx context.Context) error
}

// For returns the jobs that compute kinds of src.
func For(src *url.URL, kinds []variant.Kind) []Job {
	js := make([]Job, 0, len(kinds))
	for _, k := range kinds {
		js = append(js, Job{URL: src.String(), Variant: k})
	}
	return js
}

// Source parses and checks the job's URL: absolute http or https, as the
// proxy accepts.
func (j Job) Source() (*url.URL, error) {
	u, err := url.Parse(j.URL)
	if err != nil {
		return nil, fmt.Errorf("%w: url: %v", ErrMalformed, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: url must be absolute http or https, got %q", ErrMalformed, j.URL)
	}
	return u, nil
}

// LogURL is the job's URL for log lines: without user info, query or
// fragment, which may carry tokens.
func (j Job) LogURL() string {
	u, err := url.Parse(j.URL)
	if err != nil {
		return "(unparsable)"
	}
	return fetch.Redact(u)
}

// Canonicalizer gives the one form of a source URL that store keys are
// derived from and that is fetched (fetch.Client.Canonical).
type Canonicalizer func(raw string) (*url.URL, error)

// Key is the store key the job's output goes to.
func (j Job) Key(canonical Canonicalizer) (string, error) {
	u, err := canonical(j.URL)
	if err != nil {
		return "", err
	}
	return variant.Key(u.String(), j.Variant), nil
}

// wire is the message body: small, versioned JSON.
type wire struct {
	V       int    `json:"v"`
	URL     string `json:"url"`
	Variant string `json:"variant"`
}

// Encode gives the message body for j, e.g.
// {"v":1,"url":"https://example.com/a.gif","variant":"emoji-static"}.
func Encode(j Job) ([]byte, error) {
	if err := j.validate(); err != nil {
		return nil, err
	}
	return json.Marshal(wire{V: Version, URL: j.URL, Variant: string(j.Variant)})
}

// Decode reads a message body written by Encode. Every error wraps
// ErrMalformed.
func Decode(b []byte) (Job, error) {
	var w wire
	if err := json.Unmarshal(b, &w); err != nil {
		return Job{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if w.V != Version {
		return Job{}, fmt.Errorf("%w: version %d, want %d", ErrMalformed, w.V, Version)
	}
	k, ok := variant.Parse(w.Variant)
	if !ok {
		return Job{}, fmt.Errorf("%w: unknown variant %q", ErrMalformed, w.Variant)
	}
	j := Job{URL: w.URL, Variant: k}
	if err := j.validate(); err != nil {
		return Job{}, err
	}
	return j, nil
}

func (j Job) validate() error {
	if _, ok := variant.Parse(string(j.Variant)); !ok {
		return fmt.Errorf("%w: unknown variant %q", ErrMalformed, j.Variant)
	}
	_, err := j.Source()
	return err
}
