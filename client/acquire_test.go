package client_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/limitd/limitd"
	"github.com/limitd/limitd/client"
	"github.com/limitd/limitd/internal/daemon"
	"github.com/limitd/limitd/internal/servertest"
)

func TestAcquireRelease(t *testing.T) {
	t.Parallel()
	_, c := mustStart(t, client.WithHolder("worker-1"))
	name := limitName(t)
	mustPutLimit(t, c, name, 2)

	l, err := c.Acquire(t.Context(), name, client.Slots(2), client.TTL(30*time.Second))
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if len(l.ID()) != 26 || l.Limit() != name || l.Slots() != 2 || l.Fence() == 0 {
		t.Errorf("lease = id %q limit %q slots %d fence %d", l.ID(), l.Limit(), l.Slots(), l.Fence())
	}
	if got := l.Lease(); got.Holder != "worker-1" || got.TTLSeconds != 30 {
		t.Errorf("holder %q ttl %v, want worker-1 and 30", got.Holder, got.TTLSeconds)
	}
	if until := time.Until(l.ExpiresAt()); until < 25*time.Second || until > 31*time.Second {
		t.Errorf("expires in %v, want about 30s", until)
	}
	leases, err := c.Leases(t.Context(), name)
	if err != nil || len(leases) != 1 || leases[0].ID != l.ID() {
		t.Fatalf("Leases = %v, %v; want just %s", leases, err, l.ID())
	}
	if err := l.Release(t.Context()); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if err := l.Release(t.Context()); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	if leases, _ := c.Leases(t.Context(), name); len(leases) != 0 {
		t.Fatalf("leases after release: %v", leases)
	}
	select {
	case <-l.Done():
		t.Fatal("Done closed by Release; it is for lost leases only")
	default:
	}
	if l.Err() != nil {
		t.Fatalf("Err after Release = %v", l.Err())
	}
}

// A waiter gets its slot the moment it is freed: the long-poll is answered
// by the release, not by a retry interval (the Prefect problem).
func TestAcquireIsWokenPromptlyByRelease(t *testing.T) {
	t.Parallel()
	_, c := mustStart(t)
	name := limitName(t)
	mustPutLimit(t, c, name, 1)
	first := mustAcquire(t, c, name)

	got := make(chan *client.Lease, 1)
	go func() {
		l, err := c.Acquire(context.Background(), name)
		if err != nil {
			t.Errorf("waiting Acquire: %v", err)
		}
		got <- l
	}()
	eventually(t, "the second acquire to queue", func() bool { return waitersOf(t, c, name) == 1 })
	released := time.Now()
	if err := first.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	second := recv(t, got, "the waiting acquire")
	if second == nil {
		t.FailNow()
	}
	defer second.Release(context.Background())
	if d := time.Since(released); d > time.Second {
		t.Errorf("waiter got its slot %v after the release; want at once", d)
	}
	if second.Fence() <= first.Fence() {
		t.Errorf("fence %d not above the earlier grant's %d", second.Fence(), first.Fence())
	}
}

func TestAcquireWaitTimesOutWithErrNoSlots(t *testing.T) {
	t.Parallel()
	_, c := mustStart(t)
	name := limitName(t)
	mustPutLimit(t, c, name, 0) // paused: everyone waits

	start := time.Now()
	_, err := c.Acquire(t.Context(), name, client.Wait(300*time.Millisecond))
	elapsed := time.Since(start)
	if !errors.Is(err, client.ErrNoSlots) {
		t.Fatalf("Acquire = %v, want ErrNoSlots", err)
	}
	if elapsed < 300*time.Millisecond || elapsed > 3*time.Second {
		t.Errorf("gave up after %v, want just after 300ms", elapsed)
	}

	_, err = c.Acquire(t.Context(), name, client.Wait(0))
	if !errors.Is(err, client.ErrNoSlots) {
		t.Fatalf("Acquire with Wait(0) = %v, want ErrNoSlots", err)
	}
	if n := waitersOf(t, c, name); n != 0 {
		t.Errorf("%d waiters left behind", n)
	}
}

// Without Wait, Acquire asks again at once after each long-poll ends (423)
// and keeps one Idempotency-Key throughout; an http.Client Timeout shorter
// than a poll does not cut the polls.
func TestAcquireChainsLongPollsWithOneKey(t *testing.T) {
	t.Parallel()
	srv, c := mustStart(t)
	name := limitName(t)
	mustPutLimit(t, c, name, 1)
	holder := mustAcquire(t, c, name)

	p := newProxy(t, srv.URL)
	var polls atomic.Int32
	p.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/acquire") && polls.Add(1) == 3 {
			// Two polls of ~1s each have ended with 423; free the slot
			// while the third waits.
			go holder.Release(context.Background())
		}
		return false
	})
	// Timeout 2s makes each poll 1s.
	waiter := mustClient(t, p.URL, client.WithHTTPClient(&http.Client{Timeout: 2 * time.Second}))
	l, err := waiter.Acquire(t.Context(), name)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	defer l.Release(context.Background())
	keys := p.acquireKeys()
	if len(keys) != 3 {
		t.Fatalf("%d acquire requests, want 3 (two polls answered 423, the third granted)", len(keys))
	}
	for _, k := range keys {
		if k != keys[0] || len(k) != 32 {
			t.Fatalf("Idempotency-Keys %q: want one 128-bit hex key on every poll", keys)
		}
	}
}

func TestAcquireCanceledLeavesNoWaiter(t *testing.T) {
	t.Parallel()
	_, c := mustStart(t)
	name := limitName(t)
	mustPutLimit(t, c, name, 0)

	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Acquire(ctx, name)
		errc <- err
	}()
	eventually(t, "the acquire to queue", func() bool { return waitersOf(t, c, name) == 1 })
	cancel()
	if err := recv(t, errc, "the canceled acquire"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire = %v, want context.Canceled", err)
	}
	eventually(t, "the waiter to leave the queue", func() bool { return waitersOf(t, c, name) == 0 })
}

// Errors that retrying cannot fix are returned at once.
func TestAcquireFinalErrors(t *testing.T) {
	t.Parallel()
	_, c := mustStart(t)
	name := limitName(t)
	mustPutLimit(t, c, name, 2)
	cases := []struct {
		name  string
		limit string
		opts  []client.AcquireOption
		want  error
	}{
		{"ErrLimitNotFound", "no-such-limit", nil, client.ErrLimitNotFound},
		{"ErrSlotsExceedCapacity", name, []client.AcquireOption{client.Slots(3)}, client.ErrSlotsExceedCapacity},
		{"ErrInvalidRequest/name", "-bad", nil, client.ErrInvalidRequest},
		{"ErrInvalidRequest/ttl", name, []client.AcquireOption{client.TTL(time.Millisecond)}, client.ErrInvalidRequest},
		{"ErrInvalidRequest/key", name, []client.AcquireOption{client.IdempotencyKey("has space")}, client.ErrInvalidRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Acquire(t.Context(), tc.limit, tc.opts...)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Acquire = %v, want %v", err, tc.want)
			}
		})
	}
}

// Network errors and 503s are retried with the same Idempotency-Key, and
// Retry-After is honoured.
func TestAcquireRetriesNetworkErrorsAnd503(t *testing.T) {
	t.Parallel()
	srv, admin := mustStart(t)
	name := limitName(t)
	mustPutLimit(t, admin, name, 1)
	p := newProxy(t, srv.URL)
	var n atomic.Int32
	var answered503, retryAfterGap atomic.Int64 // UnixNano, Duration
	p.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		switch n.Add(1) {
		case 1:
			hangUp(w)
		case 2:
			answered503.Store(time.Now().UnixNano())
			w.Header().Set("Content-Type", "application/problem+json")
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"type":"x","title":"Queue full","status":503,"detail":"full","code":"queue_full"}`)
		case 3:
			retryAfterGap.Store(time.Now().UnixNano() - answered503.Load())
			w.WriteHeader(http.StatusBadGateway)
			io.WriteString(w, "<html>bad gateway</html>")
		default:
			return false
		}
		return true
	})
	c := mustClient(t, p.URL)
	l, err := c.Acquire(t.Context(), name)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	defer l.Release(context.Background())
	keys := p.acquireKeys()
	if len(keys) != 4 {
		t.Fatalf("%d requests, want 4", len(keys))
	}
	for _, k := range keys {
		if k != keys[0] {
			t.Fatalf("keys %q differ between retries", keys)
		}
	}
	if gap := time.Duration(retryAfterGap.Load()); gap < time.Second {
		t.Errorf("retried %v after Retry-After: 1", gap)
	}
}

// A grant whose answer is lost in a server crash is returned by the retry
// to the restarted server: one Acquire, one lease.
func TestAcquireSpansRestartExactlyOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := servertest.Start(t, dir)
	admin := mustClient(t, srv.URL)
	name := limitName(t)
	mustPutLimit(t, admin, name, 2) // room for a wrongful second lease

	p := newProxy(t, srv.URL)
	var granted atomic.Value // the lease id of the answer that was dropped
	crashed := make(chan struct{})
	p.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		if granted.Load() != nil || !strings.HasSuffix(r.URL.Path, "/acquire") {
			return false
		}
		// Forward the first acquire, let the server commit the grant,
		// then lose the answer and take the server down with it.
		rec := httptest.NewRecorder()
		p.forward(rec, r)
		if rec.Code != http.StatusCreated {
			t.Errorf("first acquire answered %d: %s", rec.Code, rec.Body)
		}
		granted.Store(rec.Header().Get("Location"))
		p.setDown(true)
		hangUp(w)
		close(crashed)
		return true
	})

	c := mustClient(t, p.URL)
	got := make(chan *client.Lease, 1)
	go func() {
		l, err := c.Acquire(context.Background(), name)
		if err != nil {
			t.Errorf("Acquire across the restart: %v", err)
		}
		got <- l
	}()
	recv(t, crashed, "the first grant")
	srv.Close()
	srv = servertest.Start(t, dir)
	p.setTarget(srv.URL)
	p.setDown(false)

	l := recv(t, got, "the acquire to succeed after the restart")
	if l == nil {
		t.FailNow()
	}
	defer l.Release(context.Background())
	if want := "/v1/leases/" + l.ID(); granted.Load() != want {
		t.Errorf("Acquire returned %s, but the dropped grant was %v", want, granted.Load())
	}
	admin = mustClient(t, srv.URL)
	leases, err := admin.Leases(t.Context(), name)
	if err != nil || len(leases) != 1 || leases[0].ID != l.ID() {
		t.Fatalf("leases after the restart = %v, %v; want exactly the one Acquire returned", leases, err)
	}
	if keys := p.acquireKeys(); len(keys) < 2 || keys[0] != keys[len(keys)-1] {
		t.Errorf("keys %q: want the retry to carry the first request's key", keys)
	}
}

// A waiter answered 503 by a draining server keeps waiting through the
// restart and is served once, by the restarted server.
func TestAcquireWaitsThroughRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := servertest.Start(t, dir)
	name := limitName(t)
	p := newProxy(t, srv.URL)
	c := mustClient(t, p.URL)
	mustPutLimit(t, c, name, 1)
	holder := mustAcquire(t, c, name)

	got := make(chan *client.Lease, 1)
	go func() {
		l, err := c.Acquire(context.Background(), name)
		if err != nil {
			t.Errorf("Acquire across the restart: %v", err)
		}
		got <- l
	}()
	eventually(t, "the acquire to queue", func() bool { return waitersOf(t, c, name) == 1 })
	p.setDown(true)
	srv.Close()
	srv = servertest.Start(t, dir)
	p.setTarget(srv.URL)
	p.setDown(false)
	eventually(t, "the acquire to queue again after the restart", func() bool { return waitersOf(t, c, name) == 1 })
	if err := holder.Release(t.Context()); err != nil {
		t.Fatalf("releasing the durable lease after the restart: %v", err)
	}
	l := recv(t, got, "the acquire after the restart")
	if l == nil {
		t.FailNow()
	}
	defer l.Release(context.Background())
	leases, err := c.Leases(t.Context(), name)
	if err != nil || len(leases) != 1 || leases[0].ID != l.ID() {
		t.Fatalf("leases = %v, %v; want exactly the one Acquire returned", leases, err)
	}
}

func TestAcquireGivesUpOnUnreachableServerAfterWait(t *testing.T) {
	t.Parallel()
	srv, _ := mustStart(t)
	p := newProxy(t, srv.URL)
	p.setDown(true)
	c := mustClient(t, p.URL)
	_, err := c.Acquire(t.Context(), "x", client.Wait(200*time.Millisecond))
	if err == nil || errors.Is(err, client.ErrNoSlots) {
		t.Fatalf("Acquire = %v, want the network error", err)
	}
	var le *limitd.Error
	if errors.As(err, &le) {
		t.Fatalf("Acquire = %v: a network error is not a server error", err)
	}
}

// maxWait returns a servertest option that sets the server's maximum wait.
func maxWait(d time.Duration) servertest.Option {
	return func(c *daemon.Config) { c.MaxWait, c.DefaultWait = d, d }
}

// A server that holds no long-polls (a maximum wait of 1 ms: every 423 comes
// at once) must not turn Acquire into a hot loop of requests, and Acquire
// must still get the slot once it is free.
func TestAcquireDoesNotSpinOnInstant423s(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, t.TempDir(), maxWait(time.Millisecond))
	admin := mustClient(t, srv.URL)
	name := limitName(t)
	mustPutLimit(t, admin, name, 1)
	holder := mustAcquire(t, admin, name)
	p := newProxy(t, srv.URL)

	// Default backoff bounds: a hot loop makes hundreds of requests in a
	// second; the guard makes a handful.
	c, err := client.New(p.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Acquire(t.Context(), name, client.Wait(time.Second))
	if !errors.Is(err, client.ErrNoSlots) {
		t.Fatalf("Acquire = %v, want ErrNoSlots", err)
	}
	if n := len(p.acquireKeys()); n < 2 || n > 30 {
		t.Fatalf("%d acquire requests in 1s against a server that answers at once; want a few (backoff), not a hot loop", n)
	}

	// The backoff is bounded and the acquire goes on asking: with a
	// small bound, a freed slot is found within a few polls.
	before := len(p.acquireKeys())
	var polls atomic.Int32
	p.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/acquire") && polls.Add(1) == 3 {
			go holder.Release(context.Background())
		}
		return false
	})
	c2 := mustClient(t, p.URL, client.WithRetryBackoff(10*time.Millisecond, 20*time.Millisecond))
	l, err := c2.Acquire(t.Context(), name)
	if err != nil {
		t.Fatalf("Acquire after the slot was freed: %v", err)
	}
	defer l.Release(context.Background())
	if n := len(p.acquireKeys()) - before; n < 3 {
		t.Fatalf("granted after %d requests, want at least 3", n)
	}
}

// A server whose maximum wait is shorter than the client's poll answers each
// long-poll 423 after its own maximum: that is a long-poll, not a spin, and
// Acquire asks again at once. With a backoff of up to an hour, any pause
// between those polls would keep the test from finishing.
func TestAcquireAsksAgainAtOnceAfterServersMaxWait(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, t.TempDir(), maxWait(100*time.Millisecond))
	admin := mustClient(t, srv.URL)
	name := limitName(t)
	mustPutLimit(t, admin, name, 1)
	holder := mustAcquire(t, admin, name)
	p := newProxy(t, srv.URL)
	var polls atomic.Int32
	p.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/acquire") && polls.Add(1) == 5 {
			// Four polls have ended with a 423 after 100 ms each.
			go holder.Release(context.Background())
		}
		return false
	})
	c := mustClient(t, p.URL, client.WithRetryBackoff(time.Hour, time.Hour))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	l, err := c.Acquire(ctx, name)
	if err != nil {
		t.Fatalf("Acquire = %v after %d polls; want the slot without pauses between polls", err, polls.Load())
	}
	defer l.Release(context.Background())
	if n := polls.Load(); n != 5 {
		t.Fatalf("%d polls, want 5 (four 423s, then the grant)", n)
	}
}
