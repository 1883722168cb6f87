package main

import (
	"sync"
	"time"
)

// The checker sees only a History: what the chaos clients observed, with
// times as offsets from the start of the run. Every time, the chaos
// process's own and the server's expires_at alike, is read from the wall
// clock, so both sides of a comparison come from the same kernel clock (the
// monotonic clock may run at a slewed rate against it, which over minutes
// would skew lease expiries by more than the checker's tolerance).

// Outcome is what a request's answer proves about its effect.
type Outcome int

const (
	// OK is a 2xx answer: the request took effect between its send and its
	// receipt.
	OK Outcome = iota
	// NotFound is a 404: the lease (or limit) did not exist when the
	// request was handled.
	NotFound
	// Unknown is a network error, a client timeout or a 5xx: the request
	// may or may not have taken effect.
	Unknown
	// Refused is any other answer (400, 409, 423 …): nothing happened.
	Refused
)

func (o Outcome) String() string {
	switch o {
	case OK:
		return "ok"
	case NotFound:
		return "not_found"
	case Unknown:
		return "unknown"
	}
	return "refused"
}

// Grant is an acquire answered 201 or 200 with a lease.
type Grant struct {
	Limit   string
	LeaseID string
	Fence   uint64
	Slots   int
	Holder  string
	// Key is the Idempotency-Key of the request, empty without one.
	Key string
	// Started is when the first attempt of the request was sent: retries
	// with the same key may have been granted during any attempt.
	Started time.Duration
	// Received is when the answer arrived.
	Received time.Duration
	// ExpiresAt is the lease's expires_at.
	ExpiresAt time.Duration
	// Replay is true for a 200 (a replay of a granted idempotent request).
	Replay bool
}

// OpKind names a request on an existing lease.
type OpKind string

// The requests on an existing lease.
const (
	OpRenew   OpKind = "renew"
	OpGet     OpKind = "get"
	OpRelease OpKind = "release"
)

// LeaseOp is one request on a lease the clients were granted.
type LeaseOp struct {
	Kind     OpKind
	LeaseID  string
	Sent     time.Duration
	Received time.Duration
	Outcome  Outcome
	// TTL is the ttl_seconds a renew asked for.
	TTL time.Duration
	// Fence and ExpiresAt are from a 200 answer to a renew or a get.
	Fence     uint64
	ExpiresAt time.Duration
}

// AdminOp is a PUT or DELETE of a limit, retried until a definitive
// answer. The chaos tool sends admin requests of one limit one at a time,
// so their windows never overlap.
type AdminOp struct {
	Limit    string
	Delete   bool
	Capacity int
	// Sent is the first attempt's send, Received the definitive answer's
	// receipt (or the last attempt's end when none came).
	Sent     time.Duration
	Received time.Duration
	// Outcome is OK when the change is known to be in force after
	// Received (for a DELETE a 404 also proves it), Unknown otherwise.
	Outcome Outcome
}

// Crash is one SIGKILL and restart of the server.
type Crash struct {
	Killed time.Duration // just before the signal was sent
	Ready  time.Duration // /readyz answered 200 again
}

// Sample is one reading of a limit and its waiter queue, the queue read
// first so that a waiter still shown at the head was queued for the whole
// pair of reads.
type Sample struct {
	Limit    string
	At       time.Duration
	OK       bool // both reads answered 200
	Capacity int
	InUse    int
	Waiting  int
	// Head is the first waiter, when there is one.
	HasHead    bool
	HeadSlots  int
	HeadHolder string
	HeadSince  string
}

// Final is a reading of every limit after all clients stopped.
type Final struct {
	At     time.Duration
	InUse  map[string]int
	Waits  map[string]int
	Leases map[string][]string // leases still listed, for the report
}

// History is everything the clients observed in one run.
type History struct {
	Grants  []Grant
	Ops     []LeaseOp
	Admin   []AdminOp
	Crashes []Crash
	Samples []Sample
	// Finals are the readings taken while waiting for the limits to drain,
	// the last one at or after QuiesceBy unless every limit drained earlier.
	Finals []Final
	// QuiesceBy is the time by which every lease must have ended: all
	// clients had stopped, plus the longest TTL and the expiry lag.
	QuiesceBy time.Duration
}

// recorder appends observations from many goroutines and counts
// operations by kind.
type recorder struct {
	start time.Time // wall clock only, see the note at the top of the file
	mu    sync.Mutex
	h     History
	ops   map[string]int
}

func newRecorder() *recorder {
	return &recorder{start: time.Now().Round(0), ops: make(map[string]int)}
}

// now is the current offset from the start of the run.
func (r *recorder) now() time.Duration { return time.Now().Round(0).Sub(r.start) }

// offset converts a server time to an offset.
func (r *recorder) offset(t time.Time) time.Duration { return t.Sub(r.start) }

func (r *recorder) count(kind string) {
	r.mu.Lock()
	r.ops[kind]++
	r.mu.Unlock()
}

func (r *recorder) grant(g Grant) {
	r.mu.Lock()
	r.h.Grants = append(r.h.Grants, g)
	r.mu.Unlock()
}

func (r *recorder) op(o LeaseOp) {
	r.mu.Lock()
	r.h.Ops = append(r.h.Ops, o)
	r.ops[string(o.Kind)]++
	r.mu.Unlock()
}

func (r *recorder) admin(a AdminOp) {
	r.mu.Lock()
	r.h.Admin = append(r.h.Admin, a)
	r.mu.Unlock()
}

func (r *recorder) crash(c Crash) {
	r.mu.Lock()
	r.h.Crashes = append(r.h.Crashes, c)
	r.mu.Unlock()
}

func (r *recorder) sample(s Sample) {
	r.mu.Lock()
	r.h.Samples = append(r.h.Samples, s)
	r.mu.Unlock()
}

func (r *recorder) final(f Final) {
	r.mu.Lock()
	r.h.Finals = append(r.h.Finals, f)
	r.mu.Unlock()
}

// history returns a copy of what was recorded and the operation counts.
func (r *recorder) history() (History, map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.h
	h.Grants = append([]Grant(nil), h.Grants...)
	h.Ops = append([]LeaseOp(nil), h.Ops...)
	h.Admin = append([]AdminOp(nil), h.Admin...)
	h.Crashes = append([]Crash(nil), h.Crashes...)
	h.Samples = append([]Sample(nil), h.Samples...)
	h.Finals = append([]Final(nil), h.Finals...)
	ops := make(map[string]int, len(r.ops))
	for k, v := range r.ops {
		ops[k] = v
	}
	return h, ops
}
