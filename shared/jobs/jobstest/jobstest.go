// Package jobstest is test support for the precompute packages: the SQS
// and S3 stand-ins that scripts/lib/standins.sh starts, a loopback origin,
// and the wired service on top of them.
//
// Tests that need a stand-in are skipped when its MEDIA_PROXY_TEST_*
// variables are missing, unless MEDIA_PROXY_TEST_REQUIRE_STANDINS=1, when
// they fail instead.
package jobstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/misskey-lambda/media-proxy/shared/config"
	"github.com/misskey-lambda/media-proxy/shared/fetch"
	"github.com/misskey-lambda/media-proxy/shared/service"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

// Region is the one the stand-ins are addressed in.
const Region = "us-east-1"

// need returns the named variables, skipping (or failing) t when one is
// unset.
func need(t testing.TB, names ...string) map[string]string {
	t.Helper()
	vals := map[string]string{}
	for _, n := range names {
		v := os.Getenv(n)
		if v == "" {
			msg := fmt.Sprintf("%s is not set: start the stand-ins with scripts/lib/standins.sh (see scripts/test)", n)
			if os.Getenv("MEDIA_PROXY_TEST_REQUIRE_STANDINS") == "1" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
		vals[n] = v
	}
	return vals
}

// SQSEndpoint is the SQS stand-in's URL.
func SQSEndpoint(t testing.TB) string {
	return need(t, "MEDIA_PROXY_TEST_SQS_ENDPOINT")["MEDIA_PROXY_TEST_SQS_ENDPOINT"]
}

// UseStandins points the AWS SDK's default configuration, as the service
// loads it, at the stand-ins for the rest of the test: S3 when s3 is set,
// SQS always. It also keeps the developer's own AWS files and the instance
// metadata service out of the way.
func UseStandins(t *testing.T, s3 bool) {
	t.Helper()
	t.Setenv("AWS_ENDPOINT_URL_SQS", SQSEndpoint(t))
	useAWS(t, s3)
}

// UseS3 is UseStandins for a test that needs the S3 stand-in and no SQS.
func UseS3(t *testing.T) {
	t.Helper()
	useAWS(t, true)
}

// useAWS sets the SDK's credentials and region, and its S3 endpoint when
// s3 is set.
func useAWS(t *testing.T, s3 bool) {
	t.Helper()
	key, secret := "test", "test"
	if s3 {
		v := need(t, "MEDIA_PROXY_TEST_S3_ENDPOINT", "MEDIA_PROXY_TEST_S3_ACCESS_KEY", "MEDIA_PROXY_TEST_S3_SECRET_KEY")
		t.Setenv("AWS_ENDPOINT_URL_S3", v["MEDIA_PROXY_TEST_S3_ENDPOINT"])
		key, secret = v["MEDIA_PROXY_TEST_S3_ACCESS_KEY"], v["MEDIA_PROXY_TEST_S3_SECRET_KEY"]
	}
	region := os.Getenv("MEDIA_PROXY_TEST_S3_REGION")
	if region == "" {
		region = Region
	}
	none := filepath.Join(t.TempDir(), "none")
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":           key,
		"AWS_SECRET_ACCESS_KEY":       secret,
		"AWS_SESSION_TOKEN":           "",
		"AWS_REGION":                  region,
		"AWS_PROFILE":                 "",
		"AWS_CONFIG_FILE":             none,
		"AWS_SHARED_CREDENTIALS_FILE": none,
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_ENDPOINT_URL":            "",
	} {
		t.Setenv(k, v)
	}
}

// SQSClient is a client for the SQS stand-in.
func SQSClient(t testing.TB) *sqs.Client {
	endpoint := SQSEndpoint(t)
	return sqs.New(sqs.Options{
		Region:       Region,
		BaseEndpoint: aws.String(endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
	})
}

// S3Client is a client for the S3 stand-in.
func S3Client(t testing.TB) *s3.Client {
	v := need(t, "MEDIA_PROXY_TEST_S3_ENDPOINT", "MEDIA_PROXY_TEST_S3_ACCESS_KEY", "MEDIA_PROXY_TEST_S3_SECRET_KEY")
	return s3.New(s3.Options{
		Region:       Region,
		BaseEndpoint: aws.String(v["MEDIA_PROXY_TEST_S3_ENDPOINT"]),
		Credentials:  credentials.NewStaticCredentialsProvider(v["MEDIA_PROXY_TEST_S3_ACCESS_KEY"], v["MEDIA_PROXY_TEST_S3_SECRET_KEY"], ""),
		UsePathStyle: true,
	})
}

// Name is a fresh name for a queue or bucket: lower case, unique per call.
func Name(prefix string) string {
	var b [6]byte
	rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// NewBucket creates an empty bucket for this test.
func NewBucket(t testing.TB, c *s3.Client) string {
	t.Helper()
	name := Name("mp-test")
	if _, err := c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	return name
}

// Keys lists the bucket's keys under prefix.
func Keys(t testing.TB, c *s3.Client, bucket, prefix string) []string {
	t.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatalf("list %s/%s: %v", bucket, prefix, err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}

// Queue is a queue made for one test, with its dead-letter queue.
type Queue struct {
	URL, DLQ string
	c        *sqs.Client
}

// NewQueue creates a queue whose messages come back visibilityTimeout
// seconds after a receive and move to a dead-letter queue after
// maxReceiveCount receives, as the deployed queue is set up.
func NewQueue(t testing.TB, c *sqs.Client, visibilityTimeout, maxReceiveCount int) *Queue {
	t.Helper()
	ctx := context.Background()
	name := Name("mp-test")
	dlq, err := c.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name + "-dlq")})
	if err != nil {
		t.Fatalf("create dead-letter queue: %v", err)
	}
	attrs, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       dlq.QueueUrl,
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn},
	})
	if err != nil {
		t.Fatalf("dead-letter queue ARN: %v", err)
	}
	policy, _ := json.Marshal(map[string]string{
		"deadLetterTargetArn": attrs.Attributes[string(sqstypes.QueueAttributeNameQueueArn)],
		"maxReceiveCount":     strconv.Itoa(maxReceiveCount),
	})
	q, err := c.CreateQueue(ctx, &sqs.CreateQueueInput{
		QueueName: aws.String(name),
		Attributes: map[string]string{
			string(sqstypes.QueueAttributeNameVisibilityTimeout): strconv.Itoa(visibilityTimeout),
			string(sqstypes.QueueAttributeNameRedrivePolicy):     string(policy),
		},
	})
	if err != nil {
		t.Fatalf("create queue: %v", err)
	}
	t.Cleanup(func() {
		c.DeleteQueue(context.Background(), &sqs.DeleteQueueInput{QueueUrl: q.QueueUrl})
		c.DeleteQueue(context.Background(), &sqs.DeleteQueueInput{QueueUrl: dlq.QueueUrl})
	})
	return &Queue{URL: aws.ToString(q.QueueUrl), DLQ: aws.ToString(dlq.QueueUrl), c: c}
}

// Receive takes up to max messages from url (waiting up to wait for the
// first), in the shape the Lambda poller hands them to the function.
func (q *Queue) Receive(t testing.TB, url string, max int, wait time.Duration) []events.SQSMessage {
	t.Helper()
	out, err := q.c.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{
		QueueUrl:                    aws.String(url),
		MaxNumberOfMessages:         int32(max),
		WaitTimeSeconds:             int32(wait / time.Second),
		MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{sqstypes.MessageSystemAttributeNameAll},
	})
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	msgs := make([]events.SQSMessage, 0, len(out.Messages))
	for _, m := range out.Messages {
		msgs = append(msgs, events.SQSMessage{
			MessageId:     aws.ToString(m.MessageId),
			ReceiptHandle: aws.ToString(m.ReceiptHandle),
			Body:          aws.ToString(m.Body),
			Md5OfBody:     aws.ToString(m.MD5OfBody),
			Attributes:    m.Attributes,
			EventSource:   "aws:sqs",
			AWSRegion:     Region,
		})
	}
	return msgs
}

// Settle does what the Lambda poller does with a handler's answer: it
// deletes the messages not named in resp's failures, leaving those to
// come back after the visibility timeout.
func (q *Queue) Settle(t testing.TB, msgs []events.SQSMessage, resp events.SQSEventResponse) {
	t.Helper()
	failed := map[string]bool{}
	for _, f := range resp.BatchItemFailures {
		failed[f.ItemIdentifier] = true
	}
	var entries []sqstypes.DeleteMessageBatchRequestEntry
	for i, m := range msgs {
		if !failed[m.MessageId] {
			entries = append(entries, sqstypes.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: aws.String(m.ReceiptHandle)})
		}
	}
	if len(entries) == 0 {
		return
	}
	out, err := q.c.DeleteMessageBatch(context.Background(), &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(q.URL), Entries: entries})
	if err == nil && len(out.Failed) > 0 {
		err = fmt.Errorf("%d not deleted: %s", len(out.Failed), aws.ToString(out.Failed[0].Message))
	}
	if err != nil {
		t.Fatalf("delete: %v", err)
	}
}

// Send puts a raw body on the queue.
func (q *Queue) Send(t testing.TB, body string) string {
	t.Helper()
	out, err := q.c.SendMessage(context.Background(), &sqs.SendMessageInput{QueueUrl: aws.String(q.URL), MessageBody: aws.String(body)})
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	return aws.ToString(out.MessageId)
}

// Drain runs handle on batches of up to ten messages, settling each, until
// the queue has stayed empty for one receive; it returns the messages
// handled.
func (q *Queue) Drain(t testing.TB, handle func([]events.SQSMessage) events.SQSEventResponse) int {
	t.Helper()
	n := 0
	for {
		msgs := q.Receive(t, q.URL, 10, time.Second)
		if len(msgs) == 0 {
			return n
		}
		n += len(msgs)
		q.Settle(t, msgs, handle(msgs))
	}
}

// Origin is a loopback HTTP server serving fixtures by path.
type Origin struct {
	*httptest.Server
	mu    sync.Mutex
	files map[string]File
	hits  map[string]int
}

// File is what the origin answers for one path.
type File struct {
	Body   []byte
	Status int // 200 when 0
}

// NewOrigin starts an origin, closed when t ends.
func NewOrigin(t testing.TB) *Origin {
	o := &Origin{files: map[string]File{}, hits: map[string]int{}}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		f, ok := o.files[r.URL.Path]
		o.hits[r.URL.Path]++
		o.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(f.Body)))
		if f.Status != 0 {
			w.WriteHeader(f.Status)
		}
		w.Write(f.Body)
	}))
	t.Cleanup(o.Close)
	return o
}

// Add serves body at path and returns its URL.
func (o *Origin) Add(path string, body []byte) string {
	return o.AddFile(path, File{Body: body})
}

// AddFile serves f at path and returns its URL.
func (o *Origin) AddFile(path string, f File) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.files[path] = f
	return o.URL + path
}

// Hits is how many requests path got.
func (o *Origin) Hits(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.hits[path]
}

// Service wires the real service from env (MEDIA_PROXY_* names), allowing
// loopback origins and defaulting to no queue.
func Service(t testing.TB, env map[string]string, log *slog.Logger) *service.Service {
	t.Helper()
	vars := map[string]string{
		"MEDIA_PROXY_ALLOWED_PRIVATE_NETWORKS": "127.0.0.0/8,::1/128",
		"MEDIA_PROXY_ALLOWED_PORTS":            "1-65535", // origins on random loopback ports
		"MEDIA_PROXY_QUEUE":                    "none",
		"MEDIA_PROXY_STORE":                    "dir:" + t.TempDir(),
	}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := config.Load(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	svc, err := service.New(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		svc.Close(ctx)
	})
	return svc
}

// Logs collects JSON log lines for checks, and echoes them with -v.
type Logs struct {
	t   testing.TB
	mu  sync.Mutex
	buf bytes.Buffer
}

// NewLogs returns a logger writing to a Logs.
func NewLogs(t testing.TB) (*slog.Logger, *Logs) {
	l := &Logs{t: t}
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug})), l
}

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if testing.Verbose() {
		l.t.Log(strings.TrimSpace(string(p)))
	}
	return l.buf.Write(p)
}

// Lines returns the lines whose msg is msg, decoded.
func (l *Logs) Lines(msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	dec := json.NewDecoder(bytes.NewReader(l.buf.Bytes()))
	for {
		var m map[string]any
		if err := dec.Decode(&m); err == io.EOF {
			return out
		} else if err != nil {
			l.t.Fatalf("bad log line: %v", err)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
}

// Canonical is the proxy's canonical form of a source URL, with every
// port allowed (test origins listen on random loopback ports).
func Canonical(raw string) (*url.URL, error) {
	return fetch.New(fetch.Config{AllowedPorts: []fetch.PortRange{{Lo: 1, Hi: 65535}}}).Canonical(raw)
}

// KeysOf gives the store key and failure key the proxy uses for kind k
// of src.
func KeysOf(t testing.TB, src string, k variant.Kind) (key, failKey string) {
	t.Helper()
	u, err := Canonical(src)
	if err != nil {
		t.Fatalf("canonical form of %s: %v", src, err)
	}
	return variant.Key(u.String(), k), variant.FailureKey(u.String(), k)
}
