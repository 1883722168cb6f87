// Command limitd-chaos is a chaos and soak test of the limitd binary. It
// runs the real server on a free loopback port with a temporary database,
// drives many concurrent clients against it (random slots, TTLs and holds,
// renewals, leases left to expire, clients that disconnect while waiting,
// Idempotency-Key retries), changes capacities and deletes and re-creates
// limits, SIGKILLs and restarts the server on the same database, and then
// judges the run with a checker that sees only what the clients observed.
//
// Usage:
//
//	limitd-chaos --short                     # about 30 s, for CI
//	limitd-chaos --duration 5m --clients 60 --kills 6
//
// It prints a readable summary and one JSON line, and exits 1 when the
// checker found a violation, 2 when the run itself could not be made.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	var v violationsError
	switch {
	case err == nil:
	case errors.As(err, &v):
		os.Exit(1)
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "limitd-chaos:", err)
		os.Exit(2)
	}
}

// violationsError is returned when the checker found violations.
type violationsError struct{ n int }

func (e violationsError) Error() string { return fmt.Sprintf("%d violations", e.n) }

type options struct {
	bin         string
	duration    time.Duration
	clients     int
	kills       int
	limits      int
	seed        int64
	short       bool
	keep        bool
	maxTTL      time.Duration
	adminEvery  time.Duration
	sampleEvery time.Duration
	// check is a history.json of an earlier run to judge again, instead
	// of making a run.
	check string
}

// shortOptions and longOptions are the two modes' defaults; flags given on
// the command line override them.
func shortOptions() options {
	return options{duration: 20 * time.Second, clients: 24, kills: 2, limits: 3, short: true,
		maxTTL: 5 * time.Second, adminEvery: time.Second, sampleEvery: 250 * time.Millisecond}
}

func longOptions() options {
	return options{duration: 5 * time.Minute, clients: 60, kills: 6, limits: 8,
		maxTTL: 5 * time.Second, adminEvery: 2 * time.Second, sampleEvery: 250 * time.Millisecond}
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("limitd-chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.bin, "bin", "", "limitd binary to test (default: build it from this module)")
	fs.DurationVar(&o.duration, "duration", 0, "how long clients run (default 20s with --short, else 5m)")
	fs.IntVar(&o.clients, "clients", 0, "concurrent clients (default 24 with --short, else 60)")
	fs.IntVar(&o.kills, "kills", 0, "SIGKILLs and restarts of the server (default 2 with --short, else 6)")
	fs.IntVar(&o.limits, "limits", 0, "limits the clients share (default 3 with --short, else 8)")
	fs.Int64Var(&o.seed, "seed", 0, "random seed (default: from the clock; printed, so a run can be repeated)")
	fs.BoolVar(&o.short, "short", false, "short mode for CI: under 60 s in all")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (database, server log, history) even when the run passes")
	fs.DurationVar(&o.sampleEvery, "sample-every", 0, "interval of the waiter-queue samples (default 250ms)")
	fs.StringVar(&o.check, "check", "", "judge the history.json a kept run saved, instead of making a run")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: limitd-chaos [--short] [flags]\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	d := longOptions()
	if o.short {
		d = shortOptions()
	}
	given := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	d.bin, d.keep, d.seed, d.check = o.bin, o.keep, o.seed, o.check
	if given["duration"] {
		d.duration = o.duration
	}
	if given["clients"] {
		d.clients = o.clients
	}
	if given["kills"] {
		d.kills = o.kills
	}
	if given["limits"] {
		d.limits = o.limits
	}
	if given["sample-every"] {
		d.sampleEvery = o.sampleEvery
	}
	if !given["seed"] {
		d.seed = time.Now().UnixNano() % 1_000_000
	}
	switch {
	case d.duration < 2*time.Second:
		return d, fmt.Errorf("--duration %v must be at least 2s", d.duration)
	case d.clients < 1 || d.clients > 2000:
		return d, fmt.Errorf("--clients %d must be from 1 to 2000", d.clients)
	case d.kills < 0 || d.kills > 1000:
		return d, fmt.Errorf("--kills %d must be from 0 to 1000", d.kills)
	case d.limits < 1 || d.limits > 100:
		return d, fmt.Errorf("--limits %d must be from 1 to 100", d.limits)
	case d.sampleEvery < 10*time.Millisecond:
		return d, fmt.Errorf("--sample-every %v must be at least 10ms", d.sampleEvery)
	}
	return d, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	if o.check != "" {
		return recheck(o.check, stdout)
	}
	rep, err := chaos(ctx, o, stderr)
	if err != nil {
		return err
	}
	rep.print(stdout)
	if n := rep.violations(); n > 0 {
		return violationsError{n}
	}
	return nil
}

// report is a run's figures and the checker's verdict.
type report struct {
	Mode              string            `json:"mode"`
	Seed              int64             `json:"seed"`
	DurationSeconds   float64           `json:"duration_s"`
	WallSeconds       float64           `json:"wall_s"`
	CPUs              int               `json:"cpus"`
	Clients           int               `json:"clients"`
	Limits            int               `json:"limits"`
	Requests          int               `json:"requests"`
	Operations        map[string]int    `json:"operations"`
	AcquireOutcomes   map[string]int    `json:"acquire_outcomes"`
	Grants            int               `json:"grants"`
	Leases            int               `json:"leases"`
	Crashes           int               `json:"crashes"`
	CapacityChanges   int               `json:"capacity_changes"`
	Deletions         int               `json:"deletions"`
	LeasesAcrossCrash int               `json:"leases_verified_across_crash"`
	AnswersChecked    int               `json:"lease_answers_checked"`
	QueueSamples      int               `json:"queue_samples"`
	WaiterTransients  int               `json:"queue_samples_with_room_transient"`
	FullAtGrant       int               `json:"grants_at_exact_capacity"`
	UnexpectedExits   int               `json:"server_unexpected_exits"`
	GracefulStop      string            `json:"graceful_stop"`
	Violations        map[Kind]int      `json:"violations"`
	Verdict           string            `json:"verdict"`
	Examples          map[Kind][]string `json:"-"`
	Dir               string            `json:"-"`
	History           History           `json:"-"`
	ServerExit        string            `json:"-"`
}

func (r report) violations() int {
	n := r.UnexpectedExits
	// Guarantee 8: SIGTERM ends the server with status 0. Anything else
	// (a panic on the way out, a hang past the grace) fails the run.
	if r.GracefulStop != "exit 0" {
		n++
	}
	for _, c := range r.Violations {
		n += c
	}
	return n
}

func (r report) print(w io.Writer) {
	fmt.Fprintf(w, "limitd-chaos %s run, seed %d: %d clients on %d limits for %.0fs (%.0fs in all, %d CPUs)\n",
		r.Mode, r.Seed, r.Clients, r.Limits, r.DurationSeconds, r.WallSeconds, r.CPUs)
	fmt.Fprintf(w, "  requests %d; grants %d (%d distinct leases); crashes %d; capacity changes %d; deletions %d\n",
		r.Requests, r.Grants, r.Leases, r.Crashes, r.CapacityChanges, r.Deletions)
	fmt.Fprintf(w, "  leases acknowledged before a crash and verified after it: %d; lease answers checked: %d\n",
		r.LeasesAcrossCrash, r.AnswersChecked)
	fmt.Fprintf(w, "  grants after which exactly the capacity was held: %d; queue samples: %d (%d showed room for the head waiter in one sample only)\n",
		r.FullAtGrant, r.QueueSamples, r.WaiterTransients)
	fmt.Fprintf(w, "  operations:")
	for _, k := range sortedKeys(r.Operations) {
		fmt.Fprintf(w, " %s=%d", k, r.Operations[k])
	}
	fmt.Fprintf(w, "\n  acquire outcomes:")
	for _, k := range sortedKeys(r.AcquireOutcomes) {
		fmt.Fprintf(w, " %s=%d", k, r.AcquireOutcomes[k])
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  graceful stop at the end: %s\n", r.GracefulStop)
	if r.GracefulStop != "exit 0" {
		fmt.Fprintln(w, "  VIOLATION: SIGTERM did not end the server with status 0")
	}
	if r.UnexpectedExits > 0 {
		fmt.Fprintf(w, "  VIOLATION: the server exited %d times without being killed (last: %s)\n", r.UnexpectedExits, r.ServerExit)
	}
	for _, k := range Kinds() {
		fmt.Fprintf(w, "  %-15s %d\n", k, r.Violations[k])
		for _, e := range r.Examples[k] {
			fmt.Fprintf(w, "      %s\n", e)
		}
	}
	fmt.Fprintf(w, "verdict: %s", strings.ToUpper(r.Verdict))
	if r.Dir != "" {
		fmt.Fprintf(w, " (database, server log and history kept in %s)", r.Dir)
	}
	fmt.Fprintln(w)
	line, _ := json.Marshal(r)
	fmt.Fprintln(w, string(line))
}

// chaos makes one run and judges it. Its error is for a run that could not
// be made (build, start or restart failed); violations are in the report.
func chaos(ctx context.Context, o options, logw io.Writer) (rep report, err error) {
	began := time.Now()
	dir, err := os.MkdirTemp("", "limitd-chaos-")
	if err != nil {
		return rep, err
	}
	keep := o.keep
	defer func() {
		if keep {
			rep.Dir = dir
		} else {
			os.RemoveAll(dir)
		}
	}()
	if o.bin == "" {
		fmt.Fprintln(logw, "limitd-chaos: building limitd")
		if o.bin, err = buildServer(ctx, dir); err != nil {
			return rep, err
		}
	}
	addr, err := freeAddr()
	if err != nil {
		return rep, err
	}
	srv := &server{bin: o.bin, addr: addr, db: filepath.Join(dir, "limitd.db"),
		logPath: filepath.Join(dir, "limitd.log"), maxTTL: o.maxTTL}
	if err := srv.start(ctx); err != nil {
		return rep, err
	}
	defer srv.kill()

	rec := newRecorder()
	w := &workload{o: o, rec: rec, srv: srv, reg: &registry{leases: make(map[string]regEntry)}, stop: make(chan struct{})}
	setup := newHTTPClient(srv.url())
	defer setup.close()
	rng := rand.New(rand.NewPCG(uint64(o.seed), 2<<32))
	for i := range o.limits {
		name := fmt.Sprintf("chaos-%d", i)
		w.limits = append(w.limits, name)
		w.putOrDelete(ctx, setup, name, false, 1+rng.IntN(8))
	}
	fmt.Fprintf(logw, "limitd-chaos: %d clients, %d limits, %d kills, %v, seed %d, server %s (log %s)\n",
		o.clients, o.limits, o.kills, o.duration, o.seed, srv.url(), srv.logPath)

	var stopOnce sync.Once
	stopAll := func() { stopOnce.Do(func() { close(w.stop) }) }
	var wg sync.WaitGroup
	for n := range o.clients {
		wg.Add(1)
		go func() { defer wg.Done(); w.client(ctx, n) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); w.admin(ctx) }()
	samplerDone := make(chan struct{})
	samplerExited := make(chan struct{})
	go func() { defer close(samplerExited); w.sampler(ctx, samplerDone) }()
	crashErr := make(chan error, 1)
	go func() {
		err := w.crasher(ctx)
		if err != nil {
			stopAll()
		}
		crashErr <- err
	}()
	select {
	case <-time.After(o.duration):
	case <-ctx.Done():
	case <-w.stop:
	}
	stopAll()
	wg.Wait()
	close(samplerDone)
	<-samplerExited
	if err := <-crashErr; err != nil {
		keep = true
		return rep, err
	}
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}

	// Every lease was granted or renewed by a request sent before now with
	// a TTL of at most maxTTL; give the server its 100 ms expiry lag and a
	// second for requests that clients gave up on but the server still
	// handled.
	quiesceBy := rec.now() + o.maxTTL + 100*time.Millisecond + time.Second
	rec.mu.Lock()
	rec.h.QuiesceBy = quiesceBy
	rec.mu.Unlock()
	drain(ctx, setup, rec, quiesceBy)
	stopErr := srv.stop(10 * time.Second)

	h, ops := rec.history()
	v := Check(h, DefaultCheckConfig())
	rep = report{
		Mode: "long", Seed: o.seed, DurationSeconds: o.duration.Seconds(), CPUs: runtime.NumCPU(),
		Clients: o.clients, Limits: o.limits, Operations: make(map[string]int), AcquireOutcomes: make(map[string]int),
		Grants: ops["grant"] + ops["grant_replay"],
		Leases: v.Leases, Crashes: len(h.Crashes), CapacityChanges: ops["put_limit"], Deletions: ops["delete_limit"],
		LeasesAcrossCrash: v.AcrossCrash, AnswersChecked: v.Checked, QueueSamples: v.Samples,
		WaiterTransients: v.Transients, FullAtGrant: v.FullAtGrant,
		UnexpectedExits: int(srv.unexpected.Load()), GracefulStop: "exit 0",
		Violations: v.Counts, Examples: v.Examples, Verdict: "pass", History: h,
	}
	if o.short {
		rep.Mode = "short"
	}
	// Counts named acquire_<code> (or grant) are how acquires ended; the
	// others are things clients did.
	for k, n := range ops {
		switch {
		case k == "grant" || k == "grant_replay" || strings.HasPrefix(k, "acquire_") && k != "acquire_retry":
			rep.AcquireOutcomes[k] = n
		default:
			rep.Operations[k] = n
		}
	}
	for _, k := range []string{"acquire", "renew", "get", "release", "put_limit", "create_limit", "delete_limit"} {
		rep.Requests += ops[k]
	}
	if stopErr != nil {
		rep.GracefulStop = stopErr.Error()
	}
	if s, ok := srv.lastExit.Load().(string); ok {
		rep.ServerExit = s
	}
	rep.WallSeconds = time.Since(began).Seconds()
	if rep.violations() > 0 {
		rep.Verdict = "fail"
		keep = true
	}
	if keep {
		if err := writeHistory(filepath.Join(dir, "history.json"), h); err != nil {
			fmt.Fprintln(logw, "limitd-chaos: writing history:", err)
		}
	}
	return rep, nil
}

// drain waits until no limit has slots in use or waiters, or until
// quiesceBy has passed, recording each reading for the checker. At the
// deadline it also lists the leases still held, for the report.
func drain(ctx context.Context, c *httpClient, rec *recorder, quiesceBy time.Duration) {
	for ctx.Err() == nil {
		at := rec.now()
		var ls wireLimits
		a := c.do(ctx, "GET", "/v1/limits", nil, "", 2*time.Second)
		if a.status == 200 && a.decode(&ls) {
			f := Final{At: at, InUse: make(map[string]int), Waits: make(map[string]int), Leases: make(map[string][]string)}
			busy := false
			for _, l := range ls.Limits {
				f.InUse[l.Name], f.Waits[l.Name] = l.InUse, l.Waiting
				busy = busy || l.InUse > 0 || l.Waiting > 0
			}
			if !busy {
				rec.final(f)
				return
			}
			if at >= quiesceBy {
				for _, l := range ls.Limits {
					var leases wireLeases
					la := c.do(ctx, "GET", "/v1/limits/"+l.Name+"/leases", nil, "", 2*time.Second)
					if l.InUse > 0 && la.status == 200 && la.decode(&leases) {
						for _, x := range leases.Leases {
							f.Leases[l.Name] = append(f.Leases[l.Name], fmt.Sprintf("%s(fence %d, holder %s, expires %s)",
								x.ID, x.Fence, x.Holder, x.ExpiresAt.Format(time.RFC3339Nano)))
						}
					}
				}
				rec.final(f)
				return
			}
		} else if at >= quiesceBy {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// recheck judges a saved history again and prints the verdict.
func recheck(path string, w io.Writer) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var h History
	if err := json.Unmarshal(data, &h); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	v := Check(h, DefaultCheckConfig())
	fmt.Fprintf(w, "%s: %d leases, %d lease answers checked, %d crashes\n", path, v.Leases, v.Checked, len(h.Crashes))
	n := 0
	for _, k := range Kinds() {
		n += v.Counts[k]
		fmt.Fprintf(w, "  %-15s %d\n", k, v.Counts[k])
		for _, e := range v.Examples[k] {
			fmt.Fprintf(w, "      %s\n", e)
		}
	}
	if n > 0 {
		return violationsError{n}
	}
	return nil
}

// writeHistory saves what the clients observed, so that a failed run can
// be examined (and the checker re-run on it) afterwards.
func writeHistory(path string, h History) error {
	sort.SliceStable(h.Grants, func(i, j int) bool { return h.Grants[i].Received < h.Grants[j].Received })
	data, err := json.MarshalIndent(h, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
