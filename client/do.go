package client

import (
	"context"
	"fmt"
	"time"
)

// releaseTimeout bounds the release at the end of Do. Do's own ctx may be
// canceled by then (that may be why fn returned), so the release gets a
// context of its own.
const releaseTimeout = 10 * time.Second

// Do acquires slots of limit (see Acquire for opts), runs fn while holding
// them, and releases them when fn returns or panics; a panic goes on after
// the release.
//
// fn's context is canceled when ctx is, and also when the lease is lost
// (context.Cause then wraps ErrLeaseLost), so fn should watch it and stop:
// once a lease is lost its slot may be given to someone else.
//
// Do returns fn's error. If the lease was lost while fn ran, the error also
// wraps ErrLeaseLost, even when fn returned nil: part of the work then ran
// without the slot, which is what a limit is there to prevent, so Do does
// not report it as a plain success. A failed release (the server
// unreachable for 10 s; the lease then expires by itself at the end of its
// TTL) is returned only when everything else succeeded; a lease that was
// already gone at release is not an error.
func (c *Client) Do(ctx context.Context, limit string, fn func(ctx context.Context) error, opts ...AcquireOption) (err error) {
	l, err := c.Acquire(ctx, limit, opts...)
	if err != nil {
		return err
	}
	fctx, cancel := context.WithCancelCause(ctx)
	stopWatch := context.AfterFunc(l.lost, func() { cancel(l.Err()) })
	// Deferred so that it also runs while fn panics (or calls
	// runtime.Goexit): no recover is needed, and the panic keeps its
	// original stack.
	defer func() {
		stopWatch()
		cancel(nil)
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		defer rcancel()
		if rerr := l.Release(rctx); rerr != nil && err == nil {
			err = rerr
		}
	}()
	err = fn(fctx)
	// Checked before the release stops the renewer: a loss after fn
	// returned did not affect fn.
	if lerr := l.Err(); lerr != nil {
		if err == nil {
			return lerr
		}
		return fmt.Errorf("%w (while %w)", err, lerr)
	}
	return err
}
