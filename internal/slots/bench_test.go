package slots_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/limitd/limitd/internal/slots"
	"golang.org/x/sync/semaphore"
)

// Each benchmark runs beside golang.org/x/sync/semaphore doing the same
// work, as the baseline measured in the same run (BENCHMARKS.md gives the
// ratios). The manager does more — leases, ids, fences, expiry, a journal —
// so the question is what that costs, not whether it is free.

// nopJournal makes every change "durable" at once and keeps nothing, so the
// benchmarks measure the manager alone (the store has its own).
type nopJournal struct{}

func (nopJournal) Append(entries []slots.Entry) {
	for _, e := range entries {
		e.Commit.Resolve(nil)
	}
}

func benchManager(b *testing.B, capacity int) *slots.Manager {
	b.Helper()
	m := slots.New(slots.Config{Journal: nopJournal{}, MaxWaiters: 100_000})
	b.Cleanup(func() { m.Drain(); m.Close() })
	if _, _, err := m.PutLimit(context.Background(), "bench", slots.LimitSpec{Capacity: capacity}); err != nil {
		b.Fatal(err)
	}
	return m
}

// BenchmarkAcquireRelease is one uncontended acquire and release.
func BenchmarkAcquireRelease(b *testing.B) {
	b.Run("manager", func(b *testing.B) {
		m := benchManager(b, 1)
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			l, _, err := m.Acquire(ctx, "bench", slots.AcquireParams{Slots: 1, TTL: time.Minute})
			if err != nil {
				b.Fatal(err)
			}
			if err := m.Release(ctx, l.ID); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("x-sync-semaphore", func(b *testing.B) {
		s := semaphore.NewWeighted(1)
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if err := s.Acquire(ctx, 1); err != nil {
				b.Fatal(err)
			}
			s.Release(1)
		}
	})
}

// BenchmarkContended has 64 goroutines loop acquire→release on a limit of 16.
func BenchmarkContended(b *testing.B) {
	const workers, capacity = 64, 16
	b.Run("manager", func(b *testing.B) {
		m := benchManager(b, capacity)
		ctx := context.Background()
		b.ReportAllocs()
		b.SetParallelism(workers / max(1, runtimeProcs()))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				l, _, err := m.Acquire(ctx, "bench", slots.AcquireParams{Slots: 1, TTL: time.Minute, Wait: time.Minute})
				if err != nil {
					b.Error(err)
					return
				}
				m.Release(ctx, l.ID)
			}
		})
	})
	b.Run("x-sync-semaphore", func(b *testing.B) {
		s := semaphore.NewWeighted(capacity)
		ctx := context.Background()
		b.ReportAllocs()
		b.SetParallelism(workers / max(1, runtimeProcs()))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := s.Acquire(ctx, 1); err != nil {
					b.Error(err)
					return
				}
				s.Release(1)
			}
		})
	})
}

// BenchmarkReleaseWithWaiters measures one release→grant hand-off while n
// waiters are queued: its cost must not grow with n, since only the head is
// woken.
func BenchmarkReleaseWithWaiters(b *testing.B) {
	for _, n := range []int{10, 10_000} {
		b.Run(fmt.Sprintf("manager/waiters=%d", n), func(b *testing.B) {
			m := benchManager(b, 1)
			ctx, cancel := context.WithCancel(context.Background())
			held, _, _ := m.Acquire(ctx, "bench", slots.AcquireParams{Slots: 1, TTL: time.Hour})
			// n parked waiters that each, once granted, hand their lease
			// back through the channel and queue again.
			leases := make(chan string, 1)
			var wg sync.WaitGroup
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						l, _, err := m.Acquire(ctx, "bench", slots.AcquireParams{Slots: 1, TTL: time.Hour, Wait: time.Hour})
						if err != nil {
							return
						}
						select {
						case leases <- l.ID:
						case <-ctx.Done():
							m.Release(context.Background(), l.ID)
							return
						}
					}
				}()
			}
			waitQueued(b, m, n)
			id := held.ID
			b.ResetTimer()
			for b.Loop() {
				m.Release(ctx, id)
				id = <-leases
			}
			b.StopTimer()
			cancel()
			m.Drain()
			wg.Wait()
		})
		b.Run(fmt.Sprintf("x-sync-semaphore/waiters=%d", n), func(b *testing.B) {
			s := semaphore.NewWeighted(1)
			ctx, cancel := context.WithCancel(context.Background())
			s.Acquire(ctx, 1)
			granted := make(chan struct{}, 1)
			var wg sync.WaitGroup
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for s.Acquire(ctx, 1) == nil {
						select {
						case granted <- struct{}{}:
						case <-ctx.Done():
							s.Release(1)
							return
						}
					}
				}()
			}
			b.ResetTimer()
			for b.Loop() {
				s.Release(1)
				<-granted
			}
			b.StopTimer()
			cancel()
			wg.Wait()
		})
	}
}

func waitQueued(b *testing.B, m *slots.Manager, n int) {
	b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		l, _ := m.GetLimit("bench")
		if l.Waiting >= n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d waiters queued", l.Waiting, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
