package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"
)

// workload drives the clients, the admin, the sampler and the crasher of
// one run against one server.
type workload struct {
	o      options
	rec    *recorder
	srv    *server
	limits []string
	reg    *registry
	// stop is closed at the end of --duration: clients finish what they
	// are doing, release what they hold and return.
	stop chan struct{}
}

func (w *workload) stopping() bool {
	select {
	case <-w.stop:
		return true
	default:
		return false
	}
}

// sleep waits d or until the run stops; it reports whether d passed.
func (w *workload) sleep(d time.Duration) bool {
	if d <= 0 {
		return !w.stopping()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.stop:
		return false
	}
}

// registry is the set of leases clients hold or forgot and that have not
// expired, so that after a restart every one can be looked up.
type registry struct {
	mu     sync.Mutex
	leases map[string]regEntry
}

type regEntry struct {
	limit     string
	fence     uint64
	expires   time.Duration
	forgotten bool
}

func (r *registry) put(id, limit string, fence uint64, expires time.Duration) {
	r.mu.Lock()
	r.leases[id] = regEntry{limit: limit, fence: fence, expires: expires, forgotten: r.leases[id].forgotten}
	r.mu.Unlock()
}

// forget marks a lease its holder stopped caring about.
func (r *registry) forget(id string) {
	r.mu.Lock()
	if e, ok := r.leases[id]; ok {
		e.forgotten = true
		r.leases[id] = e
	}
	r.mu.Unlock()
}

func (r *registry) drop(id string) {
	r.mu.Lock()
	delete(r.leases, id)
	r.mu.Unlock()
}

// live returns the leases not expired at now, dropping the others.
func (r *registry) live(now time.Duration) map[string]regEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]regEntry)
	for id, e := range r.leases {
		if e.expires <= now {
			delete(r.leases, id)
			continue
		}
		out[id] = e
	}
	return out
}

// held is a lease a client holds, with what it believes of its expiry.
type held struct {
	id, limit string
	fence     uint64
	expires   time.Duration
	ttl       time.Duration
}

type acquireArgs struct {
	limit, holder, key string
	slots              int
	ttl, wait          time.Duration
	// disconnectAfter cancels the first attempt after this long: a client
	// that goes away while waiting.
	disconnectAfter time.Duration
}

func randTTL(rng *rand.Rand, maxTTL time.Duration) time.Duration {
	// Whole milliseconds, from the server's minimum TTL of 1 s.
	ms := 1000 + rng.IntN(int(maxTTL/time.Millisecond)-1000+1)
	return time.Duration(ms) * time.Millisecond
}

// client is one worker: it acquires, holds, renews, forgets, releases,
// disconnects and retries until the run stops.
func (w *workload) client(ctx context.Context, n int) {
	rng := rand.New(rand.NewPCG(uint64(w.o.seed), uint64(n)+1))
	c := newHTTPClient(w.srv.url())
	defer c.close()
	for seq := 1; !w.stopping(); seq++ {
		a := acquireArgs{
			limit:  w.limits[rng.IntN(len(w.limits))],
			holder: fmt.Sprintf("c%d-%d", n, seq),
			slots:  1,
			ttl:    randTTL(rng, w.o.maxTTL),
			wait:   time.Duration(rng.IntN(3000)) * time.Millisecond,
		}
		switch p := rng.Float64(); {
		case p < 0.2:
			a.slots = 2
		case p < 0.28:
			a.slots = 3
		}
		if rng.Float64() < 0.15 {
			a.wait = 0
		}
		if rng.Float64() < 0.4 {
			a.key = fmt.Sprintf("k-%d-%d-%d", w.o.seed, n, seq)
		}
		if rng.Float64() < 0.12 {
			a.wait = 3 * time.Second
			a.disconnectAfter = time.Duration(50+rng.IntN(700)) * time.Millisecond
		}
		h, ans := w.acquire(ctx, c, a)
		if h == nil {
			if ans.outcome() == Unknown {
				// The server is down (or restarting): do not spin.
				w.sleep(time.Duration(50+rng.IntN(100)) * time.Millisecond)
			}
			continue
		}
		hs := []*held{h}
		if a.key != "" && rng.Float64() < 0.25 {
			// A client that did not see the answer retries with its key:
			// it must get the same lease back, not a second one.
			a.wait, a.disconnectAfter = 0, 0
			if h2, _ := w.acquire(ctx, c, a); h2 != nil && h2.id != h.id {
				hs = append(hs, h2)
			}
		}
		for _, extra := range hs[1:] {
			w.release(ctx, c, extra)
		}
		w.hold(ctx, c, rng, h)
	}
}

// acquire asks for a lease. Requests with an Idempotency-Key are retried
// with the same key after a network error or a 503, as a careful client
// does; a disconnecting request is retried at once when it has a key (it
// takes its own place back in the queue) and abandoned otherwise.
func (w *workload) acquire(ctx context.Context, c *httpClient, a acquireArgs) (*held, answer) {
	body := map[string]any{
		"slots":        a.slots,
		"ttl_seconds":  a.ttl.Seconds(),
		"wait_seconds": a.wait.Seconds(),
		"holder":       a.holder,
	}
	path := "/v1/limits/" + a.limit + "/acquire"
	started := w.rec.now()
	for attempt := 0; ; attempt++ {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if attempt == 0 && a.disconnectAfter > 0 {
			actx, cancel = context.WithTimeout(ctx, a.disconnectAfter)
		}
		ans := c.do(actx, http.MethodPost, path, body, a.key, a.wait+5*time.Second)
		disconnected := ans.err != nil && actx.Err() != nil && ctx.Err() == nil
		cancel()
		w.rec.count("acquire")
		switch {
		case ans.status == http.StatusCreated || ans.status == http.StatusOK:
			var l wireLease
			if !ans.decode(&l) {
				w.rec.count("acquire_bad_body")
				return nil, ans
			}
			g := Grant{Limit: a.limit, LeaseID: l.ID, Fence: l.Fence, Slots: l.Slots, Holder: l.Holder, Key: a.key,
				Started: started, Received: w.rec.now(), ExpiresAt: w.rec.offset(l.ExpiresAt), Replay: ans.status == http.StatusOK}
			w.rec.grant(g)
			if g.Replay {
				w.rec.count("grant_replay")
			} else {
				w.rec.count("grant")
			}
			w.reg.put(l.ID, a.limit, l.Fence, g.ExpiresAt)
			return &held{id: l.ID, limit: a.limit, fence: l.Fence, expires: g.ExpiresAt, ttl: a.ttl}, ans
		case disconnected:
			w.rec.count("disconnect_mid_wait")
			if a.key == "" {
				return nil, ans
			}
			w.rec.count("acquire_retry")
		case ans.outcome() == Unknown && a.key != "" && !w.stopping() && w.rec.now()-started < 15*time.Second:
			w.rec.count("acquire_retry")
			w.sleep(50 * time.Millisecond)
		default:
			switch {
			case ans.err != nil:
				w.rec.count("acquire_error")
			case ans.code != "":
				w.rec.count("acquire_" + ans.code)
			default:
				w.rec.count(fmt.Sprintf("acquire_%d", ans.status))
			}
			return nil, ans
		}
	}
}

// hold keeps a lease for a random time, renewing it with random TTLs
// before it expires, then releases it; or forgets it (lets it expire), at
// once or after some renewals.
func (w *workload) hold(ctx context.Context, c *httpClient, rng *rand.Rand, h *held) {
	if rng.Float64() < 0.08 {
		w.rec.count("forget")
		w.reg.forget(h.id)
		if rng.Float64() < 0.3 {
			w.get(ctx, c, h.id)
		}
		return
	}
	forgetLater := rng.Float64() < 0.05
	// Mostly short holds, for many grants and much contention; some long
	// ones, which need renewals and outlive crashes.
	mean := 100 * time.Millisecond
	switch p := rng.Float64(); {
	case p < 0.2:
		mean = 2 * time.Second
	case p < 0.5:
		mean = 400 * time.Millisecond
	}
	end := w.rec.now() + min(time.Duration(rng.ExpFloat64()*float64(mean)), 6*time.Second)
	for !w.stopping() {
		now := w.rec.now()
		if now >= end {
			break
		}
		renewAt := h.expires - h.ttl/2
		if renewAt >= end {
			w.sleep(end - now)
			break
		}
		if !w.sleep(renewAt - now) {
			break
		}
		ttl := randTTL(rng, w.o.maxTTL)
		switch o := w.renew(ctx, c, h, ttl); o {
		case OK:
		case Unknown:
			if w.rec.now() >= h.expires {
				// It expired while the server was down: nothing to release.
				w.rec.count("expired_while_down")
				return
			}
			w.sleep(time.Duration(50+rng.IntN(50)) * time.Millisecond)
		default:
			w.reg.drop(h.id)
			return
		}
	}
	if forgetLater && !w.stopping() {
		w.rec.count("forget_after_renew")
		w.reg.forget(h.id)
		return
	}
	w.release(ctx, c, h)
}

func (w *workload) renew(ctx context.Context, c *httpClient, h *held, ttl time.Duration) Outcome {
	sent := w.rec.now()
	ans := c.do(ctx, http.MethodPost, "/v1/leases/"+h.id+"/renew", map[string]any{"ttl_seconds": ttl.Seconds()}, "", 5*time.Second)
	op := LeaseOp{Kind: OpRenew, LeaseID: h.id, Sent: sent, Received: w.rec.now(), TTL: ttl}
	if ans.outcome() == OK {
		var l wireLease
		if ans.decode(&l) {
			op.Fence, op.ExpiresAt = l.Fence, w.rec.offset(l.ExpiresAt)
			h.expires, h.ttl = op.ExpiresAt, ttl
			w.reg.put(h.id, h.limit, l.Fence, op.ExpiresAt)
		}
	}
	op.Outcome = ans.outcome()
	w.rec.op(op)
	return op.Outcome
}

func (w *workload) get(ctx context.Context, c *httpClient, id string) {
	sent := w.rec.now()
	ans := c.do(ctx, http.MethodGet, "/v1/leases/"+id, nil, "", 5*time.Second)
	op := LeaseOp{Kind: OpGet, LeaseID: id, Sent: sent, Received: w.rec.now()}
	if ans.outcome() == OK {
		var l wireLease
		if ans.decode(&l) {
			op.Fence, op.ExpiresAt = l.Fence, w.rec.offset(l.ExpiresAt)
		}
	}
	op.Outcome = ans.outcome()
	w.rec.op(op)
}

// release deletes the lease, retrying after network errors until an answer
// or its expiry.
func (w *workload) release(ctx context.Context, c *httpClient, h *held) {
	w.reg.drop(h.id)
	for {
		sent := w.rec.now()
		ans := c.do(ctx, http.MethodDelete, "/v1/leases/"+h.id, nil, "", 5*time.Second)
		o := ans.outcome()
		w.rec.op(LeaseOp{Kind: OpRelease, LeaseID: h.id, Sent: sent, Received: w.rec.now(), Outcome: o})
		if o != Unknown || w.rec.now() >= h.expires || ctx.Err() != nil {
			return
		}
		// Not w.sleep: a release is finished even when the run stops, so
		// that the limits can drain.
		time.Sleep(50 * time.Millisecond)
	}
}

// admin changes capacities and deletes and re-creates limits, one request
// at a time, until the run stops.
func (w *workload) admin(ctx context.Context) {
	rng := rand.New(rand.NewPCG(uint64(w.o.seed), 0))
	c := newHTTPClient(w.srv.url())
	defer c.close()
	for w.sleep(time.Duration(float64(w.o.adminEvery) * (0.5 + rng.Float64()))) {
		name := w.limits[rng.IntN(len(w.limits))]
		if rng.Float64() < 0.25 {
			w.putOrDelete(ctx, c, name, true, 0)
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
			w.putOrDelete(ctx, c, name, false, 1+rng.IntN(8))
			continue
		}
		capacity := 1 + rng.IntN(8)
		if rng.Float64() < 0.05 {
			capacity = 0 // paused: everyone waits
		}
		w.putOrDelete(ctx, c, name, false, capacity)
	}
}

// putOrDelete sends one admin request, retrying until a definitive answer
// (or 30 s), and records it as one operation spanning all attempts.
func (w *workload) putOrDelete(ctx context.Context, c *httpClient, name string, del bool, capacity int) {
	op := AdminOp{Limit: name, Delete: del, Capacity: capacity, Sent: w.rec.now(), Outcome: Unknown}
	kind := "put_limit"
	if del {
		kind = "delete_limit"
	}
	for {
		var ans answer
		if del {
			ans = c.do(ctx, http.MethodDelete, "/v1/limits/"+name, nil, "", 10*time.Second)
		} else {
			ans = c.do(ctx, http.MethodPut, "/v1/limits/"+name, map[string]any{"capacity": capacity}, "", 10*time.Second)
		}
		op.Received = w.rec.now()
		o := ans.outcome()
		if o == OK || del && o == NotFound {
			// A 404 to a DELETE proves the limit is gone, whichever
			// attempt removed it.
			op.Outcome = OK
			if !del && ans.status == http.StatusCreated {
				kind = "create_limit"
			}
			break
		}
		if o != Unknown || op.Received-op.Sent > 30*time.Second || ctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	w.rec.admin(op)
	w.rec.count(kind)
}

// sampler reads every limit's waiter queue and then the limit itself, every
// sampleEvery. The queue is read first: a grant between the two reads then
// raises in_use, which can only hide a free slot, never invent one.
func (w *workload) sampler(ctx context.Context, done <-chan struct{}) {
	c := newHTTPClient(w.srv.url())
	defer c.close()
	t := time.NewTicker(w.o.sampleEvery)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		for _, name := range w.limits {
			s := Sample{Limit: name, At: w.rec.now()}
			var q wireWaiters
			var l wireLimit
			qa := c.do(ctx, http.MethodGet, "/v1/limits/"+name+"/waiters", nil, "", 2*time.Second)
			if qa.status == http.StatusOK && qa.decode(&q) {
				la := c.do(ctx, http.MethodGet, "/v1/limits/"+name, nil, "", 2*time.Second)
				if la.status == http.StatusOK && la.decode(&l) {
					s.OK, s.Capacity, s.InUse, s.Waiting = true, l.Capacity, l.InUse, l.Waiting
					if len(q.Waiters) > 0 {
						hd := q.Waiters[0]
						s.HasHead, s.HeadSlots, s.HeadHolder, s.HeadSince = true, hd.Slots, hd.Holder, hd.WaitingSince
					}
				}
			}
			w.rec.sample(s)
		}
	}
}

// crasher SIGKILLs and restarts the server kills times, evenly spread over
// the run with some jitter. After each restart it looks up every lease the
// clients still hold or forgot, and renews the forgotten ones (with the
// shortest TTL, so they soon expire as their holders meant): each must
// answer 200 with its fence unless its TTL passed.
func (w *workload) crasher(ctx context.Context) error {
	rng := rand.New(rand.NewPCG(uint64(w.o.seed), 1<<32))
	c := newHTTPClient(w.srv.url())
	defer c.close()
	space := w.o.duration / time.Duration(w.o.kills+1)
	for i := 1; i <= w.o.kills; i++ {
		at := space*time.Duration(i) + time.Duration((rng.Float64()-0.5)*0.4*float64(space))
		if !w.sleep(at - w.rec.now()) {
			return nil
		}
		killed := w.rec.now()
		w.srv.kill()
		if err := w.srv.start(ctx); err != nil {
			return fmt.Errorf("restart after kill %d: %w", i, err)
		}
		w.rec.crash(Crash{Killed: killed, Ready: w.rec.now()})
		w.rec.count("crash")
		for id, e := range w.reg.live(w.rec.now() + 50*time.Millisecond) {
			w.get(ctx, c, id)
			if e.forgotten {
				h := &held{id: id, limit: e.limit, fence: e.fence, expires: e.expires}
				w.renew(ctx, c, h, time.Second)
			}
		}
	}
	return nil
}
