package client_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/limitd/limitd/client"
)

// A lease outlives many TTLs because it renews itself.
func TestLeaseRenewsItself(t *testing.T) {
	t.Parallel()
	srv, c := mustStart(t)
	name := limitName(t)
	mustPutLimit(t, c, name, 1)
	p := newProxy(t, srv.URL)
	var renewals atomic.Int32
	p.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/renew") {
			renewals.Add(1)
		}
		return false
	})
	holder := mustClient(t, p.URL)
	l := mustAcquire(t, holder, name, client.TTL(time.Second))
	acquired := l.Lease().AcquiredAt

	// Expiring 2.5 TTLs after the grant takes renewals after 1 TTL.
	eventually(t, "the lease to be renewed past 2 TTLs", func() bool {
		return l.ExpiresAt().Sub(acquired) > 2500*time.Millisecond
	})
	got, err := c.GetLease(t.Context(), l.ID())
	if err != nil {
		t.Fatalf("GetLease after %v of a 1s TTL: %v", time.Since(acquired), err)
	}
	if !got.ExpiresAt.Equal(l.ExpiresAt()) && got.ExpiresAt.Before(l.ExpiresAt()) {
		t.Errorf("server's expiry %v is before the client's %v", got.ExpiresAt, l.ExpiresAt())
	}
	// A third of the TTL apart: at least 4 renewals in 2.5 s, and not a
	// flood of them either.
	if n := renewals.Load(); n < 4 || n > 12 {
		t.Errorf("%d renewals in %v with a 1s TTL; want about 3 a second", n, time.Since(acquired))
	}
	select {
	case <-l.Done():
		t.Fatalf("lease lost: %v", l.Err())
	default:
	}
}

func TestLeaseLostWhenAdminReleasesIt(t *testing.T) {
	t.Parallel()
	_, c := mustStart(t)
	name := limitName(t)
	mustPutLimit(t, c, name, 1)
	l := mustAcquire(t, c, name, client.TTL(time.Second))

	if err := c.ReleaseLease(t.Context(), l.ID()); err != nil {
		t.Fatal(err)
	}
	recv(t, l.Done(), "Done after the admin released the lease")
	if err := l.Err(); !errors.Is(err, client.ErrLeaseLost) || !errors.Is(err, client.ErrLeaseNotFound) {
		t.Fatalf("Err = %v, want ErrLeaseLost wrapping ErrLeaseNotFound", err)
	}
	// The holder's own release of a lost lease is not an error.
	if err := l.Release(t.Context()); err != nil {
		t.Fatalf("Release of a lost lease: %v", err)
	}
	// Nor is that of a lease released behind the renewer's back before
	// it noticed.
	l2 := mustAcquire(t, c, name)
	if err := c.ReleaseLease(t.Context(), l2.ID()); err != nil {
		t.Fatal(err)
	}
	if err := l2.Release(t.Context()); err != nil {
		t.Fatalf("Release of a lease an admin released: %v", err)
	}
	if err := c.ReleaseLease(t.Context(), l2.ID()); !errors.Is(err, client.ErrLeaseNotFound) {
		t.Fatalf("admin ReleaseLease of a gone lease = %v, want ErrLeaseNotFound", err)
	}
}

func TestLeaseLostWhenLimitDeleted(t *testing.T) {
	t.Parallel()
	_, c := mustStart(t)
	name := limitName(t)
	mustPutLimit(t, c, name, 1)
	l := mustAcquire(t, c, name, client.TTL(time.Second))
	if err := c.DeleteLimit(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	recv(t, l.Done(), "Done after the limit was deleted")
	if !errors.Is(l.Err(), client.ErrLeaseLost) {
		t.Fatalf("Err = %v, want ErrLeaseLost", l.Err())
	}
}

// A holder that cannot reach the server takes its lease as lost once its
// TTL has run out, and not before: by then the server has expired it.
func TestLeaseLostWhenServerUnreachableUntilExpiry(t *testing.T) {
	t.Parallel()
	srv, admin := mustStart(t)
	name := limitName(t)
	mustPutLimit(t, admin, name, 1)
	p := newProxy(t, srv.URL)
	c := mustClient(t, p.URL)
	l := mustAcquire(t, c, name, client.TTL(time.Second))
	cut := time.Now()
	p.setDown(true)

	recv(t, l.Done(), "Done after the TTL ran out unrenewed")
	lostAfter := time.Since(cut)
	if lostAfter > 2*time.Second {
		t.Errorf("lost %v after the cut; the TTL is 1s", lostAfter)
	}
	if err := l.Err(); !errors.Is(err, client.ErrLeaseLost) || errors.Is(err, client.ErrLeaseNotFound) {
		t.Fatalf("Err = %v, want ErrLeaseLost for an unreachable server", err)
	}
	// The server expires it on its side too, so the slot is free again.
	eventually(t, "the server to expire the lease", func() bool {
		ls, err := admin.Leases(t.Context(), name)
		return err == nil && len(ls) == 0
	})
}

// Renewal rides out an outage shorter than the TTL.
func TestLeaseSurvivesOutageShorterThanTTL(t *testing.T) {
	t.Parallel()
	srv, _ := mustStart(t)
	name := limitName(t)
	p := newProxy(t, srv.URL)
	var outage atomic.Bool
	var failed atomic.Int32
	p.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		if outage.Load() && strings.HasSuffix(r.URL.Path, "/renew") {
			failed.Add(1)
			hangUp(w)
			return true
		}
		return false
	})
	c := mustClient(t, p.URL)
	mustPutLimit(t, c, name, 1)
	l := mustAcquire(t, c, name, client.TTL(3*time.Second))
	first := l.ExpiresAt()

	outage.Store(true)
	eventually(t, "renewals to fail", func() bool { return failed.Load() >= 3 })
	outage.Store(false)
	eventually(t, "a renewal after the outage", func() bool { return l.ExpiresAt().After(first.Add(time.Second)) })
	select {
	case <-l.Done():
		t.Fatalf("lease lost during an outage shorter than its TTL: %v", l.Err())
	default:
	}
}

func TestReleaseStopsRenewalAndFreesSlot(t *testing.T) {
	t.Parallel()
	_, c := mustStart(t)
	name := limitName(t)
	mustPutLimit(t, c, name, 1)
	l := mustAcquire(t, c, name, client.TTL(time.Second))
	if err := l.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The slot is free at once.
	l2, err := c.Acquire(t.Context(), name, client.Wait(0))
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	if err := l2.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestReleaseRetriesUntilServerAnswers(t *testing.T) {
	t.Parallel()
	srv, admin := mustStart(t)
	name := limitName(t)
	mustPutLimit(t, admin, name, 1)
	p := newProxy(t, srv.URL)
	var deletes atomic.Int32
	p.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodDelete && deletes.Add(1) <= 2 {
			hangUp(w)
			return true
		}
		return false
	})
	c := mustClient(t, p.URL)
	l := mustAcquire(t, c, name)
	if err := l.Release(t.Context()); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if n := deletes.Load(); n != 3 {
		t.Errorf("%d DELETEs, want 3 (two failed)", n)
	}
	if ls, _ := admin.Leases(t.Context(), name); len(ls) != 0 {
		t.Fatalf("leases after Release: %v", ls)
	}
}

func TestReleaseGivesUpWhenContextEnds(t *testing.T) {
	t.Parallel()
	srv, admin := mustStart(t)
	name := limitName(t)
	mustPutLimit(t, admin, name, 1)
	p := newProxy(t, srv.URL)
	c := mustClient(t, p.URL)
	l := mustAcquire(t, c, name)
	p.setDown(true)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := l.Release(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Release = %v, want DeadlineExceeded", err)
	}
	// Asked again once the server is back, it releases.
	p.setDown(false)
	if err := l.Release(t.Context()); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	if ls, _ := admin.Leases(t.Context(), name); len(ls) != 0 {
		t.Fatalf("leases after Release: %v", ls)
	}
}
