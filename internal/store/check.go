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

func checkLease(r slots.LeaseRecord, now time.Time) error {
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
	case r.ExpiresAt.Before(r.AcquiredAt):
		return errors.New("it expires before it was acquired")
	case r.ExpiresAt.After(now.Add(limitd.MaxTTLCeiling + time.Minute)):
		// No renew can push an expiry further than the longest TTL from
		// now; such a lease would hold its slots practically for ever.
		return fmt.Errorf("it expires at %v, further ahead than the longest TTL allows", r.ExpiresAt)
	case !utf8.ValidString(r.Holder) || utf8.RuneCountInString(r.Holder) > limitd.MaxHolderLength:
		return errors.New("holder is not valid UTF-8 of at most 256 characters")
	case len(r.IdempotencyKey) > limitd.MaxIdempotencyKey:
		return errors.New("idempotency key is too long")
	}
	return nil
}
