package jobs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/budget"
	"github.com/misskey-lambda/media-proxy/shared/failure"
	"github.com/misskey-lambda/media-proxy/shared/jobs"
	"github.com/misskey-lambda/media-proxy/shared/jobs/jobstest"
	"github.com/misskey-lambda/media-proxy/shared/store"
	"github.com/misskey-lambda/media-proxy/shared/testmedia"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

// fixture is a runner on the real pipeline and an on-disk store, and a
// loopback origin.
type fixture struct {
	runner *jobs.Runner
	store  store.Store
	origin *jobstest.Origin
}

func newFixture(t *testing.T, env map[string]string) *fixture {
	log, _ := jobstest.NewLogs(t)
	svc := jobstest.Service(t, env, log)
	return &fixture{runner: svc.Runner, store: svc.Store, origin: jobstest.NewOrigin(t)}
}

func (f *fixture) read(t *testing.T, j jobs.Job) (*store.Entry, []byte) {
	t.Helper()
	key, err := j.Key(jobstest.Canonical)
	if err != nil {
		t.Fatal(err)
	}
	e, err := f.store.Lookup(context.Background(), key)
	if err != nil {
		t.Fatalf("lookup %s: %v", key, err)
	}
	r, err := e.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return e, b
}

// failure is the status a job's failure is remembered with, by the
// runner's process or in the store; 0 if none.
func (f *fixture) failure(t *testing.T, j jobs.Job) int {
	t.Helper()
	_, failKey := jobstest.KeysOf(t, j.URL, j.Variant)
	if status, _, ok := f.runner.Failures.Recall(failKey); ok {
		return status
	}
	status, _, err := f.store.Failure(context.Background(), failKey)
	if errors.Is(err, store.ErrNotFound) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return status
}

func TestRunnerDoneThenSkipped(t *testing.T) {
	f := newFixture(t, nil)
	j := jobs.Job{URL: f.origin.Add("/anim.gif", testmedia.GIF(64, 48, 3)), Variant: variant.EmojiStatic}

	rep, err := f.runner.Run(context.Background(), j)
	if err != nil || rep.Outcome != jobs.Done || rep.Status != http.StatusOK {
		t.Fatalf("first run: %+v, %v", rep, err)
	}
	if rep.Bytes <= 0 || rep.BytesIn != int64(len(testmedia.GIF(64, 48, 3))) {
		t.Errorf("report sizes: %+v", rep)
	}
	e, first := f.read(t, j)
	if e.ContentType != "image/webp" || e.ETag == "" {
		t.Errorf("stored meta %+v", e.Meta)
	}

	// Idempotent: a second delivery of the same job finds the object and
	// leaves it as it was, without fetching.
	rep, err = f.runner.Run(context.Background(), j)
	if err != nil || rep.Outcome != jobs.Skipped {
		t.Fatalf("second run: %+v, %v", rep, err)
	}
	if hits := f.origin.Hits("/anim.gif"); hits != 1 {
		t.Errorf("origin hit %d times, want 1", hits)
	}
	_, second := f.read(t, j)
	if !bytes.Equal(first, second) {
		t.Error("object changed on the second run")
	}
}

func TestRunnerPermanentFailures(t *testing.T) {
	f := newFixture(t, map[string]string{"MEDIA_PROXY_MAX_SIZE": "20000"})
	for _, c := range []struct {
		name   string
		file   jobstest.File
		kind   variant.Kind
		status int
	}{
		{"gone", jobstest.File{Status: http.StatusNotFound, Body: []byte("no")}, variant.EmojiStatic, http.StatusNotFound},
		{"remote-forbidden", jobstest.File{Status: http.StatusForbidden, Body: []byte("no")}, variant.Emoji, http.StatusForbidden},
		{"refused-type", jobstest.File{Body: testmedia.HTML()}, variant.Original, http.StatusForbidden},
		{"not-an-image", jobstest.File{Body: testmedia.PDF()}, variant.Emoji, http.StatusNotFound},
		{"too-large", jobstest.File{Body: testmedia.PNG(256, 256)}, variant.Emoji, http.StatusRequestEntityTooLarge},
		{"undecodable", jobstest.File{Body: testmedia.Truncate(testmedia.PNG(64, 64), 200)}, variant.Emoji, http.StatusUnprocessableEntity},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := "/" + c.name
			j := jobs.Job{URL: f.origin.AddFile(path, c.file), Variant: c.kind}
			rep, err := f.runner.Run(context.Background(), j)
			if err != nil {
				t.Fatalf("a permanent failure must not ask for a retry: %v", err)
			}
			if rep.Outcome != jobs.Failed || rep.Status != c.status || rep.Err == nil {
				t.Fatalf("report %+v, want failed with %d", rep, c.status)
			}
			if got := f.failure(t, j); got != c.status {
				t.Errorf("remembered failure %d, want %d", got, c.status)
			}
			// Remembered: a second delivery does not fetch again.
			rep, err = f.runner.Run(context.Background(), j)
			if err != nil || rep.Outcome != jobs.Skipped || rep.Status != c.status {
				t.Errorf("second run: %+v, %v", rep, err)
			}
			if hits := f.origin.Hits(path); hits != 1 {
				t.Errorf("origin hit %d times, want 1", hits)
			}
		})
	}
}

func TestRunnerTransientFailures(t *testing.T) {
	f := newFixture(t, nil)
	j := jobs.Job{URL: f.origin.AddFile("/flaky.gif", jobstest.File{Status: http.StatusInternalServerError, Body: []byte("oops")}), Variant: variant.EmojiStatic}
	rep, err := f.runner.Run(context.Background(), j)
	if err == nil || rep.Outcome != jobs.Retry || rep.Status != http.StatusBadGateway {
		t.Fatalf("remote 500: %+v, %v; want a retry with 502", rep, err)
	}
	// Remembered briefly, as the proxy does: a delivery within those
	// seconds is retried later without a fetch.
	if got := f.failure(t, j); got != http.StatusBadGateway {
		t.Errorf("a transient failure was remembered as %d, want 502 for a few seconds", got)
	}
	if rep, err := f.runner.Run(context.Background(), j); err == nil || rep.Outcome != jobs.Retry {
		t.Fatalf("run within the transient memory: %+v, %v; want a retry", rep, err)
	}
	if hits := f.origin.Hits("/flaky.gif"); hits != 1 {
		t.Errorf("origin hit %d times, want 1", hits)
	}
	// Retried once the memory has passed, it succeeds.
	later := time.Now().Add(failure.TransientTTL)
	f.runner.Failures.SetClock(func() time.Time { return later })
	f.origin.Add("/flaky.gif", testmedia.GIF(32, 32, 2))
	if rep, err := f.runner.Run(context.Background(), j); err != nil || rep.Outcome != jobs.Done {
		t.Fatalf("retry: %+v, %v", rep, err)
	}

	t.Run("rate-limited", func(t *testing.T) {
		j := jobs.Job{URL: f.origin.AddFile("/busy.gif", jobstest.File{Status: http.StatusTooManyRequests, Body: []byte("slow down")}), Variant: variant.Emoji}
		if rep, err := f.runner.Run(context.Background(), j); err == nil || rep.Outcome != jobs.Retry {
			t.Fatalf("remote 429: %+v, %v; want a retry", rep, err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		j := jobs.Job{URL: f.origin.Add("/late.gif", testmedia.GIF(32, 32, 2)), Variant: variant.Emoji}
		if rep, err := f.runner.Run(ctx, j); err == nil || rep.Outcome != jobs.Retry {
			t.Fatalf("cancelled: %+v, %v; want a retry", rep, err)
		}
		if got := f.failure(t, j); got != 0 {
			t.Errorf("a cancelled job was remembered as failing with %d", got)
		}
	})
}

// brokenStore fails the calls named.
type brokenStore struct {
	store.Store
	lookup, put bool
}

var errBroken = errors.New("store unavailable")

func (s brokenStore) Lookup(ctx context.Context, key string) (*store.Entry, error) {
	if s.lookup {
		return nil, errBroken
	}
	return s.Store.Lookup(ctx, key)
}

func (s brokenStore) Put(ctx context.Context, key string, m store.Meta, body io.Reader) error {
	if s.put {
		return errBroken
	}
	return s.Store.Put(ctx, key, m, body)
}

func TestRunnerStoreErrorsAreTransient(t *testing.T) {
	f := newFixture(t, nil)
	j := jobs.Job{URL: f.origin.Add("/a.png", testmedia.PNG(40, 40)), Variant: variant.Emoji}
	for name, st := range map[string]brokenStore{
		"lookup": {Store: f.store, lookup: true},
		"put":    {Store: f.store, put: true},
	} {
		r := &jobs.Runner{Producer: f.runner.Producer, Store: st, Canonical: f.runner.Canonical}
		rep, err := r.Run(context.Background(), j)
		if !errors.Is(err, errBroken) || rep.Outcome != jobs.Retry {
			t.Errorf("%s failing: %+v, %v; want a retry", name, rep, err)
		}
	}
}

func TestRunnerStreamsLargePassthrough(t *testing.T) {
	f := newFixture(t, nil)
	// Over the pipeline's in-memory limit (8 MB off Lambda): the result is
	// a stream, which goes into the store as is.
	body := testmedia.MP4(9 << 20)
	j := jobs.Job{URL: f.origin.Add("/clip.mp4", body), Variant: variant.Original}
	rep, err := f.runner.Run(context.Background(), j)
	if err != nil || rep.Outcome != jobs.Done {
		t.Fatalf("%+v, %v", rep, err)
	}
	e, got := f.read(t, j)
	if !bytes.Equal(got, body) || e.ContentType != "video/mp4" {
		t.Errorf("stored %d bytes of %s, want the %d bytes of video/mp4", len(got), e.ContentType, len(body))
	}
}

func TestRunnerRefusesBadJob(t *testing.T) {
	f := newFixture(t, nil)
	rep, err := f.runner.Run(context.Background(), jobs.Job{URL: "file:///etc/passwd", Variant: variant.Emoji})
	if err != nil || rep.Outcome != jobs.Failed {
		t.Fatalf("%+v, %v; want failed, not retried", rep, err)
	}
}

// TestBurstOfJobsNotRemembered: precompute jobs follow the proxy's rule
// that waiting for a decode slot is the proxy's state, never the image's.
// Many jobs of a valid SVG that renders slowly, run at once through one
// slot under a short time limit, each end done or to be retried (a slot
// not free in time), none failed or remembered; retried, each is done.
// The limit adapts to the machine as the proxy's burst test does: 8r
// (at least 2 s), the last job waiting longer than that for its slot.
func TestBurstOfJobsNotRemembered(t *testing.T) {
	origin := jobstest.NewOrigin(t)
	svg := testmedia.SVGSlow(4000)
	calib := newFixture(t, nil)
	start := time.Now()
	if rep, err := calib.runner.Run(context.Background(), jobs.Job{URL: origin.Add("/alone.svg", svg), Variant: variant.Emoji}); err != nil || rep.Outcome != jobs.Done {
		t.Fatalf("alone: %+v, %v", rep, err)
	}
	r := time.Since(start)
	limit := max(8*r, 2*time.Second).Round(time.Millisecond)
	n := min(int(limit/r)+3, 40)

	f := newFixture(t, map[string]string{"MEDIA_PROXY_TRANSFORM_CONCURRENCY": "1", "MEDIA_PROXY_TRANSFORM_TIMEOUT": limit.String()})
	js := make([]jobs.Job, n)
	reps := make([]jobs.Report, n)
	var wg sync.WaitGroup
	for i := range js {
		js[i] = jobs.Job{URL: origin.Add(fmt.Sprintf("/burst-%d.svg", i), svg), Variant: variant.Emoji}
		wg.Add(1)
		go func() {
			defer wg.Done()
			reps[i], _ = f.runner.Run(context.Background(), js[i])
		}()
	}
	wg.Wait()
	outcomes := map[jobs.Outcome]int{}
	for _, rep := range reps {
		outcomes[rep.Outcome]++
	}
	t.Logf("one job alone %v; %d at once through 1 slot with a limit of %v: %v", r.Round(time.Millisecond), n, limit, outcomes)
	for i, rep := range reps {
		if rep.Outcome != jobs.Done && rep.Outcome != jobs.Retry {
			t.Errorf("job %d: %s (%d, %v)", i, rep.Outcome, rep.Status, rep.Err)
		}
		if status := f.failure(t, js[i]); status != 0 {
			t.Errorf("job %d: a failure %d remembered", i, status)
		}
	}
	for i, j := range js {
		if rep, err := f.runner.Run(context.Background(), j); err != nil || (rep.Outcome != jobs.Done && rep.Outcome != jobs.Skipped) {
			t.Errorf("job %d again: %+v, %v", i, rep, err)
		}
	}
}

// bufferedStore is a store that says it holds write buffers while a body
// streams into it (as S3's upload does), and notes what the memory budget
// held while it did.
type bufferedStore struct {
	store.Store
	budget    *budget.Budget
	heldInPut int64
}

func (s *bufferedStore) WriteBuffer() int64 { return 4 << 20 }

func (s *bufferedStore) Put(ctx context.Context, key string, m store.Meta, body io.Reader) error {
	s.heldInPut = s.budget.Held()
	return s.Store.Put(ctx, key, m, body)
}

// TestRunnerStreamedPutAccounted: a job streaming a large body into the
// store takes the store's write buffers from the memory budget for the
// Put; with no room for them, it is retried later (a 503 of the proxy's
// own, nothing remembered) rather than wait holding its fetch.
func TestRunnerStreamedPutAccounted(t *testing.T) {
	f := newFixture(t, nil)
	mem := budget.New(budget.Options{Bytes: 64 << 20})
	st := &bufferedStore{Store: f.store, budget: mem}
	r := &jobs.Runner{Producer: f.runner.Producer, Store: st, Canonical: f.runner.Canonical, Budget: mem}
	j := jobs.Job{URL: f.origin.Add("/clip.mp4", testmedia.MP4(9<<20)), Variant: variant.Original}

	full := mem.Buffer(-1)
	if err := full.Reserve(context.Background(), mem.Total()-1<<20); err != nil {
		t.Fatal(err)
	}
	rep, err := r.Run(context.Background(), j)
	if err == nil || rep.Outcome != jobs.Retry || rep.Status != http.StatusServiceUnavailable || f.failure(t, j) != 0 {
		t.Errorf("no room for the write buffers: %+v, %v; want a retry, 503, nothing remembered", rep, err)
	}
	full.Release()
	rep, err = r.Run(context.Background(), j)
	if err != nil || rep.Outcome != jobs.Done {
		t.Fatalf("with room: %+v, %v", rep, err)
	}
	if st.heldInPut < st.WriteBuffer() {
		t.Errorf("the budget held %d bytes during the streamed Put, less than the store's %d of write buffers", st.heldInPut, st.WriteBuffer())
	}
	if mem.Held() != 0 {
		t.Errorf("%d bytes held after the job", mem.Held())
	}
}
