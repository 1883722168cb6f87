package main

import (
	"fmt"
	"math"
	"sort"
	"time"
)

// The checker judges a History against the guarantees of SPEC.md using only
// what clients observed. Every rule errs on one side: a lease is counted as
// held only while it certainly was (from the receipt of its grant until the
// first release was sent, its last known expiry, or a deletion of its limit
// that may have removed it), and a capacity is the largest one that may have
// been in force. So any violation it reports is one the server really
// committed; a violation it cannot prove it does not report.

// Kind is a kind of violation.
type Kind string

// The kinds of violation, one per checked guarantee.
const (
	// OverAdmission: more slots were held at once than any capacity that
	// could have been in force at the last of those grants (guarantee 1).
	OverAdmission Kind = "over_admission"
	// LostLease: a lease that was acknowledged, not released, not expired
	// and whose limit was not deleted was answered 404 (guarantees 4, 5).
	LostLease Kind = "lost_lease"
	// Fence: two leases of a limit share a fence, a lease's fence changed,
	// or a grant requested after another was received has a smaller fence
	// (guarantee 9).
	Fence Kind = "fence"
	// StuckWaiter: the same head waiter was queued in two samples at least
	// StuckGap apart while its slots were free in both (guarantees 2, 3).
	StuckWaiter Kind = "stuck_waiter"
	// NotDrained: slots were in use or waiters queued after every client
	// had stopped and every lease had had time to expire (guarantees 4, 6).
	NotDrained Kind = "not_drained"
	// Idempotency: a retry with the Idempotency-Key of a lease that was
	// certainly live got a different lease (guarantee 7).
	Idempotency Kind = "idempotency"
)

// Kinds lists every kind in report order.
func Kinds() []Kind {
	return []Kind{OverAdmission, LostLease, Fence, StuckWaiter, NotDrained, Idempotency}
}

// CheckConfig tunes the checker.
type CheckConfig struct {
	// Tolerance is subtracted from every expires_at the server announced
	// before the checker relies on it: the server's and the clients' reads
	// of the same wall clock are a few microseconds apart, and a lease
	// restored after a restart gets a deadline recomputed from it.
	Tolerance time.Duration
	// StuckGap is the least time between the two samples that show a waiter
	// left waiting while its slots were free.
	StuckGap time.Duration
	// Examples is how many violations of each kind are described.
	Examples int
}

// DefaultCheckConfig is the configuration of a chaos run.
func DefaultCheckConfig() CheckConfig {
	return CheckConfig{Tolerance: 25 * time.Millisecond, StuckGap: 200 * time.Millisecond, Examples: 5}
}

// Verdict is the checker's result.
type Verdict struct {
	Counts   map[Kind]int
	Examples map[Kind][]string
	// Leases is the number of distinct leases granted, Checked the lease
	// requests (renew, get, release) whose answers were judged.
	Leases  int
	Checked int
	// AcrossCrash is the number of leases acknowledged before a crash and
	// seen live (with their fence) after the restart: evidence that the
	// durability check was not vacuous.
	AcrossCrash int
	// Samples is the number of successful queue samples, Transients the
	// samples that showed a head waiter with room for it (a grant in
	// progress) without the next one showing it still there.
	Samples    int
	Transients int
	// FullAtGrant is the number of grants after which the slots certainly
	// held were exactly the capacity: the over-admission check was tight
	// there, one slot more would have been reported.
	FullAtGrant int
}

// OK reports whether no violation was found.
func (v Verdict) OK() bool {
	for _, n := range v.Counts {
		if n > 0 {
			return false
		}
	}
	return true
}

func (v *Verdict) add(cfg CheckConfig, k Kind, format string, args ...any) {
	v.Counts[k]++
	if len(v.Examples[k]) < cfg.Examples {
		v.Examples[k] = append(v.Examples[k], fmt.Sprintf(format, args...))
	}
}

// lease is the checker's model of one lease, from all its observations.
type lease struct {
	id, limit, holder string
	fence             uint64
	slots             int
	started, received time.Duration
	expires           time.Duration // from the first grant received
	grants            []Grant
	ops               []LeaseOp // by send time
	// end is when the lease certainly stopped being held, as far as the
	// clients know; [received, end) is when it certainly was held.
	end  time.Duration
	lost bool
}

const forever = time.Duration(math.MaxInt64)

// Check judges h.
func Check(h History, cfg CheckConfig) Verdict {
	v := Verdict{Counts: make(map[Kind]int), Examples: make(map[Kind][]string)}
	for _, k := range Kinds() {
		v.Counts[k] = 0
	}
	leases, byLimit := buildLeases(h, cfg, &v)
	v.Leases = len(leases)
	deletes := make(map[string][]AdminOp)
	for _, a := range h.Admin {
		if a.Delete {
			deletes[a.Limit] = append(deletes[a.Limit], a)
		}
	}
	checkLost(leases, deletes, h.Crashes, cfg, &v)
	for _, l := range leases {
		l.end = modelEnd(l, deletes[l.limit], cfg)
	}
	checkOverAdmission(byLimit, capacityTimelines(h.Admin), cfg, &v)
	checkFences(byLimit, cfg, &v)
	checkIdempotency(h.Grants, leases, deletes, cfg, &v)
	checkStuck(h.Samples, cfg, &v)
	checkDrained(h, cfg, &v)
	return v
}

func buildLeases(h History, cfg CheckConfig, v *Verdict) (map[string]*lease, map[string][]*lease) {
	leases := make(map[string]*lease)
	byLimit := make(map[string][]*lease)
	grants := append([]Grant(nil), h.Grants...)
	sort.SliceStable(grants, func(i, j int) bool { return grants[i].Received < grants[j].Received })
	for _, g := range grants {
		l := leases[g.LeaseID]
		if l == nil {
			l = &lease{id: g.LeaseID, limit: g.Limit, holder: g.Holder, fence: g.Fence, slots: g.Slots,
				started: g.Started, received: g.Received, expires: g.ExpiresAt}
			leases[g.LeaseID] = l
			byLimit[g.Limit] = append(byLimit[g.Limit], l)
		} else if g.Fence != l.fence {
			v.add(cfg, Fence, "lease %s: granted with fence %d at %s, replayed with fence %d at %s",
				l.id, l.fence, secs(l.received), g.Fence, secs(g.Received))
		}
		l.started = min(l.started, g.Started)
		l.grants = append(l.grants, g)
	}
	for _, o := range h.Ops {
		if l := leases[o.LeaseID]; l != nil {
			l.ops = append(l.ops, o)
		}
	}
	for _, l := range leases {
		sort.SliceStable(l.ops, func(i, j int) bool { return l.ops[i].Sent < l.ops[j].Sent })
	}
	return leases, byLimit
}

// certainExpiry is the earliest the lease may expire as seen by a request
// sent at sent and answered at recv, excluding the request itself (skip).
// A renew answered before sent fixed the expiry; one that overlaps the
// request may have been handled on either side of it; one whose answer was
// lost may have set it to at least its send plus its TTL.
func (l *lease) certainExpiry(sent, recv time.Duration, skip *LeaseOp) time.Duration {
	exp := l.expires
	for i := range l.ops {
		r := &l.ops[i]
		if r == skip || r.Kind != OpRenew || r.Sent >= recv {
			continue
		}
		switch r.Outcome {
		case OK:
			if r.Received <= sent {
				exp = r.ExpiresAt
			} else {
				exp = min(exp, r.ExpiresAt)
			}
		case Unknown:
			exp = min(exp, r.Sent+r.TTL)
		}
	}
	return exp
}

// releasedBefore reports whether a release other than skip was sent before t.
func (l *lease) releasedBefore(t time.Duration, skip *LeaseOp) bool {
	for i := range l.ops {
		r := &l.ops[i]
		if r != skip && r.Kind == OpRelease && r.Sent < t {
			return true
		}
	}
	return false
}

// survived reports whether the lease was seen live after the deletion d
// finished, so d did not remove it (it belongs to the limit re-created
// after d).
func (l *lease) survived(d AdminOp) bool {
	for _, o := range l.ops {
		if o.Outcome == OK && o.Sent > d.Received {
			return true
		}
	}
	for _, g := range l.grants {
		if g.Started > d.Received {
			return true
		}
	}
	return false
}

// killedBefore returns the earliest send of a deletion of the lease's limit
// that may have removed the lease and was sent before t.
func (l *lease) killedBefore(t time.Duration, deletes []AdminOp) (time.Duration, bool) {
	at, found := forever, false
	for _, d := range deletes {
		// A deletion that finished before the lease was asked for removed
		// an earlier incarnation of the limit.
		if d.Sent >= t || d.Received <= l.started || l.survived(d) {
			continue
		}
		if d.Sent < at {
			at, found = d.Sent, true
		}
	}
	return at, found
}

// lastSeenLive is the latest time the lease was certainly held before t.
func (l *lease) lastSeenLive(t time.Duration) time.Duration {
	last := l.received
	for _, o := range l.ops {
		if o.Outcome == OK && o.Kind != OpRelease && o.Sent < t && o.Sent > last {
			last = o.Sent
		}
	}
	return last
}

func checkLost(leases map[string]*lease, deletes map[string][]AdminOp, crashes []Crash, cfg CheckConfig, v *Verdict) {
	for _, l := range sortedLeases(leases) {
		for i := range l.ops {
			o := &l.ops[i]
			v.Checked++
			if o.Outcome == OK && o.Kind != OpRelease && o.Fence != l.fence {
				v.add(cfg, Fence, "lease %s of %q: granted with fence %d, %s at %s answered fence %d",
					l.id, l.limit, l.fence, o.Kind, secs(o.Sent), o.Fence)
			}
			if o.Outcome != NotFound || l.lost {
				continue
			}
			exp := l.certainExpiry(o.Sent, o.Received, o)
			if l.releasedBefore(o.Received, o) || o.Received+cfg.Tolerance >= exp {
				continue
			}
			if _, killed := l.killedBefore(o.Received, deletes[l.limit]); killed {
				continue
			}
			l.lost = true
			l.end = l.lastSeenLive(o.Sent)
			crashNote := ""
			for _, c := range crashes {
				if l.received < c.Killed && c.Ready <= o.Sent {
					crashNote = fmt.Sprintf(" (acknowledged before the crash at %s, restarted at %s)", secs(c.Killed), secs(c.Ready))
				}
			}
			v.add(cfg, LostLease, "lease %s of %q (fence %d, granted at %s, expires %s at the earliest): %s sent at %s answered 404 at %s%s",
				l.id, l.limit, l.fence, secs(l.received), secs(exp), o.Kind, secs(o.Sent), secs(o.Received), crashNote)
		}
		for _, c := range crashes {
			if l.received < c.Killed && l.seenLiveAfter(c.Ready) {
				v.AcrossCrash++
				break
			}
		}
	}
}

func (l *lease) seenLiveAfter(t time.Duration) bool {
	for _, o := range l.ops {
		if o.Outcome == OK && o.Sent > t && (o.Kind == OpRelease || o.Fence == l.fence) {
			return true
		}
	}
	return false
}

// modelEnd is when the lease certainly stopped being held.
func modelEnd(l *lease, deletes []AdminOp, cfg CheckConfig) time.Duration {
	if l.lost {
		return l.end
	}
	end := l.certainExpiry(forever, forever, nil) - cfg.Tolerance
	for _, o := range l.ops {
		if o.Kind == OpRelease {
			end = min(end, o.Sent)
			break
		}
	}
	if at, killed := l.killedBefore(end, deletes); killed {
		end = min(end, at)
	}
	return end
}

// capSegment is a stretch of time over which the largest capacity that may
// have been in force was max.
type capSegment struct {
	from, to time.Duration
	max      int
}

// capacityTimelines builds, per limit, the largest capacity that may have
// been in force at each time. A limit that does not exist has capacity 0.
// While a change is in flight either value may be in force; after a
// change whose answer was lost, both stay possible until the next
// definitive one.
func capacityTimelines(admin []AdminOp) map[string][]capSegment {
	byLimit := make(map[string][]AdminOp)
	for _, a := range admin {
		byLimit[a.Limit] = append(byLimit[a.Limit], a)
	}
	out := make(map[string][]capSegment)
	for name, ops := range byLimit {
		sort.SliceStable(ops, func(i, j int) bool { return ops[i].Sent < ops[j].Sent })
		var segs []capSegment
		possible, from := 0, -forever
		for _, a := range ops {
			c := a.Capacity
			if a.Delete {
				c = 0
			}
			segs = append(segs, capSegment{from, a.Sent, possible}, capSegment{a.Sent, a.Received, max(possible, c)})
			if a.Outcome == OK {
				possible = c
			} else {
				possible = max(possible, c)
			}
			from = a.Received
		}
		out[name] = append(segs, capSegment{from, forever, possible})
	}
	return out
}

// maxCapacity is the largest capacity that may have been in force at some
// time in [a, b].
func maxCapacity(segs []capSegment, a, b time.Duration) int {
	m := 0
	for _, s := range segs {
		if s.from <= b && s.to > a && s.max > m {
			m = s.max
		}
	}
	return m
}

// checkOverAdmission looks at each grant's receipt r. Every lease the model
// holds at r was held at the moment g of the last grant among them, which
// lies between the latest send of their requests and r; at g the slots of
// all of them had to fit the capacity then in force. A capacity lowered
// before that window began applies; one lowered after does not (a lowering
// revokes nothing).
func checkOverAdmission(byLimit map[string][]*lease, caps map[string][]capSegment, cfg CheckConfig, v *Verdict) {
	for _, name := range sortedKeys(byLimit) {
		var ls []*lease
		for _, l := range byLimit[name] {
			if l.end > l.received {
				ls = append(ls, l)
			}
		}
		sort.SliceStable(ls, func(i, j int) bool { return ls[i].received < ls[j].received })
		var active []*lease
		next := 0
		for _, l := range ls {
			r := l.received
			for next < len(ls) && ls[next].received <= r {
				active = append(active, ls[next])
				next++
			}
			kept := active[:0]
			for _, a := range active {
				if a.end > r {
					kept = append(kept, a)
				}
			}
			active = kept
			held, latest := 0, -forever
			for _, a := range active {
				held += a.slots
				latest = max(latest, a.started)
			}
			c := maxCapacity(caps[name], latest, r)
			if held == c {
				v.FullAtGrant++
			}
			if held > c {
				v.add(cfg, OverAdmission, "limit %q at %s: grant of lease %s (fence %d, %d slots, asked at %s) makes %d slots held by %d leases %s; capacity at most %d since %s",
					name, secs(r), l.id, l.fence, l.slots, secs(l.started), held, len(active), describe(active), c, secs(latest))
			}
		}
	}
}

// checkFences checks, per limit, that fences are unique and that a grant
// asked for after another was received has a larger fence.
func checkFences(byLimit map[string][]*lease, cfg CheckConfig, v *Verdict) {
	for _, name := range sortedKeys(byLimit) {
		ls := append([]*lease(nil), byLimit[name]...)
		sort.SliceStable(ls, func(i, j int) bool { return ls[i].fence > ls[j].fence })
		// Going down the fences, first is the lease received earliest among
		// those with a larger fence.
		var first *lease
		for i, l := range ls {
			if i > 0 && ls[i-1].fence == l.fence {
				v.add(cfg, Fence, "limit %q: leases %s and %s both have fence %d", name, ls[i-1].id, l.id, l.fence)
			}
			if first != nil && first.fence > l.fence && l.started > first.received {
				v.add(cfg, Fence, "limit %q: lease %s asked for at %s got fence %d, below fence %d of lease %s received at %s",
					name, l.id, secs(l.started), l.fence, first.fence, first.id, secs(first.received))
			}
			if first == nil || l.received < first.received {
				first = l
			}
		}
	}
}

// checkIdempotency finds retries with the Idempotency-Key of a lease that
// was certainly live when the retry was handled but got another lease.
func checkIdempotency(grants []Grant, leases map[string]*lease, deletes map[string][]AdminOp, cfg CheckConfig, v *Verdict) {
	type scope struct{ limit, key string }
	byKey := make(map[scope][]*lease)
	for _, g := range grants {
		if g.Key == "" {
			continue
		}
		s := scope{g.Limit, g.Key}
		if l := leases[g.LeaseID]; l != nil && !containsLease(byKey[s], l) {
			byKey[s] = append(byKey[s], l)
		}
	}
	for _, g := range grants {
		if g.Key == "" {
			continue
		}
		for _, a := range byKey[scope{g.Limit, g.Key}] {
			if a.id == g.LeaseID || a.lost || a.received >= g.Started {
				continue
			}
			if a.releasedBefore(g.Received, nil) || g.Received+cfg.Tolerance >= a.certainExpiry(g.Started, g.Received, nil) {
				continue
			}
			if _, killed := a.killedBefore(g.Received, deletes[a.limit]); killed {
				continue
			}
			v.add(cfg, Idempotency, "limit %q key %q: retry sent at %s got lease %s (fence %d) while lease %s (fence %d) granted for that key at %s was live",
				g.Limit, g.Key, secs(g.Started), g.LeaseID, g.Fence, a.id, a.fence, secs(a.received))
		}
	}
}

func stuckCondition(s Sample) bool {
	return s.OK && s.Waiting > 0 && s.HasHead && s.InUse+s.HeadSlots <= s.Capacity
}

// checkStuck finds a head waiter that stayed queued across two samples at
// least StuckGap apart while its slots were free in both.
func checkStuck(samples []Sample, cfg CheckConfig, v *Verdict) {
	byLimit := make(map[string][]Sample)
	for _, s := range samples {
		byLimit[s.Limit] = append(byLimit[s.Limit], s)
		if s.OK {
			v.Samples++
		}
	}
	for _, name := range sortedKeys(byLimit) {
		ss := byLimit[name]
		sort.SliceStable(ss, func(i, j int) bool { return ss[i].At < ss[j].At })
		reported := make(map[string]bool)
		persisting := make([]bool, len(ss))
		for i := 1; i < len(ss); i++ {
			p, s := ss[i-1], ss[i]
			if !stuckCondition(p) || !stuckCondition(s) || s.At-p.At < cfg.StuckGap ||
				p.HeadHolder != s.HeadHolder || p.HeadSince != s.HeadSince {
				continue
			}
			persisting[i-1], persisting[i] = true, true
			id := s.HeadHolder + "@" + s.HeadSince
			if reported[id] {
				continue
			}
			reported[id] = true
			v.add(cfg, StuckWaiter, "limit %q: head waiter %s (%d slots, waiting since %s) still queued at %s and %s with capacity %d and %d in use",
				name, s.HeadHolder, s.HeadSlots, s.HeadSince, secs(p.At), secs(s.At), s.Capacity, s.InUse)
		}
		for i, s := range ss {
			if stuckCondition(s) && !persisting[i] {
				v.Transients++
			}
		}
	}
}

func checkDrained(h History, cfg CheckConfig, v *Verdict) {
	if len(h.Finals) == 0 {
		v.add(cfg, NotDrained, "no reading of the limits after the clients stopped")
		return
	}
	f := h.Finals[len(h.Finals)-1]
	for _, name := range sortedKeys(f.InUse) {
		if f.InUse[name] > 0 || f.Waits[name] > 0 {
			v.add(cfg, NotDrained, "limit %q at %s (every lease due to end by %s): in_use %d, waiting %d, leases %v",
				name, secs(f.At), secs(h.QuiesceBy), f.InUse[name], f.Waits[name], f.Leases[name])
		}
	}
}

func describe(ls []*lease) string {
	s := "["
	for i, l := range ls {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s fence %d %d slots %s..%s", l.id, l.fence, l.slots, secs(l.received), secs(l.end))
	}
	return s + "]"
}

func containsLease(ls []*lease, l *lease) bool {
	for _, x := range ls {
		if x == l {
			return true
		}
	}
	return false
}

func sortedLeases(m map[string]*lease) []*lease {
	out := make([]*lease, 0, len(m))
	for _, l := range m {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].received < out[j].received })
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func secs(d time.Duration) string {
	if d >= forever/2 {
		return "never"
	}
	return fmt.Sprintf("%.3fs", d.Seconds())
}
