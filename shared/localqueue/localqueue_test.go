package localqueue_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/jobs"
	"github.com/misskey-lambda/media-proxy/shared/jobs/jobstest"
	"github.com/misskey-lambda/media-proxy/shared/localqueue"
	"github.com/misskey-lambda/media-proxy/shared/testmedia"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

// fakeRunner records jobs; while gate is open (nil) jobs finish at once,
// otherwise each waits for a value on it or for its context to end.
type fakeRunner struct {
	mu        sync.Mutex
	ran       []jobs.Job
	cancelled int
	gate      chan struct{}
	started   chan struct{}
}

func (r *fakeRunner) Run(ctx context.Context, j jobs.Job) (jobs.Report, error) {
	if r.started != nil {
		r.started <- struct{}{}
	}
	if r.gate != nil {
		select {
		case <-r.gate:
		case <-ctx.Done():
			r.mu.Lock()
			r.cancelled++
			r.mu.Unlock()
			return jobs.Report{}, ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ran = append(r.ran, j)
	return jobs.Report{Outcome: jobs.Done}, nil
}

func (r *fakeRunner) count() (ran, cancelled int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ran), r.cancelled
}

// await runs f, which the test expects to return without waiting for any
// gate; the deadline only fails a test in which it waits anyway.
func await(t *testing.T, what string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("%s is still waiting after 30 s", what)
		return nil
	}
}

func job(i int) jobs.Job {
	return jobs.Job{URL: "https://example.com/" + string(rune('a'+i)) + ".gif", Variant: variant.EmojiStatic}
}

func TestRunsJobsAndDrainsOnClose(t *testing.T) {
	log, logs := jobstest.NewLogs(t)
	r := &fakeRunner{}
	q := localqueue.New(r, localqueue.Options{Workers: 2, Buffer: 16}, log)
	for i := range 10 {
		if err := q.Enqueue(context.Background(), []jobs.Job{job(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ran, _ := r.count(); ran != 10 {
		t.Errorf("ran %d jobs, want 10", ran)
	}
	if n := len(logs.Lines("job")); n != 10 {
		t.Errorf("%d job log lines, want 10", n)
	}
	if err := q.Enqueue(context.Background(), []jobs.Job{job(0)}); !errors.Is(err, localqueue.ErrClosed) {
		t.Errorf("Enqueue after Close = %v, want ErrClosed", err)
	}
	if err := q.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestFullBufferDropsWithoutBlocking(t *testing.T) {
	log, _ := jobstest.NewLogs(t)
	r := &fakeRunner{gate: make(chan struct{}), started: make(chan struct{}, 10)}
	q := localqueue.New(r, localqueue.Options{Workers: 1, Buffer: 2}, log)
	// One job running, two waiting: the buffer is full.
	q.Enqueue(context.Background(), []jobs.Job{job(0)})
	<-r.started
	if err := q.Enqueue(context.Background(), []jobs.Job{job(1), job(2)}); err != nil {
		t.Fatal(err)
	}
	// The running job holds the only worker until the gate opens, so an
	// Enqueue that waited for room would wait for the gate: it must come
	// back before.
	err := await(t, "Enqueue on a full queue", func() error { return q.Enqueue(context.Background(), []jobs.Job{job(3), job(4)}) })
	if !errors.Is(err, localqueue.ErrFull) {
		t.Fatalf("Enqueue on a full queue = %v, want ErrFull", err)
	}
	close(r.gate)
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ran, _ := r.count(); ran != 3 {
		t.Errorf("ran %d jobs, want the 3 that fitted", ran)
	}
}

func TestCloseDeadlineCancelsAndDrops(t *testing.T) {
	log, logs := jobstest.NewLogs(t)
	r := &fakeRunner{gate: make(chan struct{}), started: make(chan struct{}, 10)}
	q := localqueue.New(r, localqueue.Options{Workers: 1, Buffer: 8}, log)
	q.Enqueue(context.Background(), []jobs.Job{job(0), job(1), job(2)})
	<-r.started
	// The gate never opens: Close returns only by cancelling the running
	// job once its deadline has passed.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := await(t, "Close past its deadline", func() error { return q.Close(ctx) }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close past its deadline = %v, want DeadlineExceeded", err)
	}
	if ran, cancelled := r.count(); ran != 0 || cancelled != 1 {
		t.Errorf("ran %d, cancelled %d; want the running job cancelled", ran, cancelled)
	}
	if n := len(logs.Lines("precompute job dropped at shutdown")); n != 2 {
		t.Errorf("%d drop lines, want 2", n)
	}
}

// The embedded default: a miss for an emoji through the real handler
// precomputes emoji-static in process, so the static request is a hit.
func TestSiblingsPrecomputedInProcess(t *testing.T) {
	log, logs := jobstest.NewLogs(t)
	svc := jobstest.Service(t, map[string]string{"MEDIA_PROXY_QUEUE": "local"}, log)
	q, ok := svc.Queue.(*localqueue.Queue)
	if !ok {
		t.Fatalf("MEDIA_PROXY_QUEUE=local built %T", svc.Queue)
	}
	origin := jobstest.NewOrigin(t)
	src := origin.Add("/party.gif", testmedia.GIF(64, 64, 4))

	if resp := get(svc.Handler, "/e.webp?emoji=1&url="+url.QueryEscape(src)); resp.Code != http.StatusOK {
		t.Fatalf("emoji: %d", resp.Code)
	}
	key, _ := jobstest.KeysOf(t, src, variant.EmojiStatic)
	// Close lets the workers finish the queued jobs: the sibling job has
	// run when it returns (a hit enqueues nothing).
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Store.Lookup(context.Background(), key); err != nil {
		t.Fatalf("emoji-static not stored by the sibling job: %v", err)
	}
	if resp := get(svc.Handler, "/e.webp?emoji=1&static=1&url="+url.QueryEscape(src)); resp.Code != http.StatusOK {
		t.Fatalf("static: %d", resp.Code)
	}
	var cache []string
	for _, l := range logs.Lines("request") {
		cache = append(cache, l["cache"].(string))
	}
	if len(cache) != 2 || cache[0] != "miss" || cache[1] != "hit" {
		t.Errorf("cache outcomes %v, want [miss hit]", cache)
	}
	if hits := origin.Hits("/party.gif"); hits != 2 {
		t.Errorf("origin hit %d times, want 2 (the request and its sibling job)", hits)
	}
}

// MEDIA_PROXY_QUEUE=none, or a store that keeps nothing, disables it.
func TestDisabled(t *testing.T) {
	log, _ := jobstest.NewLogs(t)
	for _, env := range []map[string]string{
		{"MEDIA_PROXY_QUEUE": "none"},
		{"MEDIA_PROXY_QUEUE": "local", "MEDIA_PROXY_STORE": "none"},
	} {
		if svc := jobstest.Service(t, env, log); svc.Queue != nil {
			t.Errorf("%v built a queue: %T", env, svc.Queue)
		}
	}
}

// get serves one request in process, so its log line is written when it
// returns.
func get(h http.Handler, target string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, target, nil))
	return w
}
