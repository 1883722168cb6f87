package slots_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/limitd/limitd/internal/slots"
)

// strictClock is the real clock with one change that makes the randomized
// test's FIFO check exact: every reading is strictly later than the one
// before, so two requests never share an arrival time, and both faces of a
// reading are the same instant.
type strictClock struct {
	mu    sync.Mutex
	start time.Time
	last  time.Duration
}

func (c *strictClock) Read() (time.Time, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	mono := time.Since(c.start)
	if mono <= c.last {
		mono = c.last + time.Nanosecond
	}
	c.last = mono
	return c.start.Round(0).Add(mono), mono
}

func (c *strictClock) AfterFunc(d time.Duration, f func()) slots.Timer {
	return time.AfterFunc(d, f)
}

// checker is an independent model fed by the manager's events, which come
// in decision order under the manager's lock.
type checker struct {
	slots.NopObserver
	mu        sync.Mutex
	capacity  map[string]int
	inUse     map[string]int
	lastSince map[string]time.Time
	grants    int
	errs      []string
}

func (c *checker) Granted(l slots.LeaseRecord, waited time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.grants++
	c.inUse[l.Limit] += l.Slots
	if c.inUse[l.Limit] > c.capacity[l.Limit] {
		c.errs = append(c.errs, fmt.Sprintf("over-admitted %s: %d slots in use, capacity %d", l.Limit, c.inUse[l.Limit], c.capacity[l.Limit]))
	}
	// FIFO: grants happen in the order the requests arrived.
	since := l.AcquiredAt.Add(-waited)
	if !since.After(c.lastSince[l.Limit]) {
		c.errs = append(c.errs, fmt.Sprintf("%s: a request that arrived at %v was granted after one that arrived later, at %v", l.Limit, since, c.lastSince[l.Limit]))
	}
	c.lastSince[l.Limit] = since
}

func (c *checker) Ended(l slots.LeaseRecord, _ time.Duration, _ bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inUse[l.Limit] -= l.Slots
	if c.inUse[l.Limit] < 0 {
		c.errs = append(c.errs, fmt.Sprintf("%s: released more slots than were held", l.Limit))
	}
}

func TestRandomizedNeverOverAdmitsAndServesInOrder(t *testing.T) {
	const (
		workers = 40
		ops     = 60
	)
	capacities := map[string]int{"small": 2, "wide": 5}
	chk := &checker{capacity: capacities, inUse: map[string]int{}, lastSince: map[string]time.Time{}}
	m := slots.New(slots.Config{Journal: &memJournal{}, Clock: &strictClock{start: time.Now()}, Observer: chk, MaxWaiters: 1000})
	defer m.Close()
	for name, c := range capacities {
		if _, _, err := m.PutLimit(context.Background(), name, slots.LimitSpec{Capacity: c}); err != nil {
			t.Fatal(err)
		}
	}
	names := []string{"small", "wide"}

	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for i := range ops {
				name := names[rng.IntN(len(names))]
				p := slots.AcquireParams{
					Slots:  1 + rng.IntN(capacities[name]),
					TTL:    time.Duration(5+rng.IntN(20)) * time.Millisecond,
					Wait:   time.Duration(rng.IntN(60)) * time.Millisecond,
					Holder: fmt.Sprintf("w%d-%d", w, i),
				}
				if rng.IntN(5) == 0 {
					p.IdempotencyKey = fmt.Sprintf("key-%d", rng.IntN(8)) // replays and supersedes
				}
				ctx, cancel := context.WithCancel(context.Background())
				if rng.IntN(4) == 0 {
					time.AfterFunc(time.Duration(rng.IntN(5000))*time.Microsecond, cancel)
				}
				l, replayed, err := m.Acquire(ctx, name, p)
				cancel()
				if err != nil || replayed {
					continue
				}
				switch rng.IntN(8) {
				case 0: // forget it: it must expire
				case 1, 2, 3, 4:
					time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond) // hold the slot a while
					m.Release(context.Background(), l.ID)
				default:
					m.Renew(context.Background(), l.ID, 0)
					m.Release(context.Background(), l.ID)
				}
			}
		}()
	}
	wg.Wait()

	// Every forgotten lease expires; then nothing is held.
	deadline := time.Now().Add(5 * time.Second)
	for _, name := range names {
		for {
			l, err := m.GetLimit(name)
			if err != nil {
				t.Fatal(err)
			}
			if l.InUse == 0 && l.Waiting == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: in_use %d, waiting %d after every client stopped", name, l.InUse, l.Waiting)
			}
			time.Sleep(time.Millisecond)
		}
	}
	chk.mu.Lock()
	defer chk.mu.Unlock()
	for _, e := range chk.errs {
		t.Error(e)
	}
	if chk.grants < workers*ops/10 {
		t.Fatalf("only %d grants: the test exercised too little", chk.grants)
	}
	t.Logf("%d grants", chk.grants)
}
