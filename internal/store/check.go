package store

import (
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/limitd/limitd"
	"github.com/limitd/limitd/internal/slots"
)

// checkLimit applies the API's own rules to a loaded limit, so a row that
// could never have been written through the API is refused at start.
func checkLimit(r slots.LimitRecord) error {
	if err := limitd.ValidateName(r.Name); err != nil {
		return err
	}
	if r.Capacity < 0 || r.Capacity > limitd.MaxCapacity {
		return fmt.Errorf("capacity %d is outside 0..%d", r.Capacity, limitd.MaxCapacity)
	}
	if r.DefaultTTL != 0 && (r.DefaultTTL < limitd.MinTTL || r.DefaultTTL > limitd.MaxTTLCeiling) {
		return fmt.Errorf("default TTL %v is outside %v..%v", r.DefaultTTL, limitd.MinTTL, limitd.MaxTTLCeiling)
	}
	if !utf8.ValidString(r.Description) || utf8.RuneCountInString(r.Description) > limitd.MaxDescriptionLength {
		return errors.New("description is not valid UTF-8 of at most 1024 characters")
	}
	return nil
}

// checkLease refuses a lease row the API could never have written. Its
// times are no reason to refuse one: a wall clock set back makes a lease
// expire further ahead than its TTL allows (when set back while limitd was
// down) or, renewed after the step, expire before it was acquired. A
// refusal would keep limitd from starting until the clock caught up;
// ClampExpiries bounds such leases instead.
func checkLease(r slots.LeaseRecord, _ time.Time) error {
	if err := limitd.ValidateLeaseID(r.ID); err != nil {
		return err
	}
	if err := limitd.ValidateName(r.Limit); err != nil {
		return err
	}
	switch {
	case r.Slots < 1 || r.Slots > limitd.MaxSlots:
		return fmt.Errorf("slots %d is outside 1..%d", r.Slots, limitd.MaxSlots)
	case r.Fence < 1:
		return errors.New("fence is below 1")
	case r.TTL < limitd.MinTTL || r.TTL > limitd.MaxTTLCeiling:
		return fmt.Errorf("TTL %v is outside %v..%v", r.TTL, limitd.MinTTL, limitd.MaxTTLCeiling)
	case !utf8.ValidString(r.Holder) || utf8.RuneCountInString(r.Holder) > limitd.MaxHolderLength:
		return errors.New("holder is not valid UTF-8 of at most 256 characters")
	case len(r.IdempotencyKey) > limitd.MaxIdempotencyKey:
		return errors.New("idempotency key is too long")
	}
	return nil
}

// ClampExpiries bounds every lease to what a grant or renew made at or
// before now could have written: an expiry at most its TTL after now. A
// lease beyond that was written under a wall clock that has since been set
// back (or on a host whose clock was ahead); kept as stored, it would hold
// its slots for as long as the clock was off, which may be years. Clamping
// never ends a lease early: its real remaining time is at most its TTL.
//
// It also moves an acquisition time that is after now, or after the
// expiry, back to the earlier of the two, so that hold times stay positive;
// that alone is not reported.
//
// It changes leases in place and returns the ones whose expiry it moved,
// so that the caller can log them and write the new expiries back.
func ClampExpiries(leases []slots.LeaseRecord, now time.Time) []slots.LeaseRecord {
	now = now.Round(0).UTC()
	var clamped []slots.LeaseRecord
	for i := range leases {
		l := &leases[i]
		moved := false
		if latest := now.Add(min(l.TTL, limitd.MaxTTLCeiling)); l.ExpiresAt.After(latest) {
			l.ExpiresAt, moved = latest, true
		}
		if l.AcquiredAt.After(now) {
			l.AcquiredAt = now
		}
		if l.AcquiredAt.After(l.ExpiresAt) {
			l.AcquiredAt = l.ExpiresAt
		}
		if moved {
			clamped = append(clamped, *l)
		}
	}
	return clamped
}
