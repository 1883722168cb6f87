package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/limitd/limitd/internal/slots"
	"github.com/limitd/limitd/internal/store"
)

// runSeed is the problem limitd exists for: 30 jobs that each hold a slot
// for H, on a limit of 3, from 30 workers. Ideal is 30/3 × H.
func runSeed(ctx context.Context, o options) (map[string]any, error) {
	res := map[string]any{}
	for _, hold := range holdsOr(o, time.Second, 100*time.Millisecond) {
		srv, err := startServer(ctx, o, "")
		if err != nil {
			return nil, err
		}
		admin := newWorker(srv.url)
		if err := admin.putLimit(ctx, "seed", 3); err != nil {
			srv.stop()
			return nil, err
		}
		const jobs, capacity = 30, 3
		var wg sync.WaitGroup
		errs := make(chan error, jobs)
		start := time.Now()
		for range jobs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w := newWorker(srv.url)
				defer w.close()
				l, err := w.acquire(ctx, "seed", 60)
				if err != nil {
					errs <- err
					return
				}
				time.Sleep(hold) // the job's "API call"
				errs <- w.release(ctx, l.ID)
			}()
		}
		wg.Wait()
		total := time.Since(start)
		srv.stop()
		close(errs)
		for err := range errs {
			if err != nil {
				return nil, err
			}
		}
		ideal := time.Duration(jobs/capacity) * hold
		key := fmt.Sprintf("hold_%v", hold)
		res[key+"_total_s"] = total.Seconds()
		res[key+"_ratio_to_ideal"] = total.Seconds() / ideal.Seconds()
		summary("seed  hold %-6v  30 jobs, limit 3: %.3f s (ideal %.1f s, ratio %.4f)", hold, total.Seconds(), ideal.Seconds(), total.Seconds()/ideal.Seconds())
	}
	return res, nil
}

// runHandoff measures the time from a release request being sent to the
// waiting worker receiving its grant, on a limit of 1 with two workers that
// take turns: each holds for H, releases, and asks again at once.
func runHandoff(ctx context.Context, o options) (map[string]any, error) {
	res := map[string]any{}
	for _, hold := range holdsOr(o, time.Millisecond, 150*time.Millisecond) {
		for _, tg := range targets() {
			srv, err := tg.start(ctx, o)
			if err != nil {
				return nil, err
			}
			admin := newWorker(srv.url)
			if err := admin.putLimit(ctx, "handoff", 1); err != nil {
				srv.stop()
				return nil, err
			}
			epoch := time.Now()
			var lastRelease atomic.Int64 // monotonic ns since epoch when the last release was sent
			var mu sync.Mutex
			var samples []time.Duration
			runCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			var wg sync.WaitGroup
			var firstErr error
			for range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					w := newWorker(srv.url)
					defer w.close()
					for runCtx.Err() == nil {
						sent := time.Since(epoch)
						l, err := w.acquire(runCtx, "handoff", 60)
						got := time.Since(epoch)
						if err != nil {
							if runCtx.Err() == nil {
								mu.Lock()
								firstErr = err
								mu.Unlock()
								cancel()
							}
							return
						}
						if rel := time.Duration(lastRelease.Load()); rel > sent {
							// This acquire was queued when the release went out.
							mu.Lock()
							samples = append(samples, got-rel)
							if len(samples) >= o.samples {
								cancel()
							}
							mu.Unlock()
						}
						time.Sleep(hold)
						lastRelease.Store(int64(time.Since(epoch)))
						if err := w.release(context.Background(), l.ID); err != nil {
							return
						}
					}
				}()
			}
			wg.Wait()
			cancel()
			srv.stop()
			if firstErr != nil {
				return nil, firstErr
			}
			ps := percentiles(samples, 50, 90, 99)
			key := fmt.Sprintf("%shold_%v_", tg.prefix, hold)
			for k, v := range ps {
				res[key+k] = v
			}
			res[key+"samples"] = len(samples)
			summary("handoff %-9s hold %-6v  %d samples: p50 %.0f µs  p90 %.0f µs  p99 %.0f µs", tg.name, hold, len(samples), ps["p50_us"], ps["p90_us"], ps["p99_us"])
		}
	}
	return res, nil
}

// runThroughput has 64 workers loop acquire→release, on one limit of 16
// and then spread over 1,000 limits of 16.
func runThroughput(ctx context.Context, o options) (map[string]any, error) {
	res := map[string]any{}
	for _, limits := range []int{1, 1000} {
		for _, tg := range targets() {
			srv, err := tg.start(ctx, o)
			if err != nil {
				return nil, err
			}
			admin := newWorker(srv.url)
			for i := range limits {
				if err := admin.putLimit(ctx, fmt.Sprintf("t%d", i), 16); err != nil {
					srv.stop()
					return nil, err
				}
			}
			const workers = 64
			var cycles atomic.Int64
			var mu sync.Mutex
			var lat []time.Duration
			var firstErr error
			runCtx, cancel := context.WithTimeout(ctx, o.duration)
			var wg sync.WaitGroup
			cpu0, _ := srv.cpu()
			start := time.Now()
			for i := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					w := newWorker(srv.url)
					defer w.close()
					rng := rand.New(rand.NewPCG(uint64(i), 7))
					var mine []time.Duration
					defer func() {
						mu.Lock()
						lat = append(lat, mine...)
						mu.Unlock()
					}()
					for runCtx.Err() == nil {
						name := fmt.Sprintf("t%d", rng.IntN(limits))
						t0 := time.Now()
						l, err := w.acquire(runCtx, name, 60)
						if err != nil {
							if runCtx.Err() == nil {
								mu.Lock()
								firstErr = err
								mu.Unlock()
							}
							return
						}
						mine = append(mine, time.Since(t0))
						if err := w.release(context.Background(), l.ID); err != nil {
							mu.Lock()
							firstErr = err
							mu.Unlock()
							return
						}
						cycles.Add(1)
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			cpu1, _ := srv.cpu()
			cpuPerCycle := float64((cpu1 - cpu0).Microseconds()) / float64(max(1, cycles.Load()))
			cancel()
			srv.stop()
			if firstErr != nil {
				return nil, firstErr
			}
			rate := float64(cycles.Load()) / elapsed.Seconds()
			ps := percentiles(lat, 50, 99)
			key := fmt.Sprintf("%slimits_%d_", tg.prefix, limits)
			res[key+"cycles_per_s"] = rate
			res[key+"acquire_p50_us"] = ps["p50_us"]
			res[key+"acquire_p99_us"] = ps["p99_us"]
			res[key+"server_cpu_per_cycle_us"] = cpuPerCycle
			summary("throughput %-9s %4d limit(s) of 16, 64 workers: %.0f cycles/s, acquire p50 %.0f µs p99 %.0f µs, server CPU %.1f µs/cycle",
				tg.name, limits, rate, ps["p50_us"], ps["p99_us"], cpuPerCycle)
		}
	}
	return res, nil
}

// target is what an HTTP scenario runs against: limitd, or the in-memory
// baseline measured in the same run.
type target struct {
	name, prefix string
	start        func(ctx context.Context, o options) (stopper, error)
}

// stopper is a running target.
type stopper struct {
	url  string
	stop func()
	// cpu is the server process's CPU time so far.
	cpu func() (time.Duration, error)
}

func targets() []target {
	return []target{
		{"limitd", "", func(ctx context.Context, o options) (stopper, error) {
			srv, err := startServer(ctx, o, "")
			if err != nil {
				return stopper{}, err
			}
			return stopper{url: srv.url, stop: srv.stop, cpu: srv.cpu}, nil
		}},
		{"baseline", "baseline_", func(ctx context.Context, o options) (stopper, error) {
			srv, err := startBaseline(ctx, o)
			if err != nil {
				return stopper{}, err
			}
			return stopper{url: srv.url, stop: srv.stop, cpu: srv.cpu}, nil
		}},
	}
}

// runWaiters queues n long-poll waiters on one limit and measures the
// server's memory per waiting connection, and its CPU per release→grant
// hand-off with 10 and with n waiters queued.
func runWaiters(ctx context.Context, o options) (map[string]any, error) {
	res := map[string]any{}
	for _, n := range []int{10, o.waiters} {
		srv, err := startServer(ctx, o, "")
		if err != nil {
			return nil, err
		}
		r, err := waitersRun(ctx, srv, n)
		srv.stop()
		if err != nil {
			return nil, err
		}
		for k, v := range r {
			res[fmt.Sprintf("waiters_%d_%s", n, k)] = v
		}
	}
	// The target: a release costs about the same with many waiters queued
	// as with few, since only the head is woken.
	small, large := res["waiters_10_cpu_per_release_us"].(float64), res[fmt.Sprintf("waiters_%d_cpu_per_release_us", o.waiters)].(float64)
	if small > 0 {
		res["cpu_per_release_ratio_large_to_small"] = large / small
	}
	return res, nil
}

func waitersRun(ctx context.Context, srv *server, n int) (map[string]any, error) {
	admin := newWorker(srv.url)
	if err := admin.putLimit(ctx, "w", 1); err != nil {
		return nil, err
	}
	held, err := admin.acquire(ctx, "w", 600)
	if err != nil {
		return nil, err
	}
	time.Sleep(200 * time.Millisecond) // let the idle server settle before the baseline
	base, err := srv.rss()
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var released atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := newWorker(srv.url)
			defer w.close()
			for runCtx.Err() == nil {
				l, err := w.acquire(runCtx, "w", 600)
				if err != nil {
					return
				}
				// Granted: give it straight back and queue again at the tail.
				if w.release(context.Background(), l.ID) == nil {
					released.Add(1)
				}
			}
		}()
	}
	var lim struct {
		Waiting int `json:"waiting"`
	}
	deadline := time.Now().Add(2 * time.Minute)
	for lim.Waiting < n {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("only %d of %d waiters queued", lim.Waiting, n)
		}
		time.Sleep(50 * time.Millisecond)
		if _, err := admin.do(ctx, "GET", "/v1/limits/w", nil, &lim); err != nil {
			return nil, err
		}
	}
	time.Sleep(200 * time.Millisecond)
	queued, err := srv.rss()
	if err != nil {
		return nil, err
	}
	perWaiter := float64(queued-base) / float64(n)

	// Start the chain of hand-offs, let it run, and count the server's CPU
	// over a window of releases.
	if err := admin.release(ctx, held.ID); err != nil {
		return nil, err
	}
	const window = 2000
	for released.Load() < 200 { // warm up
		time.Sleep(time.Millisecond)
	}
	c0, _ := srv.cpu()
	r0 := released.Load()
	t0 := time.Now()
	for released.Load() < r0+window {
		time.Sleep(time.Millisecond)
		if time.Since(t0) > 2*time.Minute {
			return nil, fmt.Errorf("hand-off chain stalled at %d releases", released.Load()-r0)
		}
	}
	c1, _ := srv.cpu()
	r1 := released.Load()
	elapsed := time.Since(t0)
	cancel()
	wg.Wait()
	cpuPer := float64((c1 - c0).Microseconds()) / float64(r1-r0)
	summary("waiters %5d: RSS %.1f MiB idle → %.1f MiB queued: %.1f KiB per waiter; server CPU %.1f µs per release (%d releases in %v)",
		n, float64(base)/(1<<20), float64(queued)/(1<<20), perWaiter/1024, cpuPer, r1-r0, elapsed.Round(time.Millisecond))
	return map[string]any{
		"rss_idle_bytes":          base,
		"rss_queued_bytes":        queued,
		"rss_per_waiter_bytes":    perWaiter,
		"cpu_per_release_us":      cpuPer,
		"releases_measured":       r1 - r0,
		"releases_per_s_measured": float64(r1-r0) / elapsed.Seconds(),
	}, nil
}

// runStartup writes a database with N limits and N live leases, then times
// a server from exec to /readyz answering 200.
func runStartup(ctx context.Context, o options) (map[string]any, error) {
	dir, err := os.MkdirTemp("", "limitd-bench-startup")
	if err != nil {
		return nil, err
	}
	n := o.startupN
	if err := writeBigDatabase(ctx, filepath.Join(dir, "limitd.db"), n); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	srv, err := startServer(ctx, o, dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	startup := srv.startup
	rss, _ := srv.rss()
	srv.stop()
	summary("startup %d limits + %d leases: ready in %v (RSS %.0f MiB)", n, n, startup.Round(time.Millisecond), float64(rss)/(1<<20))
	return map[string]any{"limits": n, "leases": n, "ready_s": startup.Seconds(), "rss_bytes": rss}, nil
}

// writeBigDatabase fills a database through the store itself, so its rows
// are exactly what a server would have written.
func writeBigDatabase(ctx context.Context, path string, n int) error {
	st, err := store.Open(ctx, path, store.Options{})
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	var last *slots.Commit
	for i := range n {
		name := fmt.Sprintf("limit-%06d", i)
		st.Write(slots.Change{Kind: slots.ChangePutLimit, Limit: slots.LimitRecord{Name: name, Capacity: 2, CreatedAt: now, UpdatedAt: now}})
		fence := uint64(i + 1)
		last = st.Write(slots.Change{Kind: slots.ChangeGrant, Fence: fence, Lease: slots.LeaseRecord{
			ID: fmt.Sprintf("01JC%022d", i), Limit: name, Slots: 1, Holder: "bench", Fence: fence,
			AcquiredAt: now, ExpiresAt: now.Add(time.Hour), TTL: time.Hour,
		}})
	}
	if err := last.Wait(ctx); err != nil {
		st.Close()
		return err
	}
	return st.Close()
}
