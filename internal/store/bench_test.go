package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/limitd/limitd/internal/slots"
	"github.com/limitd/limitd/internal/store"
	"golang.org/x/sync/semaphore"
)

// BenchmarkGrantRelease commits one grant and its release per op, either
// one at a time (every change pays its own commit) or from 64 goroutines at
// once (group commit shares commits), with synchronous=normal and =full.
// The x/sync/semaphore line is the in-process baseline of the same run.
func BenchmarkGrantRelease(b *testing.B) {
	for _, sync := range []string{"normal", "full"} {
		for _, parallel := range []bool{false, true} {
			mode := "serial"
			if parallel {
				mode = "parallel64"
			}
			b.Run(fmt.Sprintf("sync=%s/%s", sync, mode), func(b *testing.B) {
				var commits atomic.Int64
				s, err := store.Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"), store.Options{
					Synchronous: sync,
					OnCommit:    func(int, time.Duration, error) { commits.Add(1) },
				})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				ctx := context.Background()
				if err := s.Write(slots.Change{Kind: slots.ChangePutLimit, Limit: limitRec("bench", 1000)}).Wait(ctx); err != nil {
					b.Fatal(err)
				}
				var seq atomic.Uint64
				cycle := func() {
					n := seq.Add(1)
					l := leaseRec(0, "bench", n)
					l.ID = fmt.Sprintf("01JB%022d", n)
					if err := s.Write(slots.Change{Kind: slots.ChangeGrant, Lease: l, Fence: n}).Wait(ctx); err != nil {
						b.Error(err)
					}
					if err := s.Write(slots.Change{Kind: slots.ChangeRelease, Lease: l, Fence: n}).Wait(ctx); err != nil {
						b.Error(err)
					}
				}
				commits.Store(0)
				b.ResetTimer()
				if parallel {
					b.SetParallelism(32) // 64 goroutines on 2 cores
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							cycle()
						}
					})
				} else {
					for b.Loop() {
						cycle()
					}
				}
				b.ReportMetric(float64(commits.Load())/float64(b.N), "commits/op")
			})
		}
	}
	b.Run("x-sync-semaphore", func(b *testing.B) {
		s := semaphore.NewWeighted(1)
		ctx := context.Background()
		for b.Loop() {
			s.Acquire(ctx, 1)
			s.Release(1)
		}
	})
}

// BenchmarkDeleteLimit deletes a limit (and re-creates it) while 100,000
// leases of other limits are live: with no index on leases.limit_name, the
// deletion scans them, a cost paid on a rare admin action instead of on
// every grant and release.
func BenchmarkDeleteLimit(b *testing.B) {
	s, err := store.Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	const leases = 100_000
	var last *slots.Commit
	for i := range leases / 100 {
		name := fmt.Sprintf("busy-%04d", i)
		s.Write(slots.Change{Kind: slots.ChangePutLimit, Limit: limitRec(name, 1000)})
		for j := range 100 {
			n := uint64(i*100 + j + 1)
			l := leaseRec(0, name, n)
			l.ID = fmt.Sprintf("01JD%022d", n)
			last = s.Write(slots.Change{Kind: slots.ChangeGrant, Lease: l, Fence: n})
		}
	}
	if err := last.Wait(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if err := s.Write(slots.Change{Kind: slots.ChangePutLimit, Limit: limitRec("gone", 1)}).Wait(ctx); err != nil {
			b.Fatal(err)
		}
		if err := s.Write(slots.Change{Kind: slots.ChangeDeleteLimit, Limit: limitRec("gone", 1)}).Wait(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
