package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/limitd/limitd"
	"github.com/limitd/limitd/internal/daemon"
	"github.com/limitd/limitd/internal/servertest"
)

// Tests of SPEC.md's guarantees through the real HTTP API of an in-process
// server (servertest: real SQLite file, real manager, real router). Each
// test is named after the property it protects.

// promptly bounds how long a wake-up may take to reach a client over HTTP:
// the SPEC's 100 ms plus a margin for a commit and a loaded -race machine.
// A polling server or client would miss it by seconds.
const promptly = 250 * time.Millisecond

// ---- 1. never over-admit ---------------------------------------------------------

func TestConcurrentAcquiresNeverOverAdmit(t *testing.T) {
	h := newHarness(t)
	const capacity, workers, rounds = 4, 24, 4
	h.putLimit("pool", capacity)

	// held counts the slots that clients hold: raised after a grant arrives,
	// lowered before the release is sent, so it never exceeds what the server
	// counts, which must never exceed the capacity.
	var held, peak atomic.Int64
	var fences sync.Map
	stop := make(chan struct{})
	monitorDone := make(chan struct{})
	go func() {
		defer close(monitorDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			r, err := h.try(context.Background(), "GET", "/v1/limits/pool/leases", "")
			if err != nil {
				t.Errorf("listing leases: %v", err)
				return
			}
			var ll limitd.LeaseList
			decode(t, r, &ll)
			sum := 0
			for _, l := range ll.Leases {
				sum += l.Slots
			}
			if sum > capacity {
				t.Errorf("live leases hold %d slots of a capacity of %d: %+v", sum, capacity, ll.Leases)
			}
		}
	}()

	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				slots := 1 + (w+r)%3
				body := fmt.Sprintf(`{"slots": %d, "wait_seconds": 30, "ttl_seconds": 60, "holder": "w%d"}`, slots, w)
				resp, err := h.try(context.Background(), "POST", "/v1/limits/pool/acquire", body)
				if err != nil || resp.Status != http.StatusCreated {
					t.Errorf("acquire: %v %d %s", err, resp.Status, resp.Body)
					return
				}
				var l limitd.Lease
				decode(t, resp, &l)
				if _, dup := fences.LoadOrStore(l.Fence, l.ID); dup {
					t.Errorf("fence %d handed out twice", l.Fence)
				}
				n := held.Add(int64(slots))
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				if n > capacity {
					t.Errorf("clients hold %d slots of a capacity of %d", n, capacity)
				}
				held.Add(-int64(slots))
				resp, err = h.try(context.Background(), "DELETE", "/v1/leases/"+l.ID, "")
				if err != nil || resp.Status != http.StatusNoContent {
					t.Errorf("release: %v %d %s", err, resp.Status, resp.Body)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-monitorDone
	if l := h.limit("pool"); l.InUse != 0 || l.Waiting != 0 {
		t.Fatalf("after every release: in_use %d waiting %d, want 0 and 0", l.InUse, l.Waiting)
	}
	t.Logf("peak slots held by clients: %d of %d", peak.Load(), capacity)
}

// ---- 2. FIFO and weighted head-of-line blocking -------------------------------------

func TestWaitersAreServedInArrivalOrder(t *testing.T) {
	h := newHarness(t)
	h.putLimit("fifo", 1)
	current := h.acquire("fifo", `{"holder": "first"}`)

	const n = 6
	type result struct {
		i int
		o outcome
	}
	results := make(chan result, n)
	for i := range n {
		ch := h.goAcquire(context.Background(), "fifo", fmt.Sprintf(`{"holder": "w%d", "wait_seconds": 30}`, i))
		go func() { results <- result{i, <-ch} }()
		// Wait for each waiter to be queued before the next one is sent, so
		// the arrival order is known.
		h.waitQueued("fifo", i+1)
	}
	ws := h.waiters("fifo")
	for i, w := range ws {
		if w.Position != i+1 || w.Holder != fmt.Sprintf("w%d", i) || w.Slots != 1 {
			t.Fatalf("waiter %d listed as %+v", i, w)
		}
	}
	for i := range n {
		h.release(current.ID)
		var r result
		select {
		case r = <-results:
		case <-time.After(5 * time.Second):
			t.Fatalf("nobody was granted after release %d", i)
		}
		if r.o.Err != nil || r.o.Status != http.StatusCreated {
			t.Fatalf("waiter %d: %v %d %s", r.i, r.o.Err, r.o.Status, r.o.Body)
		}
		if r.i != i {
			t.Fatalf("grant %d went to waiter w%d, want w%d (arrival order)", i, r.i, i)
		}
		current = leaseOf(t, r.o.reply)
	}
	h.release(current.ID)
}

func TestLargeHeadWaiterBlocksSmallerOnesBehindIt(t *testing.T) {
	h := newHarness(t)
	h.putLimit("hol", 3)
	one := h.acquire("hol", `{"slots": 1}`)

	big := h.goAcquire(context.Background(), "hol", `{"slots": 3, "holder": "big", "wait_seconds": 30}`)
	h.waitQueued("hol", 1)
	small := h.goAcquire(context.Background(), "hol", `{"slots": 1, "holder": "small", "wait_seconds": 30}`)
	// Two slots are free and the small request would fit, but it arrived
	// behind the big one: it queues rather than jumping the line.
	ws := h.waitQueued("hol", 2)
	if ws[0].Holder != "big" || ws[1].Holder != "small" {
		t.Fatalf("queue %+v, want big then small", ws)
	}
	// Nor does a try-once request jump the line.
	wantProblem(t, h.do("POST", "/v1/limits/hol/acquire", `{"slots": 1, "wait_seconds": 0}`), limitd.CodeNoSlots)
	// Re-putting the limit runs the wake-up logic again; still nothing fits at the head.
	h.putLimit("hol", 3)
	if l := h.limit("hol"); l.InUse != 1 || l.Waiting != 2 {
		t.Fatalf("in_use %d waiting %d, want 1 and 2", l.InUse, l.Waiting)
	}
	notYet(t, small, "the small waiter behind a blocked large one")
	notYet(t, big, "the large waiter")

	h.release(one.ID)
	o := await(t, big, 5*time.Second, "big waiter after the release")
	if o.Status != http.StatusCreated {
		t.Fatalf("big waiter: %d %s", o.Status, o.Body)
	}
	bigLease := leaseOf(t, o.reply)
	h.waitQueued("hol", 1)
	notYet(t, small, "the small waiter while the big lease holds every slot")

	h.release(bigLease.ID)
	o = await(t, small, 5*time.Second, "small waiter after the big release")
	if o.Status != http.StatusCreated {
		t.Fatalf("small waiter: %d %s", o.Status, o.Body)
	}
	h.release(leaseOf(t, o.reply).ID)
}

// ---- 3. prompt wake-up ---------------------------------------------------------

func TestReleaseWakesWaiterPromptly(t *testing.T) {
	h := newHarness(t)
	h.putLimit("wake", 1)
	held := h.acquire("wake", "")
	w := h.goAcquire(context.Background(), "wake", `{"wait_seconds": 30}`)
	h.waitQueued("wake", 1)

	sent := time.Now()
	h.release(held.ID)
	o := await(t, w, 5*time.Second, "waiter after release")
	if o.Status != http.StatusCreated {
		t.Fatalf("waiter: %d %s", o.Status, o.Body)
	}
	if took := o.At.Sub(sent); took > promptly {
		t.Fatalf("the waiter was answered %v after the release was sent, want at most %v", took, promptly)
	}
	if l := leaseOf(t, o.reply); l.AcquiredAt.Sub(sent) > 100*time.Millisecond {
		t.Fatalf("the waiter was granted %v after the release was sent", l.AcquiredAt.Sub(sent))
	}
}

func TestExpiryWakesWaiterWithin100msAndNeverBefore(t *testing.T) {
	h := newHarness(t)
	h.putLimit("ttl", 1)
	for round := range 3 {
		held := h.acquire("ttl", `{"ttl_seconds": 1}`)
		w := h.goAcquire(context.Background(), "ttl", `{"wait_seconds": 10, "ttl_seconds": 60}`)
		h.waitQueued("ttl", 1)
		// Shortly before expires_at the lease is still live.
		for time.Until(held.ExpiresAt) > 150*time.Millisecond {
			if r := h.do("GET", "/v1/limits/ttl", ""); r.At.Before(held.ExpiresAt) {
				var l limitd.Limit
				decode(t, r, &l)
				if l.InUse != 1 || l.Waiting != 1 {
					t.Fatalf("round %d: before expires_at: in_use %d waiting %d", round, l.InUse, l.Waiting)
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		notYet(t, w, "the waiter before the lease's expires_at")
		o := await(t, w, 3*time.Second, "waiter after expiry")
		if o.Status != http.StatusCreated {
			t.Fatalf("round %d: waiter: %d %s", round, o.Status, o.Body)
		}
		next := leaseOf(t, o.reply)
		late := next.AcquiredAt.Sub(held.ExpiresAt)
		t.Logf("round %d: granted %v after expires_at, answered %v after it", round, late, o.At.Sub(held.ExpiresAt))
		if o.At.Before(held.ExpiresAt) || late < 0 {
			t.Fatalf("round %d: the waiter was granted %v before the old lease's expires_at %v", round, -late, held.ExpiresAt)
		}
		if late > 100*time.Millisecond {
			t.Fatalf("round %d: the waiter was granted %v after expires_at, want at most 100ms", round, late)
		}
		if got := o.At.Sub(held.ExpiresAt); got > promptly {
			t.Fatalf("round %d: the waiter's answer arrived %v after expires_at, want at most %v", round, got, promptly)
		}
		wantProblem(t, h.do("GET", "/v1/leases/"+held.ID, ""), limitd.CodeLeaseNotFound)
		wantProblem(t, h.do("POST", "/v1/leases/"+held.ID+"/renew", ""), limitd.CodeLeaseNotFound)
		h.release(next.ID)
	}
}

// An expiry must free the slots by itself (a timer), not only when someone
// looks the lease up; GET /v1/limits/{name} never touches the lease.
func TestExpiryFreesSlotsWithin100msWithoutBeingAsked(t *testing.T) {
	h := newHarness(t)
	h.putLimit("ttl", 2)
	held := h.acquire("ttl", `{"ttl_seconds": 1, "slots": 2}`)
	var freedAt time.Time
	eventually(t, 3*time.Second, func() bool {
		r := h.do("GET", "/v1/limits/ttl", "")
		var l limitd.Limit
		decode(t, r, &l)
		if l.InUse == 0 {
			freedAt = r.At
			return true
		}
		if r.At.After(held.ExpiresAt.Add(100*time.Millisecond + promptly)) {
			t.Fatalf("in_use still %d %v after expires_at", l.InUse, r.At.Sub(held.ExpiresAt))
		}
		return false
	}, "the lease to expire")
	if freedAt.Before(held.ExpiresAt) {
		t.Fatalf("slots freed %v before expires_at", held.ExpiresAt.Sub(freedAt))
	}
	if late := freedAt.Sub(held.ExpiresAt); late > promptly {
		t.Fatalf("slots freed %v after expires_at", late)
	}
}

func TestCapacityRaiseWakesWaitersPromptly(t *testing.T) {
	h := newHarness(t)
	h.putLimit("raise", 1)
	held := h.acquire("raise", "")
	a := h.goAcquire(context.Background(), "raise", `{"holder": "a"}`)
	h.waitQueued("raise", 1)
	b := h.goAcquire(context.Background(), "raise", `{"holder": "b"}`)
	h.waitQueued("raise", 2)

	sent := time.Now()
	r := h.do("PUT", "/v1/limits/raise", `{"capacity": 3}`)
	if r.Status != http.StatusOK {
		t.Fatalf("raising the capacity: %d %s", r.Status, r.Body)
	}
	for _, ch := range []<-chan outcome{a, b} {
		o := await(t, ch, 5*time.Second, "waiter after the raise")
		if o.Status != http.StatusCreated {
			t.Fatalf("waiter: %d %s", o.Status, o.Body)
		}
		if took := o.At.Sub(sent); took > promptly {
			t.Fatalf("a waiter was answered %v after the capacity raise", took)
		}
	}
	if l := h.limit("raise"); l.InUse != 3 || l.Waiting != 0 {
		t.Fatalf("in_use %d waiting %d, want 3 and 0", l.InUse, l.Waiting)
	}
	h.release(held.ID)
}

func TestCapacityZeroPausesTheLimit(t *testing.T) {
	h := newHarness(t)
	h.putLimit("paused", 0)
	// Paused: a try-once gets 423 (not 409, which is for requests that
	// could never fit a capacity above 0), and large requests wait too.
	r := h.do("POST", "/v1/limits/paused/acquire", `{"slots": 5, "wait_seconds": 0}`)
	wantProblem(t, r, limitd.CodeNoSlots)
	if got := r.Header.Get("Retry-After"); got != "0" {
		t.Fatalf("Retry-After %q on a 423, want 0", got)
	}
	small := h.goAcquire(context.Background(), "paused", `{"slots": 1, "wait_seconds": 30}`)
	h.waitQueued("paused", 1)
	large := h.goAcquire(context.Background(), "paused", `{"slots": 5, "wait_seconds": 30}`)
	h.waitQueued("paused", 2)
	if l := h.limit("paused"); l.Capacity != 0 || l.InUse != 0 || l.Waiting != 2 {
		t.Fatalf("paused limit: %+v", l)
	}

	h.putLimit("paused", 6)
	for _, ch := range []<-chan outcome{small, large} {
		if o := await(t, ch, 5*time.Second, "waiter after unpausing"); o.Status != http.StatusCreated {
			t.Fatalf("waiter after unpausing: %d %s", o.Status, o.Body)
		}
	}
	if l := h.limit("paused"); l.InUse != 6 {
		t.Fatalf("in_use %d after unpausing, want 6", l.InUse)
	}
	// Pausing again revokes nothing.
	h.putLimit("paused", 0)
	if l := h.limit("paused"); l.InUse != 6 || len(h.leases("paused")) != 2 {
		t.Fatalf("pausing revoked leases: %+v", l)
	}
}

func TestLoweringCapacityAnswersOversizeWaiters409AndRevokesNothing(t *testing.T) {
	h := newHarness(t)
	h.putLimit("lower", 4)
	var held []limitd.Lease
	for range 3 {
		held = append(held, h.acquire("lower", ""))
	}
	big := h.goAcquire(context.Background(), "lower", `{"slots": 3, "holder": "big"}`)
	h.waitQueued("lower", 1)
	small := h.goAcquire(context.Background(), "lower", `{"slots": 1, "holder": "small"}`)
	h.waitQueued("lower", 2)
	notYet(t, small, "small waiter behind a blocked head")

	sent := time.Now()
	h.putLimit("lower", 2)
	o := await(t, big, 5*time.Second, "oversize waiter after lowering the capacity")
	wantProblem(t, o.reply, limitd.CodeSlotsExceedCapacity, "3", "2")
	if took := o.At.Sub(sent); took > promptly {
		t.Fatalf("the oversize waiter was answered %v after the capacity was lowered", took)
	}
	// Nothing revoked: three slots stay held under a capacity of two, and
	// the small waiter waits until in_use + 1 fits under the new capacity.
	ws := h.waitQueued("lower", 1)
	if ws[0].Holder != "small" {
		t.Fatalf("queue %+v, want the small waiter only", ws)
	}
	if l := h.limit("lower"); l.InUse != 3 || l.Capacity != 2 {
		t.Fatalf("limit after lowering: %+v", l)
	}
	for _, l := range held {
		if r := h.do("GET", "/v1/leases/"+l.ID, ""); r.Status != http.StatusOK {
			t.Fatalf("lease %s after lowering the capacity: %d %s", l.ID, r.Status, r.Body)
		}
	}
	h.release(held[0].ID) // in_use 2: 2+1 does not fit under 2
	h.waitQueued("lower", 1)
	notYet(t, small, "small waiter while in_use equals the new capacity")
	h.release(held[1].ID) // in_use 1: now it fits
	if o := await(t, small, 5*time.Second, "small waiter"); o.Status != http.StatusCreated {
		t.Fatalf("small waiter: %d %s", o.Status, o.Body)
	}
	if l := h.limit("lower"); l.InUse != 2 {
		t.Fatalf("in_use %d, want 2", l.InUse)
	}
}

func TestDeletingLimitAnswersWaiters404AndDropsItsLeases(t *testing.T) {
	h := newHarness(t)
	h.putLimit("doomed", 1)
	held := h.acquire("doomed", "")
	a := h.goAcquire(context.Background(), "doomed", "")
	h.waitQueued("doomed", 1)
	b := h.goAcquire(context.Background(), "doomed", `{"slots": 1}`)
	h.waitQueued("doomed", 2)

	sent := time.Now()
	if r := h.do("DELETE", "/v1/limits/doomed", ""); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", r.Status, r.Body)
	}
	for _, ch := range []<-chan outcome{a, b} {
		o := await(t, ch, 5*time.Second, "waiter of a deleted limit")
		wantProblem(t, o.reply, limitd.CodeLimitNotFound, `"doomed"`)
		if took := o.At.Sub(sent); took > promptly {
			t.Fatalf("a waiter was answered %v after the deletion", took)
		}
	}
	wantProblem(t, h.do("GET", "/v1/limits/doomed", ""), limitd.CodeLimitNotFound)
	wantProblem(t, h.do("GET", "/v1/leases/"+held.ID, ""), limitd.CodeLeaseNotFound)
	wantProblem(t, h.do("DELETE", "/v1/leases/"+held.ID, ""), limitd.CodeLeaseNotFound)
	// A re-created limit starts empty: the old lease holds nothing of it.
	h.putLimit("doomed", 1)
	if l := h.limit("doomed"); l.InUse != 0 || l.Waiting != 0 || len(h.leases("doomed")) != 0 {
		t.Fatalf("re-created limit: %+v", l)
	}
	h.release(h.acquire("doomed", `{"wait_seconds": 0}`).ID)
}

// ---- queue bounds and timeouts --------------------------------------------------

func TestAcquireTimesOutWith423WithinWaitSecondsPlusOne(t *testing.T) {
	h := newHarness(t)
	h.putLimit("busy", 1)
	held := h.acquire("busy", "")
	start := time.Now()
	r := h.do("POST", "/v1/limits/busy/acquire", `{"wait_seconds": 0.3}`)
	took := time.Since(start)
	wantProblem(t, r, limitd.CodeNoSlots, `"busy"`)
	if r.Header.Get("Retry-After") != "0" {
		t.Fatalf("Retry-After %q on a 423, want 0", r.Header.Get("Retry-After"))
	}
	if took < 300*time.Millisecond || took > 1300*time.Millisecond {
		t.Fatalf("a 0.3 s wait answered after %v", took)
	}
	if l := h.limit("busy"); l.Waiting != 0 || l.InUse != 1 {
		t.Fatalf("after the timeout: %+v", l)
	}
	h.release(held.ID)
}

// Waits longer than the server's maximum are clamped to it, however long:
// a long-poll never turns into a try-once. (From about 9.2e9 seconds on, a
// conversion to time.Duration that does not saturate overflows to 0 or
// below before the clamp.)
func TestWaitLongerThanServerMaximumIsClamped(t *testing.T) {
	h := newHarness(t, func(c *daemon.Config) { c.MaxWait = 300 * time.Millisecond })
	h.putLimit("busy", 1)
	h.acquire("busy", "")
	for _, wait := range []string{"3600", "1e9", "1e10", "1e15", "1e308"} {
		start := time.Now()
		r := h.do("POST", "/v1/limits/busy/acquire", `{"wait_seconds": `+wait+`}`)
		took := time.Since(start)
		wantProblem(t, r, limitd.CodeNoSlots)
		if took < 300*time.Millisecond || took > 1300*time.Millisecond {
			t.Errorf("wait_seconds %s with a 0.3 s maximum answered after %v, want 0.3 s", wait, took)
		}
	}
}

func TestFullQueueAnswers503QueueFull(t *testing.T) {
	h := newHarness(t, func(c *daemon.Config) { c.MaxWaiters = 2 })
	h.putLimit("q", 1)
	h.acquire("q", "")
	h.goAcquire(context.Background(), "q", "")
	h.goAcquire(context.Background(), "q", "")
	h.waitQueued("q", 2)
	r := h.do("POST", "/v1/limits/q/acquire", "")
	wantProblem(t, r, limitd.CodeQueueFull, `"q"`)
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("queue_full without Retry-After")
	}
	if l := h.limit("q"); l.Waiting != 2 {
		t.Fatalf("waiting %d, want 2", l.Waiting)
	}
}

// ---- 6. no leaked slot on disconnect ------------------------------------------------

func TestDisconnectedWaiterLeavesQueueWithin1s(t *testing.T) {
	h := newHarness(t)
	h.putLimit("gone", 1)
	held := h.acquire("gone", "")
	ctx, cancel := context.WithCancel(context.Background())
	vanishing := h.goAcquire(ctx, "gone", `{"holder": "vanishing", "wait_seconds": 60}`)
	h.waitQueued("gone", 1)
	staying := h.goAcquire(context.Background(), "gone", `{"holder": "staying", "wait_seconds": 60}`)
	h.waitQueued("gone", 2)

	cancel()
	<-vanishing
	start := time.Now()
	eventually(t, time.Second, func() bool {
		ws := h.waiters("gone")
		return len(ws) == 1 && ws[0].Holder == "staying" && ws[0].Position == 1
	}, "the disconnected waiter to leave the queue")
	t.Logf("the disconnected waiter left the queue within %v", time.Since(start))

	h.release(held.ID)
	if o := await(t, staying, 5*time.Second, "waiter behind the disconnected one"); o.Status != http.StatusCreated {
		t.Fatalf("waiter: %d %s", o.Status, o.Body)
	}
	if l := h.limit("gone"); l.InUse != 1 {
		t.Fatalf("in_use %d, want 1 (only the staying waiter's lease)", l.InUse)
	}
}

// A large head waiter that blocks the queue and then disconnects must let
// the ones behind it through at once, not at the next release.
func TestDisconnectOfBlockingHeadWakesTheOnesBehind(t *testing.T) {
	h := newHarness(t)
	h.putLimit("head", 3)
	h.acquire("head", "")
	ctx, cancel := context.WithCancel(context.Background())
	big := h.goAcquire(ctx, "head", `{"slots": 3}`)
	h.waitQueued("head", 1)
	small := h.goAcquire(context.Background(), "head", `{"slots": 2}`)
	h.waitQueued("head", 2)

	cancel()
	<-big
	if o := await(t, small, time.Second, "waiter behind a disconnected head"); o.Status != http.StatusCreated {
		t.Fatalf("waiter: %d %s", o.Status, o.Body)
	}
	if l := h.limit("head"); l.InUse != 3 || l.Waiting != 0 {
		t.Fatalf("in_use %d waiting %d, want 3 and 0", l.InUse, l.Waiting)
	}
}

// The grant/disconnect race: a client goes away just as a release grants it
// the slot. Whatever the interleaving, the slots held afterwards must be
// exactly those of the leases clients actually received.
//
// The waiter speaks raw HTTP/1.1 and "disconnects" by half-closing its side
// of the connection: the server sees EOF and cancels the request's context,
// exactly as for a vanished client, but a 201 that the server still writes
// reaches the test. (With a full close, a 201 already on the wire would be
// lost in the kernel and the test could not tell a leak from bad luck.)
func TestGrantDisconnectRaceLeavesNoLease(t *testing.T) {
	h := newHarness(t)
	h.putLimit("race", 1)
	u, err := url.Parse(h.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	iterations := 60
	if testing.Short() {
		iterations = 15
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var granted, notGranted int
	for i := range iterations {
		held := h.acquire("race", `{"ttl_seconds": 60}`)
		conn, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		body := `{"wait_seconds": 30, "ttl_seconds": 60, "holder": "racer"}`
		fmt.Fprintf(conn, "POST /v1/limits/race/acquire HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", u.Host, len(body), body)
		h.waitQueued("race", 1)

		// Release and disconnect at nearly the same moment, in a random
		// order and with a random gap of up to 2 ms.
		gap := time.Duration(rng.IntN(2000)) * time.Microsecond
		releaseFirst := rng.IntN(2) == 0
		var wg sync.WaitGroup
		wg.Go(func() {
			if releaseFirst {
				time.Sleep(gap)
			}
			conn.(*net.TCPConn).CloseWrite()
		})
		wg.Go(func() {
			if !releaseFirst {
				time.Sleep(gap)
			}
			r, err := h.try(context.Background(), "DELETE", "/v1/leases/"+held.ID, "")
			if err != nil || r.Status != http.StatusNoContent {
				t.Errorf("release: %v %d %s", err, r.Status, r.Body)
			}
		})
		wg.Wait()

		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		var got *limitd.Lease
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err == nil {
			var rep reply
			rep.Status = resp.StatusCode
			var sb strings.Builder
			_, _ = bufio.NewReader(resp.Body).WriteTo(&sb)
			resp.Body.Close()
			rep.Body = []byte(sb.String())
			if rep.Status == http.StatusCreated {
				l := leaseOf(t, rep)
				got = &l
			}
		}
		conn.Close()

		want := 0
		if got != nil {
			want = 1
			granted++
		} else {
			notGranted++
		}
		// The server may still be giving back a lease nobody received.
		eventually(t, time.Second, func() bool {
			l := h.limit("race")
			return l.InUse == want && l.Waiting == 0
		}, "iteration %d: in_use to equal the %d lease(s) received", i, want)
		if leases := h.leases("race"); len(leases) != want || (got != nil && leases[0].ID != got.ID) {
			t.Fatalf("iteration %d: live leases %+v, received %+v", i, leases, got)
		}
		if got != nil {
			h.release(got.ID)
		}
	}
	t.Logf("%d iterations: %d received the grant, %d did not", iterations, granted, notGranted)
}

// ---- 7. idempotent acquire ---------------------------------------------------------

func TestIdempotentReplayReturnsSameLease(t *testing.T) {
	h := newHarness(t)
	h.putLimit("idem", 2)
	r := h.do("POST", "/v1/limits/idem/acquire", `{"holder": "h"}`, "Idempotency-Key", "job-17")
	if r.Status != http.StatusCreated {
		t.Fatalf("first acquire: %d %s", r.Status, r.Body)
	}
	first := leaseOf(t, r)
	for range 3 {
		r := h.do("POST", "/v1/limits/idem/acquire", `{"holder": "h"}`, "Idempotency-Key", "job-17")
		if r.Status != http.StatusOK {
			t.Fatalf("replay: %d %s, want 200", r.Status, r.Body)
		}
		again := leaseOf(t, r)
		if again.ID != first.ID || again.Fence != first.Fence || again.Slots != first.Slots {
			t.Fatalf("replay returned %+v, want %+v", again, first)
		}
		if loc := r.Header.Get("Location"); loc != "/v1/leases/"+first.ID {
			t.Fatalf("replay Location %q", loc)
		}
	}
	if l := h.limit("idem"); l.InUse != 1 {
		t.Fatalf("in_use %d after replays, want 1", l.InUse)
	}
	// The key is scoped to its limit.
	h.putLimit("other", 1)
	r = h.do("POST", "/v1/limits/other/acquire", "", "Idempotency-Key", "job-17")
	if r.Status != http.StatusCreated || leaseOf(t, r).ID == first.ID {
		t.Fatalf("same key on another limit: %d %s, want a new lease", r.Status, r.Body)
	}
	// Once released, the key grants anew.
	h.release(first.ID)
	r = h.do("POST", "/v1/limits/idem/acquire", "", "Idempotency-Key", "job-17")
	if r.Status != http.StatusCreated || leaseOf(t, r).ID == first.ID {
		t.Fatalf("key of a released lease: %d %s, want a new lease", r.Status, r.Body)
	}
}

// A replay while the first copy is still in flight or queued must not take
// a second slot either: many concurrent copies of one request end in one
// lease.
func TestConcurrentIdempotentCopiesTakeOneLease(t *testing.T) {
	h := newHarness(t)
	h.putLimit("idem", 5)
	var wg sync.WaitGroup
	ids := make(chan string, 10)
	for range 10 {
		wg.Go(func() {
			r, err := h.try(context.Background(), "POST", "/v1/limits/idem/acquire", "", "Idempotency-Key", "once")
			if err != nil {
				t.Error(err)
				return
			}
			if r.Status == http.StatusCreated || r.Status == http.StatusOK {
				var l limitd.Lease
				decode(t, r, &l)
				ids <- l.ID
			}
		})
	}
	wg.Wait()
	close(ids)
	seen := map[string]bool{}
	for id := range ids {
		seen[id] = true
	}
	if len(seen) != 1 {
		t.Fatalf("10 copies of one idempotent acquire got leases %v, want one", seen)
	}
	if l := h.limit("idem"); l.InUse != 1 {
		t.Fatalf("in_use %d, want 1", l.InUse)
	}
}

// A client whose connection dropped retries with the same Idempotency-Key
// while the server is still committing the first request's grant. Whatever
// the interleaving, a lease the retry is answered with must be live: a
// client that is told it holds a slot goes on to use it, so the first
// request must not give the lease back while the retry may still deliver it.
func TestReplayRacingTheOriginalsDisconnectNeverReturnsADeadLease(t *testing.T) {
	h := newHarness(t)
	h.putLimit("retry", 1000)
	u, err := url.Parse(h.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	iterations := 300
	if testing.Short() {
		iterations = 50
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range iterations {
		key := fmt.Sprintf("retry-%d", i)
		// The first copy speaks raw HTTP and half-closes its connection at
		// once (see TestGrantDisconnectRaceLeavesNoLease); the retry comes
		// through the normal client, a few hundred microseconds apart.
		conn, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		retry := h.goAcquire(context.Background(), "retry", "", "Idempotency-Key", key)
		time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
		fmt.Fprintf(conn, "POST /v1/limits/retry/acquire HTTP/1.1\r\nHost: %s\r\nIdempotency-Key: %s\r\nContent-Length: 0\r\n\r\n", u.Host, key)
		time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
		conn.(*net.TCPConn).CloseWrite()
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		var firstGot *limitd.Lease
		if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err == nil {
			var sb strings.Builder
			_, _ = bufio.NewReader(resp.Body).WriteTo(&sb)
			resp.Body.Close()
			if resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusOK {
				var l limitd.Lease
				if decodeErr := jsonUnmarshal(sb.String(), &l); decodeErr == nil && l.ID != "" {
					firstGot = &l
				}
			}
		}
		conn.Close()
		o := await(t, retry, 10*time.Second, "the retry")
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		var received []limitd.Lease
		if firstGot != nil {
			received = append(received, *firstGot)
		}
		if o.Status == http.StatusOK || o.Status == http.StatusCreated {
			l := leaseOf(t, o.reply)
			if r := h.do("GET", "/v1/leases/"+l.ID, ""); r.Status != http.StatusOK {
				t.Fatalf("iteration %d: the retry was answered %d with lease %s, but that lease is not live: %d %s",
					i, o.Status, l.ID, r.Status, r.Body)
			}
			if firstGot == nil || firstGot.ID != l.ID {
				received = append(received, l)
			}
		}
		if lim := h.limit("retry"); lim.InUse != len(received) {
			t.Fatalf("iteration %d: in_use %d, but clients received %d lease(s)", i, lim.InUse, len(received))
		}
		for _, l := range received {
			h.release(l.ID)
		}
	}
}

func TestRepeatedKeyOfWaitingRequestSupersedesItAndKeepsItsPlace(t *testing.T) {
	h := newHarness(t)
	h.putLimit("sup", 1)
	held := h.acquire("sup", "")
	old := h.goAcquire(context.Background(), "sup", `{"holder": "old"}`, "Idempotency-Key", "k1")
	ws := h.waitQueued("sup", 1)
	since := ws[0].WaitingSince
	behind := h.goAcquire(context.Background(), "sup", `{"holder": "behind"}`)
	h.waitQueued("sup", 2)

	newer := h.goAcquire(context.Background(), "sup", `{"holder": "new"}`, "Idempotency-Key", "k1")
	o := await(t, old, 5*time.Second, "the superseded request")
	wantProblem(t, o.reply, limitd.CodeSuperseded, "Idempotency-Key")
	ws = h.waitQueued("sup", 2)
	if ws[0].Holder != "new" || ws[1].Holder != "behind" {
		t.Fatalf("queue %+v, want the new copy in the old one's place, then the one behind", ws)
	}
	if !ws[0].WaitingSince.Equal(since) {
		t.Fatalf("the new copy waits since %v, the old one since %v: it should keep the old place", ws[0].WaitingSince, since)
	}

	h.release(held.ID)
	o = await(t, newer, 5*time.Second, "the superseding request")
	if o.Status != http.StatusCreated {
		t.Fatalf("superseding request: %d %s", o.Status, o.Body)
	}
	notYet(t, behind, "the waiter behind the superseding one")
	granted := leaseOf(t, o.reply)
	if granted.Holder != "new" {
		t.Fatalf("granted %+v, want the new copy's lease", granted)
	}
	// Now granted, the key replays to the same lease.
	r := h.do("POST", "/v1/limits/sup/acquire", "", "Idempotency-Key", "k1")
	if r.Status != http.StatusOK || leaseOf(t, r).ID != granted.ID {
		t.Fatalf("replay after grant: %d %s", r.Status, r.Body)
	}
	h.release(granted.ID)
	if o := await(t, behind, 5*time.Second, "the waiter behind"); o.Status != http.StatusCreated {
		t.Fatalf("waiter behind: %d %s", o.Status, o.Body)
	}
}

func TestIdempotencyKeySurvivesRestart(t *testing.T) {
	h := newHarness(t)
	h.putLimit("idem", 3)
	first := h.acquire("idem", `{"slots": 2, "holder": "h"}`, "Idempotency-Key", "survivor")
	h.restart()
	r := h.do("POST", "/v1/limits/idem/acquire", `{"slots": 2, "holder": "h"}`, "Idempotency-Key", "survivor")
	if r.Status != http.StatusOK {
		t.Fatalf("replay after restart: %d %s, want 200", r.Status, r.Body)
	}
	if again := leaseOf(t, r); again.ID != first.ID || again.Fence != first.Fence {
		t.Fatalf("replay after restart returned %+v, want %+v", again, first)
	}
	if l := h.limit("idem"); l.InUse != 2 {
		t.Fatalf("in_use %d, want 2", l.InUse)
	}
}

// ---- 8. graceful shutdown ------------------------------------------------------

// servertest.Close is the in-process graceful stop: every queued waiter gets
// its 503 shutting_down with Retry-After before its connection closes, and
// the leases are still there after the restart. (It once closed client
// connections right after the drain, and most waiters got EOF instead.)
func TestShutdownAnswersWaiters503AndKeepsLeases(t *testing.T) {
	h := newHarness(t)
	h.putLimit("drain", 2)
	a := h.acquire("drain", `{"holder": "a"}`)
	b := h.acquire("drain", `{"holder": "b", "ttl_seconds": 600}`)
	const n = 10
	var waiters []<-chan outcome
	for i := range n {
		waiters = append(waiters, h.goAcquire(context.Background(), "drain", `{"wait_seconds": 60}`))
		h.waitQueued("drain", i+1)
	}

	closed := make(chan struct{})
	go func() { h.srv.Close(); close(closed) }()
	var failed []string
	for i, ch := range waiters {
		o := await(t, ch, 5*time.Second, "a waiter during shutdown")
		switch {
		case o.Err != nil:
			failed = append(failed, fmt.Sprintf("waiter %d: %v", i, o.Err))
		case o.Status != http.StatusServiceUnavailable || o.Header.Get("Retry-After") == "":
			failed = append(failed, fmt.Sprintf("waiter %d: %d Retry-After %q %s", i, o.Status, o.Header.Get("Retry-After"), o.Body))
		default:
			wantProblem(t, o.reply, limitd.CodeShuttingDown)
		}
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the server did not close within 5 s")
	}
	if len(failed) > 0 {
		t.Errorf("servertest.Close: %d of %d waiters got no 503 shutting_down:\n%s", len(failed), n, strings.Join(failed, "\n"))
	}

	h.srv = servertest.Start(t, h.dir, h.opts...)
	h.hc.CloseIdleConnections()
	h.base = h.srv.URL
	leases := h.leases("drain")
	if len(leases) != 2 || !sameLease(leases[0], a) || !sameLease(leases[1], b) {
		t.Fatalf("leases after restart %+v, want %+v and %+v", leases, a, b)
	}
	if l := h.limit("drain"); l.InUse != 2 || l.Waiting != 0 {
		t.Fatalf("after restart: %+v", l)
	}
}

// The drain itself, without servertest.Close's connection handling: every
// waiter is answered 503 shutting_down with Retry-After, /readyz turns 503,
// new acquires are refused, and leases stay renewable and releasable.
func TestDrainAnswersWaiters503AndRefusesNewAcquires(t *testing.T) {
	h := newHarness(t)
	h.putLimit("drain", 1)
	lease := h.acquire("drain", "")
	var waiters []<-chan outcome
	for i := range 5 {
		waiters = append(waiters, h.goAcquire(context.Background(), "drain", `{"wait_seconds": 60}`))
		h.waitQueued("drain", i+1)
	}
	if r := h.do("GET", "/readyz", ""); r.Status != http.StatusOK {
		t.Fatalf("/readyz before draining: %d", r.Status)
	}
	sent := time.Now()
	h.srv.Daemon.Drain()
	for _, ch := range waiters {
		o := await(t, ch, 5*time.Second, "a waiter during the drain")
		if o.Err != nil {
			t.Fatalf("waiter: %v", o.Err)
		}
		wantProblem(t, o.reply, limitd.CodeShuttingDown)
		if o.Header.Get("Retry-After") == "" {
			t.Fatal("shutting_down without Retry-After")
		}
		if took := o.At.Sub(sent); took > promptly {
			t.Fatalf("a waiter was answered %v after the drain began", took)
		}
	}
	r := h.do("GET", "/readyz", "")
	wantProblem(t, r, limitd.CodeShuttingDown)
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("/readyz 503 without Retry-After")
	}
	if r := h.do("GET", "/healthz", ""); r.Status != http.StatusOK {
		t.Fatalf("/healthz while draining: %d", r.Status)
	}
	r = h.do("POST", "/v1/limits/drain/acquire", `{"wait_seconds": 0}`)
	wantProblem(t, r, limitd.CodeShuttingDown)
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("shutting_down without Retry-After")
	}
	// Leases are kept, and their holders may still renew and release.
	if r := h.do("POST", "/v1/leases/"+lease.ID+"/renew", ""); r.Status != http.StatusOK {
		t.Fatalf("renew while draining: %d %s", r.Status, r.Body)
	}
	h.release(lease.ID)
}

func TestNotReadyUntilStateIsLoaded(t *testing.T) {
	d, err := daemon.Open(context.Background(), daemon.Config{DB: t.TempDir() + "/limitd.db"})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(d.Handler())
	defer func() { hs.Close(); d.Close() }()
	c := newAPIClient(t, hs.URL)
	for _, path := range []string{"/v1/limits", "/v1/limits/x", "/readyz"} {
		r := c.do("GET", path, "")
		wantProblem(t, r, limitd.CodeStarting)
		if r.Header.Get("Retry-After") == "" {
			t.Fatalf("%s: starting without Retry-After", path)
		}
	}
	if r := c.do("GET", "/healthz", ""); r.Status != http.StatusOK {
		t.Fatalf("/healthz while starting: %d", r.Status)
	}
	if _, err := d.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := c.do("GET", "/readyz", ""); r.Status != http.StatusOK {
		t.Fatalf("/readyz after loading: %d %s", r.Status, r.Body)
	}
	if r := c.do("GET", "/v1/limits", ""); r.Status != http.StatusOK {
		t.Fatalf("/v1/limits after loading: %d %s", r.Status, r.Body)
	}
}

// ---- 9. fencing ---------------------------------------------------------------

func TestFencesStrictlyIncreaseAcrossDeleteRecreateAndRestart(t *testing.T) {
	h := newHarness(t)
	var last uint64
	next := func(step string) {
		t.Helper()
		l := h.acquire("fenced", `{"wait_seconds": 0}`)
		if l.Fence <= last {
			t.Fatalf("%s: fence %d, not greater than the earlier %d", step, l.Fence, last)
		}
		last = l.Fence
		h.release(l.ID)
	}
	h.putLimit("fenced", 1)
	for range 3 {
		next("grant")
	}
	// Grants of other limits move the counter too; never backwards.
	h.putLimit("elsewhere", 1)
	h.acquire("elsewhere", "")
	next("grant after another limit's grant")

	if r := h.do("DELETE", "/v1/limits/fenced", ""); r.Status != http.StatusNoContent {
		t.Fatal(r.Status)
	}
	h.putLimit("fenced", 1)
	next("grant after delete and re-create")

	h.restart()
	next("grant after restart")

	// The highest fence was of a released lease: the counter itself is
	// durable, not derived from the live leases.
	if r := h.do("DELETE", "/v1/limits/fenced", ""); r.Status != http.StatusNoContent {
		t.Fatal(r.Status)
	}
	if r := h.do("DELETE", "/v1/limits/elsewhere", ""); r.Status != http.StatusNoContent {
		t.Fatal(r.Status)
	}
	h.restart()
	h.putLimit("fenced", 1)
	next("grant after deleting every limit and restarting")
}

// ---- 5. durability ---------------------------------------------------------------

func TestStateSurvivesRestart(t *testing.T) {
	h := newHarness(t)
	r := h.do("PUT", "/v1/limits/durable", `{"capacity": 5, "default_ttl_seconds": 120, "description": "kept across restarts"}`)
	if r.Status != http.StatusCreated {
		t.Fatalf("PUT: %d %s", r.Status, r.Body)
	}
	var limitBefore limitd.Limit
	decode(t, r, &limitBefore)
	h.putLimit("paused", 0)

	a := h.acquire("durable", `{"slots": 2, "holder": "host-1/pid-7"}`)
	b := h.acquire("durable", `{"ttl_seconds": 300}`)
	renewed := h.do("POST", "/v1/leases/"+b.ID+"/renew", `{"ttl_seconds": 600}`)
	if renewed.Status != http.StatusOK {
		t.Fatalf("renew: %d %s", renewed.Status, renewed.Body)
	}
	b = leaseOf(t, renewed)
	short := h.acquire("durable", `{"ttl_seconds": 1, "holder": "short"}`)
	gone := h.acquire("durable", "")
	h.release(gone.ID)

	h.srv.Close()
	// Let the short lease expire while the server is down.
	for time.Now().Before(short.ExpiresAt.Add(50 * time.Millisecond)) {
		time.Sleep(time.Until(short.ExpiresAt.Add(50 * time.Millisecond)))
	}
	h.srv = servertest.Start(t, h.dir, h.opts...)
	h.hc.CloseIdleConnections()
	h.base = h.srv.URL

	limitAfter := h.limit("durable")
	if limitAfter.Capacity != 5 || limitAfter.DefaultTTLSeconds != 120 || limitAfter.Description != limitBefore.Description ||
		!limitAfter.CreatedAt.Equal(limitBefore.CreatedAt) || limitAfter.InUse != 3 || limitAfter.Waiting != 0 {
		t.Fatalf("limit after restart %+v, before %+v (in_use should be 3)", limitAfter, limitBefore)
	}
	if l := h.limit("paused"); l.Capacity != 0 {
		t.Fatalf("paused limit after restart: %+v", l)
	}
	leases := h.leases("durable")
	if len(leases) != 2 {
		t.Fatalf("leases after restart: %+v, want %s and %s", leases, a.ID, b.ID)
	}
	for i, want := range []limitd.Lease{a, b} {
		if got := leases[i]; !sameLease(got, want) {
			t.Fatalf("lease after restart %+v, before %+v", leases[i], want)
		}
	}
	wantProblem(t, h.do("GET", "/v1/leases/"+short.ID, ""), limitd.CodeLeaseNotFound)
	wantProblem(t, h.do("GET", "/v1/leases/"+gone.ID, ""), limitd.CodeLeaseNotFound)

	r = h.do("POST", "/v1/leases/"+a.ID+"/renew", "")
	if r.Status != http.StatusOK {
		t.Fatalf("renew after restart: %d %s", r.Status, r.Body)
	}
	if got := leaseOf(t, r); !got.ExpiresAt.After(a.ExpiresAt) || got.TTLSeconds != 120 {
		t.Fatalf("renewed after restart: %+v (expiry should move past %v with the lease's own TTL)", got, a.ExpiresAt)
	}
	h.release(a.ID)
	h.release(b.ID)
	if l := h.limit("durable"); l.InUse != 0 {
		t.Fatalf("in_use %d after releasing everything", l.InUse)
	}
	if f := h.acquire("durable", "").Fence; f <= max(a.Fence, b.Fence, short.Fence, gone.Fence) {
		t.Fatalf("fence %d after restart is not above the earlier ones", f)
	}
}

// ---- the rest of the API's contract ------------------------------------------------

func TestAcquireDefaultsAndLocation(t *testing.T) {
	h := newHarness(t)
	h.putLimit("plain", 2)
	r := h.do("POST", "/v1/limits/plain/acquire", "")
	if r.Status != http.StatusCreated {
		t.Fatalf("empty-body acquire: %d %s", r.Status, r.Body)
	}
	l := leaseOf(t, r)
	if l.Slots != 1 || l.TTLSeconds != 60 || l.Limit != "plain" || len(l.ID) != 26 || l.Fence == 0 {
		t.Fatalf("defaults: %+v", l)
	}
	if got := l.ExpiresAt.Sub(l.AcquiredAt); got != 60*time.Second {
		t.Fatalf("expires_at - acquired_at = %v, want 60s", got)
	}
	if loc := r.Header.Get("Location"); loc != "/v1/leases/"+l.ID {
		t.Fatalf("Location %q", loc)
	}
	if r := h.do("GET", "/v1/leases/"+l.ID, ""); r.Status != http.StatusOK || !sameLease(leaseOf(t, r), l) {
		t.Fatalf("GET lease: %d %s, want %+v", r.Status, r.Body, l)
	}
	// A limit's own default TTL applies, and responses show it.
	r = h.do("PUT", "/v1/limits/plain", `{"capacity": 2, "default_ttl_seconds": 7.5}`)
	if r.Status != http.StatusOK {
		t.Fatalf("replace: %d %s", r.Status, r.Body)
	}
	if l2 := h.acquire("plain", ""); l2.TTLSeconds != 7.5 {
		t.Fatalf("lease under a 7.5 s default: %+v", l2)
	}
}

func TestPutLimitCreatesThenReplaces(t *testing.T) {
	h := newHarness(t)
	r := h.do("PUT", "/v1/limits/api", `{"capacity": 3}`)
	if r.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	var created limitd.Limit
	decode(t, r, &created)
	if created.Name != "api" || created.Capacity != 3 || created.DefaultTTLSeconds != 60 || created.InUse != 0 ||
		created.Waiting != 0 || created.CreatedAt.IsZero() || created.CreatedAt.Location() != time.UTC {
		t.Fatalf("created %+v", created)
	}
	h.acquire("api", "")
	r = h.do("PUT", "/v1/limits/api", `{"capacity": 5, "description": "five"}`)
	if r.Status != http.StatusOK {
		t.Fatalf("replace: %d %s", r.Status, r.Body)
	}
	var replaced limitd.Limit
	decode(t, r, &replaced)
	if replaced.Capacity != 5 || replaced.Description != "five" || replaced.InUse != 1 ||
		!replaced.CreatedAt.Equal(created.CreatedAt) || replaced.UpdatedAt.Before(created.UpdatedAt) {
		t.Fatalf("replaced %+v, created %+v", replaced, created)
	}
}

func TestListsAreSortedByNameInByteOrder(t *testing.T) {
	h := newHarness(t)
	names := []string{"b", "B", "a:x", "a", "A_1", "0", "a.b", "Z-z"}
	for _, n := range names {
		h.putLimit(n, 1)
	}
	var list limitd.LimitList
	decode(t, h.do("GET", "/v1/limits", ""), &list)
	var got []string
	for _, l := range list.Limits {
		got = append(got, l.Name)
	}
	want := slices.Clone(names)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("limits listed as %q, want %q", got, want)
	}
	// Leases are listed oldest first.
	h.putLimit("many", 10)
	var ids []string
	for range 5 {
		ids = append(ids, h.acquire("many", "").ID)
	}
	var leaseIDs []string
	for _, l := range h.leases("many") {
		leaseIDs = append(leaseIDs, l.ID)
	}
	if !slices.Equal(leaseIDs, ids) {
		t.Fatalf("leases listed as %q, want oldest first %q", leaseIDs, ids)
	}
	// Empty lists are [] rather than null.
	h.putLimit("empty", 1)
	for _, path := range []string{"/v1/limits/empty/leases", "/v1/limits/empty/waiters"} {
		if body := string(h.do("GET", path, "").Body); strings.Contains(body, "null") {
			t.Fatalf("%s: %s, want an empty array", path, body)
		}
	}
}

func TestRenewMovesExpiryAndMayShortenIt(t *testing.T) {
	h := newHarness(t)
	h.putLimit("renew", 1)
	l := h.acquire("renew", `{"ttl_seconds": 2}`)

	before := time.Now()
	r := h.do("POST", "/v1/leases/"+l.ID+"/renew", `{"ttl_seconds": 600}`)
	if r.Status != http.StatusOK {
		t.Fatalf("renew: %d %s", r.Status, r.Body)
	}
	longer := leaseOf(t, r)
	if longer.TTLSeconds != 600 || longer.ExpiresAt.Before(before.Add(600*time.Second-time.Second)) ||
		longer.ID != l.ID || longer.Fence != l.Fence || !longer.AcquiredAt.Equal(l.AcquiredAt) {
		t.Fatalf("renewed %+v, from %+v", longer, l)
	}
	// Without a body, the lease's own (new) TTL.
	r = h.do("POST", "/v1/leases/"+l.ID+"/renew", "")
	if r.Status != http.StatusOK || leaseOf(t, r).TTLSeconds != 600 {
		t.Fatalf("renew without a body: %d %s", r.Status, r.Body)
	}
	// Shorter: the lease now expires in 1 s, and a waiter gets it then.
	r = h.do("POST", "/v1/leases/"+l.ID+"/renew", `{"ttl_seconds": 1}`)
	if r.Status != http.StatusOK {
		t.Fatalf("shortening renew: %d %s", r.Status, r.Body)
	}
	shorter := leaseOf(t, r)
	if !shorter.ExpiresAt.Before(longer.ExpiresAt) {
		t.Fatalf("shortened expiry %v not before %v", shorter.ExpiresAt, longer.ExpiresAt)
	}
	w := h.goAcquire(context.Background(), "renew", `{"wait_seconds": 10}`)
	o := await(t, w, 5*time.Second, "waiter after a shortened lease expires")
	if o.Status != http.StatusCreated {
		t.Fatalf("waiter: %d %s", o.Status, o.Body)
	}
	if got := leaseOf(t, o.reply); got.AcquiredAt.Before(shorter.ExpiresAt) {
		t.Fatalf("granted at %v, before the shortened expiry %v", got.AcquiredAt, shorter.ExpiresAt)
	}
}

// A lease that is renewed keeps its slot past its first expires_at.
func TestRenewedLeaseOutlivesItsFirstExpiry(t *testing.T) {
	h := newHarness(t)
	h.putLimit("keep", 1)
	l := h.acquire("keep", `{"ttl_seconds": 1}`)
	r := h.do("POST", "/v1/leases/"+l.ID+"/renew", `{"ttl_seconds": 3}`)
	if r.Status != http.StatusOK {
		t.Fatalf("renew: %d %s", r.Status, r.Body)
	}
	// A waiter during the old expiry must not be granted.
	start := time.Now()
	o := h.do("POST", "/v1/limits/keep/acquire", `{"wait_seconds": 1.2}`)
	wantProblem(t, o, limitd.CodeNoSlots)
	if time.Since(start) < time.Second {
		t.Fatalf("the waiter gave up early")
	}
	if got := h.do("GET", "/v1/leases/"+l.ID, ""); got.Status != http.StatusOK {
		t.Fatalf("renewed lease after its first expiry: %d %s", got.Status, got.Body)
	}
}

// sameLease compares every field, times by instant.
func sameLease(a, b limitd.Lease) bool {
	return a.ID == b.ID && a.Limit == b.Limit && a.Slots == b.Slots && a.Holder == b.Holder && a.Fence == b.Fence &&
		a.AcquiredAt.Equal(b.AcquiredAt) && a.ExpiresAt.Equal(b.ExpiresAt) && a.TTLSeconds == b.TTLSeconds
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
