package transform

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/sniff"
	"github.com/misskey-lambda/media-proxy/shared/variant"
	"github.com/misskey-lambda/media-proxy/shared/vips"
)

// SVG is rendered in a child process: librsvg renders a document in one
// call per 2000-pixel tile, so libvips' kill flag cannot stop an SVG
// built to take minutes (a million shapes, huge filters), and a process
// can be killed at the deadline. It also keeps a librsvg crash out of the
// server. The child is this same executable, started with childEnv set:
// any binary that links this package (the proxy, the worker, a test
// binary) can render.
const (
	// childEnv tells the child what to render: "<variant>,<max pixels>",
	// the parent's MEDIA_PROXY_MAX_PIXELS (it reads no setting itself).
	childEnv = "MEDIA_PROXY_SVG_CHILD"
	// childWait is how long the parent waits for the child's output to
	// drain once it has been killed.
	childWait = time.Second
)

// ErrInterrupted: the SVG renderer could not be started (no process or
// file left, say), or was stopped from outside (a SIGTERM, SIGINT or
// SIGHUP, as a service manager or a terminal sends when the proxy shuts
// down). It says nothing about the image: 503, not remembered.
var ErrInterrupted = errors.New("transform: svg renderer interrupted")

// childOutputLimit bounds what the parent reads back from a render whose
// output frame holds raw bytes (RGBA): the encoded variant is far
// smaller than that, plus the header line. The plan accounts for it.
func childOutputLimit(raw int64) int64 { return raw + 4096 }

// Exit codes of the child, mapped back to the package's errors.
const (
	childUndecodable    = 3
	childNoEntropy      = 4
	childNotConvertible = 5
	childTooLarge       = 6
)

func init() {
	// Before main or the tests: a child only renders and exits.
	if what := os.Getenv(childEnv); what != "" {
		os.Exit(runChild(what, os.Stdin, os.Stdout, os.Stderr))
	}
}

// childHeader precedes the output bytes on the child's standard output.
type childHeader struct {
	MIME, Ext             string
	Width, Height, Frames int
}

// renderSVGChild renders plan p (an SVG) in a child process, killed when
// ctx ends, under the pixel limit maxPixels.
func renderSVGChild(ctx context.Context, p *Plan, maxPixels int64) (*Output, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("%w: finding this executable: %w", ErrInterrupted, err)
	}
	cmd := exec.CommandContext(ctx, exe)
	// Nothing of the parent's environment (credentials) is needed.
	cmd.Env = []string{childEnv + "=" + string(p.kind) + "," + strconv.FormatInt(maxPixels, 10)}
	cmd.Stdin = bytes.NewReader(p.src)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &limitedBuffer{buf: &stdout, left: int(p.childOutput)}
	cmd.Stderr = &limitedBuffer{buf: &stderr, left: 4096}
	cmd.WaitDelay = childWait
	err = cmd.Run()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		cause := errors.New(string(bytes.TrimSpace(stderr.Bytes())))
		switch exit.ExitCode() {
		case childUndecodable:
			return nil, fmt.Errorf("%w: %w", ErrUndecodable, cause)
		case childNoEntropy:
			return nil, ErrNoEntropy
		case childNotConvertible:
			return nil, ErrNotConvertible
		case childTooLarge:
			return nil, fmt.Errorf("%w: %w", ErrTooLarge, cause)
		}
		if stoppedFromOutside(exit.ProcessState) {
			return nil, fmt.Errorf("%w: %v", ErrInterrupted, err)
		}
		return nil, fmt.Errorf("%w: svg renderer failed (%v): %w", ErrUndecodable, err, cause)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: running the renderer: %w", ErrInterrupted, err)
	}
	line, data, ok := bytes.Cut(stdout.Bytes(), []byte("\n"))
	var h childHeader
	if !ok || json.Unmarshal(line, &h) != nil {
		return nil, fmt.Errorf("%w: svg renderer gave no output", ErrUndecodable)
	}
	return &Output{Data: data, MIME: h.MIME, Ext: h.Ext, Width: h.Width, Height: h.Height, Frames: h.Frames}, nil
}

// runChild is the child's side: read the SVG, render it in process as
// the parent would have, write the header and bytes, and exit. what is
// childEnv's value.
func runChild(what string, stdin io.Reader, stdout, stderr io.Writer) int {
	kind, pixels, _ := strings.Cut(what, ",")
	k, ok := variant.Parse(kind)
	if !ok {
		fmt.Fprintf(stderr, "unknown variant %q\n", kind)
		return childNotConvertible
	}
	limits := DefaultLimits
	if n, err := strconv.ParseInt(pixels, 10, 64); err == nil && n > 0 {
		limits.MaxPixels = n
	}
	src, err := io.ReadAll(stdin)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return childUndecodable
	}
	if err := vips.Start(vips.Options{}); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	out, err := renderInProcess(src, sniff.Type{MIME: "image/svg+xml", Ext: "svg"}, k, limits)
	switch {
	case errors.Is(err, ErrNoEntropy):
		return childNoEntropy
	case errors.Is(err, ErrNotConvertible):
		return childNotConvertible
	case errors.Is(err, ErrTooLarge):
		fmt.Fprintln(stderr, err)
		return childTooLarge
	case err != nil:
		fmt.Fprintln(stderr, err)
		return childUndecodable
	}
	h, _ := json.Marshal(childHeader{MIME: out.MIME, Ext: out.Ext, Width: out.Width, Height: out.Height, Frames: out.Frames})
	if _, err := stdout.Write(append(h, '\n')); err != nil {
		return 1
	}
	if _, err := stdout.Write(out.Data); err != nil {
		return 1
	}
	return 0
}

// limitedBuffer keeps at most left bytes and fails past them, which ends
// a child that writes without bound.
type limitedBuffer struct {
	buf  *bytes.Buffer
	left int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if len(p) > l.left {
		return 0, errors.New("svg renderer output too large")
	}
	l.left -= len(p)
	return l.buf.Write(p)
}
