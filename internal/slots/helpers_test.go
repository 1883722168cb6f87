package slots_test

import (
	"context"
	"errors"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/limitd/limitd"
	"github.com/limitd/limitd/internal/slots"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeClock is a manual clock: time moves only when a test advances it, and
// timers due by then fire synchronously inside Advance.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time     // wall
	mono   time.Duration // monotonic
	timers []*fakeTimer
}

type fakeTimer struct {
	clock   *fakeClock
	at      time.Duration
	f       func()
	stopped bool
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	now, _ := c.Read()
	return now
}

func (c *fakeClock) Read() (time.Time, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now, c.mono
}

// JumpWall changes the wall clock only, as an NTP step or an admin would.
func (c *fakeClock) JumpWall(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) slots.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{clock: c, at: c.mono + d, f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

// Advance moves time forward by d and runs every timer that is due, in
// deadline order.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mono += d
	now := c.mono
	var due []*fakeTimer
	kept := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.stopped:
		case t.at <= now:
			t.stopped = true
			due = append(due, t)
		default:
			kept = append(kept, t)
		}
	}
	c.timers = kept
	c.mu.Unlock()
	sort.Slice(due, func(i, j int) bool { return due[i].at < due[j].at })
	for _, t := range due {
		t.f()
	}
}

// memJournal is an in-memory journal that records every change in order.
// Commits resolve at once unless the journal is held, in which case they
// wait for Flush — the window in which a grant is decided but not durable.
type memJournal struct {
	mu      sync.Mutex
	changes []slots.Change
	held    bool
	failing error
	queued  []*slots.Commit
}

func (j *memJournal) Append(entries []slots.Entry) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, e := range entries {
		if j.failing != nil {
			e.Commit.Resolve(j.failing)
			continue
		}
		j.changes = append(j.changes, e.Change)
		if j.held {
			j.queued = append(j.queued, e.Commit)
			continue
		}
		e.Commit.Resolve(nil)
	}
}

func (j *memJournal) Hold() {
	j.mu.Lock()
	j.held = true
	j.mu.Unlock()
}

func (j *memJournal) Flush() {
	j.mu.Lock()
	queued := j.queued
	j.queued, j.held = nil, false
	j.mu.Unlock()
	for _, c := range queued {
		c.Resolve(nil)
	}
}

func (j *memJournal) Changes() []slots.Change {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]slots.Change(nil), j.changes...)
}

type fixture struct {
	m       *slots.Manager
	clock   *fakeClock
	journal *memJournal
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{clock: newFakeClock(), journal: &memJournal{}}
	f.m = slots.New(slots.Config{Journal: f.journal, Clock: f.clock, DefaultTTL: time.Minute, MaxWaiters: 100})
	t.Cleanup(func() {
		f.m.Drain() // answers the waiters a test left queued
		f.m.Close()
	})
	return f
}

func (f *fixture) put(t *testing.T, name string, capacity int) {
	t.Helper()
	if _, _, err := f.m.PutLimit(context.Background(), name, slots.LimitSpec{Capacity: capacity}); err != nil {
		t.Fatalf("PutLimit(%s, %d): %v", name, capacity, err)
	}
}

func (f *fixture) acquire(t *testing.T, name string, p slots.AcquireParams) limitd.Lease {
	t.Helper()
	l, _, err := f.m.Acquire(context.Background(), name, p)
	if err != nil {
		t.Fatalf("Acquire(%s, %+v): %v", name, p, err)
	}
	return l
}

func (f *fixture) inUse(t *testing.T, name string) int {
	t.Helper()
	l, err := f.m.GetLimit(name)
	if err != nil {
		t.Fatalf("GetLimit(%s): %v", name, err)
	}
	return l.InUse
}

// result is what a background Acquire returned.
type result struct {
	lease limitd.Lease
	err   error
}

// acquireAsync starts an Acquire and returns once it is queued, so the
// caller controls queue order without sleeping.
func (f *fixture) acquireAsync(t *testing.T, ctx context.Context, name string, p slots.AcquireParams) <-chan result {
	t.Helper()
	before := f.waiting(t, name)
	out := make(chan result, 1)
	go func() {
		l, _, err := f.m.Acquire(ctx, name, p)
		out <- result{l, err}
	}()
	f.waitFor(t, func() bool { return f.waiting(t, name) > before }, "the acquire to queue")
	return out
}

func (f *fixture) waiting(t *testing.T, name string) int {
	t.Helper()
	l, err := f.m.GetLimit(name)
	if err != nil {
		return 0
	}
	return l.Waiting
}

// waitFor polls cond (cheap, in-memory) until it holds or 5 s pass.
func (f *fixture) waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func recv(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("acquire did not return")
		return result{}
	}
}

func notYet(t *testing.T, ch <-chan result) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("acquire returned early: %+v", r)
	default:
	}
}

func wantCode(t *testing.T, err error, code limitd.Code) {
	t.Helper()
	var e *limitd.Error
	if !errors.As(err, &e) || e.Code != code {
		t.Fatalf("error = %v, want code %s", err, code)
	}
}
