package transform_test

// Benchmarks of the transforms alone, on inputs already in memory: no HTTP,
// no fetch. BenchmarkInProcess is our own in-process limit, which
// scripts/bench lists beside the baseline's (sharp's, the figure our HTTP
// server is held against); BenchmarkVariant covers the other kinds.
//
//	go test -run '^$' -bench . -benchtime 10s ./shared/transform
//
// Work runs on as many goroutines as the HTTP load generator's concurrency
// (MEDIA_PROXY_BENCH_CONCURRENCY, default GOMAXPROCS), through one
// Transformer with the server's default slot count (GOMAXPROCS) and the
// server's MEDIA_PROXY_VIPS_CONCURRENCY, as the server would run them. Each
// benchmark reports req/s, the figure the HTTP runs are compared with, and
// cpu-ms/op (every thread of the process), which neighbours on a shared
// machine disturb less.

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/sniff"
	"github.com/misskey-lambda/media-proxy/shared/testmedia"
	"github.com/misskey-lambda/media-proxy/shared/transform"
	"github.com/misskey-lambda/media-proxy/shared/variant"
	"github.com/misskey-lambda/media-proxy/shared/vips"
)

// Inputs are generated once per process: the 4000x3000 JPEG alone takes a
// second or two. scripts/bench, which runs these benchmarks many times, has
// its origin write them once (origin -dump) and points
// MEDIA_PROXY_BENCH_INPUTS at that folder; the bytes are the same.
var (
	benchPNG512   = benchInput("emoji.png", func() []byte { return testmedia.PNG(512, 512) })
	benchJPEGBig  = benchInput("avatar.jpg", testmedia.JPEGLarge)
	benchGIF60    = benchInput("anim.gif", func() []byte { return testmedia.GIF(256, 256, 60) })
	benchJPEG1MB  = benchInput("photo.jpg", func() []byte { return testmedia.JPEGSize(1 << 20) })
	benchPNGPhoto = sync.OnceValue(func() []byte { return testmedia.PNGOpaque(1920, 1080) })
	benchAPNG60   = sync.OnceValue(func() []byte { return testmedia.APNG(256, 256, 60) })
)

func benchInput(name string, generate func() []byte) func() []byte {
	return sync.OnceValue(func() []byte {
		if dir := os.Getenv("MEDIA_PROXY_BENCH_INPUTS"); dir != "" {
			if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
				return b
			}
		}
		return generate()
	})
}

type benchCase struct {
	name string
	src  func() []byte
	kind variant.Kind
}

// The HTTP scenarios (a)-(c) of scripts/bench; the names are parsed by it.
var inProcessCases = []benchCase{
	{"a-emoji-png512", benchPNG512, variant.Emoji},
	{"b-avatar-jpeg4000x3000", benchJPEGBig, variant.Avatar},
	{"c-emoji-gif256x60", benchGIF60, variant.Emoji},
}

// The other kinds, each on an input it typically gets.
var variantCases = []benchCase{
	{"static-jpeg1mb", benchJPEG1MB, variant.Static},
	{"static-gif256x60", benchGIF60, variant.EmojiStatic},
	// APNG is decoded in Go; compare with c-emoji-gif256x60.
	{"emoji-apng256x60", benchAPNG60, variant.Emoji},
	{"static-apng256x60", benchAPNG60, variant.EmojiStatic},
	{"preview-jpeg1mb", benchJPEG1MB, variant.Preview},
	{"preview-png1920x1080", benchPNGPhoto, variant.Preview},
	{"badge-png512", benchPNG512, variant.Badge},
	{"avatar-static-jpeg4000x3000", benchJPEGBig, variant.AvatarStatic},
}

func BenchmarkInProcess(b *testing.B) {
	for _, c := range inProcessCases {
		b.Run(c.name, func(b *testing.B) { runParallel(b, c) })
	}
}

func BenchmarkVariant(b *testing.B) {
	for _, c := range variantCases {
		b.Run(c.name, func(b *testing.B) { runParallel(b, c) })
	}
}

// benchConcurrency is the number of requests in flight.
func benchConcurrency() int {
	if n, err := strconv.Atoi(os.Getenv("MEDIA_PROXY_BENCH_CONCURRENCY")); err == nil && n > 0 {
		return n
	}
	return runtime.GOMAXPROCS(0)
}

func runParallel(b *testing.B, c benchCase) {
	// libvips threads per image as the server sets them (0: libvips' default).
	vc, _ := strconv.Atoi(os.Getenv("MEDIA_PROXY_VIPS_CONCURRENCY"))
	if err := vips.Start(vips.Options{Concurrency: vc}); err != nil {
		b.Fatal(err)
	}
	src := c.src()
	typ := sniff.Detect(src[:min(len(src), sniff.HeadSize)])
	tr := transform.New(transform.DefaultLimits, runtime.GOMAXPROCS(0), nil)
	ctx := context.Background()

	// One untimed run checks the case and warms libvips up.
	out, err := tr.Apply(ctx, src, typ, c.kind)
	if err != nil {
		b.Fatalf("%s: %v", c.name, err)
	}
	outBytes := len(out.Data)

	// RunParallel starts parallelism x GOMAXPROCS goroutines.
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((benchConcurrency() + procs - 1) / procs)
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	cpu0 := processCPU()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := tr.Apply(ctx, src, typ, c.kind); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s, "req/s")
	}
	// CPU time is steadier than wall time on a shared machine.
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/op")
	b.ReportMetric(float64(outBytes), "out-B")
	b.ReportMetric(float64(out.Frames), "frames")
}

// processCPU is the user and system time of every thread of the process.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
