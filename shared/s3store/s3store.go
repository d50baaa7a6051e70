// Package s3store keeps variants in S3 (or an S3-compatible server), so
// each is computed once however many Lambda instances ask for it. Clients
// are redirected to the object (a presigned URL or a CDN in front of the
// bucket) rather than getting the bytes through Lambda, whose responses are
// capped at 6 MB.
package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/misskey-lambda/media-proxy/shared/store"
)

// Defaults for Config.
const (
	// An hour stays inside the life of Lambda's role credentials, whose
	// expiry the SDK cannot see (they arrive as environment variables).
	DefaultPresignTTL = time.Hour
	DefaultPartSize   = 8 << 20
)

const (
	// S3 refuses parts under 5 MiB (but the last).
	minPartSize = 5 << 20
	// SigV4 presigned URLs live at most a week.
	maxPresignTTL = 7 * 24 * time.Hour
	// Parts uploaded at once: memory is PartSize * (concurrency + 2) (see
	// WriteBuffer).
	uploadConcurrency = 2

	// A presigned URL is signed by credentials and dies with them: stop
	// using credentials this long before they expire...
	credentialMargin = 5 * time.Minute
	// ...and let clients cache a redirect this much less than its URL lives.
	cacheMargin = time.Minute
	// Below this a presigned URL is not worth caching.
	minPresignTTL = 2 * time.Minute
	// A CDN URL does not expire; a day bounds how long a client keeps a
	// redirect to a path that might be reorganised.
	publicMaxAge = 24 * time.Hour

	// A variant the bucket's lifecycle rule will delete within this window
	// (or within half its life, if shorter) is copied onto itself on a
	// lookup, which S3 counts as a new object whose age starts at zero. So
	// a variant in use is kept: behind CloudFront each edge looks it up at
	// least daily (publicMaxAge), presigned redirects hourly. One nobody
	// asks for expires and is recomputed on demand. The window is wider
	// than publicMaxAge, so normally the cap on redirects below never bites.
	renewWindow = 3 * 24 * time.Hour
	// A renewal is a server-side copy, run beside the lookup that found
	// the object in its window, never in its way. One is tried per object
	// per renewRetry in a process: concurrent lookups share it, and one
	// that failed (or timed out: an object too large to copy that fast)
	// is not tried again for that long.
	renewTimeout = 10 * time.Second
	renewRetry   = time.Hour

	cacheControl = "max-age=31536000, immutable"
	// Aborting a failed multipart upload gets its own time, since the
	// failure may be the caller's context running out.
	abortTimeout = 30 * time.Second

	// Few, short retries: when S3 is down the proxy answers without the
	// cache rather than wait.
	maxAttempts = 3
	maxBackoff  = time.Second
	dialTimeout = 5 * time.Second

	// User metadata names: our strong ETag, and a failure's status and
	// how long it is remembered (seconds).
	metaETag   = "etag"
	metaStatus = "status"
	metaTTL    = "ttl"

	storeURLHead = "s3://"
)

// Config says where and how variants are kept.
type Config struct {
	// Bucket and Prefix come from MEDIA_PROXY_STORE=s3://<bucket>/<prefix>
	// (see ParseURL); every key is stored as Prefix+key.
	Bucket, Prefix string
	// PublicBaseURL (MEDIA_PROXY_PUBLIC_BASE_URL), when set, is a CDN in
	// front of the bucket: redirects go to PublicBaseURL/Prefix+key and no
	// URL is presigned.
	PublicBaseURL string
	// PathStyle (MEDIA_PROXY_S3_PATH_STYLE) addresses the bucket in the
	// path, for S3-compatible servers.
	PathStyle bool
	// PresignTTL is how long presigned URLs live (default 1h), never past
	// the signing credentials' expiry.
	PresignTTL time.Duration
	// PartSize is the multipart part size (default 8 MiB, at least 5 MiB).
	PartSize int64
	// Lifetime is how long after its last write the bucket's lifecycle
	// rule deletes a stored variant (MEDIA_PROXY_S3_LIFECYCLE_DAYS); 0 when
	// unknown. S3 also reports each object's expiry on HEAD
	// (x-amz-expiration), which is used too: this covers servers that do
	// not, and is the earlier of the two (S3 rounds up to midnight UTC).
	Lifetime time.Duration
}

// ParseURL splits "s3://bucket/some/prefix" into "bucket" and
// "some/prefix/"; a non-empty prefix always ends with "/".
func ParseURL(spec string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(spec, storeURLHead)
	if !ok {
		return "", "", fmt.Errorf("s3store: %q does not start with %s", spec, storeURLHead)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	if bucket == "" {
		return "", "", fmt.Errorf("s3store: no bucket in %q", spec)
	}
	if strings.ContainsAny(bucket, "?#:@ ") {
		return "", "", fmt.Errorf("s3store: bad bucket name %q", bucket)
	}
	prefix = strings.TrimLeft(prefix, "/")
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return bucket, prefix, nil
}

// Store is a store.Store on an S3 bucket.
type Store struct {
	client   *s3.Client
	presign  *s3.PresignClient
	uploader *transfermanager.Client
	creds    aws.CredentialsProvider
	cfg      Config
	now      func() time.Time
	// unconditional is set once the server refuses If-None-Match: *, so
	// later writes go without it (last writer wins, with equal bytes).
	unconditional atomic.Bool
	renewals      renewals
}

// renewals remembers, per object, when a renewal was last started in this
// process (see renewRetry), and waits for those in flight.
type renewals struct {
	mu      sync.Mutex
	started map[string]time.Time
	swept   time.Time
	wg      sync.WaitGroup
}

// claim reports whether a renewal of k may start at now, and notes it.
// Entries older than renewRetry are dropped now and then, so the map
// holds the objects renewed within the last renewRetry or so.
func (r *renewals) claim(k string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started == nil {
		r.started = map[string]time.Time{}
	}
	if at, ok := r.started[k]; ok && now.Sub(at) < renewRetry {
		return false
	}
	if now.Sub(r.swept) > renewRetry {
		for key, at := range r.started {
			if now.Sub(at) >= renewRetry {
				delete(r.started, key)
			}
		}
		r.swept = now
	}
	r.started[k] = now
	return true
}

var _ store.Store = (*Store)(nil)

// New wraps a client. creds must be the client's credentials: presigned
// URLs are made to expire before they do. Nil means the client's own.
func New(client *s3.Client, creds aws.CredentialsProvider, cfg Config) *Store {
	if creds == nil {
		creds = client.Options().Credentials
	}
	if cfg.PresignTTL <= 0 {
		cfg.PresignTTL = DefaultPresignTTL
	}
	cfg.PresignTTL = min(cfg.PresignTTL, maxPresignTTL)
	if cfg.PartSize <= 0 {
		cfg.PartSize = DefaultPartSize
	}
	cfg.PartSize = max(cfg.PartSize, minPartSize)
	s := &Store{
		client:  client,
		presign: s3.NewPresignClient(client),
		creds:   creds,
		cfg:     cfg,
		now:     time.Now,
	}
	s.uploader = transfermanager.New(completeGuard{client, &s.unconditional}, func(o *transfermanager.Options) {
		o.PartSizeBytes = cfg.PartSize
		// Anything that fits in one part goes as a single PutObject.
		o.MultipartUploadThreshold = cfg.PartSize
		o.Concurrency = uploadConcurrency
		o.FailTimeout = abortTimeout
	})
	return s
}

// Open builds a Store from the environment the SDK reads by itself
// (AWS_REGION, AWS_ENDPOINT_URL_S3, credentials, ...).
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3store: no bucket")
	}
	awsCfg, err := config.LoadDefaultConfig(ctx,
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = maxAttempts
				o.MaxBackoff = maxBackoff
			})
		}),
		// The SDK's default waits 30 s for a connection; an unreachable
		// S3 must fail fast (calls have their own deadlines besides).
		config.WithHTTPClient(awshttp.NewBuildableClient().WithDialerOptions(func(d *net.Dialer) {
			d.Timeout = dialTimeout
		})),
	)
	if err != nil {
		return nil, fmt.Errorf("s3store: load AWS config: %w", err)
	}
	if awsCfg.Region == "" {
		return nil, errors.New("s3store: no AWS region (set AWS_REGION)")
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) { o.UsePathStyle = cfg.PathStyle })
	return New(client, awsCfg.Credentials, cfg), nil
}

func (s *Store) Lookup(ctx context.Context, key string) (*store.Entry, error) {
	k := s.cfg.Prefix + key
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.cfg.Bucket, Key: &k})
	if isNotFound(err) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("s3store: head %s: %w", key, err)
	}
	e := &store.Entry{
		Meta: store.Meta{
			ContentType: aws.ToString(out.ContentType),
			Disposition: aws.ToString(out.ContentDisposition),
			// S3's own ETag is an MD5 or a multipart digest; ours is
			// kept in the metadata.
			ETag: metaValue(out.Metadata, metaETag),
			Size: -1,
		},
		Open: func(ctx context.Context) (io.ReadCloser, error) {
			out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.cfg.Bucket, Key: &k})
			if isNotFound(err) {
				return nil, fmt.Errorf("s3store: get %s: %w", key, store.ErrNotFound)
			}
			if err != nil {
				return nil, fmt.Errorf("s3store: get %s: %w", key, err)
			}
			return out.Body, nil
		},
	}
	if out.ContentLength != nil {
		e.Size = *out.ContentLength
	}
	life, mortal := s.life(ctx, k, out)
	if s.cfg.PublicBaseURL != "" {
		e.RedirectURL, e.RedirectMaxAge = publicURL(s.cfg.PublicBaseURL, k), publicMaxAge
	} else {
		e.RedirectURL, e.RedirectMaxAge, err = s.presignGet(ctx, k)
		if err != nil {
			return nil, fmt.Errorf("s3store: presign %s: %w", key, err)
		}
	}
	// A cached redirect must not outlive its target: once the lifecycle
	// rule deletes the object, the redirect would lead every client that
	// still holds it (a CloudFront edge: all its viewers) to a 403.
	if mortal {
		e.RedirectMaxAge = max(min(e.RedirectMaxAge, life-cacheMargin), 0)
	}
	return e, nil
}

// life is how long the object k, as its HEAD out describes it, stays in
// the bucket; mortal is false when no lifecycle rule is known to delete
// it. An object near its end is renewed beside the lookup (see renew):
// this lookup still answers with the life the object has now.
func (s *Store) life(ctx context.Context, k string, out *s3.HeadObjectOutput) (life time.Duration, mortal bool) {
	ends, mortal := s.expiry(out.LastModified, out.Expiration)
	if !mortal {
		return 0, false
	}
	now := s.now()
	window := renewWindow
	if out.LastModified != nil {
		window = min(window, ends.Sub(*out.LastModified)/2)
	}
	if ends.Sub(now) < window && s.renewals.claim(k, now) {
		s.renewals.wg.Add(1)
		go func() {
			defer s.renewals.wg.Done()
			s.renew(context.WithoutCancel(ctx), k, out)
		}()
	}
	return ends.Sub(now), true
}

// renew copies k onto itself with the metadata it has (a copy must change
// something, so the metadata is "replaced" by the same), which restarts
// its lifecycle age. A failure is not an error: the object then expires
// as planned and is recomputed. (On Lambda a copy still running when the
// invocation ends goes on when the process is next thawed, or times out.)
func (s *Store) renew(ctx context.Context, k string, out *s3.HeadObjectOutput) {
	ctx, cancel := context.WithTimeout(ctx, renewTimeout)
	defer cancel()
	s.client.CopyObject(ctx, &s3.CopyObjectInput{
		Bucket:             &s.cfg.Bucket,
		Key:                &k,
		CopySource:         aws.String(s.cfg.Bucket + "/" + escapeKey(k)),
		MetadataDirective:  types.MetadataDirectiveReplace,
		ContentType:        out.ContentType,
		ContentDisposition: out.ContentDisposition,
		CacheControl:       out.CacheControl,
		Metadata:           out.Metadata,
	})
}

// waitRenewals waits for the renewals in flight (tests).
func (s *Store) waitRenewals() { s.renewals.wg.Wait() }

// expiry is when the bucket's lifecycle rule deletes an object last
// written at written: the earlier of what S3 says (x-amz-expiration) and
// written plus Config.Lifetime.
func (s *Store) expiry(written *time.Time, expiration *string) (time.Time, bool) {
	ends, ok := parseExpiration(aws.ToString(expiration))
	if s.cfg.Lifetime > 0 && written != nil {
		if t := written.Add(s.cfg.Lifetime); !ok || t.Before(ends) {
			ends, ok = t, true
		}
	}
	return ends, ok
}

// parseExpiration reads the date of an x-amz-expiration header,
// `expiry-date="Fri, 23 Dec 2012 00:00:00 GMT", rule-id="..."`.
func parseExpiration(v string) (time.Time, bool) {
	_, rest, ok := strings.Cut(v, `expiry-date="`)
	if !ok {
		return time.Time{}, false
	}
	date, _, ok := strings.Cut(rest, `"`)
	if !ok {
		return time.Time{}, false
	}
	t, err := http.ParseTime(date)
	return t, err == nil
}

// presignGet signs a GET of k that outlives its cache lifetime (the
// returned max age) and dies no later than the signing credentials.
func (s *Store) presignGet(ctx context.Context, k string) (string, time.Duration, error) {
	c, err := s.creds.Retrieve(ctx)
	if err != nil {
		return "", 0, fmt.Errorf("credentials: %w", err)
	}
	ttl := s.presignTTL(c)
	if ttl < minPresignTTL {
		// A caching provider hands out the same credentials until they
		// expire: ask once for fresh ones.
		if inv, ok := s.creds.(interface{ Invalidate() }); ok {
			inv.Invalidate()
			if c, err = s.creds.Retrieve(ctx); err != nil {
				return "", 0, fmt.Errorf("credentials: %w", err)
			}
			ttl = s.presignTTL(c)
		}
	}
	maxAge := ttl - cacheMargin
	if ttl < minPresignTTL {
		// Still about to expire: a URL that lives as long as the
		// credentials do, for immediate use only.
		ttl, maxAge = c.Expires.Sub(s.now()), 0
	}
	ttl = ttl.Truncate(time.Second)
	if ttl < time.Second {
		return "", 0, errors.New("credentials expired")
	}
	req, err := s.presign.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: &s.cfg.Bucket, Key: &k},
		func(o *s3.PresignOptions) {
			o.Expires = ttl
			// Sign with exactly the credentials whose expiry was checked.
			o.ClientOptions = append(o.ClientOptions, func(o *s3.Options) {
				o.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return c, nil })
			})
		})
	if err != nil {
		return "", 0, err
	}
	return req.URL, max(maxAge, 0), nil
}

func (s *Store) presignTTL(c aws.Credentials) time.Duration {
	ttl := s.cfg.PresignTTL
	if c.CanExpire {
		ttl = min(ttl, c.Expires.Sub(s.now())-credentialMargin)
	}
	return ttl
}

func (s *Store) Put(ctx context.Context, key string, meta store.Meta, body io.Reader) error {
	k := s.cfg.Prefix + key
	var metadata map[string]string
	if meta.ETag != "" {
		metadata = map[string]string{metaETag: meta.ETag}
	}
	// A body of known size under one part goes as is: PutObject over plain
	// HTTP needs a seekable body, and this one need not be copied.
	if rs, ok := body.(io.ReadSeeker); ok {
		if n, err := remaining(rs); err == nil && n < s.cfg.PartSize {
			return s.putSeekable(ctx, key, &s3.PutObjectInput{
				Bucket:             &s.cfg.Bucket,
				Key:                &k,
				Body:               rs,
				ContentLength:      aws.Int64(n),
				ContentType:        nonEmpty(meta.ContentType),
				ContentDisposition: nonEmpty(meta.Disposition),
				CacheControl:       aws.String(cacheControl),
				Metadata:           metadata,
			})
		}
	}
	// Anything else is read a part at a time: at most one part goes as a
	// single PutObject, more as a multipart upload (aborted on failure, so
	// the object appears only once complete).
	in := &transfermanager.UploadObjectInput{
		Bucket:             &s.cfg.Bucket,
		Key:                &k,
		Body:               body,
		ContentType:        nonEmpty(meta.ContentType),
		ContentDisposition: nonEmpty(meta.Disposition),
		CacheControl:       aws.String(cacheControl),
		Metadata:           metadata,
	}
	if !s.unconditional.Load() {
		in.IfNoneMatch = aws.String("*")
	}
	_, err := s.uploader.UploadObject(ctx, in)
	switch {
	case err == nil, isExists(err):
		return nil
	case in.IfNoneMatch != nil && isConditionUnsupported(err):
		// A body under one part went as a single PutObject and is spent:
		// this variant is produced again next time, and then stored
		// without the condition. (Multipart uploads recover in
		// completeGuard.)
		s.unconditional.Store(true)
	}
	return fmt.Errorf("s3store: upload %s: %w", key, err)
}

// putSeekable stores a small seekable body with a single PutObject,
// retrying without the condition on a server that does not support it.
func (s *Store) putSeekable(ctx context.Context, key string, in *s3.PutObjectInput) error {
	start, err := in.Body.(io.Seeker).Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("s3store: put %s: %w", key, err)
	}
	if !s.unconditional.Load() {
		in.IfNoneMatch = aws.String("*")
	}
	_, err = s.client.PutObject(ctx, in)
	if in.IfNoneMatch != nil && isConditionUnsupported(err) {
		s.unconditional.Store(true)
		in.IfNoneMatch = nil
		if _, err = in.Body.(io.Seeker).Seek(start, io.SeekStart); err == nil {
			_, err = s.client.PutObject(ctx, in)
		}
	}
	if err != nil && !isExists(err) {
		return fmt.Errorf("s3store: put %s: %w", key, err)
	}
	return nil
}

// Keeps is true: the bucket keeps what is put, until its lifecycle rule.
func (s *Store) Keeps() bool { return true }

// Fail writes a small marker object; its age is its LastModified, so a
// later failure simply overwrites it.
func (s *Store) Fail(ctx context.Context, key string, status int, ttl time.Duration) error {
	k := s.cfg.Prefix + key
	code := strconv.Itoa(status)
	_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:      &s.cfg.Bucket,
		Key:         &k,
		Body:        bytes.NewReader([]byte(code)),
		ContentType: aws.String("text/plain"),
		Metadata:    map[string]string{metaStatus: code, metaTTL: strconv.FormatInt(int64(ttl.Seconds()), 10)},
	})
	if err != nil {
		return fmt.Errorf("s3store: put failure %s: %w", key, err)
	}
	return nil
}

func (s *Store) Failure(ctx context.Context, key string) (int, time.Duration, error) {
	k := s.cfg.Prefix + key
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.cfg.Bucket, Key: &k})
	if isNotFound(err) {
		return 0, 0, store.ErrNotFound
	}
	if err != nil {
		return 0, 0, fmt.Errorf("s3store: head failure %s: %w", key, err)
	}
	status, err := strconv.Atoi(metaValue(out.Metadata, metaStatus))
	if err != nil {
		return 0, 0, fmt.Errorf("s3store: bad failure marker %s: %w", key, err)
	}
	ttl, err := strconv.ParseInt(metaValue(out.Metadata, metaTTL), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("s3store: bad failure marker %s: %w", key, err)
	}
	// LastModified has whole seconds: a marker a second old may look fresh
	// for up to a second longer, never shorter.
	if out.LastModified == nil {
		return 0, 0, store.ErrNotFound
	}
	left := time.Duration(ttl)*time.Second - s.now().Sub(*out.LastModified)
	if left <= 0 {
		return 0, 0, store.ErrNotFound
	}
	return status, left, nil
}

// completeGuard finishes multipart uploads on the transfer manager's
// behalf when the If-None-Match condition is what failed, so that the
// manager neither reports nor logs it:
//   - a lost race (412, 409) means the other writer's object is as good,
//     variants being deterministic: the upload is aborted and counts as done;
//   - a server without conditional writes (501) gets the parts completed
//     without the condition, and no more conditions from this store.
type completeGuard struct {
	*s3.Client
	unconditional *atomic.Bool
}

func (g completeGuard) CompleteMultipartUpload(ctx context.Context, in *s3.CompleteMultipartUploadInput, opts ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error) {
	out, err := g.Client.CompleteMultipartUpload(ctx, in, opts...)
	if in.IfNoneMatch != nil && isConditionUnsupported(err) {
		g.unconditional.Store(true)
		plain := *in
		plain.IfNoneMatch = nil
		return g.Client.CompleteMultipartUpload(ctx, &plain, opts...)
	}
	if !isExists(err) {
		return out, err
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	if _, aerr := g.Client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{
		Bucket: in.Bucket, Key: in.Key, UploadId: in.UploadId,
	}, opts...); aerr != nil {
		return out, fmt.Errorf("%w (and abort: %v)", err, aerr)
	}
	return &s3.CompleteMultipartUploadOutput{Bucket: in.Bucket, Key: in.Key}, nil
}

// isNotFound tells a missing key. A HEAD response has no body, so S3 says
// only "404". Note that without s3:ListBucket on the bucket S3 answers a
// missing key with 403, which is left an error here: treating it as a miss
// would hide a permissions problem behind recomputing every variant.
func isNotFound(err error) bool {
	if err == nil {
		return false
	}
	var nf *types.NotFound
	var nsk *types.NoSuchKey
	return errors.As(err, &nf) || errors.As(err, &nsk) || httpStatus(err) == http.StatusNotFound
}

// isExists tells a conditional write that found the key taken: 412, or 409
// when another write to the key was in progress.
func isExists(err error) bool {
	if err == nil {
		return false
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "PreconditionFailed", "ConditionalRequestConflict":
			return true
		}
	}
	return httpStatus(err) == http.StatusPreconditionFailed
}

// isConditionUnsupported tells a server that refuses If-None-Match on
// writes (most that lack it ignore the header, which needs no handling).
func isConditionUnsupported(err error) bool {
	if err == nil {
		return false
	}
	var ae smithy.APIError
	return (errors.As(err, &ae) && ae.ErrorCode() == "NotImplemented") || httpStatus(err) == http.StatusNotImplemented
}

func httpStatus(err error) int {
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// publicURL is base/k with each segment of k escaped.
func publicURL(base, k string) string {
	return strings.TrimRight(base, "/") + "/" + escapeKey(k)
}

// escapeKey escapes each segment of k for a URL path.
func escapeKey(k string) string {
	segs := strings.Split(k, "/")
	for i, seg := range segs {
		segs[i] = url.PathEscape(seg)
	}
	return strings.Join(segs, "/")
}

// metaValue reads user metadata; the SDK lowercases the names, but other
// clients may not have.
func metaValue(m map[string]string, name string) string {
	if v, ok := m[name]; ok {
		return v
	}
	for k, v := range m {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

// remaining is how many bytes r has left to read.
func remaining(r io.Seeker) (int64, error) {
	cur, err := r.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	end, err := r.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	if _, err := r.Seek(cur, io.SeekStart); err != nil {
		return 0, err
	}
	return end - cur, nil
}

func nonEmpty(v string) *string {
	if v == "" {
		return nil
	}
	return &v
}

// WriteBuffer is the memory a streamed Put holds at most: the parts the
// upload manager reads ahead and sends at once. That is its pool of
// uploadConcurrency+1 part buffers, and the first part, which it reads
// (io.ReadAll) outside the pool. The proxy takes it from its memory
// budget before streaming a large body into the store.
func (s *Store) WriteBuffer() int64 {
	return s.cfg.PartSize * (uploadConcurrency + 2)
}
