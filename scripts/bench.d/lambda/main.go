// Command lambda measures the packaged proxy bootstrap under the AWS Lambda
// Runtime Interface Emulator, at each memory size the template offers:
// time from the emulator's start to the first emoji answered (the
// emulator starts the bootstrap on the first invocation, so this is
// process start, init and one request), peak RSS (VmHWM of the bootstrap),
// and CPU time per warm invocation of each benchmark input. Everything
// runs on loopback; invocations are one at a time, as Lambda gives one
// instance.
//
//	lambda -rie aws-lambda-rie -bootstrap dist/x86_64/proxy/bootstrap \
//	    -origin 127.0.0.1:PORT -memory 512,1024,1769,2048,3008 -runs 5 -warm 20 -out f.json
//
// The machine's CPU is not throttled by the memory size as Lambda's is:
// the CPU time measured here is turned into Lambda time by the caller
// (scripts/bench-lambda) with AWS's rule, one vCPU at 1769 MB.
package main

import (
	"bytes"
	"encoding/base64"
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
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-lambda-go/events"
)

// Size is the result for one memory size.
type Size struct {
	MemoryMB int `json:"memory_mb"`
	// ColdMS: emulator start to the first emoji answered, every run.
	ColdMS []float64 `json:"cold_ms"`
	// ColdHWMKB: VmHWM of the bootstrap after the first answer, every run.
	ColdHWMKB []int64 `json:"cold_hwm_kb"`
	// ColdCPUMS: the bootstrap's CPU time up to the first answer, every run.
	ColdCPUMS []float64 `json:"cold_cpu_ms"`
	// CPU ms per warm invocation, and VmHWM after all of them, by input.
	WarmCPUMS  map[string]float64 `json:"warm_cpu_ms"`
	WarmWallMS map[string]float64 `json:"warm_wall_ms"`
	PeakKB     int64              `json:"peak_kb"`
}

type input struct{ name, path, query string }

var inputs = []input{
	{"emoji-png", "/emoji.png", "emoji=1"},
	{"avatar-jpeg", "/avatar.jpg", "avatar=1"},
	{"emoji-gif", "/anim.gif", "emoji=1"},
}

func main() {
	rie := flag.String("rie", "", "aws-lambda-rie binary")
	bootstrap := flag.String("bootstrap", "", "the packaged bootstrap (its lib/ beside it)")
	origin := flag.String("origin", "", "loopback host:port of scripts/bench.d/origin")
	memory := flag.String("memory", "512,1024,1536,2048,3008", "memory sizes in MB")
	runs := flag.Int("runs", 5, "cold starts per memory size")
	warm := flag.Int("warm", 10, "warm invocations per input per memory size")
	out := flag.String("out", "", "write the JSON here (default standard output)")
	md := flag.String("md", "", "also write the markdown table here")
	wait := flag.Float64("wait", 100, "assumed network wait per request on Lambda (ms), for the cost table")
	flag.Parse()
	if *rie == "" || *bootstrap == "" || *origin == "" {
		fmt.Fprintln(os.Stderr, "usage: lambda -rie BIN -bootstrap FILE -origin HOST:PORT [-memory LIST] [-runs N] [-warm N]")
		os.Exit(2)
	}
	var sizes []Size
	for _, f := range strings.Split(*memory, ",") {
		mb, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			fmt.Fprintln(os.Stderr, "lambda: bad memory size", f)
			os.Exit(2)
		}
		s, err := measure(*rie, *bootstrap, *origin, mb, *runs, *warm)
		if err != nil {
			fmt.Fprintf(os.Stderr, "lambda: %d MB: %v\n", mb, err)
			os.Exit(1)
		}
		sizes = append(sizes, s)
		fmt.Fprintf(os.Stderr, "lambda: %d MB: cold %v ms, warm CPU %v ms, peak %d kB\n", mb, s.ColdMS, s.WarmCPUMS, s.PeakKB)
	}
	if *md != "" {
		if err := os.WriteFile(*md, []byte(table(sizes, *wait)), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "lambda:", err)
			os.Exit(1)
		}
	}
	b, _ := json.MarshalIndent(sizes, "", " ")
	b = append(b, '\n')
	if *out == "" {
		os.Stdout.Write(b)
		return
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "lambda:", err)
		os.Exit(1)
	}
}

// goMemLimit is the template's GOMEMLIMIT: 80 % of the memory, in MiB.
func goMemLimit(mb int) string { return strconv.Itoa(mb*8/10) + "MiB" }

func measure(rie, bootstrap, origin string, mb, runs, warm int) (Size, error) {
	s := Size{MemoryMB: mb, WarmCPUMS: map[string]float64{}, WarmWallMS: map[string]float64{}}
	n := 0
	for run := 0; run <= runs; run++ { // run 0 warms the file cache and is not counted
		e, err := start(rie, bootstrap, mb)
		if err != nil {
			return s, err
		}
		ms, err := e.invoke(origin, inputs[0], &n)
		if err != nil {
			e.stop()
			return s, fmt.Errorf("cold invocation: %w (log: %s)", err, e.log.String())
		}
		cold := float64(time.Since(e.started).Microseconds()) / 1000
		_ = ms
		pid := e.child()
		if run > 0 {
			s.ColdMS = append(s.ColdMS, cold)
			s.ColdHWMKB = append(s.ColdHWMKB, statusKB(pid, "VmHWM"))
			s.ColdCPUMS = append(s.ColdCPUMS, 1000*procCPU(pid))
		}
		if run == runs {
			// The last instance stays up for the warm invocations.
			for _, in := range inputs {
				if _, err := e.invoke(origin, in, &n); err != nil { // its first, not counted
					e.stop()
					return s, err
				}
				c0 := procCPU(pid)
				var wall float64
				for range warm {
					w, err := e.invoke(origin, in, &n)
					if err != nil {
						e.stop()
						return s, err
					}
					wall += w
				}
				s.WarmCPUMS[in.name] = 1000 * (procCPU(pid) - c0) / float64(warm)
				s.WarmWallMS[in.name] = wall / float64(warm)
			}
			s.PeakKB = statusKB(pid, "VmHWM")
		}
		e.stop()
	}
	return s, nil
}

type emulator struct {
	cmd     *exec.Cmd
	addr    string
	started time.Time
	log     *bytes.Buffer
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func start(rie, bootstrap string, mb int) (*emulator, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	runtimeAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(bootstrap)
	if err != nil {
		return nil, err
	}
	if strings.ContainsRune(rie, '/') { // the command runs in the bootstrap's folder
		if rie, err = filepath.Abs(rie); err != nil {
			return nil, err
		}
	}
	cmd := exec.Command(rie, "--runtime-interface-emulator-address", addr, "--runtime-api-address", runtimeAddr, abs)
	cmd.Dir = filepath.Dir(abs)
	cmd.Env = []string{
		"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + os.TempDir(),
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=" + strconv.Itoa(mb),
		"GOMEMLIMIT=" + goMemLimit(mb),
		"MEDIA_PROXY_STORE=none",
		"MEDIA_PROXY_QUEUE=none",
		"MEDIA_PROXY_ALLOWED_PRIVATE_NETWORKS=127.0.0.0/8",
		"MEDIA_PROXY_ALLOWED_PORTS=1-65535",
		"MEDIA_PROXY_METRICS=emf", // as on Lambda
		"AWS_REGION=us-east-1",
	}
	e := &emulator{cmd: cmd, addr: addr, log: new(bytes.Buffer)}
	cmd.Stdout, cmd.Stderr = e.log, e.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	e.started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return e, nil
		}
		if time.Now().After(deadline) {
			e.stop()
			return nil, fmt.Errorf("emulator did not listen: %s", e.log.String())
		}
		time.Sleep(time.Millisecond)
	}
}

func (e *emulator) stop() {
	syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
	e.cmd.Wait()
}

// child is the bootstrap's PID: the emulator's child process.
func (e *emulator) child() int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", e.cmd.Process.Pid))
	for _, t := range tasks {
		raw, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(raw)) {
			if pid, err := strconv.Atoi(f); err == nil {
				return pid
			}
		}
	}
	return -1
}

// invoke posts a Function URL event for one distinct URL of in and checks
// the reply is a 200 WebP; it returns the wall time in ms.
func (e *emulator) invoke(origin string, in input, n *int) (float64, error) {
	*n++
	src := fmt.Sprintf("http://%s%s?n=%d-%d", origin, in.path, os.Getpid(), *n)
	query := "url=" + url.QueryEscape(src) + "&" + in.query
	ev := events.LambdaFunctionURLRequest{
		Version: "2.0", RawPath: "/x.webp", RawQueryString: query, Headers: map[string]string{},
		RequestContext: events.LambdaFunctionURLRequestContext{
			RequestID:  fmt.Sprintf("bench-%d", *n),
			DomainName: "example.lambda-url.us-east-1.on.aws",
			HTTP:       events.LambdaFunctionURLRequestContextHTTPDescription{Method: "GET", Path: "/x.webp", SourceIP: "192.0.2.10"},
		},
	}
	payload, _ := json.Marshal(ev)
	client := http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{Proxy: nil}}
	t0 := time.Now()
	resp, err := client.Post("http://"+e.addr+"/2015-03-31/functions/function/invocations", "application/json", bytes.NewReader(payload))
	if err != nil {
		return 0, err
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	wall := float64(time.Since(t0).Microseconds()) / 1000
	if err != nil {
		return 0, err
	}
	var out events.LambdaFunctionURLResponse
	if err := json.Unmarshal(raw, &out); err != nil {
		return 0, fmt.Errorf("reply %.200q: %w", raw, err)
	}
	body := []byte(out.Body)
	if out.IsBase64Encoded {
		body, _ = base64.StdEncoding.DecodeString(out.Body)
	}
	if out.StatusCode != 200 || len(body) < 12 || string(body[8:12]) != "WEBP" {
		return 0, errors.New("not a 200 WebP: status " + strconv.Itoa(out.StatusCode))
	}
	return wall, nil
}

func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return -1
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return float64(u+s) / 100
}

func statusKB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			v, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return v
		}
	}
	return -1
}

// Lambda's rules (AWS documentation): a function gets one vCPU at 1769 MB
// and a proportional share below; a request here runs on one thread at a
// time, so above 1769 MB it gets no faster. GB-s price on arm64 and the
// per-request fee.
const (
	fullVCPUMB   = 1769.0
	pricePerGBs  = 0.0000133334
	pricePerCall = 0.20 / 1e6
)

func lambdaDuration(cpuMS, waitMS float64, mb int) float64 {
	share := min(float64(mb)/fullVCPUMB, 1)
	return cpuMS/share + waitMS
}

func costPerMillion(cpuMS, waitMS float64, mb int) float64 {
	return 1e6 * (lambdaDuration(cpuMS, waitMS, mb)/1000*float64(mb)/1024*pricePerGBs + pricePerCall)
}

func medianF(v []float64) float64 {
	s := append([]float64(nil), v...)
	if len(s) == 0 {
		return 0
	}
	sortFloats(s)
	return s[len(s)/2]
}

func sortFloats(s []float64) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func maxI(v []int64) int64 {
	var m int64
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

// table prints the measurements and, from them, Lambda's time and cost
// per request at each memory size.
func table(sizes []Size, waitMS float64) string {
	var b strings.Builder
	b.WriteString("| memory | cold start here: start → first emoji (median) | its CPU | on Lambda, CPU scaled by the share | peak RSS: cold / after all three inputs | CPU per warm request here: emoji PNG / avatar JPEG / GIF emoji |\n")
	b.WriteString("|--:|--:|--:|--:|--:|--:|\n")
	for _, s := range sizes {
		cold, cpu := medianF(s.ColdMS), medianF(s.ColdCPUMS)
		share := min(float64(s.MemoryMB)/fullVCPUMB, 1)
		fmt.Fprintf(&b, "| %d MB | %.0f ms | %.0f ms | %.0f ms | %.0f MB / %.0f MB | %.1f / %.1f / %.0f ms |\n",
			s.MemoryMB, cold, cpu, cold-cpu+cpu/share, float64(maxI(s.ColdHWMKB))/1024, float64(s.PeakKB)/1024,
			s.WarmCPUMS["emoji-png"], s.WarmCPUMS["avatar-jpeg"], s.WarmCPUMS["emoji-gif"])
	}
	fmt.Fprintf(&b, "\nOn Lambda (CPU time ÷ min(memory / 1769 MB, 1) + %.0f ms of network wait; arm64 price, $ per million requests including the request fee):\n\n", waitMS)
	b.WriteString("| memory | emoji PNG: time / cost | avatar JPEG: time / cost | GIF emoji: time / cost |\n")
	b.WriteString("|--:|--:|--:|--:|\n")
	for _, s := range sizes {
		fmt.Fprintf(&b, "| %d MB |", s.MemoryMB)
		for _, in := range inputs {
			c := s.WarmCPUMS[in.name]
			fmt.Fprintf(&b, " %.0f ms / $%.2f |", lambdaDuration(c, waitMS, s.MemoryMB), costPerMillion(c, waitMS, s.MemoryMB))
		}
		b.WriteString("\n")
	}
	return b.String()
}
