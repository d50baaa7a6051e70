package main

import "testing"

func TestMatchQuality(t *testing.T) {
	ours := Quality{SSIM: 0.968, Butteraugli: 1.616}
	sweep := []Quality{
		{File: "a/match-q77.out", SSIM: 0.972, Butteraugli: 1.923},
		{File: "a/match-q90.out", SSIM: 0.980, Butteraugli: 1.687},
		{File: "a/match-q95.out", SSIM: 0.983, Butteraugli: 1.630},
		{File: "a/match-q100.out", SSIM: 0.984, Butteraugli: 1.600},
	}
	for _, c := range []struct {
		name        string
		cands       []Quality
		want        int
		wantReached bool
	}{
		// 1.630 is within 0.02 of 1.616: the lowest quality that reaches ours.
		{"reached", sweep, 95, true},
		// None within the tolerance: the closest, not the last.
		{"none reaches", []Quality{sweep[0], sweep[1], {File: "x-q100.out", SSIM: 0.99, Butteraugli: 1.7}}, 90, false},
	} {
		q, reached, err := matchQuality(ours, c.cands)
		if err != nil || q != c.want || reached != c.wantReached {
			t.Errorf("%s: got q%d reached %v (%v), want q%d reached %v", c.name, q, reached, err, c.want, c.wantReached)
		}
	}
	// Without butteraugli, SSIM decides.
	noBA := []Quality{{File: "q77-q77.out", SSIM: 0.960}, {File: "y-q85.out", SSIM: 0.9678}}
	if q, reached, _ := matchQuality(Quality{SSIM: 0.968}, noBA); q != 85 || !reached {
		t.Errorf("SSIM only: got q%d reached %v, want q85 reached", q, reached)
	}
	if _, _, err := matchQuality(ours, []Quality{{File: "nameless.out"}}); err == nil {
		t.Error("a file name without its quality was accepted")
	}
}
