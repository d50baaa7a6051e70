package main

// This test runs the real bootstrap under the AWS Lambda Runtime Interface
// Emulator with the S3 and SQS stand-ins, and hands it batches received
// from a real queue as the Lambda poller would.

import (
	"context"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/misskey-lambda/media-proxy/shared/jobs"
	"github.com/misskey-lambda/media-proxy/shared/jobs/jobstest"
	"github.com/misskey-lambda/media-proxy/shared/lambdatest"
	"github.com/misskey-lambda/media-proxy/shared/sqsqueue"
	"github.com/misskey-lambda/media-proxy/shared/testmedia"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

func TestBootstrapUnderEmulator(t *testing.T) {
	rie := os.Getenv("MEDIA_PROXY_TEST_RIE")
	if rie == "" {
		if os.Getenv("MEDIA_PROXY_TEST_REQUIRE_STANDINS") == "1" {
			t.Fatal("MEDIA_PROXY_TEST_RIE is not set; run the tests with scripts/test")
		}
		t.Skip("MEDIA_PROXY_TEST_RIE is not set; scripts/test installs the emulator")
	}
	jobstest.UseStandins(t, true)
	s3c := jobstest.S3Client(t)
	bucket := jobstest.NewBucket(t, s3c)
	sqsc := jobstest.SQSClient(t)
	q := jobstest.NewQueue(t, sqsc, 1, 2)
	origin := jobstest.NewOrigin(t)

	var env []string
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_EC2_METADATA_DISABLED"} {
		env = append(env, k+"="+os.Getenv(k))
	}
	env = append(env,
		"MEDIA_PROXY_STORE=s3://"+bucket+"/cache",
		"MEDIA_PROXY_S3_PATH_STYLE=true",
		"MEDIA_PROXY_ALLOWED_PRIVATE_NETWORKS=127.0.0.0/8",
		"MEDIA_PROXY_ALLOWED_PORTS=1-65535",
		"MEDIA_PROXY_WORKER_CONCURRENCY=2",
	)
	emu := lambdatest.Start(t, rie, "", lambdatest.Build(t, "."), env)

	good := jobs.Job{URL: origin.Add("/ok.gif", testmedia.GIF(48, 48, 3)), Variant: variant.EmojiStatic}
	flaky := jobs.Job{URL: origin.AddFile("/flaky.png", jobstest.File{Status: http.StatusBadGateway, Body: []byte("upstream")}), Variant: variant.EmojiStatic}
	if err := sqsqueue.New(sqsc, q.URL).Enqueue(context.Background(), []jobs.Job{good, flaky}); err != nil {
		t.Fatal(err)
	}
	q.Send(t, "definitely not a job")

	var msgs []events.SQSMessage
	for len(msgs) < 3 {
		got := q.Receive(t, q.URL, 10, 3*time.Second)
		if len(got) == 0 {
			t.Fatalf("received %d of 3 messages", len(msgs))
		}
		msgs = append(msgs, got...)
	}
	var flakyID string
	for _, m := range msgs {
		if j, _ := jobs.Decode([]byte(m.Body)); j == flaky {
			flakyID = m.MessageId
		}
	}

	var out events.SQSEventResponse
	raw := emu.InvokeJSON(t, events.SQSEvent{Records: msgs}, &out)
	if len(out.BatchItemFailures) != 1 || out.BatchItemFailures[0].ItemIdentifier != flakyID {
		t.Fatalf("reply %s, want only %s failed", raw, flakyID)
	}
	q.Settle(t, msgs, out)

	key, _ := good.Key(jobstest.Canonical)
	if keys := jobstest.Keys(t, s3c, bucket, "cache/"+key); len(keys) != 1 {
		t.Errorf("emoji-static not in S3: %v", keys)
	}
	for _, want := range []string{`"outcome":"done"`, `"outcome":"retry"`, `"outcome":"malformed"`} {
		if !strings.Contains(emu.Logs(), want) {
			t.Errorf("no %s line in the function's log", want)
		}
	}
}
