package limitd

import (
	"math"
	"time"
	"unicode/utf8"
)

// Bounds of the values a request may carry. Limits that depend on server
// flags (the maximum TTL) are passed to Validate by the server.
const (
	MaxNameLength        = 128
	MaxCapacity          = 1_000_000
	MaxSlots             = MaxCapacity
	MaxDescriptionLength = 1024
	MaxHolderLength      = 256
	MaxIdempotencyKey    = 255
	MinTTL               = time.Second
	// MaxTTLCeiling is the largest TTL any server accepts (24 h); a server's
	// --max-ttl may only lower it.
	MaxTTLCeiling = 24 * time.Hour
)

// NameRule is the rule for limit names, quoted in every bad-name error.
const NameRule = "1-128 characters of A-Z a-z 0-9 . _ - :, starting with a letter or digit"

// ValidateName checks a limit name against NameRule.
func ValidateName(name string) error {
	if name == "" || len(name) > MaxNameLength {
		return Errorf(CodeInvalidRequest, "name %q is invalid: a limit name is %s", name, NameRule)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if i == 0 && !alnum || !alnum && c != '.' && c != '_' && c != '-' && c != ':' {
			return Errorf(CodeInvalidRequest, "name %q is invalid: a limit name is %s", name, NameRule)
		}
	}
	return nil
}

// LimitSpec is the body of PUT /v1/limits/{name}. Only Capacity is required.
type LimitSpec struct {
	Capacity          *int     `json:"capacity"`
	DefaultTTLSeconds *float64 `json:"default_ttl_seconds,omitempty"`
	Description       string   `json:"description,omitempty"`
}

// Validate checks the spec; maxTTL is the server's maximum TTL.
func (s LimitSpec) Validate(maxTTL time.Duration) error {
	if s.Capacity == nil {
		return Errorf(CodeInvalidRequest, "field \"capacity\" is required: an integer from 0 to %d", MaxCapacity)
	}
	if *s.Capacity < 0 || *s.Capacity > MaxCapacity {
		return Errorf(CodeInvalidRequest, "field \"capacity\" is %d: it must be an integer from 0 to %d", *s.Capacity, MaxCapacity)
	}
	if s.DefaultTTLSeconds != nil {
		if err := validateTTL("default_ttl_seconds", *s.DefaultTTLSeconds, maxTTL); err != nil {
			return err
		}
	}
	if err := validateText("description", s.Description, MaxDescriptionLength); err != nil {
		return err
	}
	return nil
}

// AcquireRequest is the body of POST /v1/limits/{name}/acquire. Every field
// is optional; nil means the server's default.
type AcquireRequest struct {
	Slots       *int     `json:"slots,omitempty"`
	TTLSeconds  *float64 `json:"ttl_seconds,omitempty"`
	WaitSeconds *float64 `json:"wait_seconds,omitempty"`
	Holder      string   `json:"holder,omitempty"`
}

// Validate checks the request; maxTTL is the server's maximum TTL. Waits
// longer than the server's maximum are not an error: they are clamped.
func (r AcquireRequest) Validate(maxTTL time.Duration) error {
	if r.Slots != nil && (*r.Slots < 1 || *r.Slots > MaxSlots) {
		return Errorf(CodeInvalidRequest, "field \"slots\" is %d: it must be an integer from 1 to %d", *r.Slots, MaxSlots)
	}
	if r.TTLSeconds != nil {
		if err := validateTTL("ttl_seconds", *r.TTLSeconds, maxTTL); err != nil {
			return err
		}
	}
	if r.WaitSeconds != nil {
		w := *r.WaitSeconds
		if math.IsNaN(w) || w < 0 {
			return Errorf(CodeInvalidRequest, "field \"wait_seconds\" is %v: it must be a number of seconds of 0 or more (0 tries once without waiting)", w)
		}
	}
	return validateText("holder", r.Holder, MaxHolderLength)
}

// RenewRequest is the optional body of POST /v1/leases/{id}/renew.
type RenewRequest struct {
	TTLSeconds *float64 `json:"ttl_seconds,omitempty"`
}

// Validate checks the request; maxTTL is the server's maximum TTL.
func (r RenewRequest) Validate(maxTTL time.Duration) error {
	if r.TTLSeconds == nil {
		return nil
	}
	return validateTTL("ttl_seconds", *r.TTLSeconds, maxTTL)
}

// ValidateIdempotencyKey checks the Idempotency-Key header's value.
func ValidateIdempotencyKey(key string) error {
	if len(key) > MaxIdempotencyKey {
		return Errorf(CodeInvalidRequest, "header \"Idempotency-Key\" is %d bytes: it must be 1 to %d printable ASCII characters", len(key), MaxIdempotencyKey)
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x21 || key[i] > 0x7e {
			return Errorf(CodeInvalidRequest, "header \"Idempotency-Key\" must be 1 to %d printable ASCII characters without spaces", MaxIdempotencyKey)
		}
	}
	return nil
}

// ValidateLeaseID checks that id has the form of a ULID (26 characters of
// Crockford base32), so malformed ids are a 400 rather than a 404.
func ValidateLeaseID(id string) error {
	if len(id) != 26 {
		return Errorf(CodeInvalidRequest, "lease id %q is invalid: a lease id is a ULID of 26 characters", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return Errorf(CodeInvalidRequest, "lease id %q is invalid: a lease id is a ULID of 26 characters", id)
		}
	}
	if id[0] > '7' {
		return Errorf(CodeInvalidRequest, "lease id %q is invalid: a lease id is a ULID of 26 characters", id)
	}
	return nil
}

func validateTTL(field string, seconds float64, maxTTL time.Duration) error {
	if math.IsNaN(seconds) || seconds < MinTTL.Seconds() || seconds > maxTTL.Seconds() {
		return Errorf(CodeInvalidRequest, "field %q is %v: it must be a number of seconds from %v to %v", field, seconds, MinTTL.Seconds(), maxTTL.Seconds())
	}
	return nil
}

func validateText(field, s string, maxLen int) error {
	if !utf8.ValidString(s) {
		return Errorf(CodeInvalidRequest, "field %q must be valid UTF-8", field)
	}
	if n := utf8.RuneCountInString(s); n > maxLen {
		return Errorf(CodeInvalidRequest, "field %q has %d characters: it may have at most %d", field, n, maxLen)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return Errorf(CodeInvalidRequest, "field %q must not contain control characters", field)
		}
	}
	return nil
}
