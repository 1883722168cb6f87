package client

import "github.com/limitd/limitd"

// Sentinel is an error value that stands for one of the API's error codes.
// errors.Is(err, s) reports whether err is (or wraps) a *limitd.Error with
// that code, which is how every error the server answers with arrives.
//
// The Err values are constants, so no caller can change what they mean.
type Sentinel limitd.Code

// The errors the server can answer with, one per code of the API.
const (
	ErrInvalidRequest      = Sentinel(limitd.CodeInvalidRequest)
	ErrUnauthorized        = Sentinel(limitd.CodeUnauthorized)
	ErrForbidden           = Sentinel(limitd.CodeForbidden)
	ErrLimitNotFound       = Sentinel(limitd.CodeLimitNotFound)
	ErrLeaseNotFound       = Sentinel(limitd.CodeLeaseNotFound)
	ErrNotFound            = Sentinel(limitd.CodeNotFound)
	ErrMethodNotAllowed    = Sentinel(limitd.CodeMethodNotAllowed)
	ErrSlotsExceedCapacity = Sentinel(limitd.CodeSlotsExceedCapacity)
	ErrSuperseded          = Sentinel(limitd.CodeSuperseded)
	ErrBodyTooLarge        = Sentinel(limitd.CodeBodyTooLarge)
	// ErrNoSlots is what Acquire returns when no slot became free within
	// its Wait.
	ErrNoSlots          = Sentinel(limitd.CodeNoSlots)
	ErrQueueFull        = Sentinel(limitd.CodeQueueFull)
	ErrShuttingDown     = Sentinel(limitd.CodeShuttingDown)
	ErrStarting         = Sentinel(limitd.CodeStarting)
	ErrStoreUnavailable = Sentinel(limitd.CodeStoreUnavailable)
	ErrInternal         = Sentinel(limitd.CodeInternal)
)

// ErrLeaseLost is wrapped by the errors that say a lease was lost while it
// was held: an admin deleted it or its limit (renew answered 404), or the
// server could not be reached to renew it until its expiry had passed. After
// that the slot may belong to someone else.
const ErrLeaseLost = clientError("lease lost")

// Code is the API code s stands for.
func (s Sentinel) Code() limitd.Code { return limitd.Code(s) }

func (s Sentinel) Error() string {
	return "limitd: " + string(s)
}

// Is makes errors.Is(s, &limitd.Error{Code: c}) true for s's own code, so
// sentinels and server errors compare the same way in either direction.
func (s Sentinel) Is(target error) bool {
	switch t := target.(type) {
	case *limitd.Error:
		return t != nil && t.Code == limitd.Code(s)
	case Sentinel:
		return t == s
	}
	return false
}

// As lets (*limitd.Error).Is, which looks for an *limitd.Error in its
// target, see a Sentinel as the error it stands for. That is what makes
// errors.Is(serverErr, client.ErrLimitNotFound) compare codes.
func (s Sentinel) As(target any) bool {
	if p, ok := target.(**limitd.Error); ok {
		*p = &limitd.Error{Code: limitd.Code(s)}
		return true
	}
	return false
}

// clientError is an error that the client itself raises (not the server).
type clientError string

func (e clientError) Error() string { return "limitd: " + string(e) }
