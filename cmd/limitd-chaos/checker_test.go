package main

import (
	"strings"
	"testing"
	"time"
)

// A checker that cannot fail is worthless: each test feeds it a small
// history with one known violation and checks that it is reported, and a
// near-identical history without it and checks that it is not.

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// created is a limit's creation with capacity c, answered by 1 ms.
func created(limit string, c int) AdminOp {
	return AdminOp{Limit: limit, Capacity: c, Sent: 0, Received: ms(1), Outcome: OK}
}

// granted is a lease of one slot, asked for at started and received 5 ms
// later, expiring 5 s after that.
func granted(limit, id string, fence uint64, started int) Grant {
	return Grant{Limit: limit, LeaseID: id, Fence: fence, Slots: 1, Started: ms(started),
		Received: ms(started + 5), ExpiresAt: ms(started + 5005)}
}

func released(id string, at int) LeaseOp {
	return LeaseOp{Kind: OpRelease, LeaseID: id, Sent: ms(at), Received: ms(at + 1), Outcome: OK}
}

func drained(at int) []Final {
	return []Final{{At: ms(at), InUse: map[string]int{"a": 0}, Waits: map[string]int{"a": 0}}}
}

func check(t *testing.T, h History) Verdict {
	t.Helper()
	return Check(h, DefaultCheckConfig())
}

// expect checks the count of kind and that nothing else was reported.
func expect(t *testing.T, v Verdict, kind Kind, n int) {
	t.Helper()
	for _, k := range Kinds() {
		want := 0
		if k == kind {
			want = n
		}
		if v.Counts[k] != want {
			t.Errorf("%s: got %d violations, want %d; examples: %q", k, v.Counts[k], want, v.Examples[k])
		}
	}
}

func TestCheckerPassesACleanHistory(t *testing.T) {
	h := History{
		Admin:  []AdminOp{created("a", 2)},
		Grants: []Grant{granted("a", "L1", 1, 10), granted("a", "L2", 2, 20), granted("a", "L3", 3, 40)},
		// L3 was asked for after L1's release was sent.
		Ops: []LeaseOp{
			released("L1", 30),
			{Kind: OpRenew, LeaseID: "L2", Sent: ms(1000), Received: ms(1002), Outcome: OK, Fence: 2, ExpiresAt: ms(4000), TTL: 3 * time.Second},
			{Kind: OpGet, LeaseID: "L2", Sent: ms(3000), Received: ms(3001), Outcome: OK, Fence: 2, ExpiresAt: ms(4000)},
			released("L2", 3500),
		},
		Finals: drained(9000),
	}
	v := check(t, h)
	expect(t, v, "", 0)
	if !v.OK() || v.Leases != 3 || v.Checked != 4 || v.FullAtGrant != 2 {
		t.Errorf("verdict %+v: want OK with 3 leases, 4 answers checked, 2 grants at exact capacity", v)
	}
}

func TestCheckerReportsOverAdmission(t *testing.T) {
	h := History{
		Admin:  []AdminOp{created("a", 2)},
		Grants: []Grant{granted("a", "L1", 1, 10), granted("a", "L2", 2, 20), granted("a", "L3", 3, 40)},
		Finals: drained(9000),
	}
	v := check(t, h)
	expect(t, v, OverAdmission, 1)
	if ex := v.Examples[OverAdmission]; len(ex) != 1 || !strings.Contains(ex[0], "L3") {
		t.Errorf("example %q should name the third lease", ex)
	}

	// The same grants, but L1's release was sent before L3 was asked for.
	h.Ops = []LeaseOp{released("L1", 30)}
	expect(t, check(t, h), "", 0)

	// A release sent after L3 was received does not excuse it.
	h.Ops = []LeaseOp{released("L1", 50)}
	expect(t, check(t, h), OverAdmission, 1)

	// Nor does an expiry after it; an expiry before it does.
	h.Ops = nil
	h.Grants[0].ExpiresAt = ms(80)
	expect(t, check(t, h), OverAdmission, 1)
	h.Grants[0].ExpiresAt = ms(30)
	expect(t, check(t, h), "", 0)
}

func TestCheckerCountsSlotsNotLeases(t *testing.T) {
	two := granted("a", "L2", 2, 20)
	two.Slots = 2
	h := History{
		Admin:  []AdminOp{created("a", 2)},
		Grants: []Grant{granted("a", "L1", 1, 10), two},
		Finals: drained(9000),
	}
	expect(t, check(t, h), OverAdmission, 1)
}

// Lowering the capacity revokes nothing: leases granted before it stay,
// and only a grant asked for after the lowering was answered must fit
// under the new capacity.
func TestCheckerLoweringRevokesNothing(t *testing.T) {
	lower := AdminOp{Limit: "a", Capacity: 1, Sent: ms(100), Received: ms(110), Outcome: OK}
	h := History{
		Admin:  []AdminOp{created("a", 3), lower},
		Grants: []Grant{granted("a", "L1", 1, 10), granted("a", "L2", 2, 20)},
		Finals: drained(9000),
	}
	expect(t, check(t, h), "", 0)

	// Asked for while the lowering was in flight: the old capacity may
	// still have been in force when it was granted.
	h.Grants = append(h.Grants, granted("a", "L3", 3, 105))
	expect(t, check(t, h), "", 0)

	// Asked for after the lowering was answered: 3 held > 1.
	h.Grants = append(h.Grants, granted("a", "L4", 4, 120))
	v := check(t, h)
	expect(t, v, OverAdmission, 1)
	if ex := v.Examples[OverAdmission]; len(ex) != 1 || !strings.Contains(ex[0], "L4") || !strings.Contains(ex[0], "capacity at most 1") {
		t.Errorf("example %q should name L4 and capacity 1", ex)
	}

	// With L1 and L2 released before L4 was asked for, L3 and L4 make 2 > 1:
	// still a violation, since L3 was certainly held when L4 was granted.
	h.Ops = []LeaseOp{released("L1", 115), released("L2", 116)}
	expect(t, check(t, h), OverAdmission, 1)
	// With L3 also released, L4 alone fits.
	h.Ops = append(h.Ops, released("L3", 117))
	expect(t, check(t, h), "", 0)
}

// A capacity change whose answer was lost may or may not be in force until
// the next definitive one: the larger capacity is the one that counts.
func TestCheckerUnknownCapacityChangeKeepsBothPossible(t *testing.T) {
	raise := AdminOp{Limit: "a", Capacity: 3, Sent: ms(100), Received: ms(110), Outcome: Unknown}
	h := History{
		Admin:  []AdminOp{created("a", 1), raise},
		Grants: []Grant{granted("a", "L1", 1, 10), granted("a", "L2", 2, 200), granted("a", "L3", 3, 300)},
		Finals: drained(9000),
	}
	expect(t, check(t, h), "", 0)
	h.Admin[1].Outcome = OK
	h.Admin[1].Capacity = 2
	expect(t, check(t, h), OverAdmission, 1)
}

// Deleting a limit ends its leases; a lease whose acquire raced the
// deletion may belong to either incarnation and is not counted unless it
// was seen live after the deletion.
func TestCheckerDeletionEndsLeases(t *testing.T) {
	del := AdminOp{Limit: "a", Delete: true, Sent: ms(100), Received: ms(105), Outcome: OK}
	recreate := AdminOp{Limit: "a", Capacity: 1, Sent: ms(110), Received: ms(115), Outcome: OK}
	h := History{
		Admin: []AdminOp{created("a", 1), del, recreate},
		// L2 was asked for before the deletion was answered and received
		// after it was sent: it may have been removed by it.
		Grants: []Grant{granted("a", "L1", 1, 10), granted("a", "L2", 2, 98), granted("a", "L3", 3, 120)},
		Finals: drained(9000),
	}
	expect(t, check(t, h), "", 0)

	// L2 renewed after the deletion: it belongs to the new limit, and L3
	// makes two leases of a capacity of 1.
	h.Ops = []LeaseOp{{Kind: OpRenew, LeaseID: "L2", Sent: ms(116), Received: ms(117), Outcome: OK, Fence: 2, ExpiresAt: ms(5000), TTL: 5 * time.Second}}
	expect(t, check(t, h), OverAdmission, 1)

	// A 404 for a lease of a deleted limit is not a lost lease.
	h.Ops = []LeaseOp{{Kind: OpGet, LeaseID: "L1", Sent: ms(200), Received: ms(201), Outcome: NotFound}}
	expect(t, check(t, h), "", 0)
}

func TestCheckerReportsLostLease(t *testing.T) {
	get := LeaseOp{Kind: OpGet, LeaseID: "L1", Sent: ms(1000), Received: ms(1001), Outcome: NotFound}
	h := History{
		Admin:  []AdminOp{created("a", 1)},
		Grants: []Grant{granted("a", "L1", 1, 10)},
		Ops:    []LeaseOp{get},
		Finals: drained(9000),
	}
	v := check(t, h)
	expect(t, v, LostLease, 1)
	if ex := v.Examples[LostLease]; len(ex) != 1 || !strings.Contains(ex[0], "L1") {
		t.Errorf("example %q should name L1", ex)
	}

	t.Run("ReleasedFirst", func(t *testing.T) {
		h := h
		h.Ops = []LeaseOp{released("L1", 500), get}
		expect(t, check(t, h), "", 0)
	})
	t.Run("Expired", func(t *testing.T) {
		h := h
		late := get
		late.Sent, late.Received = ms(5010), ms(5011)
		h.Ops = []LeaseOp{late}
		expect(t, check(t, h), "", 0)
	})
	t.Run("RenewShortenedIt", func(t *testing.T) {
		// A renew whose answer was lost may have set the expiry to 1 s
		// after it was sent.
		h := h
		renew := LeaseOp{Kind: OpRenew, LeaseID: "L1", Sent: ms(100), Received: ms(150), Outcome: Unknown, TTL: time.Second}
		later := get
		later.Sent, later.Received = ms(1500), ms(1501)
		h.Ops = []LeaseOp{renew, later}
		expect(t, check(t, h), "", 0)
		// But not if its TTL would have kept it past the 404.
		renew.TTL = 2 * time.Second
		h.Ops = []LeaseOp{renew, later}
		expect(t, check(t, h), LostLease, 1)
	})
	t.Run("RenewExtendedIt", func(t *testing.T) {
		h := h
		renew := LeaseOp{Kind: OpRenew, LeaseID: "L1", Sent: ms(4000), Received: ms(4001), Outcome: OK, Fence: 1, ExpiresAt: ms(9000), TTL: 5 * time.Second}
		late := get
		late.Sent, late.Received = ms(6000), ms(6001)
		h.Ops = []LeaseOp{renew, late}
		expect(t, check(t, h), LostLease, 1)
	})
	t.Run("AnsweredAfterExpiry", func(t *testing.T) {
		// Sent before the expiry but answered after it: the server may
		// have handled it after the lease expired.
		h := h
		slow := get
		slow.Sent, slow.Received = ms(5000), ms(5020)
		h.Ops = []LeaseOp{slow}
		expect(t, check(t, h), "", 0)
	})
}

func TestCheckerReportsLeaseLostAcrossCrash(t *testing.T) {
	h := History{
		Admin:   []AdminOp{created("a", 1)},
		Grants:  []Grant{granted("a", "L1", 1, 10), granted("a", "L2", 2, 20)},
		Crashes: []Crash{{Killed: ms(500), Ready: ms(800)}},
		Ops: []LeaseOp{
			{Kind: OpRenew, LeaseID: "L1", Sent: ms(900), Received: ms(901), Outcome: NotFound, TTL: time.Second},
			{Kind: OpGet, LeaseID: "L2", Sent: ms(900), Received: ms(901), Outcome: OK, Fence: 2, ExpiresAt: ms(5025)},
		},
		Finals: drained(9000),
	}
	// L2 was granted while L1 was held: an over-admission too, unless L1
	// is known to be lost (the server forgot it and gave its slot away);
	// then only the lost lease is reported.
	v := check(t, h)
	expect(t, v, LostLease, 1)
	if ex := v.Examples[LostLease]; len(ex) != 1 || !strings.Contains(ex[0], "before the crash") {
		t.Errorf("example %q should say the lease was acknowledged before the crash", ex)
	}
	if v.AcrossCrash != 1 {
		t.Errorf("AcrossCrash = %d, want 1 (L2)", v.AcrossCrash)
	}
}

func TestCheckerReportsFenceRegression(t *testing.T) {
	h := History{
		Admin:  []AdminOp{created("a", 5)},
		Grants: []Grant{granted("a", "L1", 5, 10), granted("a", "L2", 3, 20)},
		Finals: drained(9000),
	}
	// L2 was asked for at 20 ms, after L1's grant arrived at 15 ms.
	v := check(t, h)
	expect(t, v, Fence, 1)
	if ex := v.Examples[Fence]; len(ex) != 1 || !strings.Contains(ex[0], "L2") {
		t.Errorf("example %q should name L2", ex)
	}

	// Concurrent requests may be granted in either order.
	h.Grants[1].Started = ms(12)
	expect(t, check(t, h), "", 0)

	// But never with the same fence,
	h.Grants[1].Fence = 5
	expect(t, check(t, h), Fence, 1)

	// nor across a deletion and re-creation of the limit (other limits
	// have fences of their own).
	h.Grants[1] = granted("a", "L2", 3, 200)
	h.Admin = append(h.Admin, created("b", 1),
		AdminOp{Limit: "a", Delete: true, Sent: ms(100), Received: ms(101), Outcome: OK},
		AdminOp{Limit: "a", Capacity: 5, Sent: ms(102), Received: ms(103), Outcome: OK})
	h.Grants = append(h.Grants, granted("b", "M1", 1, 300))
	expect(t, check(t, h), Fence, 1)
}

func TestCheckerReportsChangedFence(t *testing.T) {
	h := History{
		Admin:  []AdminOp{created("a", 1)},
		Grants: []Grant{granted("a", "L1", 7, 10)},
		Ops:    []LeaseOp{{Kind: OpRenew, LeaseID: "L1", Sent: ms(900), Received: ms(901), Outcome: OK, Fence: 8, ExpiresAt: ms(3000), TTL: 2 * time.Second}},
		Finals: drained(9000),
	}
	expect(t, check(t, h), Fence, 1)
	replay := granted("a", "L1", 9, 50)
	replay.Replay = true
	h.Ops[0].Fence = 7
	h.Grants = append(h.Grants, replay)
	expect(t, check(t, h), Fence, 1)
}

func TestCheckerReportsStuckWaiter(t *testing.T) {
	sample := func(at, inUse, headSlots int, holder string) Sample {
		return Sample{Limit: "a", At: ms(at), OK: true, Capacity: 3, InUse: inUse, Waiting: 1,
			HasHead: true, HeadSlots: headSlots, HeadHolder: holder, HeadSince: "2026-01-01T00:00:00Z"}
	}
	h := History{
		Admin:   []AdminOp{created("a", 3)},
		Samples: []Sample{sample(0, 1, 1, "w1"), sample(250, 1, 1, "w1"), sample(500, 1, 1, "w1")},
		Finals:  drained(9000),
	}
	v := check(t, h)
	expect(t, v, StuckWaiter, 1) // one waiter, reported once
	if ex := v.Examples[StuckWaiter]; len(ex) != 1 || !strings.Contains(ex[0], "w1") {
		t.Errorf("example %q should name w1", ex)
	}

	// A different head each time is a queue that moves.
	h.Samples = []Sample{sample(0, 1, 1, "w1"), sample(250, 1, 1, "w2")}
	expect(t, check(t, h), "", 0)
	// A head that does not fit is waiting rightly (FIFO).
	h.Samples = []Sample{sample(0, 2, 2, "w1"), sample(250, 2, 2, "w1")}
	expect(t, check(t, h), "", 0)
	// One sample with room is a transient (a grant in progress).
	h.Samples = []Sample{sample(0, 1, 1, "w1"), sample(250, 2, 2, "w1")}
	v = check(t, h)
	expect(t, v, "", 0)
	if v.Transients != 1 {
		t.Errorf("Transients = %d, want 1", v.Transients)
	}
	// A failed read between breaks the chain.
	h.Samples = []Sample{sample(0, 1, 1, "w1"), {Limit: "a", At: ms(250)}, sample(500, 1, 1, "w1")}
	expect(t, check(t, h), "", 0)
}

func TestCheckerReportsNotDrained(t *testing.T) {
	h := History{
		Admin:     []AdminOp{created("a", 3)},
		QuiesceBy: ms(8000),
		Finals:    []Final{{At: ms(8100), InUse: map[string]int{"a": 1, "b": 0}, Waits: map[string]int{"a": 0, "b": 0}}},
	}
	expect(t, check(t, h), NotDrained, 1)
	h.Finals[0].InUse["a"] = 0
	h.Finals[0].Waits["b"] = 1
	expect(t, check(t, h), NotDrained, 1)
	h.Finals[0].Waits["b"] = 0
	expect(t, check(t, h), "", 0)
	h.Finals = nil
	expect(t, check(t, h), NotDrained, 1)
}

func TestCheckerReportsIdempotencyViolation(t *testing.T) {
	first := granted("a", "L1", 1, 10)
	first.Key = "k"
	retry := granted("a", "L2", 2, 100)
	retry.Key = "k"
	h := History{
		Admin:  []AdminOp{created("a", 5)},
		Grants: []Grant{first, retry},
		Finals: drained(9000),
	}
	v := check(t, h)
	expect(t, v, Idempotency, 1)
	if ex := v.Examples[Idempotency]; len(ex) != 1 || !strings.Contains(ex[0], "L1") || !strings.Contains(ex[0], "L2") {
		t.Errorf("example %q should name both leases", ex)
	}

	// The same lease back is what a replay must give.
	same := first
	same.Started, same.Received, same.Replay = ms(100), ms(105), true
	h.Grants = []Grant{first, same}
	expect(t, check(t, h), "", 0)

	// After a release the key may take a new lease.
	h.Grants = []Grant{first, retry}
	h.Ops = []LeaseOp{released("L1", 50)}
	expect(t, check(t, h), "", 0)
}
