package main

// "load table": scripts/bench's result table. The directory holds:
//
//	scenarios            lines "id<TAB>kind<TAB>label", in table order;
//	                     kind: transform (a-c), pass (d), hit (e), startup (f)
//	<id>/ours.r<k>.json  "run" results of round k, ours and baseline
//	<id>/base.r<k>.json
//	<id>/ours.hwm        peak RSS (VmHWM, kB) of the server over the scenario
//	<id>/base.hwm
//	<id>/limit.txt       go test -bench output of BenchmarkInProcess (transform)
//	<id>/sharp-limit.jsonl  the baseline's in-process limit (inprocess.mjs
//	                     lines), the figure our server is held against
//	<id>/quality.jsonl   scripts/bench.d/quality lines: ours, then baseline
//	<id>/ours.s<k>.json  "startup" results (startup)
//	<id>/base.s<k>.json
//	<id>/skip            why the scenario did not run

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

type scenario struct {
	id, kind, label string
	dir             string
	skip            string

	ours, base       []RunResult
	oursM, baseM     RunResult // rounds merged
	oursHWM, baseHWM int64
	limits           []float64 // our in-process req/s, one per measurement
	limitCPU         []float64 // our in-process CPU ms per request
	sharp            []float64 // the baseline's in-process ops/s, one per measurement
	sharpCPU         []float64 // its CPU ms per op
	qOurs, qBase     *Quality
	// The imgproxy sides (imgproxy.go).
	sides              map[string]*side
	imgpSkip, imgqNote string

	oursS, baseS []StartupResult
}

func cmdTable(args []string) error {
	fs := flag.NewFlagSet("table", flag.ExitOnError)
	dir := fs.String("dir", "", "results directory")
	check := fs.Bool("check", false, "print nothing; fail if a run had no answers, errors or unexpected statuses")
	fs.Parse(args)
	list, err := os.ReadFile(filepath.Join(*dir, "scenarios"))
	if err != nil {
		return err
	}
	var scs []*scenario
	byID := map[string]*scenario{}
	for line := range strings.SplitSeq(strings.TrimSpace(string(list)), "\n") {
		f := strings.SplitN(line, "\t", 3)
		if len(f) != 3 {
			continue
		}
		s := &scenario{id: f[0], kind: f[1], label: f[2], dir: filepath.Join(*dir, f[0])}
		if err := s.load(); err != nil {
			return fmt.Errorf("%s: %w", s.id, err)
		}
		scs = append(scs, s)
		byID[s.id] = s
	}
	if *check {
		return checkRuns(scs)
	}

	var b strings.Builder
	b.WriteString("| scenario | ours req/s | limit: sharp in-process ops/s | ours ÷ limit | baseline server req/s | ours ÷ baseline | CPU ms/req: ours / baseline / sharp in-process | ours p50/p99 | baseline p50/p99 | peak RSS: ours / baseline |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, s := range scs {
		b.WriteString(s.row(byID))
	}
	b.WriteString("\nlimit: the baseline's sharp pipelines in-process (no HTTP, no fetch, inputs in memory, the same number in flight), " +
		"measured between the rounds while both servers sit idle; \"ours ÷ limit\" is the issue's figure (our server end to end through HTTP and the fetch). " +
		"CPU ms/req: the server process's CPU time (all threads) per answer over all rounds, which a Lambda bill follows and neighbours disturb less than req/s. " +
		"Start-up rows: median / max time over the runs, baseline ÷ ours in the ratio column. " +
		"Peak RSS is VmHWM of the server process, restarted for every scenario (warm-up included); for start-up rows VmHWM at the first answer. " +
		"(e) has no baseline cache: its baseline column is the baseline doing the same request, and its ratio column compares it with our own transform path (a).\n")

	b.WriteString("\nQuality of one answer of each server (scripts/bench.d/quality): bytes; SSIM (Y'CbCr 4:1:1, mean over frames, worst frame in brackets) " +
		"against a careful unencoded rendering of the same variant, over black and over white; butteraugli 3-norm (mean over frames, largest distance in brackets), lower is better:\n\n")
	b.WriteString("| scenario | size | bytes: ours / baseline | bytes ratio | SSIM ours | SSIM baseline | SSIM ours − baseline | butteraugli ours | butteraugli baseline |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, s := range scs {
		if s.qOurs == nil {
			continue
		}
		o, q := s.qOurs, s.qBase
		size := fmt.Sprintf("%dx%d", o.Width, o.Height)
		if o.Frames > 1 || q.Frames > 1 {
			size += fmt.Sprintf(" × %d / %d frames", o.Frames, q.Frames)
		}
		if o.Width != q.Width || o.Height != q.Height {
			size += fmt.Sprintf(" (baseline %dx%d)", q.Width, q.Height)
		}
		fmt.Fprintf(&b, "| %s | %s | %d / %d | %s | %.4f (%.4f) | %.4f (%.4f) | %+.4f | %s | %s |\n",
			s.label, size, o.Bytes, q.Bytes, ratio(float64(o.Bytes), float64(q.Bytes)),
			o.SSIM, o.SSIMMin, q.SSIM, q.SSIMMin, o.SSIM-q.SSIM, butter(o), butter(q))
	}

	b.WriteString("\nPer round (req/s, A B A B order), in-process limits measured between them, and CPU time per request:\n\n")
	for _, s := range scs {
		if len(s.ours) == 0 {
			continue
		}
		fmt.Fprintf(&b, "- %s: ours %s; baseline %s", s.label, rounds(s.ours), rounds(s.base))
		if pr := pairedRatios(s.ours, s.base); len(pr) > 1 {
			fmt.Fprintf(&b, " (ratio per round pair: median %.2f×, range %.2f–%.2f×)", median(pr), pr[0], pr[len(pr)-1])
		}
		if len(s.sharp) > 0 {
			fmt.Fprintf(&b, "; sharp in-process %s", floats(s.sharp))
		}
		if len(s.limits) > 0 {
			fmt.Fprintf(&b, "; ours in-process %s (mean %s, ours server ÷ ours in-process %.0f%%)", floats(s.limits), num(s.limit()), 100*s.oursM.RPS/s.limit())
		}
		fmt.Fprintf(&b, ". CPU per request: ours %s ms, baseline %s ms (baseline ÷ ours %s)", num(s.oursM.CPUMSPerReq), num(s.baseM.CPUMSPerReq),
			ratio(s.baseM.CPUMSPerReq, s.oursM.CPUMSPerReq))
		if c := s.sharpCPU; len(c) > 0 {
			fmt.Fprintf(&b, "; sharp in-process %s ms (÷ ours %s)", num(mean(c)), ratio(mean(c), s.oursM.CPUMSPerReq))
		}
		if c := s.limitCPU; len(c) > 0 {
			fmt.Fprintf(&b, "; ours in-process %s ms", num(mean(c)))
		}
		b.WriteString("\n")
	}

	b.WriteString("\nTargets (issue 14):\n\n")
	b.WriteString(targets(scs, byID))
	b.WriteString(threeWay(scs))
	b.WriteString("\nTargets (issue 24):\n\n")
	b.WriteString(targets24(scs))
	fmt.Print(b.String())
	return nil
}

func (s *scenario) load() error {
	if raw, err := os.ReadFile(filepath.Join(s.dir, "skip")); err == nil {
		s.skip = strings.TrimSpace(string(raw))
		return nil
	}
	var err error
	if s.ours, err = readRuns[RunResult](s.dir, "ours.r"); err != nil {
		return err
	}
	if s.base, err = readRuns[RunResult](s.dir, "base.r"); err != nil {
		return err
	}
	if s.oursS, err = readRuns[StartupResult](s.dir, "ours.s"); err != nil {
		return err
	}
	if s.baseS, err = readRuns[StartupResult](s.dir, "base.s"); err != nil {
		return err
	}
	s.oursM, s.baseM = merge(s.ours), merge(s.base)
	s.oursHWM, s.baseHWM = readKB(filepath.Join(s.dir, "ours.hwm")), readKB(filepath.Join(s.dir, "base.hwm"))
	s.limits = readMetric(filepath.Join(s.dir, "limit.txt"), "req/s")
	s.limitCPU = readMetric(filepath.Join(s.dir, "limit.txt"), "cpu-ms/op")
	s.sharp, s.sharpCPU = readSharpLimit(filepath.Join(s.dir, "sharp-limit.jsonl"))
	return s.loadSides()
}

// Quality is a line of scripts/bench.d/quality.
type Quality struct {
	File           string  `json:"file"`
	Bytes          int     `json:"bytes"`
	Width          int     `json:"width"`
	Height         int     `json:"height"`
	Frames         int     `json:"frames"`
	SSIM           float64 `json:"ssim"`
	SSIMMin        float64 `json:"ssim_min"`
	Butteraugli    float64 `json:"butteraugli"`
	ButteraugliMax float64 `json:"butteraugli_max"`
}

func readQuality(path string) ([]Quality, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []Quality
	for line := range strings.SplitSeq(strings.TrimSpace(string(raw)), "\n") {
		var q Quality
		if err := json.Unmarshal([]byte(line), &q); err != nil {
			return nil, err
		}
		out = append(out, q)
	}
	return out, nil
}

// readSharpLimit reads inprocess.mjs lines: ops/s and CPU ms per op.
func readSharpLimit(path string) (rps, cpu []float64) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil
	}
	for line := range strings.SplitSeq(strings.TrimSpace(string(raw)), "\n") {
		var v struct {
			RPS float64 `json:"rps"`
			CPU float64 `json:"cpu_ms_per_op"`
		}
		if json.Unmarshal([]byte(line), &v) == nil && v.RPS > 0 {
			rps = append(rps, v.RPS)
			cpu = append(cpu, v.CPU)
		}
	}
	return rps, cpu
}

// readRuns reads <dir>/<prefix><k>.json for k = 1, 2, ...
func readRuns[T any](dir, prefix string) ([]T, error) {
	var out []T
	for k := 1; ; k++ {
		raw, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("%s%d.json", prefix, k)))
		if os.IsNotExist(err) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%s%d.json: %w", prefix, k, err)
		}
		out = append(out, v)
	}
}

func merge(rs []RunResult) RunResult {
	var m RunResult
	for _, r := range rs {
		m.Requests += r.Requests
		m.Errors += r.Errors
		m.Non2xx += r.Non2xx
		m.Unexpected += r.Unexpected
		m.Elapsed += r.Elapsed
		m.CPUSeconds += r.CPUSeconds
		m.LatencyUS = append(m.LatencyUS, r.LatencyUS...)
	}
	slices.Sort(m.LatencyUS)
	if m.Elapsed > 0 {
		m.RPS = float64(m.Requests) / m.Elapsed
	}
	m.P50, m.P99 = pct(m.LatencyUS, 50), pct(m.LatencyUS, 99)
	if m.Requests > 0 {
		m.CPUMSPerReq = 1000 * m.CPUSeconds / float64(m.Requests)
	}
	return m
}

func readKB(path string) int64 {
	raw, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// readMetric takes a metric of every BenchmarkInProcess line.
func readMetric(path, unit string) []float64 {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []float64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || !strings.HasPrefix(fields[0], "BenchmarkInProcess/") {
			continue
		}
		for i := 1; i < len(fields); i++ {
			if fields[i] == unit {
				if v, err := strconv.ParseFloat(fields[i-1], 64); err == nil {
					out = append(out, v)
				}
			}
		}
	}
	return out
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func (s *scenario) limit() float64 { return mean(s.limits) }

func (s *scenario) row(byID map[string]*scenario) string {
	if s.skip != "" {
		return fmt.Sprintf("| %s | skipped: %s | | | | | | | | |\n", s.label, s.skip)
	}
	if s.kind == "startup" {
		om, omax, ohwm := startupStats(s.oursS)
		bm, bmax, bhwm := startupStats(s.baseS)
		return fmt.Sprintf("| %s | — | — | — | — | %s | — | %s / %s ms | %s / %s ms | %s / %s (%s) |\n",
			s.label, ratio(bm, om), num(om), num(omax), num(bm), num(bmax),
			mb(ohwm), mb(bhwm), ratio(float64(ohwm), float64(bhwm)))
	}
	o, bs := s.oursM, s.baseM
	limit, vsLimit := "—", "—"
	switch s.kind {
	case "transform":
		if l := s.sharpLimit(); l > 0 {
			limit, vsLimit = num(l), fmt.Sprintf("**%.2f×**", o.RPS/l)
		}
	case "hit":
		if a := byID["a"]; a != nil && a.oursM.RPS > 0 {
			vsLimit = fmt.Sprintf("%.1f× ours (a)", o.RPS/a.oursM.RPS)
		}
	}
	cpu := num(o.CPUMSPerReq) + " / " + num(bs.CPUMSPerReq)
	if len(s.sharpCPU) > 0 {
		cpu += " / " + num(mean(s.sharpCPU))
	}
	return fmt.Sprintf("| %s | %s%s | %s | %s | %s%s | %s | %s | %s / %s ms | %s / %s ms | %s / %s (%s) |\n",
		s.label, num(o.RPS), faults(o), limit, vsLimit, num(bs.RPS), faults(bs), ratio(o.RPS, bs.RPS), cpu,
		num(o.P50), num(o.P99), num(bs.P50), num(bs.P99),
		mb(s.oursHWM), mb(s.baseHWM), ratio(float64(s.oursHWM), float64(s.baseHWM)))
}

func (s *scenario) sharpLimit() float64 { return mean(s.sharp) }

func butter(q *Quality) string {
	if q.Butteraugli == 0 {
		return "—"
	}
	return fmt.Sprintf("%.3f (%.2f)", q.Butteraugli, q.ButteraugliMax)
}

func startupStats(rs []StartupResult) (med, maxMS float64, hwm int64) {
	if len(rs) == 0 {
		return 0, 0, -1
	}
	ms := make([]float64, len(rs))
	for i, r := range rs {
		ms[i] = r.MS
		hwm = max(hwm, r.HWMKB)
	}
	slices.Sort(ms)
	return median(ms), ms[len(ms)-1], hwm
}

func faults(r RunResult) string {
	if r.Errors == 0 && r.Unexpected == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d errors, %d non-2xx, %d unexpected)", r.Errors, r.Non2xx, r.Unexpected)
}

func num(v float64) string {
	switch {
	case v == 0:
		return "—"
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func ratio(a, b float64) string {
	if a <= 0 || b <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func mb(kb int64) string {
	if kb <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f MB", float64(kb)/1024)
}

func rounds(rs []RunResult) string {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = r.RPS
	}
	return floats(v)
}

func floats(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = num(x)
	}
	return strings.Join(s, ", ")
}

// The quality tolerances (README, Benchmarks): less than what one step of
// the reference's WebP quality (77 → 76) costs in any scenario.
const (
	ssimTolerance        = 0.0005
	butteraugliTolerance = 0.02
)

func passOrMiss(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// targets checks the goals.
func targets(scs []*scenario, byID map[string]*scenario) string {
	var b strings.Builder
	for _, s := range scs {
		if s.skip != "" || len(s.ours) == 0 {
			continue
		}
		o, bs := s.oursM, s.baseM
		switch s.kind {
		case "transform":
			want := 1.10
			if s.id == "c" {
				want = 1.5
			}
			if l := s.sharpLimit(); l > 0 {
				fmt.Fprintf(&b, "- %s %s: req/s %.3f× the baseline's in-process limit (target ≥ %.2f×)\n", passOrMiss(o.RPS >= want*l), s.label, o.RPS/l, want)
			}
			if q, qb := s.qOurs, s.qBase; q != nil {
				r := float64(q.Bytes) / float64(qb.Bytes)
				fmt.Fprintf(&b, "- %s %s: output bytes %.3f× the baseline's (target ≤ 1.05×)\n", passOrMiss(r <= 1.05), s.label, r)
				fmt.Fprintf(&b, "- %s %s: SSIM %.4f vs baseline %.4f (target ≥ baseline − %.4f)\n", passOrMiss(q.SSIM >= qb.SSIM-ssimTolerance), s.label, q.SSIM, qb.SSIM, ssimTolerance)
				if q.Butteraugli > 0 && qb.Butteraugli > 0 {
					fmt.Fprintf(&b, "- %s %s: butteraugli 3-norm %.3f vs baseline %.3f (target ≤ baseline + %.2f)\n",
						passOrMiss(q.Butteraugli <= qb.Butteraugli+butteraugliTolerance), s.label, q.Butteraugli, qb.Butteraugli, butteraugliTolerance)
				}
			}
			if s.oursHWM > 0 && s.baseHWM > 0 {
				r := float64(s.oursHWM) / float64(s.baseHWM)
				fmt.Fprintf(&b, "- %s %s: peak RSS %.3f× baseline (target ≤ 0.5×)\n", passOrMiss(r <= 0.5), s.label, r)
			}
		case "pass":
			if bs.RPS > 0 {
				fmt.Fprintf(&b, "- %s %s: req/s %.3f× baseline (target ≥ 2.0×)\n", passOrMiss(o.RPS >= 2*bs.RPS), s.label, o.RPS/bs.RPS)
			}
			if s.oursHWM > 0 && s.baseHWM > 0 {
				r := float64(s.oursHWM) / float64(s.baseHWM)
				fmt.Fprintf(&b, "- %s %s: peak RSS %.3f× baseline (target ≤ 0.5×)\n", passOrMiss(r <= 0.5), s.label, r)
			}
		case "hit":
			if a := byID["a"]; a != nil && a.oursM.RPS > 0 {
				r := o.RPS / a.oursM.RPS
				fmt.Fprintf(&b, "- %s %s: %.1f× our transform path (a) (target ≥ 20×)\n", passOrMiss(r >= 20), s.label, r)
			}
		}
	}
	for _, s := range scs {
		if s.id == "f" && s.skip == "" && len(s.oursS) > 0 { // the target is for the first answer of any kind
			m, _, _ := startupStats(s.oursS)
			fmt.Fprintf(&b, "- %s %s: ours %.1f ms median (target < 100 ms)\n", passOrMiss(m < 100), s.label, m)
		}
	}
	return b.String()
}

// checkRuns fails when any measured run went wrong.
func checkRuns(scs []*scenario) error {
	var bad []string
	for _, s := range scs {
		if s.skip != "" {
			continue
		}
		all := map[string][]RunResult{"ours": s.ours, "baseline": s.base}
		for name, sd := range s.sides {
			all[sideName[name]] = sd.runs
		}
		for side, rs := range all {
			for i, r := range rs {
				if r.Requests == 0 || r.Errors > 0 || r.Unexpected > 0 {
					bad = append(bad, fmt.Sprintf("%s %s round %d: %d answers, %d errors, %d unexpected statuses",
						s.label, side, i+1, r.Requests, r.Errors, r.Unexpected))
				}
			}
		}
		if s.kind == "transform" && s.qOurs == nil {
			bad = append(bad, s.label+": no quality measurement")
		}
		if s.kind == "startup" && (len(s.oursS) == 0 || len(s.baseS) == 0) {
			bad = append(bad, s.label+": no start-up measurement")
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return fmt.Errorf("runs went wrong:\n  %s", strings.Join(bad, "\n  "))
	}
	return nil
}

// pairedRatios are ours ÷ baseline req/s of each A B round pair, sorted:
// neighbours that load the machine for a while hit both sides of a pair.
func pairedRatios(ours, base []RunResult) []float64 {
	var out []float64
	for i := range min(len(ours), len(base)) {
		if base[i].RPS > 0 {
			out = append(out, ours[i].RPS/base[i].RPS)
		}
	}
	slices.Sort(out)
	return out
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}
