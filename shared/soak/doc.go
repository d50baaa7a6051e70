// Package soak holds the proxy's bounded load test (soak_test.go): the
// local server, started as a child process with the real wiring, takes a
// mixed workload (hits, misses, passthrough, errors) from loopback while
// its latency and memory are recorded: first until memory has warmed up
// (at most 20 s), then for a set time. CI runs it for 10 s after warm-up;
// scripts/soak runs it for longer:
//
//	scripts/soak                  # 60 s
//	scripts/soak --duration 10m   # any Go duration
//
// Environment: MEDIA_PROXY_SOAK_DURATION (the time after warm-up, default
// 10s), MEDIA_PROXY_SOAK_CONCURRENCY (default 8), MEDIA_PROXY_SOAK_REPORT
// (a file to write the figures to, as JSON).
//
// Memory is flat when it grows by at most 16 KiB per request answered
// after warm-up. TestSoakCatchesLeak runs the same soak against the same
// server made to keep 64 KiB for each request, and expects it to fail.
package soak
