package main

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/misskey-lambda/media-proxy/shared/lambdatest"
)

// TestBadSettingsStopBeforeStart runs the real binary with three bad
// variables: it prints one line for each, starts nothing (libvips
// included) and exits non-zero. A run with good settings whose listen
// fails shows what a start looks like, so the absence means something.
func TestBadSettingsStopBeforeStart(t *testing.T) {
	bin := lambdatest.Build(t, ".")
	// A port taken, so that a good start fails at Listen, after libvips.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, port, _ := net.SplitHostPort(taken.Addr().String())
	run := func(vars ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(bin)
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "MEDIA_PROXY_") && !strings.HasPrefix(kv, "AWS_LAMBDA_") && !strings.HasPrefix(kv, "PORT=") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, "MEDIA_PROXY_STORE=none", "MEDIA_PROXY_BIND_ADDRESS=127.0.0.1", "PORT="+port)
		cmd.Env = append(cmd.Env, vars...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("%v: %v (want a non-zero exit)\n%s", vars, err, stderr.Bytes())
		}
		return stderr.String(), exit.ExitCode()
	}

	good, code := run()
	if code == 0 || !strings.Contains(good, `"msg":"libvips started"`) {
		t.Fatalf("good settings, port taken: exit %d, want non-zero after libvips started:\n%s", code, good)
	}

	out, code := run("MEDIA_PROXY_MAX_SIZE=-1", "MEDIA_PROXY_QUEUE=redis://queue", "MEDIA_PROXY_FETCH_TIMEOUT=soon")
	if code == 0 {
		t.Errorf("exit %d with bad settings", code)
	}
	if strings.Contains(out, "libvips started") || strings.Contains(out, `"msg"`) {
		t.Errorf("started or logged before refusing the settings:\n%s", out)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	want := []string{
		`proxy: MEDIA_PROXY_QUEUE="redis://queue": want local, none or an SQS queue URL`,
		`proxy: MEDIA_PROXY_MAX_SIZE="-1": want a whole number, 1 or more`,
		`proxy: MEDIA_PROXY_FETCH_TIMEOUT="soon": want a duration above 0`,
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), out)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d: %q, want it to start with %q", i+1, lines[i], w)
		}
	}
}
