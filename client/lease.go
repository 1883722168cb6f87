package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/limitd/limitd"
)

// Lease is a held grant of slots. It renews itself in the background every
// third of its TTL until Release is called or it is lost. Its methods are
// safe for concurrent use.
type Lease struct {
	c     *Client
	id    string
	limit string
	slots int
	fence uint64

	lost context.Context         // canceled, with the reason as cause, when the lease is lost
	lose context.CancelCauseFunc // cancels lost
	stop context.CancelFunc      // stops the renewer and its in-flight request
	// renewerDone is closed when the renewer goroutine has returned.
	renewerDone chan struct{}

	releaseMu sync.Mutex // serializes Release
	released  bool       // under releaseMu

	mu    sync.Mutex
	lease limitd.Lease // the server's latest view
	// deadline is when the lease must be taken as expired by our own clock:
	// the local time a renew was sent plus the TTL it got. Comparing the
	// server's expires_at with our clock would trust the clocks to agree.
	deadline time.Time
}

// startLease wraps a granted lease, received at the given local time, and
// starts its renewer.
func (c *Client) startLease(l limitd.Lease, received time.Time) *Lease {
	lost, lose := context.WithCancelCause(context.Background())
	stopCtx, stop := context.WithCancel(context.Background())
	ls := &Lease{
		c:           c,
		id:          l.ID,
		limit:       l.Limit,
		slots:       l.Slots,
		fence:       l.Fence,
		lost:        lost,
		lose:        lose,
		stop:        stop,
		renewerDone: make(chan struct{}),
		lease:       l,
	}
	// A grant can come at any moment of a long-poll, so the time the
	// request was sent plus the TTL could already be past; received+TTL
	// overestimates by the one-way latency only, and the first renewal (a
	// third of the TTL later) replaces it with a conservative sent+TTL.
	ls.deadline = received.Add(ls.ttl())
	go ls.renew(stopCtx)
	return ls
}

// ID is the lease id (a ULID).
func (l *Lease) ID() string { return l.id }

// Limit is the name of the leased limit.
func (l *Lease) Limit() string { return l.limit }

// Slots is the number of slots held.
func (l *Lease) Slots() int { return l.slots }

// Fence is the grant's fencing token: larger than that of every earlier
// grant of the limit. Pass it to a protected resource so that it can refuse
// the writes of a holder whose lease has since expired.
func (l *Lease) Fence() uint64 { return l.fence }

// ExpiresAt is the expiry the server gave at the latest renewal (the
// server's clock).
func (l *Lease) ExpiresAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lease.ExpiresAt
}

// Lease is the server's view of the lease at its latest renewal.
func (l *Lease) Lease() limitd.Lease {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lease
}

// Done is closed when the lease is lost: renew answered 404 (an admin
// deleted the lease or its limit, or it expired), or the server could not
// be reached to renew it until it expired. It is not closed by Release.
func (l *Lease) Done() <-chan struct{} { return l.lost.Done() }

// Err is nil while the lease is held (or after Release), and after Done is
// closed an error that wraps ErrLeaseLost and the reason.
func (l *Lease) Err() error {
	if l.lost.Err() == nil {
		return nil
	}
	return context.Cause(l.lost)
}

// Release stops the renewal and gives the slots back. It returns nil once
// the slots are no longer held: released, already gone (404: lost, expired
// or deleted), or expired while the server could not be reached. Network
// errors and 503s are retried until ctx ends. Calling it again after it
// returned nil does nothing.
func (l *Lease) Release(ctx context.Context) error {
	l.releaseMu.Lock()
	defer l.releaseMu.Unlock()
	if l.released {
		return nil
	}
	l.stop()
	<-l.renewerDone
	if l.lost.Err() != nil {
		l.released = true
		return nil
	}
	failures := 0
	for {
		resp, err := l.c.call(ctx, http.MethodDelete, leasePath(l.id), nil, nil, nil)
		switch {
		case err == nil, errors.Is(err, ErrLeaseNotFound):
			l.released = true
			return nil
		case !retryable(ctx, resp, err):
			if ctx.Err() != nil {
				err = fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
			}
			return fmt.Errorf("limitd: release lease %s: %w", l.id, err)
		}
		// The server expires the lease by itself at its deadline, so
		// there is no point trying past it.
		if !time.Now().Before(l.localDeadline()) {
			l.released = true
			return nil
		}
		failures++
		d := l.c.backoff(failures, resp.retryAfter)
		l.c.log.WarnContext(ctx, "limitd: release failed, retrying", "lease", l.id, "limit", l.limit, "attempt", failures, "retry_in", d.Round(time.Millisecond), "err", err)
		if perr := l.c.pause(ctx, l.localDeadline(), d); perr != nil {
			return fmt.Errorf("limitd: release lease %s: %w (last error: %v)", l.id, perr, err)
		}
	}
}

// ttl is the lease's TTL; l.mu must be held once the renewer runs.
func (l *Lease) ttl() time.Duration {
	d := limitd.Duration(l.lease.TTLSeconds)
	if d <= 0 {
		d = l.lease.ExpiresAt.Sub(l.lease.AcquiredAt)
	}
	// A lease always has a TTL of at least a second; the floor only keeps
	// a malformed answer from making the renewer spin.
	return max(d, limitd.MinTTL)
}

func (l *Lease) localDeadline() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deadline
}

// renew keeps the lease alive until ctx (stopped by Release) ends or the
// lease is lost. One timer, reset after each attempt: a third of the TTL
// after a success, a backoff after a failure, never past the deadline.
func (l *Lease) renew(ctx context.Context) {
	defer close(l.renewerDone)
	l.mu.Lock()
	t := time.NewTimer(l.ttl() / 3)
	l.mu.Unlock()
	defer t.Stop()
	failures := 0
	var lastErr error
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		deadline := l.localDeadline()
		if !time.Now().Before(deadline) {
			l.markLost(fmt.Errorf("%w: lease %s of %q expired at %s before the server could be reached to renew it: %w",
				ErrLeaseLost, l.id, l.limit, l.ExpiresAt().Format(time.RFC3339Nano), lastErr))
			return
		}
		// A renew that has not answered by the deadline cannot save the
		// lease any more.
		rctx, cancel := context.WithDeadline(ctx, deadline)
		sent := time.Now()
		nl, resp, err := l.c.renew(rctx, l.id, 0)
		cancel()
		switch {
		case err == nil:
			failures = 0
			l.mu.Lock()
			l.lease = *nl
			l.deadline = sent.Add(l.ttl())
			next := l.ttl() / 3
			l.mu.Unlock()
			t.Reset(next)
		case ctx.Err() != nil:
			return
		case errors.Is(err, ErrLeaseNotFound), errors.Is(err, ErrLimitNotFound):
			l.markLost(fmt.Errorf("%w: lease %s of %q: %w", ErrLeaseLost, l.id, l.limit, err))
			return
		default:
			// Anything else (network, 503, even 401 while tokens are
			// being rotated) may pass before the deadline; keep trying.
			lastErr = err
			failures++
			d := min(l.c.backoff(failures, resp.retryAfter), max(time.Until(deadline), 0))
			l.c.log.Warn("limitd: renew failed, retrying", "lease", l.id, "limit", l.limit, "attempt", failures, "retry_in", d.Round(time.Millisecond), "expires_in", time.Until(deadline).Round(time.Millisecond), "err", err)
			t.Reset(d)
		}
	}
}

// markLost records why the lease was lost and closes Done.
func (l *Lease) markLost(err error) {
	l.c.log.Error("limitd: lease lost", "lease", l.id, "limit", l.limit, "err", err)
	l.lose(err)
}

// renew sends one renew; ttl 0 keeps the lease's own TTL.
func (c *Client) renew(ctx context.Context, id string, ttl time.Duration) (*limitd.Lease, response, error) {
	var body any
	if ttl != 0 {
		body = limitd.RenewRequest{TTLSeconds: new(limitd.Seconds(ttl))}
	}
	var l limitd.Lease
	resp, err := c.call(ctx, http.MethodPost, leasePath(id)+"/renew", nil, body, &l)
	if err != nil {
		return nil, resp, err
	}
	return &l, resp, nil
}

func leasePath(id string) string { return "/v1/leases/" + url.PathEscape(id) }
