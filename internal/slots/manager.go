// Package slots is limitd's in-memory slot manager: named limits, a FIFO
// queue of weighted waiters per limit, leases with TTLs, idempotency keys and
// the fencing counter.
//
// It is pure logic: no SQL, no HTTP, no logging. Durability goes through the
// Journal interface, which the manager feeds under its lock (in decision
// order) and waits on outside it, so the lock is never held across disk I/O
// or a network write. Time comes from an injected Clock, so tests advance
// time instead of sleeping.
//
// The waiter queue follows golang.org/x/sync/semaphore: one mutex, one list
// of waiters, one channel per waiter closed under the lock; the fast path
// applies only when nobody is queued, and waking stops at the first waiter
// that does not fit, so large requests are not starved.
package slots

import (
	"container/heap"
	"container/list"
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/limitd/limitd"
	"github.com/oklog/ulid/v2"
)

// Config holds the manager's dependencies and bounds.
type Config struct {
	Journal  Journal
	Clock    Clock    // SystemClock{} when nil
	Observer Observer // NopObserver{} when nil
	// DefaultTTL applies to acquires that name no TTL on limits without a
	// default of their own.
	DefaultTTL time.Duration
	// MaxWaiters bounds each limit's queue; 0 means 10,000.
	MaxWaiters int
	// NewID returns a fresh lease id; a ULID generator when nil.
	NewID func() string
}

// Manager owns every limit, lease and waiter. All methods are safe for
// concurrent use.
type Manager struct {
	journal    Journal
	help       func() // the journal's Helper.Help, or nil
	clock      Clock
	obs        Observer
	defaultTTL time.Duration
	maxWaiters int
	newID      func() string

	// adminMu serialises limit puts, which commit before they are applied
	// (see PutLimit), so the database and memory see them in one order.
	adminMu sync.Mutex

	mu       sync.Mutex
	limits   map[string]*limit
	leases   map[string]*lease
	expiry   expiryHeap
	timer    Timer
	timerAt  time.Duration // deadline the timer is set for; -1 when none
	timerGen uint64        // which AfterFunc is the current timer
	fence    uint64
	// pending holds the changes of the current critical section; unlock
	// hands them to the journal in one call.
	pending  []Entry
	draining bool // no new acquires, no grants to queued waiters
	closed   bool // no expiry timer any more
}

type limit struct {
	rec     LimitRecord
	deleted bool // set under the lock as deletion starts: no more grants
	inUse   int
	leases  map[string]*lease
	waiters list.List // of *waiter, head first
	// keys maps an Idempotency-Key to the live lease or the queued waiter
	// that carries it.
	keys map[string]keyed
}

// keyed is what an idempotency key points to: exactly one of the two.
type keyed struct {
	lease  *lease
	waiter *waiter
}

type lease struct {
	rec LeaseRecord
	// deadline is rec.ExpiresAt on the monotonic clock, so a wall-clock
	// jump neither expires it early nor late.
	deadline  time.Duration
	heapIndex int
	// granted is the commit of the grant; answers wait on it.
	granted *Commit
	// answering counts the requests waiting to answer with this lease;
	// delivered is set once one of them did (see answerGrant).
	answering int
	delivered bool
}

type waiter struct {
	slots  int
	holder string
	ttl    time.Duration
	key    string
	since  time.Time     // wall clock, as shown in the waiters list
	asked  time.Duration // monotonic, for how long it waited
	elem   *list.Element
	// ready is closed under the lock once lease or err is set.
	ready chan struct{}
	lease *lease
	err   error
}

// New returns an empty manager; call Restore to load durable state.
func New(cfg Config) *Manager {
	m := &Manager{
		journal:    cfg.Journal,
		clock:      cfg.Clock,
		obs:        cfg.Observer,
		defaultTTL: cfg.DefaultTTL,
		maxWaiters: cfg.MaxWaiters,
		newID:      cfg.NewID,
		limits:     make(map[string]*limit),
		leases:     make(map[string]*lease),
		timerAt:    -1,
	}
	if h, ok := cfg.Journal.(Helper); ok {
		m.help = h.Help
	}
	if m.clock == nil {
		m.clock = NewSystemClock()
	}
	if m.obs == nil {
		m.obs = NopObserver{}
	}
	if m.defaultTTL <= 0 {
		m.defaultTTL = 60 * time.Second
	}
	if m.maxWaiters <= 0 {
		m.maxWaiters = 10_000
	}
	if m.newID == nil {
		m.newID = func() string { return ulid.Make().String() }
	}
	return m
}

// Restore loads durable state into an empty manager: limits, leases and the
// fence counter. Leases whose expiry passed while the server was down are
// expired now (and their deletion is journaled). Leases of unknown limits are
// dropped the same way.
func (m *Manager) Restore(limits []LimitRecord, leases []LeaseRecord, fence uint64) []*Commit {
	m.mu.Lock()
	defer m.unlock()
	for _, rec := range limits {
		m.limits[rec.Name] = newLimit(rec)
	}
	m.fence = fence
	now, mono := m.clock.Read()
	var commits []*Commit
	for _, rec := range leases {
		if rec.Fence > m.fence {
			m.fence = rec.Fence
		}
		l := m.limits[rec.Limit]
		if l == nil || !now.Before(rec.ExpiresAt) {
			if l != nil {
				m.obs.Ended(rec, now.Sub(rec.AcquiredAt), true)
			}
			c := m.appendLocked(Change{Kind: ChangeRelease, Lease: rec, Fence: m.fence})
			c.awaited = true // by Restore's caller
			commits = append(commits, c)
			continue
		}
		done := NewCommit()
		done.Resolve(nil)
		// The stored expiry is wall-clock time; from here on it is kept
		// as the remaining time on the monotonic clock.
		ls := &lease{rec: rec, deadline: mono + rec.ExpiresAt.Sub(now), granted: done, delivered: true}
		m.addLeaseLocked(l, ls)
	}
	m.resetTimerLocked()
	return commits
}

func newLimit(rec LimitRecord) *limit {
	return &limit{rec: rec, leases: make(map[string]*lease), keys: make(map[string]keyed)}
}

// appendLocked queues a change for the journal at the end of the current
// critical section and returns its Commit.
func (m *Manager) appendLocked(c Change) *Commit {
	commit := NewCommit()
	// Set here, under the lock, before any waiter can see the Commit.
	commit.help = m.help
	m.pending = append(m.pending, Entry{Change: c, Commit: commit})
	return commit
}

// unlock hands the critical section's changes to the journal, still under
// the lock so that their order is the order of the decisions, and unlocks.
func (m *Manager) unlock() {
	if len(m.pending) > 0 {
		m.journal.Append(m.pending)
		clear(m.pending)
		m.pending = m.pending[:0]
	}
	m.mu.Unlock()
}

// Drain answers every waiter with shutting_down and refuses new acquires;
// leases are kept (they are durable). It is the first step of a graceful
// shutdown.
func (m *Manager) Drain() {
	m.mu.Lock()
	defer m.unlock()
	m.draining = true
	for _, l := range m.limits {
		for e := l.waiters.Front(); e != nil; {
			next := e.Next()
			m.rejectLocked(l, e.Value.(*waiter), errShuttingDown())
			e = next
		}
	}
}

// Close stops the expiry timer. The manager must not be used afterwards.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.unlock()
	m.draining = true
	m.closed = true
	if m.timer != nil {
		m.timer.Stop()
		m.timer = nil
	}
}

func errShuttingDown() error {
	return &limitd.Error{Code: limitd.CodeShuttingDown, Message: "limitd is shutting down; retry against the restarted server", RetryAfter: 1}
}

func errLimitNotFound(name string) error {
	return limitd.Errorf(limitd.CodeLimitNotFound, "limit %q does not exist", name)
}

func errLeaseNotFound(id string) error {
	return limitd.Errorf(limitd.CodeLeaseNotFound, "lease %q does not exist: it was released, expired, or its limit was deleted", id)
}

// errStore wraps a failed commit into the API's 503.
func errStore(what string, err error) error {
	return &limitd.Error{Code: limitd.CodeStoreUnavailable, Message: what + ": the database write failed: " + err.Error(), RetryAfter: 1}
}

// ---- limits ----------------------------------------------------------------

// LimitSpec is a validated PUT of a limit.
type LimitSpec struct {
	Capacity    int
	DefaultTTL  time.Duration // 0: the server's default
	Description string
}

// PutLimit creates or replaces a limit. It returns the limit and the one it
// replaced (nil when it created it), read under the lock that the change
// holds, so that no other change can come between them (an audit line that
// read the limit before the call could show a racing PUT's capacity as the
// one replaced). The new definition is committed before it takes effect: a
// failed commit changes nothing. Lowering the capacity revokes no lease;
// queued waiters that could never fit under a new capacity above 0 are
// answered 409 at once, and a raise wakes the waiters that now fit.
func (m *Manager) PutLimit(ctx context.Context, name string, spec LimitSpec) (limitd.Limit, *limitd.Limit, error) {
	m.adminMu.Lock()
	defer m.adminMu.Unlock()

	m.mu.Lock()
	now, _ := m.clock.Read()
	rec := LimitRecord{Name: name, Capacity: spec.Capacity, DefaultTTL: spec.DefaultTTL, Description: spec.Description, CreatedAt: wall(now), UpdatedAt: wall(now)}
	var before *LimitRecord
	var replaced *limitd.Limit
	if l := m.limits[name]; l != nil {
		prev := l.rec
		before = &prev
		rec.CreatedAt = prev.CreatedAt
		// adminMu keeps the definition until this call changes it.
		view := m.limitViewLocked(l)
		replaced = &view
	}
	commit := m.appendLocked(Change{Kind: ChangePutLimit, Limit: rec, Fence: m.fence})
	commit.awaited = true
	m.unlock()

	// Waiting here without ctx: once appended, the outcome decides what
	// memory must look like, whether or not the admin is still listening.
	if err := commit.Wait(context.Background()); err != nil {
		return limitd.Limit{}, nil, errStore("saving limit "+name, err)
	}

	m.mu.Lock()
	defer m.unlock()
	l := m.limits[name]
	created := l == nil
	if created {
		l = newLimit(rec)
		m.limits[name] = l
	} else {
		l.rec = rec
	}
	m.obs.LimitChanged(before, rec)
	if rec.Capacity > 0 {
		// Collected first: rejecting the head may grant the waiters behind
		// it that fit, which leaves the list, and a walk that rejected as
		// it went then ended there, leaving a request that can never fit
		// queued at the head for ever.
		var tooLarge []*waiter
		for e := l.waiters.Front(); e != nil; e = e.Next() {
			if w := e.Value.(*waiter); w.slots > rec.Capacity {
				tooLarge = append(tooLarge, w)
			}
		}
		for _, w := range tooLarge {
			m.rejectLocked(l, w, errExceeds(name, w.slots, rec.Capacity))
		}
	}
	m.notifyWaitersLocked(l)
	return m.limitViewLocked(l), replaced, nil
}

func errExceeds(name string, slots, capacity int) error {
	return limitd.Errorf(limitd.CodeSlotsExceedCapacity, "%d slots requested but limit %q has a capacity of %d: the request could never be granted", slots, name, capacity)
}

// GetLimit returns one limit.
func (m *Manager) GetLimit(name string) (limitd.Limit, error) {
	m.mu.Lock()
	defer m.unlock()
	l := m.limits[name]
	if l == nil {
		return limitd.Limit{}, errLimitNotFound(name)
	}
	return m.limitViewLocked(l), nil
}

// Limits returns every limit, sorted by name in byte order.
func (m *Manager) Limits() []limitd.Limit {
	m.mu.Lock()
	defer m.unlock()
	out := make([]limitd.Limit, 0, len(m.limits))
	for _, l := range m.limits {
		out = append(out, m.limitViewLocked(l))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// DeleteLimit deletes a limit and its leases and answers its waiters with
// limit_not_found. It returns the limit as it was when it was deleted, read
// under the same lock, so its leases and waiters are exactly the ones the
// deletion ended. It takes effect in memory at once and returns when the
// deletion is durable (a failed commit is retried by the journal).
func (m *Manager) DeleteLimit(ctx context.Context, name string) (limitd.Limit, error) {
	m.adminMu.Lock()
	defer m.adminMu.Unlock()
	m.mu.Lock()
	l := m.limits[name]
	if l == nil {
		m.unlock()
		return limitd.Limit{}, errLimitNotFound(name)
	}
	deleted := m.limitViewLocked(l)
	l.deleted = true
	for e := l.waiters.Front(); e != nil; {
		next := e.Next()
		m.rejectLocked(l, e.Value.(*waiter), limitd.Errorf(limitd.CodeLimitNotFound, "limit %q was deleted while this request waited", name))
		e = next
	}
	for _, ls := range l.leases {
		m.dropLeaseLocked(l, ls)
	}
	delete(m.limits, name)
	m.resetTimerLocked()
	m.obs.LimitDeleted(l.rec)
	commit := m.appendLocked(Change{Kind: ChangeDeleteLimit, Limit: l.rec, Fence: m.fence})
	commit.awaited = true
	m.unlock()
	if err := commit.Wait(ctx); err != nil {
		if ctx.Err() != nil {
			return deleted, err
		}
		return deleted, errStore("deleting limit "+name, err)
	}
	return deleted, nil
}

func (m *Manager) limitViewLocked(l *limit) limitd.Limit {
	ttl := l.rec.DefaultTTL
	if ttl == 0 {
		ttl = m.defaultTTL
	}
	return limitd.Limit{
		Name:              l.rec.Name,
		Capacity:          l.rec.Capacity,
		InUse:             l.inUse,
		Waiting:           l.waiters.Len(),
		DefaultTTLSeconds: ttl.Seconds(),
		Description:       l.rec.Description,
		CreatedAt:         l.rec.CreatedAt,
		UpdatedAt:         l.rec.UpdatedAt,
	}
}

// Leases returns the live leases of a limit, oldest grant first.
func (m *Manager) Leases(name string) ([]limitd.Lease, error) {
	m.mu.Lock()
	defer m.unlock()
	l := m.limits[name]
	if l == nil {
		return nil, errLimitNotFound(name)
	}
	out := make([]limitd.Lease, 0, len(l.leases))
	for _, ls := range l.leases {
		out = append(out, leaseView(ls.rec))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Fence < out[j].Fence })
	return out, nil
}

// Waiters returns the queue of a limit, head first.
func (m *Manager) Waiters(name string) ([]limitd.Waiter, error) {
	m.mu.Lock()
	defer m.unlock()
	l := m.limits[name]
	if l == nil {
		return nil, errLimitNotFound(name)
	}
	_, mono := m.clock.Read()
	out := make([]limitd.Waiter, 0, l.waiters.Len())
	for e := l.waiters.Front(); e != nil; e = e.Next() {
		w := e.Value.(*waiter)
		out = append(out, limitd.Waiter{
			Position:       len(out) + 1,
			Slots:          w.slots,
			Holder:         w.holder,
			WaitingSince:   w.since,
			WaitingSeconds: (mono - w.asked).Seconds(),
		})
	}
	return out, nil
}

// LimitStats is one limit's state at a moment, for metrics.
type LimitStats struct {
	Name     string
	Capacity int
	InUse    int
	Leases   int
	Waiters  int
	// OldestWait is how long the head of the queue has waited (0 if none).
	OldestWait time.Duration
}

// IfLimit calls f with the manager's lock held if the named limit exists,
// and reports whether it did. Like an Observer, f runs in order with the
// manager's events — in particular never after the limit's LimitDeleted —
// so it must be quick and must not call back into the Manager.
func (m *Manager) IfLimit(name string, f func()) bool {
	m.mu.Lock()
	defer m.unlock()
	if m.limits[name] == nil {
		return false
	}
	f()
	return true
}

// Stats returns a consistent snapshot of every limit, taken under one lock.
func (m *Manager) Stats() []LimitStats {
	m.mu.Lock()
	defer m.unlock()
	_, mono := m.clock.Read()
	out := make([]LimitStats, 0, len(m.limits))
	for _, l := range m.limits {
		s := LimitStats{Name: l.rec.Name, Capacity: l.rec.Capacity, InUse: l.inUse, Leases: len(l.leases), Waiters: l.waiters.Len()}
		if front := l.waiters.Front(); front != nil {
			s.OldestWait = mono - front.Value.(*waiter).asked
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ---- leases ----------------------------------------------------------------

// AcquireParams is a validated acquire request.
type AcquireParams struct {
	Slots int
	// TTL of the lease; 0 means the limit's default.
	TTL time.Duration
	// Wait is how long to queue; 0 tries once without queueing.
	Wait           time.Duration
	Holder         string
	IdempotencyKey string
}

// Acquire takes p.Slots slots of the named limit, queueing for up to p.Wait.
// It returns once the grant is durable. replayed is true when an earlier
// acquire with the same idempotency key already holds the lease returned.
//
// If ctx ends first (the client went away), Acquire returns ctx.Err() and
// leaves nothing behind: not its place in the queue, and not a lease granted
// in the race with the cancellation.
func (m *Manager) Acquire(ctx context.Context, name string, p AcquireParams) (limitd.Lease, bool, error) {
	for {
		l, replayed, err := m.acquireOnce(ctx, name, p)
		if err != errLeaseGone {
			return l, replayed, err
		}
	}
}

func (m *Manager) acquireOnce(ctx context.Context, name string, p AcquireParams) (limitd.Lease, bool, error) {
	if p.Slots <= 0 {
		p.Slots = 1
	}
	m.mu.Lock()
	if m.draining {
		m.unlock()
		return limitd.Lease{}, false, errShuttingDown()
	}
	l := m.limits[name]
	if l == nil {
		m.unlock()
		return limitd.Lease{}, false, errLimitNotFound(name)
	}
	ttl := p.TTL
	if ttl == 0 {
		ttl = l.rec.DefaultTTL
	}
	if ttl == 0 {
		ttl = m.defaultTTL
	}

	var superseded *waiter
	if p.IdempotencyKey != "" {
		if k, ok := l.keys[p.IdempotencyKey]; ok {
			if k.lease != nil && m.liveLeaseLocked(k.lease.rec.ID) == k.lease {
				ls := k.lease
				ls.answering++
				m.unlock()
				return m.answerGrant(ctx, ls, true)
			}
			// The same request came again while its first copy still waits:
			// the client reconnected before we noticed the old connection
			// drop. The new copy takes the old one's place in the queue.
			superseded = k.waiter
		}
	}
	if l.rec.Capacity > 0 && p.Slots > l.rec.Capacity {
		m.obs.NotGranted(name, ResultRejected)
		m.unlock()
		return limitd.Lease{}, false, errExceeds(name, p.Slots, l.rec.Capacity)
	}
	// Fast path: only when nobody is queued, so nobody jumps the line.
	if superseded == nil && l.waiters.Len() == 0 && l.inUse+p.Slots <= l.rec.Capacity {
		_, asked := m.clock.Read()
		ls := m.grantLocked(l, p.Slots, ttl, p.Holder, p.IdempotencyKey, asked)
		m.unlock()
		return m.answerGrant(ctx, ls, false)
	}
	if p.Wait <= 0 && superseded == nil {
		m.obs.NotGranted(name, ResultTimeout)
		m.unlock()
		return limitd.Lease{}, false, errNoSlots(name, p.Slots)
	}
	if superseded == nil && l.waiters.Len() >= m.maxWaiters {
		m.obs.NotGranted(name, ResultRejected)
		m.unlock()
		return limitd.Lease{}, false, &limitd.Error{Code: limitd.CodeQueueFull,
			Message: "limit \"" + name + "\" already has the maximum number of waiters queued", RetryAfter: 1}
	}

	since, asked := m.clock.Read()
	w := &waiter{slots: p.Slots, holder: p.Holder, ttl: ttl, key: p.IdempotencyKey,
		since: wall(since), asked: asked, ready: make(chan struct{})}
	if superseded != nil {
		w.since, w.asked = superseded.since, superseded.asked
		w.elem = l.waiters.InsertBefore(w, superseded.elem)
		m.rejectLocked(l, superseded, limitd.Errorf(limitd.CodeSuperseded,
			"a newer request with the same Idempotency-Key took this request's place in the queue of limit %q", name))
	} else {
		w.elem = l.waiters.PushBack(w)
	}
	if w.key != "" {
		l.keys[w.key] = keyed{waiter: w}
	}
	// A superseding request may find its slots free already.
	m.notifyWaitersLocked(l)
	m.unlock()

	timeout := make(chan struct{})
	timer := m.clock.AfterFunc(p.Wait, func() { close(timeout) })
	defer timer.Stop()

	select {
	case <-w.ready:
		return m.answerWaiter(ctx, w)
	case <-timeout:
	case <-ctx.Done():
	}

	m.mu.Lock()
	select {
	case <-w.ready:
		// The outcome arrived as the wait ended. A grant is kept if the
		// client is still there (it would otherwise have to ask again);
		// answerWaiter gives it back if the client went away.
		m.unlock()
		return m.answerWaiter(ctx, w)
	default:
	}
	m.removeWaiterLocked(l, w)
	if ctx.Err() != nil {
		m.obs.NotGranted(name, ResultCanceled)
		m.unlock()
		return limitd.Lease{}, false, ctx.Err()
	}
	m.obs.NotGranted(name, ResultTimeout)
	m.unlock()
	return limitd.Lease{}, false, errNoSlots(name, p.Slots)
}

func errNoSlots(name string, slots int) error {
	return limitd.Errorf(limitd.CodeNoSlots, "no %d free slot(s) of limit %q within wait_seconds; ask again at once", slots, name)
}

// answerWaiter turns a waiter's outcome into Acquire's result.
func (m *Manager) answerWaiter(ctx context.Context, w *waiter) (limitd.Lease, bool, error) {
	if w.err != nil {
		return limitd.Lease{}, false, w.err
	}
	return m.answerGrant(ctx, w.lease, false)
}

// errLeaseGone says that a granted lease ended (its limit was deleted, or an
// admin released it) before the request could answer with it; Acquire then
// starts over.
var errLeaseGone = errors.New("the lease ended before it could be answered")

// answerGrant waits until the lease's grant is durable and answers with it.
// Every request that would answer with this lease — the one that took it and
// any idempotent replays waiting with it — counts in ls.answering. If all of
// them go away, or the commit fails, before one of them delivered it, the
// lease is given back at once, so no slot is held for a grant nobody
// received; while one of them may still deliver it, it is kept.
func (m *Manager) answerGrant(ctx context.Context, ls *lease, replayed bool) (limitd.Lease, bool, error) {
	err := ls.granted.Wait(ctx)
	m.mu.Lock()
	ls.answering--
	live := m.leases[ls.rec.ID] == ls
	if err == nil && live {
		ls.delivered = true
		view := leaseView(ls.rec)
		m.unlock()
		return view, replayed, nil
	}
	if live && !ls.delivered && ls.answering == 0 {
		m.obs.NotGranted(ls.rec.Limit, ResultCanceled)
		m.endLeaseLocked(m.limits[ls.rec.Limit], ls, false)
		m.resetTimerLocked()
	}
	m.unlock()
	switch {
	case ctx.Err() != nil:
		return limitd.Lease{}, false, ctx.Err()
	case err != nil:
		return limitd.Lease{}, false, errStore("granting", err)
	}
	return limitd.Lease{}, false, errLeaseGone
}

// Lease returns one live lease.
func (m *Manager) Lease(id string) (limitd.Lease, error) {
	m.mu.Lock()
	defer m.unlock()
	ls := m.liveLeaseLocked(id)
	if ls == nil {
		return limitd.Lease{}, errLeaseNotFound(id)
	}
	return leaseView(ls.rec), nil
}

// LeaseLimit returns the limit a live lease belongs to, for authorization.
func (m *Manager) LeaseLimit(id string) (string, error) {
	m.mu.Lock()
	defer m.unlock()
	ls := m.liveLeaseLocked(id)
	if ls == nil {
		return "", errLeaseNotFound(id)
	}
	return ls.rec.Limit, nil
}

// liveLeaseLocked finds a lease, expiring it first if its deadline passed but
// the timer has not fired yet, so no caller ever sees a lease past expiry.
func (m *Manager) liveLeaseLocked(id string) *lease {
	ls := m.leases[id]
	if ls == nil {
		return nil
	}
	if _, mono := m.clock.Read(); mono >= ls.deadline {
		m.endLeaseLocked(m.limits[ls.rec.Limit], ls, true)
		m.resetTimerLocked()
		return nil
	}
	return ls
}

// Renew moves a lease's expiry to now + ttl (ttl 0: the lease's own TTL) and
// returns once the new expiry is durable.
func (m *Manager) Renew(ctx context.Context, id string, ttl time.Duration) (limitd.Lease, error) {
	m.mu.Lock()
	ls := m.liveLeaseLocked(id)
	if ls == nil {
		m.unlock()
		return limitd.Lease{}, errLeaseNotFound(id)
	}
	if ttl == 0 {
		ttl = ls.rec.TTL
	}
	now, mono := m.clock.Read()
	ls.deadline = mono + ttl
	ls.rec.ExpiresAt = wall(now.Add(ttl))
	ls.rec.TTL = ttl
	heap.Fix(&m.expiry, ls.heapIndex)
	m.resetTimerLocked()
	m.obs.Renewed(ls.rec)
	view := leaseView(ls.rec)
	commit := m.appendLocked(Change{Kind: ChangeRenew, Lease: ls.rec, Fence: m.fence})
	commit.awaited = true
	m.unlock()
	// A renew that fails to commit keeps its new deadline in memory: the
	// client is told 503 and retries, and after a crash the lease would only
	// expire earlier (at its old, durable deadline), never later.
	if err := commit.Wait(ctx); err != nil {
		if ctx.Err() != nil {
			return limitd.Lease{}, err
		}
		return limitd.Lease{}, errStore("renewing lease "+id, err)
	}
	return view, nil
}

// Release gives a lease back and wakes the waiters its slots let through.
func (m *Manager) Release(ctx context.Context, id string) error {
	m.mu.Lock()
	ls := m.liveLeaseLocked(id)
	if ls == nil {
		m.unlock()
		return errLeaseNotFound(id)
	}
	commit := m.endLeaseLocked(m.limits[ls.rec.Limit], ls, false)
	commit.awaited = true
	m.resetTimerLocked()
	m.unlock()
	if err := commit.Wait(ctx); err != nil {
		if ctx.Err() != nil {
			return err
		}
		return errStore("releasing lease "+id, err)
	}
	return nil
}

// ---- the paths every change shares ------------------------------------------

// grantLocked creates a lease for slots that are known to fit and journals
// it; asked is when the request arrived, on the monotonic clock.
func (m *Manager) grantLocked(l *limit, slots int, ttl time.Duration, holder, key string, asked time.Duration) *lease {
	m.fence++
	now, mono := m.clock.Read()
	ls := &lease{
		rec: LeaseRecord{
			ID: m.newID(), Limit: l.rec.Name, Slots: slots, Holder: holder, Fence: m.fence,
			AcquiredAt: wall(now), ExpiresAt: wall(now.Add(ttl)), TTL: ttl, IdempotencyKey: key,
		},
		deadline:  mono + ttl,
		answering: 1, // the request that takes it
	}
	m.addLeaseLocked(l, ls)
	ls.granted = m.appendLocked(Change{Kind: ChangeGrant, Lease: ls.rec, Fence: m.fence})
	// The request it goes to waits for it (answerGrant), queued or not.
	ls.granted.awaited = true
	m.obs.Granted(ls.rec, mono-asked)
	m.resetTimerLocked()
	return ls
}

func (m *Manager) addLeaseLocked(l *limit, ls *lease) {
	l.inUse += ls.rec.Slots
	l.leases[ls.rec.ID] = ls
	m.leases[ls.rec.ID] = ls
	if ls.rec.IdempotencyKey != "" {
		l.keys[ls.rec.IdempotencyKey] = keyed{lease: ls}
	}
	heap.Push(&m.expiry, ls)
}

// endLeaseLocked is the one path by which a lease ends, released or
// expired: it frees the slots, journals the deletion and wakes waiters.
// Callers reset the expiry timer once they are done changing the heap.
func (m *Manager) endLeaseLocked(l *limit, ls *lease, expired bool) *Commit {
	m.dropLeaseLocked(l, ls)
	now, _ := m.clock.Read()
	m.obs.Ended(ls.rec, now.Sub(ls.rec.AcquiredAt), expired)
	commit := m.appendLocked(Change{Kind: ChangeRelease, Lease: ls.rec, Fence: m.fence})
	m.notifyWaitersLocked(l)
	return commit
}

// dropLeaseLocked removes a lease from memory without journaling it.
func (m *Manager) dropLeaseLocked(l *limit, ls *lease) {
	l.inUse -= ls.rec.Slots
	delete(l.leases, ls.rec.ID)
	delete(m.leases, ls.rec.ID)
	if k, ok := l.keys[ls.rec.IdempotencyKey]; ok && k.lease == ls {
		delete(l.keys, ls.rec.IdempotencyKey)
	}
	heap.Remove(&m.expiry, ls.heapIndex)
}

// notifyWaitersLocked grants waiters from the head of the queue while their
// slots fit, and stops at the first that does not: a large request at the
// head blocks smaller ones behind it, so it is never starved.
func (m *Manager) notifyWaitersLocked(l *limit) {
	// Draining and deletion answer every waiter with an error; rejecting
	// the head must not grant the ones behind it meanwhile.
	if m.draining || l.deleted {
		return
	}
	for {
		front := l.waiters.Front()
		if front == nil {
			return
		}
		w := front.Value.(*waiter)
		if l.inUse+w.slots > l.rec.Capacity {
			return
		}
		l.waiters.Remove(front)
		delete(l.keys, w.key)
		w.lease = m.grantLocked(l, w.slots, w.ttl, w.holder, w.key, w.asked)
		close(w.ready)
	}
}

// rejectLocked answers a queued waiter with err and removes it.
func (m *Manager) rejectLocked(l *limit, w *waiter, err error) {
	m.obs.NotGranted(l.rec.Name, ResultRejected)
	m.removeWaiterLocked(l, w)
	w.err = err
	close(w.ready)
}

// removeWaiterLocked takes a waiter out of the queue. If it was the head,
// the waiters behind it may fit now.
func (m *Manager) removeWaiterLocked(l *limit, w *waiter) {
	wasHead := l.waiters.Front() == w.elem
	l.waiters.Remove(w.elem)
	if k, ok := l.keys[w.key]; ok && k.waiter == w {
		delete(l.keys, w.key)
	}
	if wasHead {
		m.notifyWaitersLocked(l)
	}
}

// ---- expiry ----------------------------------------------------------------

// resetTimerLocked makes sure the single expiry timer fires no later than
// the soonest deadline. It may fire earlier — the lease it was set for was
// released or renewed meanwhile — and then expireDue expires nothing and
// re-arms it. Moving the timer only when a sooner deadline appears keeps
// timer work off the grant and release path.
func (m *Manager) resetTimerLocked() {
	if m.closed || len(m.expiry) == 0 {
		return
	}
	next := m.expiry[0].deadline
	if m.timer != nil && m.timerAt <= next {
		return
	}
	if m.timer != nil {
		m.timer.Stop()
	}
	m.timerGen++
	gen := m.timerGen
	m.timerAt = next
	_, mono := m.clock.Read()
	m.timer = m.clock.AfterFunc(next-mono, func() { m.expireDue(gen) })
}

// expireDue ends every lease whose deadline has passed and re-arms the
// timer. A call from a timer that was replaced as it fired (an older
// generation) does nothing: the newer timer is armed already.
func (m *Manager) expireDue(gen uint64) {
	m.mu.Lock()
	defer m.unlock()
	if m.closed || gen != m.timerGen {
		return
	}
	m.timer, m.timerAt = nil, -1
	_, now := m.clock.Read()
	for len(m.expiry) > 0 && now >= m.expiry[0].deadline {
		ls := m.expiry[0]
		m.endLeaseLocked(m.limits[ls.rec.Limit], ls, true)
	}
	m.resetTimerLocked()
}

type expiryHeap []*lease

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].deadline < h[j].deadline }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIndex = i
	h[j].heapIndex = j
}
func (h *expiryHeap) Push(x any) {
	ls := x.(*lease)
	ls.heapIndex = len(*h)
	*h = append(*h, ls)
}
func (h *expiryHeap) Pop() any {
	old := *h
	ls := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	ls.heapIndex = -1
	return ls
}

// ---- views -----------------------------------------------------------------

func leaseView(r LeaseRecord) limitd.Lease {
	return limitd.Lease{
		ID: r.ID, Limit: r.Limit, Slots: r.Slots, Holder: r.Holder, Fence: r.Fence,
		AcquiredAt: r.AcquiredAt, ExpiresAt: r.ExpiresAt, TTLSeconds: r.TTL.Seconds(),
	}
}

// wall strips the monotonic reading and converts to UTC, the form in which
// times are stored and shown.
func wall(t time.Time) time.Time { return t.Round(0).UTC() }
