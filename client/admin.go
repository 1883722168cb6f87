package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/limitd/limitd"
)

// The admin calls send one request each and do not retry: they are quick,
// and whoever calls them is better placed to decide what a failure means.

// LimitConfig is the configuration of a limit for PutLimit.
type LimitConfig struct {
	// Capacity is how many slots may be held at once; 0 pauses the limit.
	Capacity int
	// DefaultTTL is the TTL of leases that ask for none; 0 leaves it to the
	// server (60 s).
	DefaultTTL time.Duration
	// Description is free text for humans.
	Description string
}

// PutLimit creates the limit name, or replaces its configuration. Lowering
// the capacity revokes no lease: new grants wait until they fit.
func (c *Client) PutLimit(ctx context.Context, name string, cfg LimitConfig) (*limitd.Limit, error) {
	if err := limitd.ValidateName(name); err != nil {
		return nil, err
	}
	spec := limitd.LimitSpec{Capacity: &cfg.Capacity, Description: cfg.Description}
	if cfg.DefaultTTL != 0 {
		spec.DefaultTTLSeconds = new(limitd.Seconds(cfg.DefaultTTL))
	}
	if err := spec.Validate(limitd.MaxTTLCeiling); err != nil {
		return nil, err
	}
	var l limitd.Limit
	if _, err := c.call(ctx, http.MethodPut, limitPath(name), nil, spec, &l); err != nil {
		return nil, fmt.Errorf("limitd: put limit %q: %w", name, err)
	}
	return &l, nil
}

// GetLimit returns the limit name with its current use.
func (c *Client) GetLimit(ctx context.Context, name string) (*limitd.Limit, error) {
	if err := limitd.ValidateName(name); err != nil {
		return nil, err
	}
	var l limitd.Limit
	if _, err := c.call(ctx, http.MethodGet, limitPath(name), nil, nil, &l); err != nil {
		return nil, fmt.Errorf("limitd: get limit %q: %w", name, err)
	}
	return &l, nil
}

// ListLimits returns every limit (that the token may see), sorted by name.
func (c *Client) ListLimits(ctx context.Context) ([]limitd.Limit, error) {
	var list limitd.LimitList
	if _, err := c.call(ctx, http.MethodGet, "/v1/limits", nil, nil, &list); err != nil {
		return nil, fmt.Errorf("limitd: list limits: %w", err)
	}
	return list.Limits, nil
}

// DeleteLimit deletes the limit name and its leases; its waiters are
// answered ErrLimitNotFound and the holders of its leases lose them.
func (c *Client) DeleteLimit(ctx context.Context, name string) error {
	if err := limitd.ValidateName(name); err != nil {
		return err
	}
	if _, err := c.call(ctx, http.MethodDelete, limitPath(name), nil, nil, nil); err != nil {
		return fmt.Errorf("limitd: delete limit %q: %w", name, err)
	}
	return nil
}

// Leases returns the live leases of limit, oldest first.
func (c *Client) Leases(ctx context.Context, limit string) ([]limitd.Lease, error) {
	if err := limitd.ValidateName(limit); err != nil {
		return nil, err
	}
	var list limitd.LeaseList
	if _, err := c.call(ctx, http.MethodGet, limitPath(limit)+"/leases", nil, nil, &list); err != nil {
		return nil, fmt.Errorf("limitd: leases of %q: %w", limit, err)
	}
	return list.Leases, nil
}

// Waiters returns the queued acquires of limit, head of the queue first.
func (c *Client) Waiters(ctx context.Context, limit string) ([]limitd.Waiter, error) {
	if err := limitd.ValidateName(limit); err != nil {
		return nil, err
	}
	var list limitd.WaiterList
	if _, err := c.call(ctx, http.MethodGet, limitPath(limit)+"/waiters", nil, nil, &list); err != nil {
		return nil, fmt.Errorf("limitd: waiters of %q: %w", limit, err)
	}
	return list.Waiters, nil
}

// GetLease returns the live lease id.
func (c *Client) GetLease(ctx context.Context, id string) (*limitd.Lease, error) {
	if err := limitd.ValidateLeaseID(id); err != nil {
		return nil, err
	}
	var l limitd.Lease
	if _, err := c.call(ctx, http.MethodGet, leasePath(id), nil, nil, &l); err != nil {
		return nil, fmt.Errorf("limitd: get lease %s: %w", id, err)
	}
	return &l, nil
}

// Renew moves the expiry of lease id to now plus ttl (0: the lease's own
// TTL). A *Lease from Acquire renews itself; this is for leases held by
// other means, such as a lease id handed between processes.
func (c *Client) Renew(ctx context.Context, id string, ttl time.Duration) (*limitd.Lease, error) {
	if err := limitd.ValidateLeaseID(id); err != nil {
		return nil, err
	}
	l, _, err := c.renew(ctx, id, ttl)
	if err != nil {
		return nil, fmt.Errorf("limitd: renew lease %s: %w", id, err)
	}
	return l, nil
}

// ReleaseLease releases lease id and wakes the waiters of its limit; used
// by admins to free a slot held by a stuck worker, whose lease is then lost.
// Unlike Lease.Release, a lease that is already gone is an error here
// (ErrLeaseNotFound), since an admin wants to know.
func (c *Client) ReleaseLease(ctx context.Context, id string) error {
	if err := limitd.ValidateLeaseID(id); err != nil {
		return err
	}
	if _, err := c.call(ctx, http.MethodDelete, leasePath(id), nil, nil, nil); err != nil {
		return fmt.Errorf("limitd: release lease %s: %w", id, err)
	}
	return nil
}

func limitPath(name string) string { return "/v1/limits/" + url.PathEscape(name) }
