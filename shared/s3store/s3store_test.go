package s3store

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/misskey-lambda/media-proxy/shared/store"
)

// The tests talk to a real S3 server (versitygw, started by
// scripts/lib/standins.sh) named by these variables.
type s3Env struct {
	endpoint, accessKey, secretKey, region string
}

func testEnv(t *testing.T) s3Env {
	t.Helper()
	e := s3Env{
		endpoint:  os.Getenv("MEDIA_PROXY_TEST_S3_ENDPOINT"),
		accessKey: os.Getenv("MEDIA_PROXY_TEST_S3_ACCESS_KEY"),
		secretKey: os.Getenv("MEDIA_PROXY_TEST_S3_SECRET_KEY"),
		region:    os.Getenv("MEDIA_PROXY_TEST_S3_REGION"),
	}
	if e.endpoint == "" || e.accessKey == "" || e.secretKey == "" || e.region == "" {
		msg := "MEDIA_PROXY_TEST_S3_* not set: start the S3 stand-in (scripts/lib/standins.sh s3_start)"
		if os.Getenv("MEDIA_PROXY_TEST_REQUIRE_STANDINS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return e
}

func staticCreds(e s3Env) aws.CredentialsProvider {
	return aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: e.accessKey, SecretAccessKey: e.secretKey, Source: "test"}, nil
	})
}

func newClient(e s3Env, creds aws.CredentialsProvider) *s3.Client {
	return s3.New(s3.Options{
		Region:       e.region,
		Credentials:  creds,
		BaseEndpoint: aws.String(e.endpoint),
		UsePathStyle: true,
	})
}

// newBucket creates a bucket with a random name, emptied and removed
// after the test.
func newBucket(t *testing.T, e s3Env) (*s3.Client, string) {
	t.Helper()
	client := newClient(e, staticCreds(e))
	var b [6]byte
	rand.Read(b[:])
	bucket := "media-proxy-test-" + hex.EncodeToString(b[:])
	ctx := t.Context()
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		p := s3.NewListObjectsV2Paginator(client, &s3.ListObjectsV2Input{Bucket: &bucket})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				t.Logf("list for cleanup: %v", err)
				return
			}
			for _, o := range page.Contents {
				client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: o.Key})
			}
		}
		if _, err := client.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: &bucket}); err != nil {
			t.Logf("delete bucket: %v", err)
		}
	})
	return client, bucket
}

func newStore(t *testing.T, cfg Config) (*Store, *s3.Client) {
	t.Helper()
	e := testEnv(t)
	client, bucket := newBucket(t, e)
	cfg.Bucket = bucket
	return New(client, nil, cfg), client
}

var testMeta = store.Meta{
	ContentType: "image/webp",
	Disposition: `inline; filename="cat.webp"; filename*=UTF-8''%E7%8C%AB.webp`,
	ETag:        `"abc123"`,
}

func readAll(t *testing.T, e *store.Entry) []byte {
	t.Helper()
	rc, err := e.Open(t.Context())
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return b
}

func httpGet(t *testing.T, u string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, b
}

func TestParseURL(t *testing.T) {
	for _, c := range []struct{ in, bucket, prefix string }{
		{"s3://bucket", "bucket", ""},
		{"s3://bucket/", "bucket", ""},
		{"s3://bucket/some/prefix/", "bucket", "some/prefix/"},
		{"s3://bucket/some/prefix", "bucket", "some/prefix/"},
		{"s3://my.bucket//media", "my.bucket", "media/"},
	} {
		b, p, err := ParseURL(c.in)
		if err != nil || b != c.bucket || p != c.prefix {
			t.Errorf("ParseURL(%q) = %q, %q, %v; want %q, %q", c.in, b, p, err, c.bucket, c.prefix)
		}
	}
	for _, bad := range []string{"", "bucket/x", "s3://", "s3:///prefix", "http://bucket/x", "s3://a b/x"} {
		if _, _, err := ParseURL(bad); err == nil {
			t.Errorf("ParseURL(%q) accepted", bad)
		}
	}
}

func TestPutLookupPresigned(t *testing.T) {
	s, _ := newStore(t, Config{Prefix: "p/"})
	ctx := t.Context()
	body := []byte("RIFF....WEBPVP8 some bytes")
	if err := s.Put(ctx, "v1/emoji/abc", testMeta, bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	e, err := s.Lookup(ctx, "v1/emoji/abc")
	if err != nil {
		t.Fatal(err)
	}
	want := testMeta
	want.Size = int64(len(body))
	if e.Meta != want {
		t.Errorf("meta = %+v, want %+v", e.Meta, want)
	}
	if got := readAll(t, e); !bytes.Equal(got, body) {
		t.Errorf("Open read %q", got)
	}
	if e.RedirectMaxAge != DefaultPresignTTL-cacheMargin {
		t.Errorf("RedirectMaxAge = %v", e.RedirectMaxAge)
	}
	if !strings.Contains(e.RedirectURL, "/p/v1/emoji/abc?") {
		t.Errorf("RedirectURL %s does not name the prefixed key", e.RedirectURL)
	}

	resp, got := httpGet(t, e.RedirectURL)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, body) {
		t.Fatalf("presigned GET: %d %q", resp.StatusCode, got)
	}
	for h, v := range map[string]string{
		"Content-Type":        testMeta.ContentType,
		"Content-Disposition": testMeta.Disposition,
		"Cache-Control":       cacheControl,
		"Content-Length":      strconv.Itoa(len(body)),
	} {
		if g := resp.Header.Get(h); g != v {
			t.Errorf("presigned GET %s = %q, want %q", h, g, v)
		}
	}
}

func TestTamperedPresignedURLRejected(t *testing.T) {
	s, _ := newStore(t, Config{})
	ctx := t.Context()
	for _, k := range []string{"a", "b"} {
		if err := s.Put(ctx, k, testMeta, strings.NewReader("bytes of "+k)); err != nil {
			t.Fatal(err)
		}
	}
	e, err := s.Lookup(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(e.RedirectURL)
	if err != nil {
		t.Fatal(err)
	}

	otherKey := *u
	otherKey.Path = strings.TrimSuffix(u.Path, "/a") + "/b"
	badSig := *u
	q := u.Query()
	sig := q.Get("X-Amz-Signature")
	q.Set("X-Amz-Signature", strings.Repeat("0", len(sig)))
	badSig.RawQuery = q.Encode()
	longer := *u
	q = u.Query()
	q.Set("X-Amz-Expires", "604800")
	longer.RawQuery = q.Encode()

	for name, tu := range map[string]*url.URL{"other key": &otherKey, "signature": &badSig, "expiry": &longer} {
		resp, _ := httpGet(t, tu.String())
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("tampered %s: status %d, want 403", name, resp.StatusCode)
		}
	}
}

func TestPublicBaseURL(t *testing.T) {
	s, _ := newStore(t, Config{Prefix: "media/", PublicBaseURL: "https://cdn.example/base/"})
	ctx := t.Context()
	key := "v1/static/a b?c"
	if err := s.Put(ctx, key, testMeta, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	e, err := s.Lookup(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if want := "https://cdn.example/base/media/v1/static/a%20b%3Fc"; e.RedirectURL != want {
		t.Errorf("RedirectURL = %s, want %s", e.RedirectURL, want)
	}
	if e.RedirectMaxAge != publicMaxAge {
		t.Errorf("RedirectMaxAge = %v", e.RedirectMaxAge)
	}
}

// expiringCreds returns the test keys, said to expire at the times in
// turn (the last one repeating).
func expiringCreds(e s3Env, expires ...time.Duration) (aws.CredentialsProvider, *int) {
	calls := 0
	return aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		d := expires[min(calls, len(expires)-1)]
		calls++
		return aws.Credentials{
			AccessKeyID: e.accessKey, SecretAccessKey: e.secretKey,
			CanExpire: true, Expires: time.Now().Add(d),
		}, nil
	}), &calls
}

func presignedExpires(t *testing.T, u string) time.Duration {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	sec, err := strconv.Atoi(pu.Query().Get("X-Amz-Expires"))
	if err != nil {
		t.Fatalf("X-Amz-Expires in %s: %v", u, err)
	}
	return time.Duration(sec) * time.Second
}

func TestPresignBoundedByCredentialExpiry(t *testing.T) {
	e := testEnv(t)
	_, bucket := newBucket(t, e)
	put := New(newClient(e, staticCreds(e)), nil, Config{Bucket: bucket})
	if err := put.Put(t.Context(), "k", testMeta, strings.NewReader("hello")); err != nil {
		t.Fatal(err)
	}

	lookup := func(t *testing.T, creds aws.CredentialsProvider) *store.Entry {
		t.Helper()
		s := New(newClient(e, creds), creds, Config{Bucket: bucket})
		en, err := s.Lookup(t.Context(), "k")
		if err != nil {
			t.Fatal(err)
		}
		if ttl := presignedExpires(t, en.RedirectURL); en.RedirectMaxAge >= ttl {
			t.Errorf("RedirectMaxAge %v not below the URL's life %v", en.RedirectMaxAge, ttl)
		}
		resp, body := httpGet(t, en.RedirectURL)
		if resp.StatusCode != http.StatusOK || string(body) != "hello" {
			t.Errorf("presigned GET: %d %q", resp.StatusCode, body)
		}
		return en
	}

	t.Run("expires in 20 minutes", func(t *testing.T) {
		creds, _ := expiringCreds(e, 20*time.Minute)
		en := lookup(t, creds)
		if ttl := presignedExpires(t, en.RedirectURL); ttl > 15*time.Minute || ttl < 14*time.Minute {
			t.Errorf("URL lives %v, want about 15m", ttl)
		}
		if en.RedirectMaxAge > 14*time.Minute || en.RedirectMaxAge < 13*time.Minute {
			t.Errorf("RedirectMaxAge = %v, want about 14m", en.RedirectMaxAge)
		}
	})
	t.Run("about to expire, refreshed", func(t *testing.T) {
		creds, calls := expiringCreds(e, 3*time.Minute, time.Hour)
		en := lookup(t, aws.NewCredentialsCache(creds))
		if *calls != 2 {
			t.Errorf("provider called %d times, want 2 (a refresh)", *calls)
		}
		if en.RedirectMaxAge > 54*time.Minute || en.RedirectMaxAge < 53*time.Minute {
			t.Errorf("RedirectMaxAge = %v, want about 54m", en.RedirectMaxAge)
		}
	})
	t.Run("about to expire, no refresh", func(t *testing.T) {
		creds, _ := expiringCreds(e, 3*time.Minute)
		en := lookup(t, creds)
		if en.RedirectMaxAge != 0 {
			t.Errorf("RedirectMaxAge = %v, want 0", en.RedirectMaxAge)
		}
		if ttl := presignedExpires(t, en.RedirectURL); ttl > 3*time.Minute {
			t.Errorf("URL lives %v, past the credentials", ttl)
		}
	})
}

func TestMissing(t *testing.T) {
	s, _ := newStore(t, Config{Prefix: "p/"})
	if _, err := s.Lookup(t.Context(), "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Lookup: %v, want ErrNotFound", err)
	}
	if _, _, err := s.Failure(t.Context(), "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Failure: %v, want ErrNotFound", err)
	}
}

// stream is a reader of n deterministic bytes that cannot seek, so the
// store cannot know its size.
func stream(seed uint64, n int64) io.Reader {
	var key [32]byte
	key[0] = byte(seed)
	return struct{ io.Reader }{io.LimitReader(mrand.NewChaCha8(key), n)}
}

func digest(t *testing.T, r io.Reader) string {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func noUploadsLeft(t *testing.T, s *Store, client *s3.Client) {
	t.Helper()
	out, err := client.ListMultipartUploads(t.Context(), &s3.ListMultipartUploadsInput{Bucket: &s.cfg.Bucket})
	if err != nil {
		t.Fatalf("list uploads: %v", err)
	}
	if len(out.Uploads) != 0 {
		t.Errorf("%d multipart uploads left behind", len(out.Uploads))
	}
}

func TestMultipartStream(t *testing.T) {
	s, client := newStore(t, Config{PartSize: minPartSize})
	ctx := t.Context()
	const size = 20 << 20
	if err := s.Put(ctx, "big", testMeta, stream(1, size)); err != nil {
		t.Fatal(err)
	}
	e, err := s.Lookup(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	if e.Size != size || e.ETag != testMeta.ETag || e.ContentType != testMeta.ContentType {
		t.Errorf("meta = %+v", e.Meta)
	}
	rc, err := e.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if got, want := digest(t, rc), digest(t, stream(1, size)); got != want {
		t.Error("stored bytes differ from the stream")
	}
	// S3's ETag of a multipart object is "<md5 of part md5s>-<parts>".
	head, err := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String("big")})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(strings.Trim(aws.ToString(head.ETag), `"`), "-4") {
		t.Errorf("S3 ETag %s: not a 4-part upload", aws.ToString(head.ETag))
	}
	noUploadsLeft(t, s, client)
}

func TestSecondPutKeepsFirst(t *testing.T) {
	s, client := newStore(t, Config{PartSize: minPartSize})
	ctx := t.Context()

	if err := s.Put(ctx, "small", testMeta, bytes.NewReader([]byte("first"))); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "small", testMeta, bytes.NewReader([]byte("second"))); err != nil {
		t.Errorf("second small Put: %v", err)
	}
	// Unknown size, under one part: the transfer manager's single PutObject.
	if err := s.Put(ctx, "small", testMeta, stream(3, 100)); err != nil {
		t.Errorf("third small Put: %v", err)
	}
	e, err := s.Lookup(ctx, "small")
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, e); string(got) != "first" {
		t.Errorf("after three Puts the object is %q", got)
	}

	const size = 6 << 20 // two parts
	if err := s.Put(ctx, "big", testMeta, stream(1, size)); err != nil {
		t.Fatal(err)
	}
	// The store logs nothing, not even through the transfer manager.
	var logged bytes.Buffer
	log.SetOutput(&logged)
	err = s.Put(ctx, "big", testMeta, stream(2, size))
	log.SetOutput(os.Stderr)
	if err != nil {
		t.Errorf("second multipart Put: %v", err)
	}
	if logged.Len() > 0 {
		t.Errorf("second multipart Put logged %q", logged.String())
	}
	e, err = s.Lookup(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	rc, err := e.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if got, want := digest(t, rc), digest(t, stream(1, size)); got != want {
		t.Error("second multipart Put replaced the first object")
	}
	noUploadsLeft(t, s, client)
}

// failingReader gives n bytes, then an error, like a remote fetch cut off.
type failingReader struct{ n int64 }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("remote went away")
	}
	k := int(min(int64(len(p)), r.n))
	clear(p[:k])
	r.n -= int64(k)
	return k, nil
}

func TestFailedUploadLeavesNothing(t *testing.T) {
	s, client := newStore(t, Config{PartSize: minPartSize})
	ctx := t.Context()
	if err := s.Put(ctx, "cut", testMeta, &failingReader{n: 12 << 20}); err == nil {
		t.Fatal("Put of a failing body succeeded")
	}
	if _, err := s.Lookup(ctx, "cut"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Lookup after a failed Put: %v, want ErrNotFound", err)
	}
	noUploadsLeft(t, s, client)
}

func TestFailure(t *testing.T) {
	s, _ := newStore(t, Config{Prefix: "p/"})
	ctx := t.Context()
	if err := s.Fail(ctx, "failed/x", 404, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	if st, left, err := s.Failure(ctx, "failed/x"); err != nil || st != 404 || left <= 4*time.Minute || left > 5*time.Minute+time.Second {
		t.Errorf("Failure = %d, %v left, %v; want 404 with about 5m left", st, left, err)
	}
	// A later failure replaces the first.
	if err := s.Fail(ctx, "failed/x", 502, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if st, _, err := s.Failure(ctx, "failed/x"); err != nil || st != 502 {
		t.Errorf("Failure = %d, %v; want 502", st, err)
	}
	// What is left is the TTL less the marker's age (LastModified has
	// whole seconds, so up to a second more).
	s.now = func() time.Time { return time.Now().Add(4 * time.Second) }
	if _, left, err := s.Failure(ctx, "failed/x"); err != nil || left <= 5*time.Second || left > 7*time.Second {
		t.Errorf("Failure 4 s on: %v left, %v; want about 6 s", left, err)
	}
	// Each marker lives as long as it was written for.
	s.now = func() time.Time { return time.Now().Add(12 * time.Second) }
	if _, _, err := s.Failure(ctx, "failed/x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("expired Failure: %v, want ErrNotFound", err)
	}
}

func TestOpenFromEnvironment(t *testing.T) {
	e := testEnv(t)
	_, bucket := newBucket(t, e)
	setAWSEnv(t, e.endpoint, e.accessKey, e.secretKey, e.region)
	s, err := Open(t.Context(), Config{Bucket: bucket, Prefix: "x/", PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(t.Context(), "k", testMeta, strings.NewReader("hi")); err != nil {
		t.Fatal(err)
	}
	en, err := s.Lookup(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if resp, body := httpGet(t, en.RedirectURL); resp.StatusCode != http.StatusOK || string(body) != "hi" {
		t.Errorf("presigned GET: %d %q", resp.StatusCode, body)
	}
}

// setAWSEnv points the SDK's environment at an endpoint, away from any
// configuration files of the machine.
func setAWSEnv(t *testing.T, endpoint, accessKey, secretKey, region string) {
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL_S3":         endpoint,
		"AWS_ACCESS_KEY_ID":           accessKey,
		"AWS_SECRET_ACCESS_KEY":       secretKey,
		"AWS_SESSION_TOKEN":           "",
		"AWS_REGION":                  region,
		"AWS_PROFILE":                 "",
		"AWS_CONFIG_FILE":             dir + "/config",
		"AWS_SHARED_CREDENTIALS_FILE": dir + "/credentials",
		"AWS_EC2_METADATA_DISABLED":   "true",
	} {
		t.Setenv(k, v)
	}
}

// S3 being down must be a quick error, so the proxy can answer without
// the cache. Needs no stand-in.
func TestS3DownFailsFast(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	setAWSEnv(t, "http://"+addr, "AKIDEXAMPLE", "secret", "us-east-1")
	s, err := Open(t.Context(), Config{Bucket: "b", PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err = s.Lookup(ctx, "k")
	if err == nil || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Lookup against a closed port: %v, want an error", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Lookup took %v", d)
	}

	// Without a deadline the retries alone stay short.
	start = time.Now()
	if err := s.Put(context.Background(), "k", testMeta, strings.NewReader("x")); err == nil {
		t.Fatal("Put against a closed port succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Put without a deadline took %v", d)
	}
}

// A server without conditional writes that says so (501) gets plain
// writes: the failed one is retried when its body can be rewound, and
// later ones go without the condition.
func TestServerWithoutConditionalWrites(t *testing.T) {
	e := testEnv(t)
	client, bucket := newBucket(t, e)
	target, err := url.Parse(e.endpoint)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("If-None-Match") != "" {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusNotImplemented)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented</Code><Message>If-None-Match is not implemented</Message></Error>`)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	defer front.Close()
	e.endpoint = front.URL
	ctx := t.Context()

	t.Run("small", func(t *testing.T) {
		s := New(newClient(e, staticCreds(e)), nil, Config{Bucket: bucket})
		if err := s.Put(ctx, "small", testMeta, bytes.NewReader([]byte("first"))); err != nil {
			t.Fatalf("Put: %v", err)
		}
		if !s.unconditional.Load() {
			t.Error("store still sends If-None-Match")
		}
		if err := s.Put(ctx, "small", testMeta, bytes.NewReader([]byte("second"))); err != nil {
			t.Fatalf("second Put: %v", err)
		}
		en, err := s.Lookup(ctx, "small")
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, en); string(got) != "second" {
			t.Errorf("object is %q, want the last write", got)
		}
	})
	t.Run("small stream", func(t *testing.T) {
		s := New(newClient(e, staticCreds(e)), nil, Config{Bucket: bucket})
		// Of unknown size, the body is spent when the server refuses the
		// condition, so this one fails; the next goes through.
		if err := s.Put(ctx, "stream", testMeta, stream(1, 100)); err == nil {
			t.Fatal("Put succeeded against a server refusing If-None-Match")
		}
		if !s.unconditional.Load() {
			t.Error("store still sends If-None-Match")
		}
		if err := s.Put(ctx, "stream", testMeta, stream(1, 100)); err != nil {
			t.Fatalf("second Put: %v", err)
		}
	})
	t.Run("multipart", func(t *testing.T) {
		s := New(newClient(e, staticCreds(e)), nil, Config{Bucket: bucket, PartSize: minPartSize})
		const size = 6 << 20
		var logged bytes.Buffer
		log.SetOutput(&logged)
		err := s.Put(ctx, "big", testMeta, stream(1, size))
		log.SetOutput(os.Stderr)
		if err != nil {
			t.Fatalf("multipart Put: %v", err)
		}
		if logged.Len() > 0 {
			t.Errorf("multipart Put logged %q", logged.String())
		}
		if !s.unconditional.Load() {
			t.Error("store still sends If-None-Match")
		}
		en, err := s.Lookup(ctx, "big")
		if err != nil {
			t.Fatal(err)
		}
		rc, err := en.Open(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if got, want := digest(t, rc), digest(t, stream(1, size)); got != want {
			t.Error("stored bytes differ from the stream")
		}
		noUploadsLeft(t, s, client)
	})
}

func responseError(status int, code string) error {
	return &awshttp.ResponseError{ResponseError: &smithyhttp.ResponseError{
		Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
		Err:      &smithy.GenericAPIError{Code: code},
	}}
}

func TestErrorClassification(t *testing.T) {
	for _, c := range []struct {
		err                           error
		notFound, exists, noCondWrite bool
	}{
		{err: responseError(404, "NotFound"), notFound: true},
		{err: responseError(404, "NoSuchKey"), notFound: true},
		// Without s3:ListBucket S3 answers a missing key with 403: an
		// error to report, not a miss.
		{err: responseError(403, "Forbidden")},
		{err: responseError(412, "PreconditionFailed"), exists: true},
		{err: responseError(409, "ConditionalRequestConflict"), exists: true},
		{err: responseError(409, "OperationAborted")},
		{err: responseError(501, "NotImplemented"), noCondWrite: true},
		{err: responseError(500, "InternalError")},
		{err: errors.New("dial tcp: connection refused")},
	} {
		if got := isNotFound(c.err); got != c.notFound {
			t.Errorf("isNotFound(%v) = %v", c.err, got)
		}
		if got := isExists(c.err); got != c.exists {
			t.Errorf("isExists(%v) = %v", c.err, got)
		}
		if got := isConditionUnsupported(c.err); got != c.noCondWrite {
			t.Errorf("isConditionUnsupported(%v) = %v", c.err, got)
		}
	}
}

// lifecycleFront stands in front of the S3 stand-in and plays the part of
// S3's lifecycle, which versitygw lacks: it adds x-amz-expiration to HEAD
// and copy answers, counts copies (CopyObject is a PUT with
// x-amz-copy-source) and can refuse them.
type lifecycleFront struct {
	*httptest.Server
	mu           sync.Mutex
	copies       int
	copied       int // copies S3 answered 200
	refuseCopies bool
	// gate, when set, holds each copy until it is closed; arrived hears
	// of each copy as it comes.
	gate, arrived  chan struct{}
	headExpiration string // x-amz-expiration on HEAD answers, if set
	copyExpiration string // and on copy answers
}

func newLifecycleFront(t *testing.T, endpoint string) *lifecycleFront {
	t.Helper()
	target, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	f := &lifecycleFront{}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		v := f.headExpiration
		if resp.Request.Header.Get("X-Amz-Copy-Source") != "" {
			v = f.copyExpiration
			if resp.StatusCode == http.StatusOK {
				f.copied++
			}
		} else if resp.Request.Method != http.MethodHead {
			v = ""
		}
		if v != "" && resp.StatusCode == http.StatusOK {
			resp.Header.Set("X-Amz-Expiration", v)
		}
		return nil
	}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Amz-Copy-Source") != "" {
			f.mu.Lock()
			f.copies++
			refuse, gate, arrived := f.refuseCopies, f.gate, f.arrived
			f.mu.Unlock()
			if arrived != nil {
				arrived <- struct{}{}
			}
			if gate != nil {
				<-gate
			}
			if refuse {
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(http.StatusForbidden)
				io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>`)
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *lifecycleFront) set(refuse bool, head, copied string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refuseCopies, f.headExpiration, f.copyExpiration = refuse, head, copied
}

func (f *lifecycleFront) copyCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.copies
}

func expirationHeader(t time.Time) string {
	return `expiry-date="` + t.UTC().Format(http.TimeFormat) + `", rule-id="ExpireVariants"`
}

// lifecycleSetup stores one variant through the front and returns the
// time S3 says it was written.
func lifecycleSetup(t *testing.T) (e s3Env, f *lifecycleFront, bucket string, written time.Time) {
	t.Helper()
	e = testEnv(t)
	client, bucket := newBucket(t, e)
	f = newLifecycleFront(t, e.endpoint)
	ctx := t.Context()
	if err := New(client, nil, Config{Bucket: bucket}).Put(ctx, "v1/emoji/a", testMeta, strings.NewReader("bytes")); err != nil {
		t.Fatal(err)
	}
	head, err := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &bucket, Key: aws.String("v1/emoji/a")})
	if err != nil {
		t.Fatal(err)
	}
	return e, f, bucket, *head.LastModified
}

// frontStore is a store talking to S3 through the front, its clock at
// written+at.
func frontStore(e s3Env, f *lifecycleFront, cfg Config, written time.Time, at time.Duration) *Store {
	fe := e
	fe.endpoint = f.URL
	s := New(newClient(fe, staticCreds(e)), nil, cfg)
	s.now = func() time.Time { return written.Add(at) }
	return s
}

// lookupAt looks the variant up through the front with the store's clock
// at written+at, and waits for a renewal it started.
func lookupAt(t *testing.T, e s3Env, f *lifecycleFront, cfg Config, written time.Time, at time.Duration) *store.Entry {
	t.Helper()
	s := frontStore(e, f, cfg, written, at)
	en, err := s.Lookup(t.Context(), "v1/emoji/a")
	if err != nil {
		t.Fatal(err)
	}
	s.waitRenewals()
	return en
}

// The bucket deletes variants Lifetime after their last write: a redirect
// is never cacheable past that, and a variant looked up near its end is
// renewed so that popular ones stay.
func TestRedirectsNeverOutliveObjects(t *testing.T) {
	e, f, bucket, written := lifecycleSetup(t)
	const lifetime = 30 * 24 * time.Hour
	cdn := Config{Bucket: bucket, PublicBaseURL: "https://cdn.example", Lifetime: lifetime}
	presigned := Config{Bucket: bucket, Lifetime: lifetime}

	f.set(true, "", "") // renewals fail: the cap alone
	for _, c := range []struct {
		name   string
		cfg    Config
		at     time.Duration
		maxAge time.Duration
		copies int // renewals tried so far
	}{
		{"young, CDN", cdn, 24 * time.Hour, publicMaxAge, 0},
		{"young, presigned", presigned, 24 * time.Hour, DefaultPresignTTL - cacheMargin, 0},
		{"outside the renewal window", cdn, lifetime - renewWindow - time.Hour, publicMaxAge, 0},
		{"two hours left, CDN", cdn, lifetime - 2*time.Hour, 2*time.Hour - cacheMargin, 1},
		{"ten minutes left, presigned", presigned, lifetime - 10*time.Minute, 10*time.Minute - cacheMargin, 2},
		{"past its expiry, not deleted yet", cdn, lifetime + time.Hour, 0, 3},
		{"no rule known", Config{Bucket: bucket, PublicBaseURL: "https://cdn.example"}, 10 * lifetime, publicMaxAge, 3},
	} {
		en := lookupAt(t, e, f, c.cfg, written, c.at)
		if en.RedirectMaxAge != c.maxAge {
			t.Errorf("%s: RedirectMaxAge %v, want %v", c.name, en.RedirectMaxAge, c.maxAge)
		}
		if got := f.copyCount(); got != c.copies {
			t.Errorf("%s: %d renewals tried, want %d", c.name, got, c.copies)
		}
	}

	// Renewed: copied onto itself, which starts its life again (the
	// lookup that renews answers with the life it found)...
	f.set(false, "", "")
	en := lookupAt(t, e, f, cdn, written, lifetime-2*time.Hour)
	if en.RedirectMaxAge != 2*time.Hour-cacheMargin || f.copyCount() != 4 {
		t.Errorf("renewing: RedirectMaxAge %v after %d copies, want %v after 4", en.RedirectMaxAge, f.copyCount(), 2*time.Hour-cacheMargin)
	}
	f.mu.Lock()
	copied := f.copied
	f.mu.Unlock()
	if copied != 1 {
		t.Errorf("%d copies succeeded, want 1", copied)
	}
	// ...and the object is served exactly as before.
	direct := New(newClient(e, staticCreds(e)), nil, Config{Bucket: bucket})
	en, err := direct.Lookup(t.Context(), "v1/emoji/a")
	if err != nil {
		t.Fatal(err)
	}
	want := testMeta
	want.Size = int64(len("bytes"))
	if en.Meta != want {
		t.Errorf("after renewal meta = %+v, want %+v", en.Meta, want)
	}
	resp, body := httpGet(t, en.RedirectURL)
	if string(body) != "bytes" || resp.Header.Get("Cache-Control") != cacheControl ||
		resp.Header.Get("Content-Type") != testMeta.ContentType || resp.Header.Get("Content-Disposition") != testMeta.Disposition {
		t.Errorf("after renewal GET: %q, headers %v", body, resp.Header)
	}
}

// Without a configured Lifetime, S3's own x-amz-expiration (rounded up to
// midnight UTC) does the same; with both, the earlier counts.
func TestRedirectsFollowS3Expiration(t *testing.T) {
	e, f, bucket, written := lifecycleSetup(t)
	const days30 = 30 * 24 * time.Hour
	ends := written.Add(days30 + 5*time.Hour)
	cdn := Config{Bucket: bucket, PublicBaseURL: "https://cdn.example"}

	f.set(true, expirationHeader(ends), "")
	if en := lookupAt(t, e, f, cdn, written, 24*time.Hour); en.RedirectMaxAge != publicMaxAge || f.copyCount() != 0 {
		t.Errorf("young: RedirectMaxAge %v, %d renewals", en.RedirectMaxAge, f.copyCount())
	}
	if en := lookupAt(t, e, f, cdn, written, days30); en.RedirectMaxAge != 5*time.Hour-cacheMargin || f.copyCount() != 1 {
		t.Errorf("five hours left: RedirectMaxAge %v, %d renewals; want %v, 1", en.RedirectMaxAge, f.copyCount(), 5*time.Hour-cacheMargin)
	}
	both := cdn
	both.Lifetime = days30
	if en := lookupAt(t, e, f, both, written, days30-2*time.Hour); en.RedirectMaxAge != 2*time.Hour-cacheMargin {
		t.Errorf("configured lifetime earlier than S3's date: RedirectMaxAge %v, want %v", en.RedirectMaxAge, 2*time.Hour-cacheMargin)
	}

	// Renewed beside the lookup, which answers with the life it found.
	f.set(false, expirationHeader(ends), "")
	if en := lookupAt(t, e, f, cdn, written, days30); en.RedirectMaxAge != 5*time.Hour-cacheMargin || f.copyCount() != 3 {
		t.Errorf("renewing: RedirectMaxAge %v after %d copies, want %v after 3", en.RedirectMaxAge, f.copyCount(), 5*time.Hour-cacheMargin)
	}
}

// TestRenewalOncePerWindow: lookups in the renewal window renew the object
// once per process however many come at once, beside the lookups rather
// than in their way; a renewal that failed is not tried again on every
// hit (each was a PUT-priced request and up to a second), only after
// renewRetry.
func TestRenewalOncePerWindow(t *testing.T) {
	e, f, bucket, written := lifecycleSetup(t)
	const lifetime = 30 * 24 * time.Hour
	cfg := Config{Bucket: bucket, PublicBaseURL: "https://cdn.example", Lifetime: lifetime}
	s := frontStore(e, f, cfg, written, lifetime-2*time.Hour)

	// The copy is held until the lookups are done: none waits for it.
	gate, arrived := make(chan struct{}), make(chan struct{}, 64)
	f.mu.Lock()
	f.gate, f.arrived = gate, arrived
	f.mu.Unlock()
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Lookup(context.Background(), "v1/emoji/a"); err != nil {
				t.Error(err)
			}
		}()
	}
	<-arrived
	answered := make(chan struct{})
	go func() { wg.Wait(); close(answered) }()
	select {
	case <-answered: // all of them, while the copy is still held
	case <-time.After(renewTimeout / 2):
		t.Error("the lookups wait for the renewal")
	}
	close(gate)
	<-answered
	s.waitRenewals()
	if n := f.copyCount(); n != 1 {
		t.Errorf("20 lookups at once in the renewal window: %d copies, want 1", n)
	}

	// A renewal that fails is remembered.
	f.mu.Lock()
	f.gate, f.arrived = nil, nil
	f.mu.Unlock()
	f.set(true, "", "")
	failing := frontStore(e, f, cfg, written, lifetime-2*time.Hour)
	for range 5 {
		if _, err := failing.Lookup(t.Context(), "v1/emoji/a"); err != nil {
			t.Fatal(err)
		}
		failing.waitRenewals()
	}
	if n := f.copyCount(); n != 2 {
		t.Errorf("5 lookups after a failed renewal: %d copies in all, want 2", n)
	}
	failing.now = func() time.Time { return written.Add(lifetime - 2*time.Hour + renewRetry) }
	if _, err := failing.Lookup(t.Context(), "v1/emoji/a"); err != nil {
		t.Fatal(err)
	}
	failing.waitRenewals()
	if n := f.copyCount(); n != 3 {
		t.Errorf("a lookup renewRetry after the failure: %d copies in all, want 3", n)
	}
}

// TestWriteBufferCoversReadAhead: a streamed Put holds no more of its
// body than WriteBuffer says, which the proxy takes from its memory
// budget. With every part upload held, the upload manager reads ahead
// its first part (outside its pool of part buffers) and a pool's worth,
// then stops: what it has read is what it holds.
func TestWriteBufferCoversReadAhead(t *testing.T) {
	e := testEnv(t)
	client, bucket := newBucket(t, e)
	gate := make(chan struct{})
	var parts sync.WaitGroup
	target, _ := url.Parse(e.endpoint)
	rp := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("partNumber") {
			parts.Add(1)
			defer parts.Done()
			<-gate
		}
		rp.ServeHTTP(w, r)
	}))
	defer front.Close()
	fe := e
	fe.endpoint = front.URL
	s := New(newClient(fe, staticCreds(e)), nil, Config{Bucket: bucket, PartSize: minPartSize})
	_ = client

	body := &countingReader{r: stream(2, 64<<20)}
	done := make(chan error, 1)
	go func() { done <- s.Put(context.Background(), "ahead", testMeta, body) }()
	// Wait until reading stops: the pool is empty and the parts held.
	var last int64 = -1
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		time.Sleep(300 * time.Millisecond)
		n := body.n.Load()
		if n == last && n > 0 {
			break
		}
		last = n
	}
	read := body.n.Load()
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Logf("with the part uploads held, the upload read %d MiB ahead; WriteBuffer says %d MiB", read>>20, s.WriteBuffer()>>20)
	if read > s.WriteBuffer() {
		t.Errorf("read %d bytes ahead of its uploads, over WriteBuffer's %d", read, s.WriteBuffer())
	}
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func TestParseExpiration(t *testing.T) {
	want := time.Date(2018, 10, 14, 0, 0, 0, 0, time.UTC)
	for in, ok := range map[string]bool{
		`expiry-date="Sun, 14 Oct 2018 00:00:00 GMT", rule-id="lifecycle-test-rule"`: true,
		`rule-id="x", expiry-date="Sun, 14 Oct 2018 00:00:00 GMT"`:                   true,
		``:                           false,
		`NotImplemented`:             false,
		`expiry-date="tomorrow"`:     false,
		`expiry-date="Sun, 14 Oct 2`: false,
	} {
		got, gotOK := parseExpiration(in)
		if gotOK != ok || (ok && !got.Equal(want)) {
			t.Errorf("parseExpiration(%q) = %v, %v", in, got, gotOK)
		}
	}
}
