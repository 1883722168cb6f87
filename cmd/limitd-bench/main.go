// Command limitd-bench drives a limitd over HTTP and measures it: the seed
// scenario that motivated limitd, release→grant hand-off latency, cycle
// throughput, the cost of many waiters, and start-up time with a large
// database.
//
// It starts the server itself (from --bin, or built from this module) on a
// free 127.0.0.1 port with a fresh database, so it can read the server's
// memory and CPU from /proc. Each run prints a readable summary on stderr
// and one JSON line on stdout.
//
//	go run ./cmd/limitd-bench -scenario handoff
//	go run ./cmd/limitd-bench -scenario all -runs 5
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"
)

type options struct {
	bin      string
	scenario string
	runs     int
	duration time.Duration
	sync     string
	hold     time.Duration
	samples  int
	waiters  int
	startupN int
	keepLogs bool
	extra    string
}

// scenario runs once against a fresh server and returns its figures.
type scenario func(ctx context.Context, o options) (map[string]any, error)

func scenarios() map[string]scenario {
	return map[string]scenario{
		"seed":       runSeed,
		"handoff":    runHandoff,
		"throughput": runThroughput,
		"waiters":    runWaiters,
		"startup":    runStartup,
	}
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "", "limitd binary (default: go build ./cmd/limitd into a temp dir)")
	flag.StringVar(&o.scenario, "scenario", "all", "seed, handoff, throughput, waiters, startup, or all")
	flag.IntVar(&o.runs, "runs", 1, "repetitions of each scenario (figures are reported per run; take medians)")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of a throughput run")
	flag.StringVar(&o.sync, "sync", "normal", "the server's --sync (normal or full)")
	flag.DurationVar(&o.hold, "hold", 0, "seed: hold per job (default: runs both 1s and 100ms); handoff: hold before release (default: both 1ms and 150ms)")
	flag.IntVar(&o.samples, "samples", 600, "handoff: samples per run")
	flag.IntVar(&o.waiters, "waiters", 10_000, "waiters: the large queue size")
	flag.IntVar(&o.startupN, "startup-n", 100_000, "startup: limits and leases in the database")
	flag.BoolVar(&o.keepLogs, "server-logs", false, "pass the server's logs through to stderr")
	flag.StringVar(&o.extra, "server-flags", "", "more flags for the server, space-separated (e.g. \"--pprof-addr 127.0.0.1:6060\")")
	baseline := flag.String("baseline-server", "", "internal: serve the in-memory baseline on this address (the tool starts itself so)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *baseline != "" {
		if err := serveBaseline(ctx, *baseline); err != nil {
			fmt.Fprintln(os.Stderr, "limitd-bench -baseline-server:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "limitd-bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	if o.bin == "" {
		bin, cleanup, err := buildServer(ctx)
		if err != nil {
			return err
		}
		defer cleanup()
		o.bin = bin
	}
	raiseFileLimit()
	all := scenarios()
	names := []string{o.scenario}
	if o.scenario == "all" {
		names = []string{"seed", "handoff", "throughput", "waiters", "startup"}
	}
	for _, name := range names {
		sc, ok := all[name]
		if !ok {
			return fmt.Errorf("unknown scenario %q", name)
		}
		var results []map[string]any
		for i := 0; i < o.runs; i++ {
			res, err := sc(ctx, o)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			addRatios(res)
			res["scenario"] = name
			res["run"] = i + 1
			res["sync"] = o.sync
			line, _ := json.Marshal(res)
			fmt.Println(string(line))
			results = append(results, res)
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		if len(results) > 1 {
			med := medians(results)
			med["scenario"] = name
			med["run"] = "median"
			med["runs"] = len(results)
			med["sync"] = o.sync
			line, _ := json.Marshal(med)
			fmt.Println(string(line))
			summary("%s: medians of %d runs:", name, len(results))
			for _, k := range sortedKeys(med) {
				if v, ok := med[k].(float64); ok {
					summary("  %-45s %12.4g", k, v)
				}
			}
		}
	}
	return nil
}

// addRatios adds, for every figure that has a same-run baseline figure
// (key "baseline_<figure>"), the ratio "<figure>_ratio_to_baseline".
func addRatios(res map[string]any) {
	for k, v := range res {
		base, ok := res["baseline_"+k].(float64)
		if f, isNum := v.(float64); isNum && ok && base != 0 && !strings.HasPrefix(k, "baseline_") {
			res[k+"_ratio_to_baseline"] = f / base
		}
	}
}

// medians is, for every numeric figure, its median over the runs (the
// mean of the middle two for an even count).
func medians(runs []map[string]any) map[string]any {
	values := make(map[string][]float64)
	for _, r := range runs {
		for k, v := range r {
			switch n := v.(type) {
			case float64:
				values[k] = append(values[k], n)
			case int:
				values[k] = append(values[k], float64(n))
			case int64:
				values[k] = append(values[k], float64(n))
			}
		}
	}
	out := make(map[string]any, len(values))
	for k, vs := range values {
		if k == "run" {
			continue
		}
		sort.Float64s(vs)
		mid := len(vs) / 2
		if len(vs)%2 == 0 {
			out[k] = (vs[mid-1] + vs[mid]) / 2
		} else {
			out[k] = vs[mid]
		}
	}
	return out
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// summary prints one readable line on stderr.
func summary(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

func holdsOr(o options, defaults ...time.Duration) []time.Duration {
	if o.hold > 0 {
		return []time.Duration{o.hold}
	}
	return defaults
}
