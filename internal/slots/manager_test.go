package slots_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/limitd/limitd"
	"github.com/limitd/limitd/internal/slots"
)

func holders(t *testing.T, f *fixture, name string) []string {
	t.Helper()
	ws, err := f.m.Waiters(name)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, w := range ws {
		out = append(out, w.Holder)
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestGrantWithinCapacity(t *testing.T) {
	f := newFixture(t)
	f.put(t, "db", 2)
	a := f.acquire(t, "db", slots.AcquireParams{Slots: 1, Wait: time.Second})
	b := f.acquire(t, "db", slots.AcquireParams{Slots: 1, Wait: time.Second})
	if got := f.inUse(t, "db"); got != 2 {
		t.Fatalf("in_use = %d, want 2", got)
	}
	_, _, err := f.m.Acquire(context.Background(), "db", slots.AcquireParams{Slots: 1, Wait: 0})
	wantCode(t, err, limitd.CodeNoSlots)
	if a.ID == b.ID || a.Fence >= b.Fence {
		t.Fatalf("leases %+v and %+v: want distinct ids and increasing fences", a, b)
	}
}

func TestWaitersAreServedInArrivalOrder(t *testing.T) {
	f := newFixture(t)
	f.put(t, "q", 1)
	first := f.acquire(t, "q", slots.AcquireParams{Holder: "first"})
	var chans []<-chan result
	names := []string{"w1", "w2", "w3", "w4"}
	for _, n := range names {
		chans = append(chans, f.acquireAsync(t, context.Background(), "q", slots.AcquireParams{Holder: n, Wait: time.Minute}))
	}
	if got := holders(t, f, "q"); !equal(got, names) {
		t.Fatalf("queue = %v, want %v", got, names)
	}
	prev := first
	for i, ch := range chans {
		if err := f.m.Release(context.Background(), prev.ID); err != nil {
			t.Fatal(err)
		}
		r := recv(t, ch)
		if r.err != nil || r.lease.Holder != names[i] {
			t.Fatalf("grant %d went to %+v (err %v), want %s", i, r.lease, r.err, names[i])
		}
		prev = r.lease
	}
}

// A request for more slots than are free at the head of the queue blocks the
// smaller ones behind it, as golang.org/x/sync/semaphore does: otherwise a
// stream of small requests could starve it for ever.
func TestLargeAcquireDoesntStarve(t *testing.T) {
	f := newFixture(t)
	f.put(t, "w", 3)
	small := f.acquire(t, "w", slots.AcquireParams{Slots: 1})
	big := f.acquireAsync(t, context.Background(), "w", slots.AcquireParams{Slots: 3, Holder: "big", Wait: time.Minute})
	behind := f.acquireAsync(t, context.Background(), "w", slots.AcquireParams{Slots: 1, Holder: "small", Wait: time.Minute})
	if got := f.inUse(t, "w"); got != 1 {
		t.Fatalf("in_use = %d: the small request behind the big one was granted", got)
	}
	// Nor may a newcomer use the free slots while others queue.
	_, _, err := f.m.Acquire(context.Background(), "w", slots.AcquireParams{Slots: 1, Wait: 0})
	wantCode(t, err, limitd.CodeNoSlots)

	if err := f.m.Release(context.Background(), small.ID); err != nil {
		t.Fatal(err)
	}
	r := recv(t, big)
	if r.err != nil || r.lease.Slots != 3 {
		t.Fatalf("big waiter: %+v, %v", r.lease, r.err)
	}
	notYet(t, behind)
	if got := holders(t, f, "w"); !equal(got, []string{"small"}) {
		t.Fatalf("queue = %v, want [small]", got)
	}
	if err := f.m.Release(context.Background(), r.lease.ID); err != nil {
		t.Fatal(err)
	}
	if r := recv(t, behind); r.err != nil {
		t.Fatal(r.err)
	}
}

func TestRequestLargerThanCapacityIsRefusedWithoutQueueing(t *testing.T) {
	f := newFixture(t)
	f.put(t, "c", 2)
	_, _, err := f.m.Acquire(context.Background(), "c", slots.AcquireParams{Slots: 3, Wait: time.Minute})
	wantCode(t, err, limitd.CodeSlotsExceedCapacity)
	if f.waiting(t, "c") != 0 {
		t.Fatal("an impossible request was queued")
	}
}

func TestExpiryFreesSlotsAtDeadlineNeverBefore(t *testing.T) {
	f := newFixture(t)
	f.put(t, "e", 1)
	l := f.acquire(t, "e", slots.AcquireParams{TTL: 10 * time.Second})
	waiter := f.acquireAsync(t, context.Background(), "e", slots.AcquireParams{Wait: time.Minute, Holder: "next"})

	f.clock.Advance(10*time.Second - time.Nanosecond)
	if _, err := f.m.Lease(l.ID); err != nil {
		t.Fatalf("lease gone before its expiry: %v", err)
	}
	notYet(t, waiter)

	f.clock.Advance(time.Nanosecond)
	r := recv(t, waiter)
	if r.err != nil || r.lease.Holder != "next" {
		t.Fatalf("waiter after expiry: %+v %v", r.lease, r.err)
	}
	_, err := f.m.Lease(l.ID)
	wantCode(t, err, limitd.CodeLeaseNotFound)
	if err := f.m.Release(context.Background(), l.ID); err == nil {
		t.Fatal("released an expired lease")
	}
}

func TestRenewMovesExpiry(t *testing.T) {
	f := newFixture(t)
	f.put(t, "r", 1)
	l := f.acquire(t, "r", slots.AcquireParams{TTL: 10 * time.Second})
	f.clock.Advance(8 * time.Second)
	renewed, err := f.m.Renew(context.Background(), l.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := f.clock.Now().Add(10 * time.Second); !renewed.ExpiresAt.Equal(want) {
		t.Fatalf("expires_at = %v, want %v", renewed.ExpiresAt, want)
	}
	f.clock.Advance(9 * time.Second) // 17 s after the grant: the old expiry has passed
	if _, err := f.m.Lease(l.ID); err != nil {
		t.Fatalf("renewed lease expired at its old deadline: %v", err)
	}
	// A renew may also shorten a lease.
	if _, err := f.m.Renew(context.Background(), l.ID, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(2 * time.Second)
	if _, err := f.m.Lease(l.ID); err == nil {
		t.Fatal("shortened lease outlived its new TTL")
	}
}

func TestCapacityChangesWithWaitersQueued(t *testing.T) {
	t.Run("RaiseWakesWaitersThatFit", func(t *testing.T) {
		f := newFixture(t)
		f.put(t, "cap", 1)
		f.acquire(t, "cap", slots.AcquireParams{})
		a := f.acquireAsync(t, context.Background(), "cap", slots.AcquireParams{Wait: time.Minute})
		b := f.acquireAsync(t, context.Background(), "cap", slots.AcquireParams{Wait: time.Minute})
		f.put(t, "cap", 3)
		if recv(t, a).err != nil || recv(t, b).err != nil {
			t.Fatal("waiters were not granted after the raise")
		}
	})
	t.Run("LowerRevokesNothingAndNewGrantsWaitUntilTheyFit", func(t *testing.T) {
		f := newFixture(t)
		f.put(t, "cap", 3)
		l1 := f.acquire(t, "cap", slots.AcquireParams{})
		l2 := f.acquire(t, "cap", slots.AcquireParams{})
		f.acquire(t, "cap", slots.AcquireParams{})
		f.put(t, "cap", 1)
		if got := f.inUse(t, "cap"); got != 3 {
			t.Fatalf("in_use = %d after lowering: leases were revoked", got)
		}
		w := f.acquireAsync(t, context.Background(), "cap", slots.AcquireParams{Wait: time.Minute})
		f.m.Release(context.Background(), l1.ID)
		f.m.Release(context.Background(), l2.ID)
		if f.waiting(t, "cap") != 1 {
			t.Fatal("granted while in_use + slots exceeded the lowered capacity")
		}
		notYet(t, w)
	})
	t.Run("LowerBelowQueuedSlotsAnswers409", func(t *testing.T) {
		f := newFixture(t)
		f.put(t, "cap", 4)
		f.acquire(t, "cap", slots.AcquireParams{Slots: 4})
		big := f.acquireAsync(t, context.Background(), "cap", slots.AcquireParams{Slots: 3, Wait: time.Minute})
		small := f.acquireAsync(t, context.Background(), "cap", slots.AcquireParams{Slots: 1, Wait: time.Minute})
		f.put(t, "cap", 2)
		wantCode(t, recv(t, big).err, limitd.CodeSlotsExceedCapacity)
		notYet(t, small)
		if got := f.waiting(t, "cap"); got != 1 {
			t.Fatalf("waiting = %d, want 1 (the small request)", got)
		}
	})
	t.Run("ZeroPausesEveryone", func(t *testing.T) {
		f := newFixture(t)
		f.put(t, "cap", 0)
		_, _, err := f.m.Acquire(context.Background(), "cap", slots.AcquireParams{Slots: 5, Wait: 0})
		wantCode(t, err, limitd.CodeNoSlots) // paused, not 409
		w := f.acquireAsync(t, context.Background(), "cap", slots.AcquireParams{Slots: 5, Wait: time.Minute})
		f.put(t, "cap", 5)
		if r := recv(t, w); r.err != nil {
			t.Fatal(r.err)
		}
	})
}

func TestDeleteLimitAnswersWaitersAndDropsLeases(t *testing.T) {
	f := newFixture(t)
	f.put(t, "d", 1)
	l := f.acquire(t, "d", slots.AcquireParams{})
	w := f.acquireAsync(t, context.Background(), "d", slots.AcquireParams{Wait: time.Minute})
	w2 := f.acquireAsync(t, context.Background(), "d", slots.AcquireParams{Wait: time.Minute})
	gone, err := f.m.DeleteLimit(context.Background(), "d")
	if err != nil {
		t.Fatal(err)
	}
	if gone.Capacity != 1 || gone.InUse != 1 || gone.Waiting != 2 {
		t.Fatalf("DeleteLimit returned %+v, want the limit as deleted: capacity 1, 1 in use, 2 waiting", gone)
	}
	wantCode(t, recv(t, w).err, limitd.CodeLimitNotFound)
	wantCode(t, recv(t, w2).err, limitd.CodeLimitNotFound)
	_, err = f.m.Lease(l.ID)
	wantCode(t, err, limitd.CodeLeaseNotFound)

	// Re-created, the limit starts empty and fences keep growing.
	f.put(t, "d", 1)
	again := f.acquire(t, "d", slots.AcquireParams{})
	if again.Fence <= l.Fence {
		t.Fatalf("fence %d after re-creating, want > %d", again.Fence, l.Fence)
	}
}

func TestWaitTimeoutAnswersNoSlotsAndLeavesTheQueue(t *testing.T) {
	f := newFixture(t)
	f.put(t, "t", 1)
	f.acquire(t, "t", slots.AcquireParams{})
	w := f.acquireAsync(t, context.Background(), "t", slots.AcquireParams{Wait: 5 * time.Second})
	f.clock.Advance(5 * time.Second)
	wantCode(t, recv(t, w).err, limitd.CodeNoSlots)
	if f.waiting(t, "t") != 0 {
		t.Fatal("timed-out waiter still queued")
	}
}

func TestCanceledWaiterLeavesQueueAndUnblocksThoseBehind(t *testing.T) {
	f := newFixture(t)
	f.put(t, "x", 2)
	f.acquire(t, "x", slots.AcquireParams{Slots: 1})
	ctx, cancel := context.WithCancel(context.Background())
	head := f.acquireAsync(t, ctx, "x", slots.AcquireParams{Slots: 2, Wait: time.Minute})
	behind := f.acquireAsync(t, context.Background(), "x", slots.AcquireParams{Slots: 1, Wait: time.Minute})
	cancel()
	if r := recv(t, head); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("canceled waiter: %v", r.err)
	}
	// The head left: the one behind it fits in the free slot now.
	if r := recv(t, behind); r.err != nil {
		t.Fatal(r.err)
	}
	if got := f.inUse(t, "x"); got != 2 {
		t.Fatalf("in_use = %d, want 2", got)
	}
}

// A waiter granted while its client goes away must not leave a lease behind.
func TestGrantRacingDisconnectLeavesNoLease(t *testing.T) {
	f := newFixture(t)
	f.put(t, "race", 1)
	first := f.acquire(t, "race", slots.AcquireParams{})
	ctx, cancel := context.WithCancel(context.Background())
	w := f.acquireAsync(t, ctx, "race", slots.AcquireParams{Wait: time.Minute})

	// The release grants the waiter, but the commits are held, and the
	// client goes away before its grant is durable.
	f.journal.Hold()
	released := make(chan error, 1)
	go func() { released <- f.m.Release(context.Background(), first.ID) }()
	f.waitFor(t, func() bool { return f.waiting(t, "race") == 0 && f.inUse(t, "race") == 1 }, "the waiter to be granted")
	cancel()
	if r := recv(t, w); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("acquire of a vanished client: %+v %v, want context.Canceled", r.lease, r.err)
	}
	f.journal.Flush()
	if err := <-released; err != nil {
		t.Fatal(err)
	}
	if got := f.inUse(t, "race"); got != 0 {
		t.Fatalf("in_use = %d: the grant nobody received kept its slot", got)
	}
	// On disk too: the grant is followed by its release.
	var kinds []slots.ChangeKind
	for _, c := range f.journal.Changes()[1:] {
		kinds = append(kinds, c.Kind)
	}
	want := []slots.ChangeKind{slots.ChangeGrant, slots.ChangeRelease, slots.ChangeGrant, slots.ChangeRelease}
	if len(kinds) != len(want) {
		t.Fatalf("journal = %v, want %v", kinds, want)
	}
	for i := range want {
		if kinds[i] != want[i] {
			t.Fatalf("journal = %v, want %v", kinds, want)
		}
	}
}

func TestIdempotentAcquire(t *testing.T) {
	t.Run("ReplayOfGrantedReturnsSameLease", func(t *testing.T) {
		f := newFixture(t)
		f.put(t, "i", 2)
		a, replayed, err := f.m.Acquire(context.Background(), "i", slots.AcquireParams{IdempotencyKey: "k1"})
		if err != nil || replayed {
			t.Fatal(err, replayed)
		}
		b, replayed, err := f.m.Acquire(context.Background(), "i", slots.AcquireParams{IdempotencyKey: "k1"})
		if err != nil || !replayed || b.ID != a.ID {
			t.Fatalf("replay: %+v replayed=%v err=%v, want lease %s", b, replayed, err, a.ID)
		}
		if got := f.inUse(t, "i"); got != 1 {
			t.Fatalf("in_use = %d after a replay, want 1", got)
		}
		// Once released, the key may take a new lease.
		f.m.Release(context.Background(), a.ID)
		c, replayed, err := f.m.Acquire(context.Background(), "i", slots.AcquireParams{IdempotencyKey: "k1"})
		if err != nil || replayed || c.ID == a.ID {
			t.Fatalf("after release: %+v replayed=%v err=%v", c, replayed, err)
		}
	})
	t.Run("RepeatOfWaitingSupersedesIt", func(t *testing.T) {
		f := newFixture(t)
		f.put(t, "i", 1)
		held := f.acquire(t, "i", slots.AcquireParams{})
		old := f.acquireAsync(t, context.Background(), "i", slots.AcquireParams{Holder: "old", IdempotencyKey: "k", Wait: time.Minute})
		f.acquireAsync(t, context.Background(), "i", slots.AcquireParams{Holder: "other", Wait: time.Minute})
		repeat := make(chan result, 1)
		go func() {
			l, _, err := f.m.Acquire(context.Background(), "i", slots.AcquireParams{Holder: "new", IdempotencyKey: "k", Wait: time.Minute})
			repeat <- result{l, err}
		}()
		wantCode(t, recv(t, old).err, limitd.CodeSuperseded)
		if got := holders(t, f, "i"); !equal(got, []string{"new", "other"}) {
			t.Fatalf("queue = %v, want the new request in the old one's place", got)
		}
		f.m.Release(context.Background(), held.ID)
		if r := recv(t, repeat); r.err != nil || r.lease.Holder != "new" {
			t.Fatalf("superseding request: %+v %v", r.lease, r.err)
		}
	})
	t.Run("KeysAreScopedToTheirLimit", func(t *testing.T) {
		f := newFixture(t)
		f.put(t, "a", 1)
		f.put(t, "b", 1)
		a := f.acquire(t, "a", slots.AcquireParams{IdempotencyKey: "same"})
		b := f.acquire(t, "b", slots.AcquireParams{IdempotencyKey: "same"})
		if a.ID == b.ID {
			t.Fatal("one key shared a lease across limits")
		}
	})
}

func TestFailedCommitUndoesTheGrant(t *testing.T) {
	f := newFixture(t)
	f.put(t, "f", 1)
	f.journal.mu.Lock()
	f.journal.failing = errors.New("disk full")
	f.journal.mu.Unlock()
	_, _, err := f.m.Acquire(context.Background(), "f", slots.AcquireParams{})
	wantCode(t, err, limitd.CodeStoreUnavailable)
	if got := f.inUse(t, "f"); got != 0 {
		t.Fatalf("in_use = %d after a failed commit, want 0", got)
	}
}

func TestDrainAnswersWaitersAndKeepsLeases(t *testing.T) {
	f := newFixture(t)
	f.put(t, "s", 1)
	l := f.acquire(t, "s", slots.AcquireParams{})
	a := f.acquireAsync(t, context.Background(), "s", slots.AcquireParams{Wait: time.Minute})
	b := f.acquireAsync(t, context.Background(), "s", slots.AcquireParams{Wait: time.Minute})
	f.m.Drain()
	wantCode(t, recv(t, a).err, limitd.CodeShuttingDown)
	wantCode(t, recv(t, b).err, limitd.CodeShuttingDown)
	if _, err := f.m.Lease(l.ID); err != nil {
		t.Fatalf("lease lost in drain: %v", err)
	}
	_, _, err := f.m.Acquire(context.Background(), "s", slots.AcquireParams{})
	wantCode(t, err, limitd.CodeShuttingDown)
}

func TestQueueBound(t *testing.T) {
	f := newFixture(t) // MaxWaiters 100
	f.put(t, "b", 1)
	f.acquire(t, "b", slots.AcquireParams{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var chans []<-chan result
	for range 100 {
		chans = append(chans, f.acquireAsync(t, ctx, "b", slots.AcquireParams{Wait: time.Minute}))
	}
	_, _, err := f.m.Acquire(context.Background(), "b", slots.AcquireParams{Wait: time.Minute})
	wantCode(t, err, limitd.CodeQueueFull)
	cancel()
	for _, ch := range chans {
		recv(t, ch)
	}
}

func TestRestoreExpiresOverdueLeasesAndKeepsFence(t *testing.T) {
	clock := newFakeClock()
	j := &memJournal{}
	m := slots.New(slots.Config{Journal: j, Clock: clock})
	defer m.Close()
	now := clock.Now()
	limits := []slots.LimitRecord{{Name: "r", Capacity: 2, CreatedAt: now, UpdatedAt: now}}
	leases := []slots.LeaseRecord{
		{ID: "01HZZZZZZZZZZZZZZZZZZZZZZ1", Limit: "r", Slots: 1, Fence: 7, AcquiredAt: now.Add(-time.Minute), ExpiresAt: now.Add(time.Minute), TTL: 2 * time.Minute},
		{ID: "01HZZZZZZZZZZZZZZZZZZZZZZ2", Limit: "r", Slots: 1, Fence: 8, AcquiredAt: now.Add(-time.Minute), ExpiresAt: now.Add(-time.Second), TTL: time.Minute},
		{ID: "01HZZZZZZZZZZZZZZZZZZZZZZ3", Limit: "gone", Slots: 1, Fence: 9, AcquiredAt: now, ExpiresAt: now.Add(time.Minute), TTL: time.Minute},
	}
	m.Restore(limits, leases, 5)
	if _, err := m.Lease(leases[0].ID); err != nil {
		t.Fatalf("live lease not restored: %v", err)
	}
	for _, gone := range leases[1:] {
		if _, err := m.Lease(gone.ID); err == nil {
			t.Fatalf("lease %s restored, want expired/dropped", gone.ID)
		}
	}
	var released int
	for _, c := range j.Changes() {
		if c.Kind == slots.ChangeRelease {
			released++
		}
	}
	if released != 2 {
		t.Fatalf("%d releases journaled at restore, want 2", released)
	}
	l, _, err := m.Acquire(context.Background(), "r", slots.AcquireParams{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Fence != 10 {
		t.Fatalf("fence after restore = %d, want 10 (above every stored fence)", l.Fence)
	}
	// The restored lease still expires on time.
	clock.Advance(time.Minute)
	if _, err := m.Lease(leases[0].ID); err == nil {
		t.Fatal("restored lease outlived its expiry")
	}
}

// Expiry runs on the monotonic clock: stepping the wall clock (NTP, an
// admin) neither expires a lease early nor keeps it alive late.
func TestWallClockJumpDoesNotMoveExpiry(t *testing.T) {
	t.Run("ForwardJumpDoesNotExpireEarly", func(t *testing.T) {
		f := newFixture(t)
		f.put(t, "j", 1)
		l := f.acquire(t, "j", slots.AcquireParams{TTL: 10 * time.Second})
		f.clock.JumpWall(time.Hour)
		f.clock.Advance(9 * time.Second)
		if _, err := f.m.Lease(l.ID); err != nil {
			t.Fatalf("lease expired early after a wall-clock jump: %v", err)
		}
		if _, err := f.m.Renew(context.Background(), l.ID, 0); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("BackwardJumpDoesNotKeepAlive", func(t *testing.T) {
		f := newFixture(t)
		f.put(t, "j", 1)
		l := f.acquire(t, "j", slots.AcquireParams{TTL: 10 * time.Second})
		w := f.acquireAsync(t, context.Background(), "j", slots.AcquireParams{Wait: time.Minute})
		f.clock.JumpWall(-time.Hour)
		f.clock.Advance(10 * time.Second)
		if r := recv(t, w); r.err != nil {
			t.Fatalf("waiter not granted at the monotonic expiry: %v", r.err)
		}
		if _, err := f.m.Lease(l.ID); err == nil {
			t.Fatal("lease outlived its TTL after the wall clock went back")
		}
	})
}

// A retry with the same Idempotency-Key that arrives while the first
// request's grant is still being committed answers with that lease — and
// the lease stays live even if the first request's client goes away: the
// retry is the one that delivers it.
func TestReplayDuringCommitKeepsTheLeaseWhenTheOriginalLeaves(t *testing.T) {
	f := newFixture(t)
	f.put(t, "k", 1)
	f.journal.Hold()
	origCtx, cancelOrig := context.WithCancel(context.Background())
	orig := make(chan result, 1)
	go func() {
		l, _, err := f.m.Acquire(origCtx, "k", slots.AcquireParams{IdempotencyKey: "job"})
		orig <- result{l, err}
	}()
	f.waitFor(t, func() bool { return f.inUse(t, "k") == 1 }, "the grant")
	replay := make(chan result, 1)
	go func() {
		l, replayed, err := f.m.Acquire(context.Background(), "k", slots.AcquireParams{IdempotencyKey: "job"})
		if err == nil && !replayed {
			err = errors.New("not answered as a replay")
		}
		replay <- result{l, err}
	}()
	// Both now wait on the held commit. A replay waiting there changes no
	// state the test can see, so this is the one place that must give the
	// goroutine time to get there; the assertion below fails if it did not.
	time.Sleep(50 * time.Millisecond)
	cancelOrig()
	if r := recv(t, orig); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("original: %v", r.err)
	}
	f.journal.Flush()
	r := recv(t, replay)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if _, err := f.m.Lease(r.lease.ID); err != nil {
		t.Fatalf("the replay answered with a lease that is not live: %v", err)
	}
	if got := f.inUse(t, "k"); got != 1 {
		t.Fatalf("in_use = %d, want 1", got)
	}
}
