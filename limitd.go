// Package limitd holds the domain types of limitd that both the server and its
// clients speak: limits, leases, waiters, the requests that change them, and
// the stable error codes of the HTTP API.
//
// It is deliberately small and free of I/O so that the public Go client can
// share it with the server (client/ cannot import internal/ packages), which
// keeps the wire format and the error codes defined in exactly one place.
package limitd

import (
	"math"
	"time"
)

// Limit is a named concurrency limit as the API shows it.
type Limit struct {
	Name              string    `json:"name"`
	Capacity          int       `json:"capacity"`
	InUse             int       `json:"in_use"`
	Waiting           int       `json:"waiting"`
	DefaultTTLSeconds float64   `json:"default_ttl_seconds"`
	Description       string    `json:"description"`
	CreatedAt         time.Time `json:"created_at"`
	UpdatedAt         time.Time `json:"updated_at"`
}

// Lease is a grant of slots of one limit to one holder.
type Lease struct {
	ID         string    `json:"id"`
	Limit      string    `json:"limit"`
	Slots      int       `json:"slots"`
	Holder     string    `json:"holder"`
	Fence      uint64    `json:"fence"`
	AcquiredAt time.Time `json:"acquired_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	TTLSeconds float64   `json:"ttl_seconds"`
}

// Waiter is an acquire request that is queued until its slots are free.
type Waiter struct {
	Position     int       `json:"position"`
	Slots        int       `json:"slots"`
	Holder       string    `json:"holder"`
	WaitingSince time.Time `json:"waiting_since"`
	// WaitingSeconds is how long it has waited when the queue was read.
	WaitingSeconds float64 `json:"waiting_seconds"`
}

// LimitList is the body of GET /v1/limits.
type LimitList struct {
	Limits []Limit `json:"limits"`
}

// LeaseList is the body of GET /v1/limits/{name}/leases.
type LeaseList struct {
	Leases []Lease `json:"leases"`
}

// WaiterList is the body of GET /v1/limits/{name}/waiters, head of the queue first.
type WaiterList struct {
	Waiters []Waiter `json:"waiters"`
}

// Seconds converts a duration to the float seconds used on the wire.
func Seconds(d time.Duration) float64 {
	return d.Seconds()
}

// Duration converts wire seconds to a duration, rounding to the microsecond so
// that values such as 0.1 do not turn into 99.999999ms. Values beyond what a
// Duration holds saturate (and NaN is 0) rather than wrapping around, so a
// huge wait_seconds is clamped to the server's maximum, not turned negative.
func Duration(seconds float64) time.Duration {
	const maxMicros = float64(math.MaxInt64 / int64(time.Microsecond))
	us := math.Round(seconds * 1e6)
	switch {
	case math.IsNaN(us):
		return 0
	case us >= maxMicros:
		return time.Duration(math.MaxInt64)
	case us <= -maxMicros:
		return time.Duration(math.MinInt64)
	}
	return time.Duration(us) * time.Microsecond
}
