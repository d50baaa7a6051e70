package main

// The imgproxy sides of scripts/bench (issue 24): imgproxy at quality 77
// (imgp), imgproxy at the quality that matches our butteraugli (imgq) and
// our proxy at imgproxy's encoder settings (oursi), with their files in a
// scenario's directory:
//
//	<side>.r<k>.json  "run" results of round k
//	<side>.hwm        peak RSS (imgq shares imgp's process)
//	imgq.q            "matchq" output: the quality imgq ran at
//	imgp.skip         why imgproxy did not run
//	quality.jsonl     one line per side, named by its file (<side>.out)

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// side is one server's (or one setting's) runs in a scenario.
type side struct {
	runs   []RunResult
	merged RunResult
	hwm    int64
	q      *Quality
}

// loadSides reads the imgproxy sides of s, and every side's quality line
// by its file name.
func (s *scenario) loadSides() error {
	s.sides = map[string]*side{}
	for _, name := range []string{"imgp", "imgq", "oursi"} {
		runs, err := readRuns[RunResult](s.dir, name+".r")
		if err != nil {
			return err
		}
		if len(runs) == 0 {
			continue
		}
		s.sides[name] = &side{runs: runs, merged: merge(runs), hwm: readKB(filepath.Join(s.dir, name+".hwm"))}
	}
	if im, ok := s.sides["imgq"]; ok {
		im.hwm = -1 // imgp's process
	}
	if raw, err := os.ReadFile(filepath.Join(s.dir, "imgp.skip")); err == nil {
		s.imgpSkip = strings.TrimSpace(string(raw))
	}
	if raw, err := os.ReadFile(filepath.Join(s.dir, "imgq.q")); err == nil {
		// "100 (q100, ...)": the note without the number.
		_, note, _ := strings.Cut(strings.TrimSpace(string(raw)), " ")
		s.imgqNote = strings.TrimSuffix(strings.TrimPrefix(note, "("), ")")
	}
	qs, err := readQuality(filepath.Join(s.dir, "quality.jsonl"))
	if err != nil {
		return nil
	}
	for i := range qs {
		name := strings.TrimSuffix(filepath.Base(qs[i].File), ".out")
		switch name {
		case "ours":
			s.qOurs = &qs[i]
		case "base":
			s.qBase = &qs[i]
		default:
			if sd, ok := s.sides[name]; ok {
				sd.q = &qs[i]
			}
		}
	}
	return nil
}

// threeWay is the report's comparison with imgproxy: speed and CPU, then
// quality and bytes, then the equal-quality pairs.
func threeWay(scs []*scenario) string {
	var b strings.Builder
	var rows []*scenario
	for _, s := range scs {
		if s.skip == "" && len(s.ours) > 0 && (s.kind == "transform" || s.kind == "pass") {
			rows = append(rows, s)
		}
	}
	if len(rows) == 0 {
		return ""
	}
	b.WriteString("\n## Three-way: ours, the reference (sharp), imgproxy\n\n")
	b.WriteString("imgproxy is built from its source against the same pinned libvips, with the same work: fit into 128 / 320 px high, WebP quality 77, effort 2, every frame; passthrough in its raw mode. " +
		"Rounds take turns (ours, reference, imgproxy, then the equal-quality sides below), one fresh process each per scenario.\n\n")
	b.WriteString("| scenario | ours req/s | reference req/s | imgproxy req/s | ours ÷ reference | ours ÷ imgproxy | CPU ms/req: ours / reference / imgproxy | peak RSS: ours / reference / imgproxy |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, s := range rows {
		ip := s.sides["imgp"]
		if ip == nil {
			why := s.imgpSkip
			if why == "" {
				why = "not run"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | imgproxy: %s | %s | — | %s / %s / — | %s / %s / — |\n", s.label, num(s.oursM.RPS), num(s.baseM.RPS), why,
				ratio(s.oursM.RPS, s.baseM.RPS), num(s.oursM.CPUMSPerReq), num(s.baseM.CPUMSPerReq), mb(s.oursHWM), mb(s.baseHWM))
			continue
		}
		fmt.Fprintf(&b, "| %s | %s%s | %s%s | %s%s | %s | %s | %s / %s / %s | %s / %s / %s |\n", s.label,
			num(s.oursM.RPS), faults(s.oursM), num(s.baseM.RPS), faults(s.baseM), num(ip.merged.RPS), faults(ip.merged),
			ratio(s.oursM.RPS, s.baseM.RPS), ratio(s.oursM.RPS, ip.merged.RPS),
			num(s.oursM.CPUMSPerReq), num(s.baseM.CPUMSPerReq), num(ip.merged.CPUMSPerReq),
			mb(s.oursHWM), mb(s.baseHWM), mb(ip.hwm))
	}

	b.WriteString("\nQuality and bytes of one answer of each (as above: SSIM mean (worst frame), butteraugli 3-norm (largest distance), lower is better):\n\n")
	b.WriteString("| scenario | ours | reference | imgproxy q77 | imgproxy at matched quality | ours at imgproxy's settings |\n")
	b.WriteString("|---|---|---|---|---|---|\n")
	for _, s := range rows {
		if s.kind != "transform" || s.qOurs == nil {
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", s.label, qcell(s.qOurs), qcell(s.qBase),
			qcell(s.sideQ("imgp")), qcellNote(s.sideQ("imgq"), s.imgqNote), qcell(s.sideQ("oursi")))
	}

	b.WriteString("\nSpeed at equal quality: imgproxy at the lowest WebP quality (of 77, 80, 85, 90, 95, 100) whose butteraugli reaches ours, " +
		"and our proxy at imgproxy's encoder settings (`MEDIA_PROXY_WEBP_SMART_SUBSAMPLE=false`: plain RGB to YUV; imgproxy's alpha quality 100 and no mixed mode change neither CPU nor bytes by more than 0.3 % here):\n\n")
	b.WriteString("| scenario | imgproxy matched: quality, req/s, CPU ms/req | ours ÷ imgproxy matched | ours at imgproxy's settings: req/s, CPU ms/req | that ÷ imgproxy q77 |\n")
	b.WriteString("|---|--:|--:|--:|--:|\n")
	for _, s := range rows {
		iq, oi, ip := s.sides["imgq"], s.sides["oursi"], s.sides["imgp"]
		if s.kind != "transform" || iq == nil || oi == nil || ip == nil {
			continue
		}
		fmt.Fprintf(&b, "| %s | %s: %s, %s | %s | %s, %s | %s |\n", s.label, s.imgqNote, num(iq.merged.RPS), num(iq.merged.CPUMSPerReq),
			ratio(s.oursM.RPS, iq.merged.RPS), num(oi.merged.RPS), num(oi.merged.CPUMSPerReq), ratio(oi.merged.RPS, ip.merged.RPS))
	}

	b.WriteString("\nPer round (req/s) and CPU time per request of the imgproxy sides:\n\n")
	for _, s := range rows {
		for _, name := range []string{"imgp", "imgq", "oursi"} {
			sd := s.sides[name]
			if sd == nil {
				continue
			}
			fmt.Fprintf(&b, "- %s, %s: %s; CPU %s ms/req", s.label, sideName[name], rounds(sd.runs), num(sd.merged.CPUMSPerReq))
			if pr := pairedRatios(s.ours, sd.runs); len(pr) > 1 && name != "oursi" {
				fmt.Fprintf(&b, " (ours ÷ it per round: median %.2f×, range %.2f–%.2f×)", median(pr), pr[0], pr[len(pr)-1])
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

var sideName = map[string]string{"imgp": "imgproxy q77", "imgq": "imgproxy matched", "oursi": "ours at imgproxy's settings"}

func (s *scenario) sideQ(name string) *Quality {
	if sd := s.sides[name]; sd != nil {
		return sd.q
	}
	return nil
}

func qcell(q *Quality) string {
	if q == nil {
		return "—"
	}
	return fmt.Sprintf("%d B, %.4f (%.4f), %s", q.Bytes, q.SSIM, q.SSIMMin, butter(q))
}

func qcellNote(q *Quality, note string) string {
	if q == nil {
		return "—"
	}
	return note + ": " + qcell(q)
}

// targets24 checks issue 24's goals: at equal or better butteraugli than
// imgproxy, ours ≥ 1.1× its req/s on (a) and (b), ≥ 1.3× on (c); ≥ 1.2×
// the reference everywhere; bytes ≤ 1.05× the reference's.
func targets24(scs []*scenario) string {
	var b strings.Builder
	for _, s := range scs {
		if s.skip != "" || len(s.ours) == 0 || (s.kind != "transform" && s.kind != "pass") {
			continue
		}
		if s.baseM.RPS > 0 {
			r := s.oursM.RPS / s.baseM.RPS
			fmt.Fprintf(&b, "- %s %s: req/s %.2f× the reference's (target ≥ 1.2×)\n", passOrMiss(r >= 1.2), s.label, r)
		}
		if s.kind != "transform" {
			continue
		}
		want := 1.1
		if s.id == "c" {
			want = 1.3
		}
		// Against imgproxy's own q77 answer (the strict pair while its
		// quality is below ours) and against imgproxy at matched quality
		// (the equal-quality pair).
		for _, name := range []string{"imgp", "imgq"} {
			sd := s.sides[name]
			if sd == nil || sd.q == nil || s.qOurs == nil {
				continue
			}
			atLeast := s.qOurs.Butteraugli <= sd.q.Butteraugli+butteraugliTolerance
			if s.qOurs.Butteraugli == 0 { // no butteraugli_main: SSIM decides
				atLeast = s.qOurs.SSIM >= sd.q.SSIM-ssimTolerance
			}
			r := s.oursM.RPS / sd.merged.RPS
			if !atLeast {
				fmt.Fprintf(&b, "- MISS %s: %s (%s) has better butteraugli than ours (%.3f vs %.3f); req/s %.2f× it\n",
					s.label, sideName[name], s.qNote(name), sd.q.Butteraugli, s.qOurs.Butteraugli, r)
				continue
			}
			fmt.Fprintf(&b, "- %s %s: req/s %.2f× %s (%s; butteraugli ours %.3f, its %.3f; CPU per request its ÷ ours %.2f×) (target ≥ %.1f× req/s)\n",
				passOrMiss(r >= want), s.label, r, sideName[name], s.qNote(name), s.qOurs.Butteraugli, sd.q.Butteraugli,
				sd.merged.CPUMSPerReq/s.oursM.CPUMSPerReq, want)
		}
		if q, qb := s.qOurs, s.qBase; q != nil && qb != nil {
			r := float64(q.Bytes) / float64(qb.Bytes)
			fmt.Fprintf(&b, "- %s %s: bytes %.3f× the reference's (target ≤ 1.05×)\n", passOrMiss(r <= 1.05), s.label, r)
		}
	}
	return b.String()
}

func (s *scenario) qNote(name string) string {
	if name == "imgq" {
		return s.imgqNote
	}
	return "q77"
}

// cmdMatchQ reads quality lines of our answer then imgproxy's at rising
// qualities (files named ...-q<N>.out) and prints matchQuality's choice
// with a note.
func cmdMatchQ(args []string) error {
	fs := flag.NewFlagSet("matchq", flag.ExitOnError)
	in := fs.String("in", "", "quality lines: ours first")
	fs.Parse(args)
	qs, err := readQuality(*in)
	if err != nil {
		return err
	}
	if len(qs) < 2 {
		return fmt.Errorf("%s: want our line and imgproxy's", *in)
	}
	q, reached, err := matchQuality(qs[0], qs[1:])
	if err != nil {
		return err
	}
	if reached {
		fmt.Printf("%d (q%d, the lowest that reaches ours)\n", q, q)
	} else {
		fmt.Printf("%d (q%d, the best tried: none reaches ours)\n", q, q)
	}
	return nil
}

var qualityInName = regexp.MustCompile(`-q(\d+)\.out$`)

// matchQuality picks, of candidates in rising quality, the first whose
// butteraugli is within the tolerance of ours (SSIM when either lacks
// butteraugli); when none is, the one closest to ours.
func matchQuality(ours Quality, cands []Quality) (q int, reached bool, err error) {
	best := -1
	for i, c := range cands {
		m := qualityInName.FindStringSubmatch(c.File)
		if m == nil {
			return 0, false, fmt.Errorf("%s: no quality in the file name", c.File)
		}
		cq, _ := strconv.Atoi(m[1])
		reaches := c.SSIM >= ours.SSIM-ssimTolerance
		better := best < 0 || c.SSIM > cands[best].SSIM
		if ours.Butteraugli > 0 && c.Butteraugli > 0 {
			reaches = c.Butteraugli <= ours.Butteraugli+butteraugliTolerance
			better = best < 0 || c.Butteraugli < cands[best].Butteraugli
		}
		if reaches {
			return cq, true, nil
		}
		if better {
			best, q = i, cq
		}
	}
	return q, false, nil
}
