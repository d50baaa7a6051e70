package worker_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/misskey-lambda/media-proxy/shared/emf"
	"github.com/misskey-lambda/media-proxy/shared/failure"
	"github.com/misskey-lambda/media-proxy/shared/jobs"
	"github.com/misskey-lambda/media-proxy/shared/jobs/jobstest"
	"github.com/misskey-lambda/media-proxy/shared/service"
	"github.com/misskey-lambda/media-proxy/shared/sqsqueue"
	"github.com/misskey-lambda/media-proxy/shared/store"
	"github.com/misskey-lambda/media-proxy/shared/testmedia"
	"github.com/misskey-lambda/media-proxy/shared/variant"
	"github.com/misskey-lambda/media-proxy/shared/worker"
)

// deployment is the production shape on the stand-ins: the proxy and the
// worker sharing an S3 store, an SQS queue (visibility timeout 1 s,
// maxReceiveCount 2, with a dead-letter queue) between them, and an origin
// on loopback.
type deployment struct {
	proxy   *service.Service
	worker  *worker.Handler
	runner  *jobs.Runner // the worker's
	store   store.Store
	queue   *jobstest.Queue
	origin  *jobstest.Origin
	logs    *jobstest.Logs
	bucket  string
	batches int
}

func deploy(t *testing.T) *deployment {
	jobstest.UseStandins(t, true)
	bucket := jobstest.NewBucket(t, jobstest.S3Client(t))
	q := jobstest.NewQueue(t, jobstest.SQSClient(t), 1, 2)
	log, logs := jobstest.NewLogs(t)
	storeEnv := func(queue string) map[string]string {
		return map[string]string{
			"MEDIA_PROXY_STORE":         "s3://" + bucket + "/cache",
			"MEDIA_PROXY_S3_PATH_STYLE": "true",
			"MEDIA_PROXY_QUEUE":         queue,
		}
	}
	proxy := jobstest.Service(t, storeEnv(q.URL), log)
	if _, ok := proxy.Queue.(*sqsqueue.Sender); !ok {
		t.Fatalf("MEDIA_PROXY_QUEUE=<queue URL> built %T", proxy.Queue)
	}
	w := jobstest.Service(t, storeEnv("none"), log)
	return &deployment{
		proxy:  proxy,
		worker: worker.New(w.Runner, 2, log),
		runner: w.Runner,
		store:  w.Store,
		queue:  q,
		origin: jobstest.NewOrigin(t),
		logs:   logs,
		bucket: bucket,
	}
}

// invoke hands msgs to the worker as one Lambda invocation would.
func (d *deployment) invoke(t *testing.T, msgs []events.SQSMessage) events.SQSEventResponse {
	t.Helper()
	d.batches++
	ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: "req-" + strconv.Itoa(d.batches)})
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := d.worker.Handle(ctx, events.SQSEvent{Records: msgs})
	if err != nil {
		t.Fatalf("handler returned an error, which would retry the whole batch: %v", err)
	}
	return resp
}

// poll receives, invokes and settles one batch, as the Lambda poller does.
func (d *deployment) poll(t *testing.T) ([]events.SQSMessage, events.SQSEventResponse) {
	t.Helper()
	msgs := d.queue.Receive(t, d.queue.URL, 10, 3*time.Second)
	if len(msgs) == 0 {
		return nil, events.SQSEventResponse{}
	}
	resp := d.invoke(t, msgs)
	d.queue.Settle(t, msgs, resp)
	return msgs, resp
}

func (d *deployment) get(src string, flags string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	d.proxy.Handler.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/emoji.webp?"+flags+"&url="+url.QueryEscape(src), nil))
	return w
}

func (d *deployment) enqueue(t *testing.T, js ...jobs.Job) {
	t.Helper()
	if err := d.proxy.Queue.Enqueue(context.Background(), js); err != nil {
		t.Fatal(err)
	}
}

func (d *deployment) stored(t *testing.T, j jobs.Job) bool {
	t.Helper()
	key, _ := j.Key(jobstest.Canonical)
	_, err := d.store.Lookup(context.Background(), key)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func (d *deployment) failure(t *testing.T, j jobs.Job) int {
	t.Helper()
	_, failKey := jobstest.KeysOf(t, j.URL, j.Variant)
	if status, _, ok := d.runner.Failures.Recall(failKey); ok {
		return status
	}
	status, _, err := d.store.Failure(context.Background(), failKey)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	return status
}

// jobLines are the worker's log lines by message id.
func (d *deployment) jobLines() map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, l := range d.logs.Lines("job") {
		out[l["message_id"].(string)] = l
	}
	return out
}

func failedIDs(resp events.SQSEventResponse) []string {
	var ids []string
	for _, f := range resp.BatchItemFailures {
		ids = append(ids, f.ItemIdentifier)
	}
	return ids
}

// A miss for an animated emoji queues its static sibling; the worker,
// fed from the real queue, stores it in S3; the static request is a hit.
func TestEndToEnd(t *testing.T) {
	d := deploy(t)
	src := d.origin.Add("/blobcat_party.gif", testmedia.GIF(64, 64, 4))

	if w := d.get(src, "emoji=1"); w.Code != http.StatusOK || w.Header().Get("Content-Type") != "image/webp" {
		t.Fatalf("emoji: %d %s", w.Code, w.Header().Get("Content-Type"))
	}
	msgs := d.queue.Receive(t, d.queue.URL, 10, 3*time.Second)
	if len(msgs) != 1 {
		t.Fatalf("%d messages queued for the miss, want 1", len(msgs))
	}
	j, err := jobs.Decode([]byte(msgs[0].Body))
	if err != nil || j.URL != src || j.Variant != variant.EmojiStatic {
		t.Fatalf("queued %s (%v), want emoji-static of %s", msgs[0].Body, err, src)
	}

	resp := d.invoke(t, msgs)
	if len(resp.BatchItemFailures) != 0 {
		t.Fatalf("failures %v", failedIDs(resp))
	}
	d.queue.Settle(t, msgs, resp)
	if !d.stored(t, j) {
		t.Fatal("emoji-static is not in S3")
	}
	line := d.jobLines()[msgs[0].MessageId]
	if line["outcome"] != "done" || line["variant"] != "emoji-static" || line["request_id"] != "req-1" ||
		line["status"] != float64(200) || line["bytes"].(float64) <= 0 || line["receive_count"] != "1" {
		t.Errorf("job log line %v", line)
	}
	for _, f := range []string{"fetch_ms", "transform_ms", "duration_ms", "bytes_in"} {
		if _, ok := line[f]; !ok {
			t.Errorf("job log line lacks %s", f)
		}
	}

	w := d.get(src, "emoji=1&static=1")
	if w.Code != http.StatusFound || w.Header().Get("Location") == "" {
		t.Fatalf("static: %d, want a 302 to S3", w.Code)
	}
	if hits := d.origin.Hits("/blobcat_party.gif"); hits != 2 {
		t.Errorf("origin hit %d times, want 2", hits)
	}
	// The static request hit the store: nothing more was queued.
	if more := d.queue.Receive(t, d.queue.URL, 10, 0); len(more) != 0 {
		t.Errorf("%d more messages queued", len(more))
	}
	// The precomputed object serves what the proxy would have made.
	req, _ := http.NewRequest(http.MethodGet, w.Header().Get("Location"), nil)
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusOK || r.Header.Get("Content-Type") != "image/webp" {
		t.Errorf("redirect target: %d %s", r.StatusCode, r.Header.Get("Content-Type"))
	}
}

// A request that is not a miss for an emoji or avatar queues nothing.
func TestOnlySiblingKindsQueue(t *testing.T) {
	d := deploy(t)
	src := d.origin.Add("/photo.png", testmedia.PNG(64, 64))
	for _, flags := range []string{"preview=1", "static=1", "emoji=1&static=1", "badge=1"} {
		if w := d.get(src, flags); w.Code != http.StatusOK {
			t.Fatalf("%s: %d", flags, w.Code)
		}
	}
	if msgs := d.queue.Receive(t, d.queue.URL, 10, time.Second); len(msgs) != 0 {
		t.Errorf("%d messages queued, want none", len(msgs))
	}
	if w := d.get(src, "avatar=1"); w.Code != http.StatusOK {
		t.Fatalf("avatar: %d", w.Code)
	}
	msgs := d.queue.Receive(t, d.queue.URL, 10, 3*time.Second)
	if len(msgs) != 1 {
		t.Fatalf("%d messages for an avatar miss, want 1", len(msgs))
	}
	if j, _ := jobs.Decode([]byte(msgs[0].Body)); j.Variant != variant.AvatarStatic {
		t.Errorf("queued %s, want avatar-static", msgs[0].Body)
	}
}

// One good job and one whose origin answers 500 in the same batch: only
// the second is reported, and only it comes back.
func TestPartialBatchFailure(t *testing.T) {
	d := deploy(t)
	good := jobs.Job{URL: d.origin.Add("/good.gif", testmedia.GIF(32, 32, 2)), Variant: variant.EmojiStatic}
	bad := jobs.Job{URL: d.origin.AddFile("/bad.gif", jobstest.File{Status: http.StatusInternalServerError, Body: []byte("oops")}), Variant: variant.EmojiStatic}
	d.enqueue(t, good, bad)

	msgs := d.queue.Receive(t, d.queue.URL, 10, 3*time.Second)
	if len(msgs) != 2 {
		t.Fatalf("received %d messages, want 2", len(msgs))
	}
	var badID string
	for _, m := range msgs {
		if j, _ := jobs.Decode([]byte(m.Body)); j == bad {
			badID = m.MessageId
		}
	}
	resp := d.invoke(t, msgs)
	if ids := failedIDs(resp); len(ids) != 1 || ids[0] != badID {
		t.Fatalf("failures %v, want only %s", ids, badID)
	}
	d.queue.Settle(t, msgs, resp)
	if !d.stored(t, good) || d.stored(t, bad) {
		t.Error("want the good job stored and the bad one not")
	}
	if d.jobLines()[badID]["outcome"] != "retry" {
		t.Errorf("bad job logged as %v", d.jobLines()[badID])
	}

	// After the visibility timeout only the failed message is back.
	again := d.queue.Receive(t, d.queue.URL, 10, 3*time.Second)
	if len(again) != 1 || again[0].MessageId != badID || again[0].Attributes["ApproximateReceiveCount"] != "2" {
		t.Fatalf("redelivered %+v, want only %s, received twice", again, badID)
	}
}

// A body that is not a job is logged and acknowledged, never retried.
func TestPoisonMessage(t *testing.T) {
	d := deploy(t)
	good := jobs.Job{URL: d.origin.Add("/ok.png", testmedia.PNG(32, 32)), Variant: variant.EmojiStatic}
	d.enqueue(t, good)
	poisonID := d.queue.Send(t, `{"this is":"not a job"`)
	versionID := d.queue.Send(t, `{"v":99,"url":"https://example.com/a.png","variant":"emoji"}`)

	handled := 0
	for handled < 3 {
		msgs, resp := d.poll(t)
		if len(msgs) == 0 {
			t.Fatalf("handled %d of 3 messages", handled)
		}
		if len(resp.BatchItemFailures) != 0 {
			t.Fatalf("failures %v, want none", failedIDs(resp))
		}
		handled += len(msgs)
	}
	for _, id := range []string{poisonID, versionID} {
		if l := d.jobLines()[id]; l["outcome"] != "malformed" || l["level"] != "ERROR" {
			t.Errorf("malformed message %s logged as %v", id, l)
		}
	}
	if !d.stored(t, good) {
		t.Error("the good job in the batch was not done")
	}
	if msgs := d.queue.Receive(t, d.queue.URL, 10, 2*time.Second); len(msgs) != 0 {
		t.Errorf("%d messages came back, want none", len(msgs))
	}
}

// A job whose variant exists is acknowledged without touching the origin.
func TestExistingVariantSkipped(t *testing.T) {
	d := deploy(t)
	j := jobs.Job{URL: d.origin.Add("/known.gif", testmedia.GIF(32, 32, 2)), Variant: variant.EmojiStatic}
	d.enqueue(t, j, j)
	msgs := d.queue.Receive(t, d.queue.URL, 1, 3*time.Second)
	if len(msgs) != 1 {
		t.Fatal("nothing queued")
	}
	d.queue.Settle(t, msgs, d.invoke(t, msgs))
	if hits := d.origin.Hits("/known.gif"); hits != 1 {
		t.Fatalf("origin hit %d times", hits)
	}

	msgs, resp := d.poll(t)
	if len(msgs) != 1 || len(resp.BatchItemFailures) != 0 {
		t.Fatalf("second delivery: %d messages, failures %v", len(msgs), failedIDs(resp))
	}
	if l := d.jobLines()[msgs[0].MessageId]; l["outcome"] != "skipped" {
		t.Errorf("logged as %v, want skipped", l)
	}
	if hits := d.origin.Hits("/known.gif"); hits != 1 {
		t.Errorf("origin hit %d times, want 1: the existing variant was fetched again", hits)
	}
}

// A worker that dies holding a message loses nothing: the message comes
// back after the visibility timeout and another worker completes it.
func TestWorkerKilledMidBatch(t *testing.T) {
	d := deploy(t)
	j := jobs.Job{URL: d.origin.Add("/survivor.gif", testmedia.GIF(32, 32, 3)), Variant: variant.EmojiStatic}
	d.enqueue(t, j)

	// The first worker receives the message and "crashes": no answer, no
	// delete.
	first := d.queue.Receive(t, d.queue.URL, 10, 3*time.Second)
	if len(first) != 1 {
		t.Fatal("nothing queued")
	}
	if again := d.queue.Receive(t, d.queue.URL, 10, 0); len(again) != 0 {
		t.Fatal("the message was visible while the first worker held it")
	}

	msgs, resp := d.poll(t)
	if len(msgs) != 1 || msgs[0].MessageId != first[0].MessageId || len(resp.BatchItemFailures) != 0 {
		t.Fatalf("redelivery: %+v, failures %v", msgs, failedIDs(resp))
	}
	if !d.stored(t, j) {
		t.Fatal("the second worker did not store the variant")
	}
	if msgs := d.queue.Receive(t, d.queue.URL, 10, 2*time.Second); len(msgs) != 0 {
		t.Errorf("%d messages left", len(msgs))
	}
	if dead := d.queue.Receive(t, d.queue.DLQ, 10, 0); len(dead) != 0 {
		t.Errorf("%d messages in the dead-letter queue", len(dead))
	}
}

// A source that is gone fails for good: acknowledged and remembered.
func TestPermanentFailureAcknowledged(t *testing.T) {
	d := deploy(t)
	j := jobs.Job{URL: d.origin.URL + "/deleted.gif", Variant: variant.EmojiStatic}
	d.enqueue(t, j)
	msgs, resp := d.poll(t)
	if len(msgs) != 1 || len(resp.BatchItemFailures) != 0 {
		t.Fatalf("%d messages, failures %v; want 1 acknowledged", len(msgs), failedIDs(resp))
	}
	if l := d.jobLines()[msgs[0].MessageId]; l["outcome"] != "failed" || l["status"] != float64(404) {
		t.Errorf("logged as %v", l)
	}
	if got := d.failure(t, j); got != http.StatusNotFound {
		t.Errorf("remembered failure %d, want 404", got)
	}
	if msgs := d.queue.Receive(t, d.queue.URL, 10, 2*time.Second); len(msgs) != 0 {
		t.Errorf("a permanent failure came back")
	}
	if dead := d.queue.Receive(t, d.queue.DLQ, 10, 0); len(dead) != 0 {
		t.Errorf("a permanent failure went to the dead-letter queue")
	}
}

// A source that keeps failing is retried maxReceiveCount times, then
// moves to the dead-letter queue (queue configuration, not code).
func TestTransientFailureEndsInDLQ(t *testing.T) {
	d := deploy(t)
	j := jobs.Job{URL: d.origin.AddFile("/down.gif", jobstest.File{Status: http.StatusServiceUnavailable, Body: []byte("down")}), Variant: variant.EmojiStatic}
	d.enqueue(t, j)

	var id string
	for attempt := 1; attempt <= 2; attempt++ {
		msgs, resp := d.poll(t)
		if len(msgs) != 1 {
			t.Fatalf("attempt %d: %d messages", attempt, len(msgs))
		}
		id = msgs[0].MessageId
		if ids := failedIDs(resp); len(ids) != 1 || ids[0] != id {
			t.Fatalf("attempt %d: failures %v, want %s", attempt, ids, id)
		}
	}
	if msgs, _ := d.poll(t); len(msgs) != 0 {
		t.Fatalf("delivered a third time, past maxReceiveCount")
	}
	dead := d.queue.Receive(t, d.queue.DLQ, 10, 2*time.Second)
	if len(dead) != 1 {
		t.Fatalf("%d messages in the dead-letter queue, want 1", len(dead))
	}
	if got, _ := jobs.Decode([]byte(dead[0].Body)); got != j {
		t.Errorf("dead letter %s", dead[0].Body)
	}
	// The test queue redelivers within seconds, inside the few seconds a
	// transient failure is remembered: the second delivery is retried
	// without going back to the origin (a real queue's visibility timeout
	// spaces deliveries by minutes, so each one fetches).
	if hits := d.origin.Hits("/down.gif"); hits != 1 {
		t.Errorf("origin hit %d times, want 1", hits)
	}
	if got := d.failure(t, j); got != http.StatusBadGateway {
		t.Errorf("a transient failure was remembered as %d, want 502 for %v", got, failure.TransientTTL)
	}
}

// slowRunner blocks each job until its context ends.
type slowRunner struct{}

func (slowRunner) Run(ctx context.Context, _ jobs.Job) (jobs.Report, error) {
	<-ctx.Done()
	return jobs.Report{}, ctx.Err()
}

// Jobs still running near the invocation's deadline are reported for a
// retry, and so are those not started, rather than the batch timing out.
func TestDeadlineReportsUnfinished(t *testing.T) {
	log, _ := jobstest.NewLogs(t)
	h := worker.New(slowRunner{}, 2, log)
	var ev events.SQSEvent
	for i := range 5 {
		body, _ := jobs.Encode(jobs.Job{URL: "https://example.com/" + string(rune('a'+i)), Variant: variant.Emoji})
		ev.Records = append(ev.Records, events.SQSMessage{MessageId: string(rune('a' + i)), Body: string(body)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4500*time.Millisecond)
	defer cancel()
	start := time.Now()
	resp, err := h.Handle(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3500*time.Millisecond {
		t.Errorf("returned after %v, past the reserve before the deadline", d)
	}
	if len(resp.BatchItemFailures) != 5 {
		t.Errorf("failures %v, want all 5", failedIDs(resp))
	}
}

// doneRunner finishes every job at once.
type doneRunner struct{}

func (doneRunner) Run(context.Context, jobs.Job) (jobs.Report, error) {
	return jobs.Report{Outcome: jobs.Done, Status: http.StatusOK, Bytes: 100}, nil
}

// A job's line carries EMF metrics only when MEDIA_PROXY_METRICS asks.
func TestJobMetrics(t *testing.T) {
	for _, mode := range []emf.Mode{emf.Off, emf.Totals, emf.ByVariant} {
		log, logs := jobstest.NewLogs(t)
		h := worker.New(doneRunner{}, 1, log)
		h.Metrics = mode
		body, _ := jobs.Encode(jobs.Job{URL: "https://example.com/a.png", Variant: variant.EmojiStatic})
		if _, err := h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{{MessageId: "m", Body: string(body)}}}); err != nil {
			t.Fatal(err)
		}
		lines := logs.Lines("job")
		if len(lines) != 1 {
			t.Fatalf("%v: %d job lines", mode, len(lines))
		}
		l := lines[0]
		if mode == emf.Off {
			if l["_aws"] != nil || l["Jobs"] != nil {
				t.Errorf("metrics off, yet the line carries them: %v", l)
			}
			continue
		}
		cw := l["_aws"].(map[string]any)["CloudWatchMetrics"].([]any)[0].(map[string]any)
		if l["Function"] != "worker" || l["Jobs"] != 1.0 || len(cw["Metrics"].([]any)) != worker.JobMetrics {
			t.Errorf("%v: line %v", mode, l)
		}
		if _, ok := l["Variant"]; ok != (mode == emf.ByVariant) {
			t.Errorf("%v: Variant %v", mode, l["Variant"])
		}
	}
}
