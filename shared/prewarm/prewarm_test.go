package prewarm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/misskey-lambda/media-proxy/shared/jobs"
	"github.com/misskey-lambda/media-proxy/shared/jobs/jobstest"
	"github.com/misskey-lambda/media-proxy/shared/prewarm"
	"github.com/misskey-lambda/media-proxy/shared/store"
	"github.com/misskey-lambda/media-proxy/shared/testmedia"
	"github.com/misskey-lambda/media-proxy/shared/worker"
)

type emoji struct {
	Name string `json:"name"`
	URL  string `json:"url"`
}

// instance is a fake Misskey instance on loopback answering
// POST /api/emojis, which Misskey documents as taking {} and listing
// every custom emoji.
func instance(t *testing.T, list []emoji) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != "/api/emojis" ||
			!strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") || string(body) != "{}" {
			http.Error(w, "unexpected request", http.StatusBadRequest)
			t.Errorf("instance got %s %s %q (%s)", r.Method, r.URL.Path, body, r.Header.Get("Content-Type"))
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		json.NewEncoder(w).Encode(map[string]any{"emojis": list})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// emojiOrigin serves n small emoji, half animated GIFs and half PNGs.
func emojiOrigin(t *testing.T, n int) (*jobstest.Origin, []emoji) {
	o := jobstest.NewOrigin(t)
	gif, png := testmedia.GIF(32, 32, 2), testmedia.PNG(32, 32)
	var list []emoji
	for i := range n {
		name := fmt.Sprintf("emoji_%03d", i)
		body, ext := png, ".png"
		if i%2 == 0 {
			body, ext = gif, ".gif"
		}
		list = append(list, emoji{Name: name, URL: o.Add("/emoji/"+name+ext, body)})
	}
	return o, list
}

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	vars := map[string]string{"MEDIA_PROXY_ALLOWED_PRIVATE_NETWORKS": "127.0.0.0/8", "MEDIA_PROXY_ALLOWED_PORTS": "1-65535"}
	for k, v := range env {
		vars[k] = v
	}
	var stdout, stderr bytes.Buffer
	code := prewarm.Main(context.Background(), args, func(k string) string { return vars[k] }, &stdout, &stderr)
	if testing.Verbose() {
		t.Logf("prewarm %v: %d\n%s%s", args, code, stdout.String(), stderr.String())
	}
	return result{code, stdout.String(), stderr.String()}
}

// finished is the summary line of a run.
func finished(t *testing.T, r result) string {
	t.Helper()
	for _, l := range strings.Split(r.stderr, "\n") {
		if strings.HasPrefix(l, "prewarm: finished: ") {
			return strings.TrimPrefix(l, "prewarm: finished: ")
		}
	}
	t.Fatalf("no summary in:\n%s", r.stderr)
	return ""
}

// A 200-emoji instance pre-warmed through SQS and the worker fills S3 with
// 400 variants; a second run finds them all and queues nothing.
func TestInstanceThroughQueueAndWorker(t *testing.T) {
	jobstest.UseStandins(t, true)
	bucket := jobstest.NewBucket(t, jobstest.S3Client(t))
	q := jobstest.NewQueue(t, jobstest.SQSClient(t), 30, 2)
	origin, list := emojiOrigin(t, 200)
	// Instances repeat URLs across aliases, and some have none.
	list = append(list, list[0], emoji{Name: "broken"})
	inst := instance(t, list)
	env := map[string]string{
		"MEDIA_PROXY_STORE":         "s3://" + bucket + "/cache",
		"MEDIA_PROXY_S3_PATH_STYLE": "true",
		"MEDIA_PROXY_QUEUE":         q.URL,
	}

	log, _ := jobstest.NewLogs(t)
	wenv := map[string]string{"MEDIA_PROXY_STORE": env["MEDIA_PROXY_STORE"], "MEDIA_PROXY_S3_PATH_STYLE": "true"}
	h := worker.New(jobstest.Service(t, wenv, log).Runner, 4, log)

	// The worker polls while the command queues, as the Lambda poller
	// would. The queue comes from MEDIA_PROXY_QUEUE.
	done := make(chan result, 1)
	go func() { done <- run(t, env, "--rate", "0", "--concurrency", "8", inst.URL) }()
	// Until both events: the command has finished (every job is queued)
	// and the worker has handled 400. How long that takes is the
	// machine's; what fails is a queue that runs dry first: ten empty
	// one-second polls once everything was queued.
	var r *result
	handled, dry := 0, 0
	start := time.Now()
	for r == nil || handled < 400 {
		select {
		case res := <-done:
			if res.code != 0 {
				t.Fatalf("first run exited %d:\n%s", res.code, res.stderr)
			}
			r = &res
		default:
		}
		msgs := q.Receive(t, q.URL, 10, time.Second)
		if len(msgs) == 0 {
			if r != nil {
				if dry++; dry == 10 {
					t.Fatalf("worker handled %d of 400 messages in %v; the queue has been empty for 10 s since the first run finished",
						handled, time.Since(start).Round(time.Second))
				}
			}
			continue
		}
		dry = 0
		resp, err := h.Handle(context.Background(), events.SQSEvent{Records: msgs})
		if err != nil || len(resp.BatchItemFailures) != 0 {
			t.Fatalf("batch: %v, failures %v", err, resp.BatchItemFailures)
		}
		q.Settle(t, msgs, resp)
		handled += len(msgs)
	}
	if got := finished(t, *r); !strings.HasPrefix(got, "400/400 checked, 0 already stored, 400 missing, 400 queued,") {
		t.Errorf("first run: %s", got)
	}
	if extra := q.Receive(t, q.URL, 10, 0); len(extra) != 0 {
		t.Errorf("%d messages beyond the 400", len(extra))
	}
	keys := jobstest.Keys(t, jobstest.S3Client(t), bucket, "cache/v1/")
	perKind := map[string]int{}
	for _, k := range keys {
		perKind[strings.Split(k, "/")[2]]++
	}
	if len(keys) != 400 || perKind["emoji"] != 200 || perKind["emoji-static"] != 200 {
		t.Errorf("S3 holds %d variants (%v), want 200 emoji and 200 emoji-static", len(keys), perKind)
	}

	second := run(t, env, "--rate", "0", "--concurrency", "8", inst.URL)
	if second.code != 0 {
		t.Fatalf("second run exited %d:\n%s", second.code, second.stderr)
	}
	if got := finished(t, second); !strings.HasPrefix(got, "400/400 checked, 400 already stored, 0 missing, 0 queued,") {
		t.Errorf("second run: %s", got)
	}
	if msgs := q.Receive(t, q.URL, 10, time.Second); len(msgs) != 0 {
		t.Errorf("second run queued %d messages", len(msgs))
	}
	if hits := origin.Hits("/emoji/emoji_000.gif"); hits != 2 {
		t.Errorf("an emoji was fetched %d times, want 2 (one per variant)", hits)
	}
}

// --local runs the jobs here, into the configured store; sources that are
// gone are reported but are not errors, and a re-run fetches only them
// again (a failure found at once is remembered by its process, not
// stored: see failure.Stored).
func TestLocalFromFile(t *testing.T) {
	origin, list := emojiOrigin(t, 6)
	dir := t.TempDir()
	file := filepath.Join(dir, "urls.txt")
	lines := []string{"# emoji to warm", ""}
	for _, e := range list {
		lines = append(lines, e.URL)
	}
	lines = append(lines, "  "+list[1].URL+"  ", origin.URL+"/emoji/gone.png")
	os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	env := map[string]string{"MEDIA_PROXY_STORE": "dir:" + filepath.Join(dir, "store")}

	r := run(t, env, "--local", "--rate", "0", "--file", file)
	if r.code != 0 {
		t.Fatalf("exited %d:\n%s", r.code, r.stderr)
	}
	if got := finished(t, r); got != "14/14 checked, 0 already stored, 14 missing, 0 queued, 12 done, 0 skipped, 2 failed, 0 errors" {
		t.Errorf("first run: %s", got)
	}
	if !strings.Contains(r.stderr, "gone.png failed with 404") {
		t.Errorf("the gone source is not reported:\n%s", r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("stdout %q, want nothing", r.stdout)
	}
	r = run(t, env, "--local", "--rate", "0", "--file", file)
	if got := finished(t, r); r.code != 0 || got != "14/14 checked, 12 already stored, 2 missing, 0 queued, 0 done, 0 skipped, 2 failed, 0 errors" {
		t.Errorf("second run (%d): %s", r.code, got)
	}
	if hits := origin.Hits("/emoji/gone.png"); hits != 4 {
		t.Errorf("the gone source was fetched %d times, want 4 (once per variant and run)", hits)
	}
	if hits := origin.Hits("/emoji/emoji_000.gif"); hits != 2 {
		t.Errorf("a stored emoji was fetched %d times, want 2 (once per variant, first run only)", hits)
	}
}

// --dry-run lists what is missing and sends nothing (the queue URL here
// leads nowhere).
func TestDryRun(t *testing.T) {
	origin, list := emojiOrigin(t, 3)
	dir := t.TempDir()
	env := map[string]string{"MEDIA_PROXY_STORE": "dir:" + filepath.Join(dir, "store")}
	file := filepath.Join(dir, "one.txt")
	os.WriteFile(file, []byte(list[0].URL+"\n"), 0o644)
	if r := run(t, env, "--local", "--file", file); r.code != 0 {
		t.Fatalf("warming one: %d\n%s", r.code, r.stderr)
	}
	inst := instance(t, list)

	r := run(t, env, "--dry-run", "--queue", "http://127.0.0.1:9/000000000000/nowhere", inst.URL)
	if r.code != 0 {
		t.Fatalf("exited %d:\n%s", r.code, r.stderr)
	}
	want := []string{
		"would enqueue emoji " + list[1].URL,
		"would enqueue emoji " + list[2].URL,
		"would enqueue emoji-static " + list[1].URL,
		"would enqueue emoji-static " + list[2].URL,
	}
	got := strings.Split(strings.TrimSpace(r.stdout), "\n")
	sort.Strings(got)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("dry run printed\n%s\nwant\n%s", r.stdout, strings.Join(want, "\n"))
	}
	if hits := origin.Hits("/emoji/emoji_001.png"); hits != 0 {
		t.Errorf("dry run fetched an emoji")
	}

	r = run(t, env, "--dry-run", "--local", inst.URL)
	if r.code != 0 || strings.Count(r.stdout, "would run ") != 4 {
		t.Errorf("local dry run (%d) printed\n%s", r.code, r.stdout)
	}
}

func TestUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  map[string]string
		code int
		want string
	}{
		{[]string{"--help"}, nil, 0, "--file"},
		{nil, nil, 2, "want one instance URL"},
		{[]string{"--file", "x", "https://a.example"}, nil, 2, "not both"},
		{[]string{"--local", "--queue", "https://sqs.us-east-1.amazonaws.com/1/q", "https://a.example"}, nil, 2, "not both"},
		{[]string{"--rate", "-1", "https://a.example"}, nil, 2, "--rate"},
		{[]string{"https://a.example"}, map[string]string{"MEDIA_PROXY_QUEUE": "local"}, 2, "no queue"},
		{[]string{"--queue", "none", "https://a.example"}, nil, 2, "not an SQS queue URL"},
		{[]string{"--bogus"}, nil, 2, "flag provided but not defined"},
	} {
		r := run(t, c.env, c.args...)
		if r.code != c.code || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%v: exit %d, want %d with %q in:\n%s", c.args, r.code, c.code, c.want, r.stderr)
		}
	}
}

func TestEmojiURLs(t *testing.T) {
	inst := instance(t, []emoji{
		{Name: "a", URL: "https://media.example/a.png"},
		{Name: "a2", URL: "https://media.example/a.png"},
		{Name: "rel", URL: "/files/b.gif"},
		{Name: "none"},
		{Name: "ftp", URL: "ftp://media.example/c.png"},
	})
	got, err := prewarm.EmojiURLs(context.Background(), http.DefaultClient, inst.URL+"/")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"https://media.example/a.png", inst.URL + "/files/b.gif"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("EmojiURLs = %v, want %v", got, want)
	}

	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
	}))
	defer down.Close()
	if _, err := prewarm.EmojiURLs(context.Background(), http.DefaultClient, down.URL); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("instance answering 503: %v", err)
	}
}

func TestReadURLs(t *testing.T) {
	got, err := prewarm.ReadURLs(strings.NewReader("# list\nhttps://a.example/1.png\n\n  https://a.example/2.gif \r\nhttps://a.example/1.png\n"))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[https://a.example/1.png https://a.example/2.gif]" {
		t.Errorf("ReadURLs = %v", got)
	}
	if _, err := prewarm.ReadURLs(strings.NewReader("https://a.example/1.png\nnot a url\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("bad line: %v", err)
	}
}

// countingRunner records when each job started.
type countingRunner struct {
	mu     sync.Mutex
	starts []time.Time
}

func (r *countingRunner) Run(context.Context, jobs.Job) (jobs.Report, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.starts = append(r.starts, time.Now())
	return jobs.Report{Outcome: jobs.Done}, nil
}

func TestRateLimit(t *testing.T) {
	r := &countingRunner{}
	urls := []string{"https://a.example/1", "https://a.example/2", "https://a.example/3", "https://a.example/4", "https://a.example/5"}
	start := time.Now()
	st, err := prewarm.Run(context.Background(), prewarm.Options{Store: store.None{}, Canonical: jobstest.Canonical, Runner: r, Rate: 20, Concurrency: 4}, urls)
	if err != nil {
		t.Fatal(err)
	}
	if st.Done != 10 || len(r.starts) != 10 {
		t.Fatalf("done %d, started %d; want 10", st.Done, len(r.starts))
	}
	// Ten jobs at 20 per second: the k-th to start does so no sooner than
	// k x 50 ms after Run began (a busy machine can only make it later),
	// the last 450 ms after. The upper bound only catches a limiter far
	// slower than its rate.
	slices.SortFunc(r.starts, time.Time.Compare)
	for k, at := range r.starts {
		if d, want := at.Sub(start), time.Duration(k)*50*time.Millisecond; d < want {
			t.Errorf("job %d started %v after Run began, want at least %v", k, d, want)
		}
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("10 jobs at 20/s took %v, want about 450 ms", d)
	}
}

// TestBadSettings: every bad variable gets its own "prewarm:" line, and
// nothing is fetched.
func TestBadSettings(t *testing.T) {
	r := run(t, map[string]string{"MEDIA_PROXY_MAX_SIZE": "huge", "MEDIA_PROXY_STORE": "ftp://x"}, "--local", "--file", "-")
	if r.code != 1 {
		t.Errorf("exit %d, want 1", r.code)
	}
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "prewarm: MEDIA_PROXY_STORE=") || !strings.HasPrefix(lines[1], "prewarm: MEDIA_PROXY_MAX_SIZE=") {
		t.Errorf("stderr:\n%s", r.stderr)
	}
}
