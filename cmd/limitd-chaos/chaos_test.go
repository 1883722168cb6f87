package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestChaosShort runs the short chaos mode against a freshly built binary:
// concurrent clients, capacity changes, deletions and two SIGKILLs, judged
// by the checker. It is what CI runs; it takes about 30 s.
func TestChaosShort(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos run takes about 30 s")
	}
	// Bounded even if the server hangs: every wait in the run is bounded,
	// and this context stops whatever is left.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin, err := buildServer(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	o := shortOptions()
	o.bin = bin
	o.seed = time.Now().UnixNano() % 1_000_000
	var log bytes.Buffer
	began := time.Now()
	rep, err := chaos(ctx, o, &log)
	if err != nil {
		t.Fatalf("chaos run (seed %d) could not be made: %v\n%s", o.seed, err, log.String())
	}
	var out bytes.Buffer
	rep.print(&out)
	t.Log("\n" + out.String())
	if took := time.Since(began); took > 60*time.Second {
		t.Errorf("short mode took %v, want under 60s", took)
	}
	if rep.Verdict != "pass" {
		t.Fatalf("checker found violations (seed %d; kept %s)", o.seed, rep.Dir)
	}
	// A run that exercised nothing proves nothing.
	switch {
	case rep.Crashes != o.kills:
		t.Errorf("crashes = %d, want %d", rep.Crashes, o.kills)
	case rep.Grants < 50:
		t.Errorf("only %d grants", rep.Grants)
	case rep.LeasesAcrossCrash == 0:
		t.Error("no lease was verified across a crash")
	case rep.CapacityChanges == 0 || rep.Deletions == 0:
		t.Errorf("capacity changes %d, deletions %d: want some of each", rep.CapacityChanges, rep.Deletions)
	case rep.QueueSamples == 0:
		t.Error("no queue samples")
	case rep.Operations["renew"] == 0 || rep.Operations["disconnect_mid_wait"] == 0 || rep.AcquireOutcomes["grant_replay"] == 0:
		t.Errorf("operations %v, outcomes %v: want renewals, disconnects and idempotent replays", rep.Operations, rep.AcquireOutcomes)
	}
	checkerBitesOnRealHistory(t, rep.History)
}

// checkerBitesOnRealHistory corrupts the observations of a passing run the
// way a broken server would have made them look, and checks that the
// checker notices: it must not pass merely because the workload is gentle.
func checkerBitesOnRealHistory(t *testing.T, h History) {
	t.Helper()
	cfg := DefaultCheckConfig()

	// Had no release freed its slots, the grants that followed would have
	// over-admitted.
	noRelease := h
	noRelease.Ops = nil
	for _, o := range h.Ops {
		if o.Kind != OpRelease {
			noRelease.Ops = append(noRelease.Ops, o)
		}
	}
	if v := Check(noRelease, cfg); v.Counts[OverAdmission] == 0 {
		t.Error("the run's history without its releases shows no over-admission")
	}

	// Fences handed out in reverse order of the requests.
	reversed := h
	reversed.Grants = append([]Grant(nil), h.Grants...)
	for i := range reversed.Grants {
		reversed.Grants[i].Fence = 1<<40 - reversed.Grants[i].Fence
	}
	if v := Check(reversed, cfg); v.Counts[Fence] == 0 {
		t.Error("the run's history with reversed fences shows no fence violation")
	}

	// Every lease looked up after a restart answered 404 instead.
	lost := h
	lost.Ops = append([]LeaseOp(nil), h.Ops...)
	for i, o := range lost.Ops {
		if o.Kind == OpGet && o.Outcome == OK {
			lost.Ops[i].Outcome = NotFound
		}
	}
	if v := Check(lost, cfg); v.Counts[LostLease] == 0 {
		t.Error("the run's history with its successful lookups turned into 404s shows no lost lease")
	}
}

func TestParseOptions(t *testing.T) {
	t.Run("ShortDefaults", func(t *testing.T) {
		o, err := parseOptions([]string{"--short", "--seed", "7"}, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		want := shortOptions()
		want.seed = 7
		if o != want {
			t.Errorf("got %+v, want %+v", o, want)
		}
	})
	t.Run("FlagsOverrideMode", func(t *testing.T) {
		o, err := parseOptions([]string{"--short", "--clients", "5", "--kills", "0", "--duration", "3s"}, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if o.clients != 5 || o.kills != 0 || o.duration != 3*time.Second || !o.short {
			t.Errorf("got %+v", o)
		}
	})
	t.Run("LongDefaults", func(t *testing.T) {
		o, err := parseOptions(nil, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if o.duration != 5*time.Minute || o.clients < 50 || o.kills < 5 {
			t.Errorf("long mode %+v: want minutes, 50+ clients, 5+ kills", o)
		}
	})
	for _, args := range [][]string{{"--clients", "0"}, {"--duration", "1s"}, {"--kills", "-1"}, {"extra"}} {
		if _, err := parseOptions(args, &bytes.Buffer{}); err == nil {
			t.Errorf("%v: want an error", args)
		}
	}
}

// The JSON line carries the figures RELIABILITY.md records.
func TestReportPrintsSummaryAndJSONLine(t *testing.T) {
	rep := report{Mode: "short", Clients: 3, Operations: map[string]int{"acquire": 2}, GracefulStop: "exit 0",
		Violations: map[Kind]int{OverAdmission: 1}, Examples: map[Kind][]string{OverAdmission: {"L3 over"}}, Verdict: "fail"}
	var out bytes.Buffer
	rep.print(&out)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	last := lines[len(lines)-1]
	for _, want := range []string{`"clients":3`, `"operations":{"acquire":2}`, `"over_admission":1`, `"verdict":"fail"`, `"crashes":0`, `"capacity_changes":0`, `"deletions":0`} {
		if !strings.Contains(last, want) {
			t.Errorf("JSON line %s lacks %s", last, want)
		}
	}
	if !strings.Contains(out.String(), "L3 over") || !strings.Contains(out.String(), "verdict: FAIL") {
		t.Errorf("summary lacks the example or the verdict:\n%s", out.String())
	}
	if rep.violations() != 1 {
		t.Errorf("violations() = %d, want 1", rep.violations())
	}
}

// A server that does not exit 0 on SIGTERM fails the run (guarantee 8),
// however clean the clients' history was.
func TestFailedGracefulStopIsAViolation(t *testing.T) {
	rep := report{Mode: "short", GracefulStop: "exit status 2", Violations: map[Kind]int{}, Verdict: "fail"}
	if rep.violations() != 1 {
		t.Errorf("violations() = %d, want 1", rep.violations())
	}
	var out bytes.Buffer
	rep.print(&out)
	if !strings.Contains(out.String(), "VIOLATION: SIGTERM") {
		t.Errorf("summary does not flag the failed stop:\n%s", out.String())
	}
}

// A kept run's history can be judged again with --check.
func TestRecheckSavedHistory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.json")
	h := History{
		Admin:  []AdminOp{created("a", 1)},
		Grants: []Grant{granted("a", "L1", 1, 10), granted("a", "L2", 2, 20)},
		Finals: drained(9000),
	}
	if err := writeHistory(path, h); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := run(context.Background(), []string{"--check", path}, &out, &out)
	var v violationsError
	if !errors.As(err, &v) || v.n != 1 || !strings.Contains(out.String(), "L2") {
		t.Errorf("run --check: err %v, output:\n%s\nwant one over-admission naming L2", err, out.String())
	}
}
