// Command load is scripts/bench's load generator and bookkeeper. Every
// address it talks to must be loopback.
//
//	load run -url URL -c 2 -d 10s [-expect 200] [-out f.json]
//	    Keeps c requests in flight for d (then lets the last ones finish) and
//	    prints JSON: requests/s, p50, p99, errors, non-2xx, and every latency.
//	    "{n}" in URL is replaced by a counter, so each request can be unique.
//	load startup -url URL [-log f] -- command args...
//	    Starts the command, polls URL every millisecond and prints the time
//	    from the start to the first 2xx answer, with the peak RSS then; then
//	    stops the command (SIGTERM, SIGKILL after 5 s).
//	load wait -url URL [-pid P] [-timeout 60s]
//	    Waits until URL answers 2xx.
//	load get -url URL -out FILE
//	    Saves one 200 answer's body (scripts/bench scores it for quality).
//	load freeport
//	    Prints a free loopback TCP port.
//	load table -dir D
//	    Prints scripts/bench's result table from the files in D.
//	load mkbucket -endpoint URL -bucket NAME
//	    Creates a bucket on a loopback S3 stand-in (see s3.go).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = cmdRun(os.Args[2:])
	case "startup":
		err = cmdStartup(os.Args[2:])
	case "wait":
		err = cmdWait(os.Args[2:])
	case "get":
		err = cmdGet(os.Args[2:])
	case "freeport":
		err = cmdFreePort()
	case "table":
		err = cmdTable(os.Args[2:])
	case "mkbucket":
		err = cmdMkBucket(os.Args[2:])
	case "matchq":
		err = cmdMatchQ(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: load run|startup|wait|get|freeport|table|mkbucket|matchq [flags] (see the source)")
	os.Exit(2)
}

// checkLoopback refuses any target that is not a loopback address.
func checkLoopback(raw string) error {
	u, err := url.Parse(strings.ReplaceAll(raw, "{n}", "0"))
	if err != nil {
		return err
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s: only loopback targets are allowed", raw)
	}
	return nil
}

// RunResult is what "run" prints.
type RunResult struct {
	URL         string  `json:"url"`
	Concurrency int     `json:"concurrency"`
	Requests    int     `json:"requests"` // answered with the expected status
	Errors      int     `json:"errors"`   // transport errors and timeouts
	Non2xx      int     `json:"non_2xx"`
	Unexpected  int     `json:"unexpected"` // any status but -expect
	Elapsed     float64 `json:"elapsed_s"`
	RPS         float64 `json:"rps"`
	P50         float64 `json:"p50_ms"`
	P90         float64 `json:"p90_ms"`
	P99         float64 `json:"p99_ms"`
	Max         float64 `json:"max_ms"`
	Bytes       int64   `json:"bytes"`
	// CPUSeconds is the server's CPU time (all threads) over the run, when
	// -pid names it; CPUMSPerReq divides it by the answers.
	CPUSeconds  float64 `json:"cpu_s,omitempty"`
	CPUMSPerReq float64 `json:"cpu_ms_per_req,omitempty"`
	// LatencyUS holds every expected answer's latency, so rounds can be
	// merged into exact percentiles.
	LatencyUS []int64 `json:"latency_us"`
}

func cmdRun(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	target := fs.String("url", "", "URL; {n} is replaced by a request counter")
	conc := fs.Int("c", 2, "requests in flight")
	dur := fs.Duration("d", 10*time.Second, "how long to start new requests")
	expect := fs.Int("expect", 200, "the status a correct answer has")
	timeout := fs.Duration("timeout", 120*time.Second, "per-request timeout")
	out := fs.String("out", "", "write the JSON here instead of standard output")
	pid := fs.Int("pid", 0, "the server's process, to report its CPU time")
	fs.Parse(args)
	if *target == "" || *conc < 1 {
		return errors.New("run: -url and a positive -c are needed")
	}
	if err := checkLoopback(*target); err != nil {
		return err
	}
	client := &http.Client{
		Timeout: *timeout,
		Transport: &http.Transport{
			Proxy:               nil,
			MaxIdleConnsPerHost: *conc,
			DisableCompression:  true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	var seq atomic.Int64
	seq.Store(time.Now().UnixNano() % 1e9 * 1000) // unique across rounds and runs
	type worker struct {
		lat                           []int64
		errs, non2xx, unexpected, cnt int
		bytes                         int64
	}
	workers := make([]worker, *conc)
	cpu0 := procCPU(*pid)
	start := time.Now()
	deadline := start.Add(*dur)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func(w *worker) {
			defer wg.Done()
			for time.Now().Before(deadline) {
				u := strings.ReplaceAll(*target, "{n}", strconv.FormatInt(seq.Add(1), 10))
				t0 := time.Now()
				resp, err := client.Get(u)
				if err != nil {
					w.errs++
					time.Sleep(10 * time.Millisecond) // do not spin on a dead server
					continue
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				lat := time.Since(t0)
				w.bytes += n
				switch {
				case err != nil:
					w.errs++
				case resp.StatusCode != *expect:
					w.unexpected++
					if resp.StatusCode < 200 || resp.StatusCode > 299 {
						w.non2xx++
					}
				default:
					w.cnt++
					w.lat = append(w.lat, lat.Microseconds())
				}
			}
		}(&workers[i])
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1 := procCPU(*pid)
	client.CloseIdleConnections()

	r := RunResult{URL: *target, Concurrency: *conc, Elapsed: elapsed.Seconds()}
	for _, w := range workers {
		r.Requests += w.cnt
		r.Errors += w.errs
		r.Non2xx += w.non2xx
		r.Unexpected += w.unexpected
		r.Bytes += w.bytes
		r.LatencyUS = append(r.LatencyUS, w.lat...)
	}
	slices.Sort(r.LatencyUS)
	r.RPS = float64(r.Requests) / r.Elapsed
	if *pid > 0 && cpu0 >= 0 && cpu1 >= 0 {
		r.CPUSeconds = cpu1 - cpu0
		if r.Requests > 0 {
			r.CPUMSPerReq = 1000 * r.CPUSeconds / float64(r.Requests)
		}
	}
	r.P50, r.P90, r.P99, r.Max = pct(r.LatencyUS, 50), pct(r.LatencyUS, 90), pct(r.LatencyUS, 99), pct(r.LatencyUS, 100)
	return writeJSON(*out, r)
}

// pct is the nearest-rank percentile of sorted microseconds, in ms.
func pct(sorted []int64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.999999) - 1
	i = min(max(i, 0), len(sorted)-1)
	return float64(sorted[i]) / 1000
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if path == "" {
		_, err = os.Stdout.Write(b)
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// StartupResult is what "startup" prints.
type StartupResult struct {
	MS     float64 `json:"ms"`
	HWMKB  int64   `json:"hwm_kb"` // VmHWM when the first answer arrived
	Status int     `json:"status"`
}

func cmdStartup(args []string) error {
	fs := flag.NewFlagSet("startup", flag.ExitOnError)
	target := fs.String("url", "", "URL to poll")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after")
	logPath := fs.String("log", "", "append the command's output here (default: discard)")
	out := fs.String("out", "", "write the JSON here instead of standard output")
	fs.Parse(args)
	argv := fs.Args()
	if *target == "" || len(argv) == 0 {
		return errors.New("startup: -url and a command after -- are needed")
	}
	if err := checkLoopback(*target); err != nil {
		return err
	}
	u, _ := url.Parse(*target)
	// A server already on the port would be measured instead.
	if c, err := net.DialTimeout("tcp", u.Host, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("startup: something already listens on %s", u.Host)
	}

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if *logPath != "" {
		f, err := os.OpenFile(*logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	exited := make(chan error, 1)

	start := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { exited <- cmd.Wait() }()
	defer stop(cmd, exited)

	deadline := start.Add(*timeout)
	for {
		resp, err := client.Get(*target)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
				el := time.Since(start)
				return writeJSON(*out, StartupResult{
					MS:     float64(el.Microseconds()) / 1000,
					HWMKB:  procStatusKB(cmd.Process.Pid, "VmHWM"),
					Status: resp.StatusCode,
				})
			}
			return fmt.Errorf("startup: first answer was %d", resp.StatusCode)
		}
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("startup: %s exited before answering: %v", argv[0], err)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("startup: no answer from %s within %s", *target, *timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// stop ends the command's process group: SIGTERM, then SIGKILL after 5 s.
func stop(cmd *exec.Cmd, exited chan error) {
	pgid := cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-exited
	}
}

// procCPU is a process's user plus system time in seconds (all its
// threads), from /proc/<pid>/stat, or -1.
func procCPU(pid int) float64 {
	if pid <= 0 {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// The command name is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return -1
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	const userHZ = 100 // the unit of /proc times on Linux
	return float64(utime+stime) / userHZ
}

// procStatusKB reads a "kB" field of /proc/<pid>/status, or -1.
func procStatusKB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}

func cmdWait(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ExitOnError)
	target := fs.String("url", "", "URL to poll")
	pid := fs.Int("pid", 0, "fail early when this process is gone")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after")
	fs.Parse(args)
	if err := checkLoopback(*target); err != nil {
		return err
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, *target, nil)
		if resp, err := client.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
				return nil
			}
		}
		if *pid > 0 && syscall.Kill(*pid, 0) != nil {
			return fmt.Errorf("wait: process %d is gone", *pid)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait: %s did not answer within %s", *target, *timeout)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func cmdFreePort() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	return nil
}

func cmdGet(args []string) error {
	fs := flag.NewFlagSet("get", flag.ExitOnError)
	target := fs.String("url", "", "URL; {n} is replaced by a number unique to this run")
	out := fs.String("out", "", "file to write the body to")
	fs.Parse(args)
	if *target == "" || *out == "" {
		return errors.New("get: -url and -out are needed")
	}
	if err := checkLoopback(*target); err != nil {
		return err
	}
	u := strings.ReplaceAll(*target, "{n}", "q"+strconv.FormatInt(time.Now().UnixNano(), 10))
	client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{Proxy: nil, DisableCompression: true}}
	resp, err := client.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get: %s answered %d", *target, resp.StatusCode)
	}
	return os.WriteFile(*out, body, 0o644)
}
