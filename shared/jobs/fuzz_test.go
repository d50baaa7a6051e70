package jobs_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/misskey-lambda/media-proxy/shared/jobs"
	"github.com/misskey-lambda/media-proxy/shared/jobs/jobstest"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

// FuzzDecode feeds the worker's message decoder arbitrary bodies (an SQS
// queue takes messages from whoever holds the send permission). A body is
// either refused as ErrMalformed, or it is a job the proxy itself could
// have asked for: a known variant of an absolute http(s) URL, whose key
// stays inside the store and which encodes back to the same job.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"url":"https://example.com/a.gif","variant":"emoji-static"}`,
		`{"v":1,"url":"https://Example.com/emoji/%E3%81%82.gif?x=1&y=2","variant":"avatar"}`,
		`{"v":1,"url":"http://127.0.0.1/","variant":"original"}`,
		`{"v":1,"url":"https://example.com/a.gif","variant":"../../etc"}`,
		`{"v":1,"url":"file:///etc/passwd","variant":"emoji"}`,
		`{"v":1,"url":"https:","variant":"emoji"}`,
		`{"v":1,"url":"https://a","variant":"badge","extra":[1,{"x":null}]}`,
		`{"v":1,"v":2,"url":"https://a/","variant":"badge"}`,
		`{"V":1,"URL":"https://a/","VARIANT":"badge"}`,
		`{"v":1.0,"url":"https://a/","variant":"badge"}`,
		`{"v":1e0,"url":"https://a/\u0000","variant":"preview"}`,
		`[]`, `null`, `""`, `{}`, ``, `{"v":1,"url":null,"variant":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		j, err := jobs.Decode(body)
		if err != nil {
			if !errors.Is(err, jobs.ErrMalformed) {
				t.Fatalf("Decode(%q) = %v: not ErrMalformed, so it would be retried", body, err)
			}
			return
		}
		if _, ok := variant.Parse(string(j.Variant)); !ok {
			t.Fatalf("Decode(%q) accepted variant %q", body, j.Variant)
		}
		u, err := j.Source()
		if err != nil {
			t.Fatalf("Decode(%q) accepted a URL Source refuses: %v", body, err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			t.Fatalf("Decode(%q) accepted %q", body, j.URL)
		}
		key, err := j.Key(jobstest.Canonical)
		if err != nil {
			return // refused as the proxy refuses it; the runner finishes it as failed
		}
		if strings.Contains(key, "..") || strings.HasPrefix(key, "/") || !strings.HasPrefix(key, "v1/"+string(j.Variant)+"/") {
			t.Fatalf("Key of decoded %+v = %q", j, key)
		}
		enc, err := jobs.Encode(j)
		if err != nil {
			t.Fatalf("Encode(Decode(%q)) = %v", body, err)
		}
		back, err := jobs.Decode(enc)
		if err != nil || back != j {
			t.Fatalf("round trip of %+v via %s gave %+v, %v", j, enc, back, err)
		}
	})
}
