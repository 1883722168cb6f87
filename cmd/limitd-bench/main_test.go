package main

import (
	"math"
	"testing"
)

// BENCHMARKS.md quotes these figures, so they must be the medians and
// ratios they claim to be.
func TestMediansAndRatios(t *testing.T) {
	runs := []map[string]any{
		{"p50_us": 300.0, "baseline_p50_us": 100.0, "samples": 500, "run": 1, "scenario": "handoff"},
		{"p50_us": 200.0, "baseline_p50_us": 100.0, "samples": 600, "run": 2, "scenario": "handoff"},
		{"p50_us": 900.0, "baseline_p50_us": 300.0, "samples": 700, "run": 3, "scenario": "handoff"},
	}
	for _, r := range runs {
		addRatios(r)
	}
	if got := runs[0]["p50_us_ratio_to_baseline"]; got != 3.0 {
		t.Errorf("ratio of run 1 = %v, want 3", got)
	}
	if _, ok := runs[0]["baseline_p50_us_ratio_to_baseline"]; ok {
		t.Error("a baseline figure got a ratio to itself")
	}
	med := medians(runs)
	for k, want := range map[string]float64{"p50_us": 300, "baseline_p50_us": 100, "samples": 600, "p50_us_ratio_to_baseline": 3} {
		if got, _ := med[k].(float64); math.Abs(got-want) > 1e-9 {
			t.Errorf("median %s = %v, want %v", k, med[k], want)
		}
	}
	if _, ok := med["run"]; ok {
		t.Error("the run number has a median")
	}
	if _, ok := med["scenario"]; ok {
		t.Error("a string figure has a median")
	}
	even := medians([]map[string]any{{"x": 1.0}, {"x": 4.0}})
	if even["x"] != 2.5 {
		t.Errorf("median of an even count = %v, want the mean of the middle two (2.5)", even["x"])
	}
}
