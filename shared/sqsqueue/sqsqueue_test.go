package sqsqueue_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/misskey-lambda/media-proxy/shared/jobs"
	"github.com/misskey-lambda/media-proxy/shared/jobs/jobstest"
	"github.com/misskey-lambda/media-proxy/shared/sqsqueue"
	"github.com/misskey-lambda/media-proxy/shared/testmedia"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

func someJobs(n int) []jobs.Job {
	js := make([]jobs.Job, n)
	for i := range js {
		js[i] = jobs.Job{URL: fmt.Sprintf("https://example.com/emoji/%03d.gif", i), Variant: variant.EmojiStatic}
	}
	return js
}

// counting wraps an API and records each batch's size.
type counting struct {
	sqsqueue.API
	batches []int
}

func (c *counting) SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, opts ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	c.batches = append(c.batches, len(in.Entries))
	return c.API.SendMessageBatch(ctx, in, opts...)
}

func TestEnqueueAgainstStandin(t *testing.T) {
	c := jobstest.SQSClient(t)
	q := jobstest.NewQueue(t, c, 30, 2)
	api := &counting{API: c}
	want := someJobs(23)
	if err := sqsqueue.New(api, q.URL).Enqueue(context.Background(), want); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(api.batches) != "[10 10 3]" {
		t.Errorf("batches %v, want [10 10 3]", api.batches)
	}
	var got []string
	for len(got) < len(want) {
		msgs := q.Receive(t, q.URL, 10, time.Second)
		if len(msgs) == 0 {
			break
		}
		for _, m := range msgs {
			j, err := jobs.Decode([]byte(m.Body))
			if err != nil {
				t.Fatalf("body %q: %v", m.Body, err)
			}
			got = append(got, j.URL+" "+string(j.Variant))
		}
	}
	sort.Strings(got)
	var wantS []string
	for _, j := range want {
		wantS = append(wantS, j.URL+" "+string(j.Variant))
	}
	if strings.Join(got, "\n") != strings.Join(wantS, "\n") {
		t.Errorf("received\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantS, "\n"))
	}
}

// Open configures itself the SDK's way: AWS_ENDPOINT_URL_SQS points it at
// the stand-in.
func TestOpenUsesStandardEndpointVariable(t *testing.T) {
	jobstest.UseStandins(t, false)
	c := jobstest.SQSClient(t)
	q := jobstest.NewQueue(t, c, 30, 2)
	s, err := sqsqueue.Open(context.Background(), q.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Enqueue(context.Background(), someJobs(1)); err != nil {
		t.Fatal(err)
	}
	if msgs := q.Receive(t, q.URL, 10, time.Second); len(msgs) != 1 {
		t.Fatalf("received %d messages, want 1", len(msgs))
	}
}

func TestEnqueueToMissingQueueFails(t *testing.T) {
	c := jobstest.SQSClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	url := jobstest.SQSEndpoint(t) + "/123456789012/" + jobstest.Name("absent")
	if err := sqsqueue.New(c, url).Enqueue(ctx, someJobs(3)); err == nil {
		t.Fatal("enqueue to a missing queue succeeded")
	}
}

// fakeAPI fails entries as told, per call.
type fakeAPI struct {
	calls int
	fail  func(call int, id string) *types.BatchResultErrorEntry
	sent  []string
}

func (f *fakeAPI) SendMessageBatch(_ context.Context, in *sqs.SendMessageBatchInput, _ ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	f.calls++
	out := &sqs.SendMessageBatchOutput{}
	for _, e := range in.Entries {
		if fe := f.fail(f.calls, aws.ToString(e.Id)); fe != nil {
			fe.Id = e.Id
			out.Failed = append(out.Failed, *fe)
			continue
		}
		f.sent = append(f.sent, aws.ToString(e.MessageBody))
	}
	return out, nil
}

func TestEnqueueRetriesServerFaultsOnce(t *testing.T) {
	api := &fakeAPI{fail: func(call int, id string) *types.BatchResultErrorEntry {
		if call == 1 && id == "3" {
			return &types.BatchResultErrorEntry{Code: aws.String("InternalError")}
		}
		return nil
	}}
	if err := sqsqueue.New(api, "https://sqs.us-east-1.amazonaws.com/1/q").Enqueue(context.Background(), someJobs(5)); err != nil {
		t.Fatal(err)
	}
	if api.calls != 2 || len(api.sent) != 5 {
		t.Errorf("%d calls, %d sent; want 2 and 5", api.calls, len(api.sent))
	}

	api = &fakeAPI{fail: func(_ int, id string) *types.BatchResultErrorEntry {
		if id == "0" {
			return &types.BatchResultErrorEntry{Code: aws.String("InternalError")}
		}
		return nil
	}}
	if err := sqsqueue.New(api, "https://sqs.us-east-1.amazonaws.com/1/q").Enqueue(context.Background(), someJobs(2)); err == nil {
		t.Error("an entry failing twice was not reported")
	}

	api = &fakeAPI{fail: func(_ int, id string) *types.BatchResultErrorEntry {
		return &types.BatchResultErrorEntry{Code: aws.String("InvalidMessageContents"), SenderFault: true}
	}}
	if err := sqsqueue.New(api, "https://sqs.us-east-1.amazonaws.com/1/q").Enqueue(context.Background(), someJobs(2)); err == nil || api.calls != 1 {
		t.Errorf("sender fault: %v after %d calls; want an error after 1", err, api.calls)
	}
}

func TestQueueURLs(t *testing.T) {
	for s, want := range map[string]bool{
		"https://sqs.eu-west-1.amazonaws.com/123456789012/media-proxy-precompute": true,
		"http://127.0.0.1:4566/000000000000/q":                                    true,
		"local":                                                                   false,
		"none":                                                                    false,
		"https://sqs.eu-west-1.amazonaws.com":                                     false,
	} {
		if got := sqsqueue.IsQueueURL(s); got != want {
			t.Errorf("IsQueueURL(%q) = %v", s, got)
		}
	}
	if r := sqsqueue.RegionOf("https://sqs.eu-west-1.amazonaws.com/123456789012/q"); r != "eu-west-1" {
		t.Errorf("RegionOf = %q", r)
	}
	if r := sqsqueue.RegionOf("http://127.0.0.1:4566/000000000000/q"); r != "" {
		t.Errorf("RegionOf(loopback) = %q", r)
	}
}

// When SQS fails or hangs, the request that would have queued siblings
// still answers and says why in the log. A queue that hangs never
// answers (until the test ends), so the request comes back only because
// the proxy stopped waiting for it, and it lets the queue's request go.
func TestProxyRequestSurvivesQueueOutage(t *testing.T) {
	hang := make(chan struct{})
	var asked, letGo atomic.Int64
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		// Read to the end: only then does the server watch the connection
		// and cancel r's context when the client drops it.
		io.Copy(io.Discard, r.Body)
		select {
		case <-hang:
		case <-r.Context().Done():
			letGo.Add(1)
		}
	}))
	defer slow.Close()
	defer close(hang)
	refusing := httptest.NewServer(http.NotFoundHandler())
	refusing.Close() // nothing listens there any more

	for name, endpoint := range map[string]string{"hanging": slow.URL, "refusing": refusing.URL} {
		t.Run(name, func(t *testing.T) {
			for k, v := range map[string]string{
				"AWS_ENDPOINT_URL_SQS": endpoint, "AWS_REGION": "us-east-1",
				"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
				"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
				"AWS_EC2_METADATA_DISABLED": "true",
			} {
				t.Setenv(k, v)
			}
			log, logs := jobstest.NewLogs(t)
			svc := jobstest.Service(t, map[string]string{"MEDIA_PROXY_QUEUE": endpoint + "/123456789012/jobs"}, log)
			origin := jobstest.NewOrigin(t)
			src := origin.Add("/a.gif", testmedia.GIF(32, 32, 2))

			start := time.Now()
			w := httptest.NewRecorder()
			served := make(chan struct{})
			go func() {
				defer close(served)
				svc.Handler.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/e.webp?emoji=1&url="+url.QueryEscape(src), nil))
			}()
			select {
			case <-served:
			case <-time.After(30 * time.Second):
				t.Fatalf("the request is still waiting for the %s queue after 30 s", name)
			}
			t.Logf("answered %d in %v with the queue %s", w.Code, time.Since(start).Round(time.Millisecond), name)
			if w.Code != http.StatusOK {
				t.Fatalf("status %d", w.Code)
			}
			if n := len(logs.Lines("precompute enqueue failed")); n != 1 {
				t.Errorf("%d enqueue failure lines, want 1", n)
			}
			if name == "hanging" {
				if asked.Load() == 0 {
					t.Fatal("the hanging queue was never asked")
				}
				deadline := time.Now().Add(30 * time.Second)
				for letGo.Load() < asked.Load() && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
				if letGo.Load() != asked.Load() {
					t.Errorf("%d of the %d requests to the hanging queue were let go", letGo.Load(), asked.Load())
				}
			}
		})
	}
}
