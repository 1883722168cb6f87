package client

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"time"

	"github.com/limitd/limitd"
)

// AcquireOption changes one acquire (of Acquire or Do).
type AcquireOption func(*acquireConfig)

type acquireConfig struct {
	slots   int
	ttl     time.Duration
	wait    time.Duration
	waitSet bool
	holder  string
	key     string
}

// Slots asks for n slots instead of 1.
func Slots(n int) AcquireOption {
	return func(a *acquireConfig) { a.slots = n }
}

// TTL sets the lease's time to live (the limit's default TTL otherwise).
// The lease renews itself every third of it, so a worker that dies holds its
// slot for at most one TTL.
func TTL(d time.Duration) AcquireOption {
	return func(a *acquireConfig) { a.ttl = d }
}

// Wait bounds how long Acquire waits for a slot in total, across all of its
// long-polls and retries; after that it returns an error that matches
// ErrNoSlots. Wait(0) tries once without waiting. Without Wait, Acquire
// waits until its context ends.
func Wait(d time.Duration) AcquireOption {
	return func(a *acquireConfig) { a.wait, a.waitSet = max(d, 0), true }
}

// Holder overrides the client's holder name for one acquire.
func Holder(name string) AcquireOption {
	return func(a *acquireConfig) { a.holder = name }
}

// IdempotencyKey sets the Idempotency-Key of the acquire. Acquire makes a
// random one by default and sends it with every retry; set your own to make
// retries across processes (a restarted job asking again) idempotent too.
func IdempotencyKey(key string) AcquireOption {
	return func(a *acquireConfig) { a.key = key }
}

// Acquire takes slots of limit, waiting until they are free, and returns a
// lease that renews itself in the background until Release is called or the
// lease is lost (see Lease.Done). Call Release when the work is done: until
// then a goroutine keeps the lease alive.
//
// Acquire waits with long-polls of at most a minute each and asks again at
// once when one ends without a slot, so it is served in the server's FIFO
// order the moment its slots are free. The one exception is a server (or
// something in front of it) that does not hold long-polls at all: a 423
// that comes back within 50 ms of a longer poll is a spin, and Acquire
// pauses before asking again, for a random time that grows with each
// consecutive spin up to the client's maximum backoff. A 423 after a
// long-poll of the server's own, shorter, maximum wait is not a spin and
// is followed by the next poll at once. Network errors and 503 answers
// (queue full, server restarting) are retried with capped exponential
// backoff and jitter, honouring Retry-After; every request of one Acquire
// carries the same Idempotency-Key, so a grant whose answer was lost is
// returned by the retry instead of taking a second lease.
//
// ctx bounds the wait only: the returned lease lives on after ctx ends.
// Acquire returns an error matching ErrNoSlots when Wait elapsed, ctx's
// error when ctx ended, and the server's error (ErrLimitNotFound,
// ErrSlotsExceedCapacity, ...) for answers that retrying cannot change.
func (c *Client) Acquire(ctx context.Context, limit string, opts ...AcquireOption) (*Lease, error) {
	cfg := acquireConfig{holder: c.holder}
	for _, opt := range opts {
		opt(&cfg)
	}
	req := limitd.AcquireRequest{Holder: cfg.holder}
	if cfg.slots != 0 {
		req.Slots = &cfg.slots
	}
	if cfg.ttl != 0 {
		req.TTLSeconds = new(limitd.Seconds(cfg.ttl))
	}
	if err := limitd.ValidateName(limit); err != nil {
		return nil, err
	}
	if err := req.Validate(limitd.MaxTTLCeiling); err != nil {
		return nil, err
	}
	if cfg.key == "" {
		cfg.key = newKey()
	} else if err := limitd.ValidateIdempotencyKey(cfg.key); err != nil {
		return nil, err
	}

	var deadline time.Time
	if cfg.waitSet {
		deadline = time.Now().Add(cfg.wait)
	}
	hdr := http.Header{"Idempotency-Key": {cfg.key}}
	path := "/v1/limits/" + url.PathEscape(limit) + "/acquire"
	failures := 0
	spins := 0 // consecutive 423s that came back too soon to have waited
	for {
		poll := c.pollCap()
		if !deadline.IsZero() {
			poll = min(poll, max(time.Until(deadline), 0))
		}
		req.WaitSeconds = new(limitd.Seconds(poll))

		pctx, cancel := context.WithTimeout(ctx, poll+pollGrace)
		var l limitd.Lease
		sent := time.Now()
		resp, err := c.call(pctx, http.MethodPost, path, hdr, req, &l)
		received := time.Now()
		cancel()

		switch {
		case err == nil:
			// 201 is a new grant, 200 the replay of one whose answer a
			// previous attempt lost; both are this Acquire's lease.
			return c.startLease(l, received), nil
		case ctx.Err() != nil:
			return nil, fmt.Errorf("limitd: acquire %q: %w", limit, ctx.Err())
		case errors.Is(err, ErrNoSlots):
			if !deadline.IsZero() && !time.Now().Before(deadline) {
				return nil, fmt.Errorf("limitd: acquire %q: no slot within %v: %w", limit, cfg.wait, err)
			}
			// The long-poll ended without a slot; with Retry-After 0 the
			// server says to ask again at once, which keeps our place as
			// close to the queue as a long-poll can.
			failures = 0
			d := resp.retryAfter
			switch {
			case poll <= spinThreshold:
				// A poll this short (the last one before the deadline)
				// is answered quickly by any server: it says nothing.
			case received.Sub(sent) < spinThreshold:
				// No server that waits could have answered this soon: it
				// holds no long-polls (a maximum wait of about 0) or a
				// proxy answers for it. Asking again at once would be a
				// hot loop, so back off, as for an error. Any slower 423,
				// such as one after a server's maximum wait shorter than
				// our poll, is a real long-poll and gets none.
				spins++
				d = c.backoff(spins, resp.retryAfter)
			default:
				spins = 0
			}
			if d > 0 {
				if err := c.pause(ctx, deadline, d); err != nil {
					return nil, fmt.Errorf("limitd: acquire %q: %w", limit, err)
				}
			}
		case retryable(ctx, resp, err):
			if !deadline.IsZero() && !time.Now().Before(deadline) {
				return nil, fmt.Errorf("limitd: acquire %q: gave up after %v: %w", limit, cfg.wait, err)
			}
			failures++
			d := c.backoff(failures, resp.retryAfter)
			c.log.WarnContext(ctx, "limitd: acquire failed, retrying", "limit", limit, "attempt", failures, "retry_in", d.Round(time.Millisecond), "err", err)
			if perr := c.pause(ctx, deadline, d); perr != nil {
				return nil, fmt.Errorf("limitd: acquire %q: %w (last error: %v)", limit, perr, err)
			}
		default:
			return nil, fmt.Errorf("limitd: acquire %q: %w", limit, err)
		}
	}
}

// spinThreshold is how soon after a poll of more than it a 423 must come
// for Acquire to take it as a spin rather than a long-poll. Far below any
// maximum wait a server is run with (seconds to minutes), and above the
// round trip on a local network, so a server that answers at once is
// caught; across a slower link the round trip itself bounds the rate.
const spinThreshold = 50 * time.Millisecond

// pause waits d, or until ctx ends; a wait deadline that comes sooner cuts
// it short, so the last poll still goes out before the deadline.
func (c *Client) pause(ctx context.Context, deadline time.Time, d time.Duration) error {
	if !deadline.IsZero() {
		d = min(d, max(time.Until(deadline), 0))
	}
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// backoff is the pause before retry number n (from 1): Retry-After plus a
// random part up to min(max, min·2^(n-1)). The random part ("full jitter")
// spreads out the clients that all lost the server at the same moment.
func (c *Client) backoff(n int, retryAfter time.Duration) time.Duration {
	bound := c.maxBackoff
	if n <= 30 {
		bound = min(c.maxBackoff, c.minBackoff<<(n-1))
	}
	return retryAfter + rand.N(bound+1)
}

// newKey returns a random 128-bit Idempotency-Key.
func newKey() string {
	var b [16]byte
	_, _ = cryptorand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}
