package jobs_test

import (
	"errors"
	"net/url"
	"testing"

	"github.com/misskey-lambda/media-proxy/shared/jobs"
	"github.com/misskey-lambda/media-proxy/shared/jobs/jobstest"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

func TestCodecRoundTrip(t *testing.T) {
	for _, k := range variant.Kinds {
		j := jobs.Job{URL: "https://Example.com/emoji/%E3%81%82.gif?x=1&y=2", Variant: k}
		b, err := jobs.Encode(j)
		if err != nil {
			t.Fatal(err)
		}
		got, err := jobs.Decode(b)
		if err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
		if got != j {
			t.Errorf("round trip of %+v gave %+v", j, got)
		}
	}
}

func TestEncodeFormat(t *testing.T) {
	b, err := jobs.Encode(jobs.Job{URL: "https://example.com/a.gif", Variant: variant.EmojiStatic})
	if err != nil {
		t.Fatal(err)
	}
	// The format is a contract with workers of other versions: keep it.
	want := `{"v":1,"url":"https://example.com/a.gif","variant":"emoji-static"}`
	if string(b) != want {
		t.Errorf("Encode = %s, want %s", b, want)
	}
}

func TestDecodeMalformed(t *testing.T) {
	for _, body := range []string{
		``,
		`not json`,
		`[]`,
		`{}`,
		`{"v":2,"url":"https://example.com/a.gif","variant":"emoji"}`,
		`{"url":"https://example.com/a.gif","variant":"emoji"}`,
		`{"v":1,"url":"https://example.com/a.gif","variant":"huge"}`,
		`{"v":1,"url":"https://example.com/a.gif"}`,
		`{"v":1,"url":"/a.gif","variant":"emoji"}`,
		`{"v":1,"url":"ftp://example.com/a.gif","variant":"emoji"}`,
		`{"v":1,"url":"https://","variant":"emoji"}`,
		`{"v":1,"url":"https://exa mple.com/%zz","variant":"emoji"}`,
		`{"v":"1","url":"https://example.com/a.gif","variant":"emoji"}`,
	} {
		if j, err := jobs.Decode([]byte(body)); !errors.Is(err, jobs.ErrMalformed) {
			t.Errorf("Decode(%q) = %+v, %v; want ErrMalformed", body, j, err)
		}
	}
}

func TestEncodeRefusesBadJobs(t *testing.T) {
	for _, j := range []jobs.Job{
		{URL: "https://example.com/a.gif", Variant: "huge"},
		{URL: "example.com/a.gif", Variant: variant.Emoji},
	} {
		if _, err := jobs.Encode(j); !errors.Is(err, jobs.ErrMalformed) {
			t.Errorf("Encode(%+v) = %v, want ErrMalformed", j, err)
		}
	}
}

func TestForAndKey(t *testing.T) {
	src, _ := url.Parse("https://EXAMPLE.com:443/a.gif")
	js := jobs.For(src, variant.Emoji.Siblings())
	if len(js) != 1 || js[0].Variant != variant.EmojiStatic || js[0].URL != src.String() {
		t.Fatalf("For = %+v", js)
	}
	key, err := js[0].Key(jobstest.Canonical)
	if err != nil {
		t.Fatal(err)
	}
	// The same key the proxy looks up for emoji=1&static=1 of the URL.
	if want, _ := jobstest.KeysOf(t, "https://example.com/a.gif", variant.EmojiStatic); key != want {
		t.Errorf("Key = %s, want %s", key, want)
	}
}

func TestLogURL(t *testing.T) {
	j := jobs.Job{URL: "https://user:pw@media.example/e.png?sig=s3cr3t#x", Variant: variant.Emoji}
	if got := j.LogURL(); got != "https://media.example/e.png" {
		t.Errorf("LogURL = %q", got)
	}
}
