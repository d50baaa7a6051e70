package main

// This test runs the real bootstrap under the AWS Lambda Runtime Interface
// Emulator with the S3 and SQS stand-ins, and hands it batches received
// from a real queue as the Lambda poller would.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/misskey-lambda/media-proxy/shared/jobs"
	"github.com/misskey-lambda/media-proxy/shared/jobs/jobstest"
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

	bin := filepath.Join(t.TempDir(), "bootstrap")
	build := exec.Command("go", "build", "-tags", "lambda.norpc", "-o", bin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("build bootstrap: %v", err)
	}
	// Both of the emulator's ports are chosen here: its default runtime API
	// port (9001) would clash with other emulators running at the same time.
	addr, runtimeAddr := freeAddr(t), freeAddr(t)
	cmd := exec.Command(rie, "--runtime-interface-emulator-address", addr, "--runtime-api-address", runtimeAddr, bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_EC2_METADATA_DISABLED"} {
		cmd.Env = append(cmd.Env, k+"="+os.Getenv(k))
	}
	cmd.Env = append(cmd.Env,
		"MEDIA_PROXY_STORE=s3://"+bucket+"/cache",
		"MEDIA_PROXY_S3_PATH_STYLE=true",
		"MEDIA_PROXY_ALLOWED_PRIVATE_NETWORKS=127.0.0.0/8",
		"MEDIA_PROXY_WORKER_CONCURRENCY=2",
	)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() || testing.Verbose() {
			t.Logf("emulator log:\n%s", logs.String())
		}
	})

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

	payload, _ := json.Marshal(events.SQSEvent{Records: msgs})
	var raw []byte
	deadline := time.Now().Add(15 * time.Second)
	for {
		// The emulator may not listen yet.
		resp, err := http.Post("http://"+addr+"/2015-03-31/functions/function/invocations", "application/json", bytes.NewReader(payload))
		if err == nil {
			raw, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("invoke: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var out events.SQSEventResponse
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("reply %q: %v", raw, err)
	}
	if len(out.BatchItemFailures) != 1 || out.BatchItemFailures[0].ItemIdentifier != flakyID {
		t.Fatalf("reply %s, want only %s failed", raw, flakyID)
	}
	q.Settle(t, msgs, out)

	key, _ := good.Key()
	if keys := jobstest.Keys(t, s3c, bucket, "cache/"+key); len(keys) != 1 {
		t.Errorf("emoji-static not in S3: %v", keys)
	}
	for _, want := range []string{`"outcome":"done"`, `"outcome":"retry"`, `"outcome":"malformed"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no %s line in the function's log", want)
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
