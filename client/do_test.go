package client_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/limitd/limitd/client"
)

func TestDoHoldsSlotWhileFnRuns(t *testing.T) {
	t.Parallel()
	_, c := mustStart(t)
	name := limitName(t)
	mustPutLimit(t, c, name, 1)
	ran := false
	err := c.Do(t.Context(), name, func(ctx context.Context) error {
		ran = true
		ls, err := c.Leases(ctx, name)
		if err != nil || len(ls) != 1 {
			t.Errorf("leases inside fn = %v, %v; want one", ls, err)
		}
		return nil
	})
	if err != nil || !ran {
		t.Fatalf("Do = %v (ran %v)", err, ran)
	}
	if ls, _ := c.Leases(t.Context(), name); len(ls) != 0 {
		t.Fatalf("leases after Do: %v", ls)
	}
}

func TestDoReturnsFnError(t *testing.T) {
	t.Parallel()
	_, c := mustStart(t)
	name := limitName(t)
	mustPutLimit(t, c, name, 1)
	boom := errors.New("boom")
	if err := c.Do(t.Context(), name, func(context.Context) error { return boom }); err != boom {
		t.Fatalf("Do = %v, want fn's error as is", err)
	}
	if ls, _ := c.Leases(t.Context(), name); len(ls) != 0 {
		t.Fatalf("leases after Do: %v", ls)
	}
}

func TestDoReleasesOnPanic(t *testing.T) {
	t.Parallel()
	_, c := mustStart(t)
	name := limitName(t)
	mustPutLimit(t, c, name, 1)
	func() {
		defer func() {
			if p := recover(); p != "fn panicked" {
				t.Errorf("recovered %v, want fn's panic value", p)
			}
		}()
		_ = c.Do(t.Context(), name, func(context.Context) error { panic("fn panicked") })
		t.Error("Do returned instead of panicking")
	}()
	if ls, _ := c.Leases(t.Context(), name); len(ls) != 0 {
		t.Fatalf("leases after a panic in fn: %v", ls)
	}
}

func TestDoCancelsFnWhenLeaseLost(t *testing.T) {
	t.Parallel()
	_, c := mustStart(t)
	name := limitName(t)
	mustPutLimit(t, c, name, 1)
	inside := make(chan string, 1)
	done := make(chan error, 1)
	var cause error
	go func() {
		done <- c.Do(context.Background(), name, func(ctx context.Context) error {
			ls, err := c.Leases(ctx, name)
			if err != nil || len(ls) != 1 {
				t.Errorf("leases = %v, %v", ls, err)
				return err
			}
			inside <- ls[0].ID
			<-ctx.Done()
			cause = context.Cause(ctx)
			return ctx.Err()
		}, client.TTL(time.Second))
	}()
	id := recv(t, inside, "fn to start")
	if err := c.ReleaseLease(t.Context(), id); err != nil { // an admin revokes it
		t.Fatal(err)
	}
	err := recv(t, done, "Do to return after the lease was lost")
	if !errors.Is(err, client.ErrLeaseLost) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Do = %v, want ErrLeaseLost and fn's context.Canceled", err)
	}
	if !errors.Is(cause, client.ErrLeaseLost) {
		t.Errorf("cause of fn's context = %v, want ErrLeaseLost", cause)
	}
}

// fn that ignores its context and returns nil after the lease was lost
// still gets an error: its work ran partly without the slot.
func TestDoReportsLossEvenIfFnSucceeds(t *testing.T) {
	t.Parallel()
	_, c := mustStart(t)
	name := limitName(t)
	mustPutLimit(t, c, name, 1)
	err := c.Do(t.Context(), name, func(ctx context.Context) error {
		if err := c.DeleteLimit(ctx, name); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	}, client.TTL(time.Second))
	if !errors.Is(err, client.ErrLeaseLost) {
		t.Fatalf("Do = %v, want ErrLeaseLost", err)
	}
}

func TestDoCanceledWhileWaiting(t *testing.T) {
	t.Parallel()
	_, c := mustStart(t)
	name := limitName(t)
	mustPutLimit(t, c, name, 0)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	err := c.Do(ctx, name, func(context.Context) error {
		t.Error("fn ran without a slot")
		return nil
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Do = %v, want DeadlineExceeded", err)
	}
}

// Many workers through one limit never run more than its capacity at
// once, and all of them run.
func TestDoNeverExceedsCapacity(t *testing.T) {
	t.Parallel()
	_, c := mustStart(t)
	name := limitName(t)
	const capacity, workers = 2, 8
	mustPutLimit(t, c, name, capacity)
	var running, peak, total atomic.Int32
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			err := c.Do(t.Context(), name, func(context.Context) error {
				n := running.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				time.Sleep(20 * time.Millisecond) // the work
				running.Add(-1)
				total.Add(1)
				return nil
			})
			if err != nil {
				t.Errorf("Do: %v", err)
			}
		})
	}
	wg.Wait()
	if peak.Load() > capacity || total.Load() != workers {
		t.Fatalf("peak %d running (capacity %d), %d of %d ran", peak.Load(), capacity, total.Load(), workers)
	}
}
