// Package lambdatest runs a real bootstrap binary under the AWS Lambda
// Runtime Interface Emulator for tests, and invokes it as Lambda would.
package lambdatest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// FreeAddr returns a loopback address nothing listens on right now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Build compiles the main package in dir (relative to the test's working
// directory) as Lambda's provided.al2023 runtime expects it.
func Build(t testing.TB, dir string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bootstrap")
	cmd := exec.Command("go", "build", "-tags", "lambda.norpc", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("build bootstrap: %v", err)
	}
	return bin
}

// Emulator is one emulator process. It takes one invocation at a time (it
// crashes on concurrent ones), so Invoke serialises calls.
type Emulator struct {
	addr string
	mu   sync.Mutex
	logs *Buffer
}

// Start runs bootstrap (a path, or ./bootstrap with workdir) under the
// emulator binary rie with exactly env as its environment (plus PATH and
// HOME), and waits until it listens. It stops with the test.
func Start(t testing.TB, rie, workdir, bootstrap string, env []string) *Emulator {
	t.Helper()
	// The emulator also opens a runtime API port, 9001 unless told
	// otherwise; two emulators (parallel test packages) would clash on it.
	addr, runtimeAddr := FreeAddr(t), FreeAddr(t)
	cmd := exec.Command(rie, "--runtime-interface-emulator-address", addr, "--runtime-api-address", runtimeAddr, bootstrap)
	cmd.Dir = workdir
	cmd.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + t.TempDir()}, env...)
	e := &Emulator{addr: addr, logs: new(Buffer)}
	run(t, cmd, e.logs, "emulator")
	WaitForPort(t, addr, 10*time.Second, e.logs)
	return e
}

// run starts cmd with its output in logs and kills it when the test ends,
// showing the logs if the test failed.
func run(t testing.TB, cmd *exec.Cmd, logs *Buffer, what string) {
	t.Helper()
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s log:\n%s", what, logs)
		}
	})
}

// Logs is everything the function has printed so far.
func (e *Emulator) Logs() string { return e.logs.String() }

// Invoke posts event and returns the raw reply, which for a Function URL
// handler is the response JSON Lambda would carry.
func (e *Emulator) Invoke(t testing.TB, event any) []byte {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	payload, err := json.Marshal(event)
	if err != nil {
		t.Fatal(err)
	}
	client := http.Client{Timeout: 2 * time.Minute}
	resp, err := client.Post("http://"+e.addr+"/2015-03-31/functions/function/invocations", "application/json", bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// InvokeJSON invokes and decodes the reply into reply.
func (e *Emulator) InvokeJSON(t testing.TB, event, reply any) []byte {
	t.Helper()
	raw := e.Invoke(t, event)
	if err := json.Unmarshal(raw, reply); err != nil {
		t.Fatalf("invocation reply %q: %v", raw, err)
	}
	return raw
}

// WaitForPort waits until addr accepts connections, failing the test with
// logs after within.
func WaitForPort(t testing.TB, addr string, within time.Duration, logs interface{ String() string }) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s after %v:\n%s", addr, within, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Buffer collects a child process's output while a test may read it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// InvokeURL invokes a streaming Function URL handler with event and
// splits the reply (which the emulator collects whole, up to 6 MB) into
// its prelude and body.
func (e *Emulator) InvokeURL(t testing.TB, event any) (Prelude, []byte) {
	t.Helper()
	raw := e.Invoke(t, event)
	r := bufio.NewReader(bytes.NewReader(raw))
	p, err := ReadPrelude(r)
	if err != nil {
		t.Fatalf("reply %.200q: %v", raw, err)
	}
	body, _ := io.ReadAll(r)
	return p, body
}
