package lambdatest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Runtime is a stand-in for Lambda's runtime API that runs a bootstrap
// binary against itself. Unlike the emulator, which reads a whole
// response (at most 6 MB) before answering, it hands each response to
// the test as it arrives, with the trailers that end it, which is what a
// streaming Function URL needs to be tested with. It speaks the parts of
// the runtime API a Go function uses: GET .../invocation/next, POST
// .../{id}/response and .../{id}/error, POST .../init/error.
type Runtime struct {
	srv     *httptest.Server
	logs    *Buffer
	pending chan *invocation

	mu       sync.Mutex
	inflight map[string]*invocation
	nextID   int
	readers  []*io.PipeReader // closed at the end, for streams a test left unread
	timeout  time.Duration    // the function's, for each invocation's deadline
}

// SetTimeout sets the function's timeout: each invocation from now on
// gets its deadline (Lambda-Runtime-Deadline-Ms) that long after it is
// handed out. The default is 5 minutes. The stand-in does not end an
// invocation at its deadline, as Lambda does: a test sees whether the
// function ended it in time.
func (rt *Runtime) SetTimeout(d time.Duration) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.timeout = d
}

type invocation struct {
	id      string
	payload []byte
	reply   chan *Stream
}

// Stream is one invocation's answer as the function posts it.
type Stream struct {
	// ContentType and Mode are the POST's Content-Type and
	// Lambda-Runtime-Function-Response-Mode headers.
	ContentType, Mode string
	// Failed is set when the function posted to .../error; Body is then
	// the error document.
	Failed bool
	// Body is the response body as it arrives (for a Function URL, the
	// JSON prelude, 8 NUL bytes and the HTTP body).
	Body io.Reader

	trailer http.Header
	done    chan struct{}
}

// Trailer is what ended the response (Lambda-Runtime-Function-Error-Type
// and -Body when the function aborted it); it waits for Body's end.
func (s *Stream) Trailer() http.Header {
	<-s.done
	return s.trailer
}

// StartRuntime runs bootstrap against a new runtime stand-in with exactly
// env as its environment (plus PATH, HOME and AWS_LAMBDA_RUNTIME_API). It
// stops with the test.
func StartRuntime(t testing.TB, bootstrap string, env []string) *Runtime {
	t.Helper()
	rt := &Runtime{logs: new(Buffer), pending: make(chan *invocation), inflight: map[string]*invocation{}, timeout: 5 * time.Minute}
	rt.srv = httptest.NewServer(http.HandlerFunc(rt.serve))
	t.Cleanup(rt.srv.Close)
	cmd := exec.Command(bootstrap)
	cmd.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + t.TempDir(),
		"AWS_LAMBDA_RUNTIME_API=" + strings.TrimPrefix(rt.srv.URL, "http://"),
		"AWS_LAMBDA_FUNCTION_NAME=test_function", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=1024"}, env...)
	run(t, cmd, rt.logs, "function")
	t.Cleanup(func() {
		rt.mu.Lock()
		defer rt.mu.Unlock()
		for _, r := range rt.readers {
			r.CloseWithError(errors.New("test over"))
		}
	})
	return rt
}

// Logs is everything the function has printed so far.
func (rt *Runtime) Logs() string { return rt.logs.String() }

// Invoke hands event to the function and returns its answer as soon as
// the function starts posting it. Invocations run one at a time, as on
// Lambda: read each Stream to its end before the next Invoke.
func (rt *Runtime) Invoke(t testing.TB, event any) *Stream {
	t.Helper()
	payload, err := json.Marshal(event)
	if err != nil {
		t.Fatal(err)
	}
	rt.mu.Lock()
	rt.nextID++
	inv := &invocation{id: fmt.Sprintf("invoke-%d", rt.nextID), payload: payload, reply: make(chan *Stream, 1)}
	rt.mu.Unlock()
	timeout := time.After(2 * time.Minute)
	select {
	case rt.pending <- inv:
	case <-timeout:
		t.Fatalf("the function never asked for an invocation:\n%s", rt.logs)
	}
	select {
	case s := <-inv.reply:
		return s
	case <-timeout:
		t.Fatalf("no answer to %s:\n%s", payload, rt.logs)
	}
	return nil
}

const apiPrefix = "/2018-06-01/runtime/"

func (rt *Runtime) serve(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, apiPrefix)
	switch {
	case r.Method == http.MethodGet && path == "invocation/next":
		select {
		case inv := <-rt.pending:
			rt.mu.Lock()
			rt.inflight[inv.id] = inv
			timeout := rt.timeout
			rt.mu.Unlock()
			w.Header().Set("Lambda-Runtime-Aws-Request-Id", inv.id)
			w.Header().Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(timeout).UnixMilli(), 10))
			w.Header().Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:012345678912:function:test_function")
			w.Header().Set("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
			w.Header().Set("Content-Type", "application/json")
			w.Write(inv.payload)
		case <-r.Context().Done():
		}
	case r.Method == http.MethodPost && strings.HasPrefix(path, "invocation/"):
		id, kind, _ := strings.Cut(strings.TrimPrefix(path, "invocation/"), "/")
		rt.mu.Lock()
		inv := rt.inflight[id]
		delete(rt.inflight, id)
		rt.mu.Unlock()
		if inv == nil || (kind != "response" && kind != "error") {
			http.Error(w, "unknown invocation", http.StatusBadRequest)
			return
		}
		pr, pw := io.Pipe()
		rt.mu.Lock()
		rt.readers = append(rt.readers, pr)
		rt.mu.Unlock()
		s := &Stream{ContentType: r.Header.Get("Content-Type"), Mode: r.Header.Get("Lambda-Runtime-Function-Response-Mode"),
			Failed: kind == "error", Body: pr, done: make(chan struct{})}
		inv.reply <- s
		// Each chunk goes on as it arrives; the trailers exist once the
		// body has been read to its end.
		_, err := io.Copy(pw, r.Body)
		s.trailer = r.Trailer.Clone()
		close(s.done)
		pw.CloseWithError(err)
		w.WriteHeader(http.StatusAccepted)
	case r.Method == http.MethodPost && path == "init/error":
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(rt.logs, "init error posted: %s\n", b)
		w.WriteHeader(http.StatusAccepted)
	default:
		http.NotFound(w, r)
	}
}

// Prelude is how a streamed Function URL response starts: its status,
// headers and cookies.
type Prelude struct {
	StatusCode int               `json:"statusCode"`
	Headers    map[string]string `json:"headers"`
	Cookies    []string          `json:"cookies"`
}

// ReadPrelude reads the JSON prelude and the 8 NUL bytes after it from
// r, leaving r at the start of the HTTP body.
func ReadPrelude(r *bufio.Reader) (Prelude, error) {
	var p Prelude
	js, err := r.ReadBytes(0) // JSON never holds a raw NUL
	if err != nil {
		return p, fmt.Errorf("prelude: %w (read %q)", err, js)
	}
	rest := make([]byte, 7)
	if _, err := io.ReadFull(r, rest); err != nil || !bytes.Equal(rest, make([]byte, 7)) {
		return p, errors.New("prelude not followed by 8 NUL bytes")
	}
	if err := json.Unmarshal(js[:len(js)-1], &p); err != nil {
		return p, fmt.Errorf("prelude %q: %w", js, err)
	}
	return p, nil
}
