package pipeline_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/budget"
	"github.com/misskey-lambda/media-proxy/shared/fetch"
	"github.com/misskey-lambda/media-proxy/shared/pipeline"
	"github.com/misskey-lambda/media-proxy/shared/testmedia"
	"github.com/misskey-lambda/media-proxy/shared/transform"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

// newPipeline serves body from a loopback origin and returns a pipeline
// on mem fetching from it, the URL and a count of the origin's requests.
func newPipeline(t *testing.T, mem *budget.Budget, body []byte) (*pipeline.Pipeline, *url.URL, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.Write(body)
	}))
	t.Cleanup(o.Close)
	loopback, err := fetch.ParsePrefixes("127.0.0.0/8")
	if err != nil {
		t.Fatal(err)
	}
	fetcher := fetch.New(fetch.Config{AllowedPrivate: loopback, AllowedPorts: []fetch.PortRange{{Lo: 1, Hi: 65535}}})
	p := pipeline.New(fetcher, transform.New(transform.DefaultLimits, 1, mem), pipeline.Options{
		InMemory: 8 << 20, MaxConvertSize: 50 << 20, Budget: mem,
	})
	src, err := fetcher.Canonical(o.URL + "/a.png")
	if err != nil {
		t.Fatal(err)
	}
	return p, src, &hits
}

// TestNoHoldAndWait: a conversion that cannot have its decode's memory at
// once does not wait for it holding its source: it lets the source go,
// waits for the whole with nothing held, and fetches the source again.
// Requests that each sat on a source while waiting for the memory the
// others held could fill the budget and all stall until the wait's limit.
func TestNoHoldAndWait(t *testing.T) {
	const total = 8 << 20
	mem := budget.New(budget.Options{Bytes: total, MaxWait: time.Minute})
	src := testmedia.NoisePNG(512, 512) // about 1 MB; its decode needs 1 MB more
	p, u, hits := newPipeline(t, mem, src)

	// Another request holds all but room for the source alone.
	other := mem.Buffer(-1)
	if err := other.Reserve(context.Background(), total-5<<20/2); err != nil {
		t.Fatal(err)
	}
	held := other.Held()
	done := make(chan error, 1)
	go func() {
		res, err := p.Produce(context.Background(), u, variant.Emoji)
		if err == nil {
			if res.Height != 128 {
				err = fmt.Errorf("%dx%d", res.Width, res.Height)
			}
			res.Close()
		}
		done <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for mem.Waiting() == 0 && time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("finished before waiting for memory: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	if got := mem.Held(); got != held {
		t.Errorf("waiting for its decode's memory, the request holds %d bytes of budget, want none (the source let go)", got-held)
	}
	other.Release()
	if err := <-done; err != nil {
		t.Fatalf("once memory is free: %v", err)
	}
	if n := hits.Load(); n != 2 {
		t.Errorf("the origin was asked %d times, want 2 (the source fetched again)", n)
	}
	if mem.Held() != 0 {
		t.Errorf("%d bytes held after the result was closed", mem.Held())
	}
}
