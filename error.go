package limitd

import (
	"errors"
	"fmt"
	"net/http"
)

// Code is a stable, machine-readable error code of the API. Codes never
// change meaning; clients branch on them rather than on HTTP statuses.
type Code string

// The error codes of SPEC.md, plus the few that the server adds where the
// SPEC is silent (documented in openapi.yaml).
const (
	CodeInvalidRequest      Code = "invalid_request"
	CodeUnauthorized        Code = "unauthorized"
	CodeForbidden           Code = "forbidden"
	CodeLimitNotFound       Code = "limit_not_found"
	CodeLeaseNotFound       Code = "lease_not_found"
	CodeNotFound            Code = "not_found" // a path the API does not have
	CodeMethodNotAllowed    Code = "method_not_allowed"
	CodeSlotsExceedCapacity Code = "slots_exceed_capacity"
	CodeSuperseded          Code = "superseded"
	CodeBodyTooLarge        Code = "body_too_large"
	CodeNoSlots             Code = "no_slots"
	CodeQueueFull           Code = "queue_full"
	CodeShuttingDown        Code = "shutting_down"
	CodeStarting            Code = "starting"
	CodeStoreUnavailable    Code = "store_unavailable"
	CodeInternal            Code = "internal"
)

// codeInfo is the one table from a code to its HTTP status and title.
var codeInfo = map[Code]struct {
	status int
	title  string
}{
	CodeInvalidRequest:      {http.StatusBadRequest, "Invalid request"},
	CodeUnauthorized:        {http.StatusUnauthorized, "Unauthorized"},
	CodeForbidden:           {http.StatusForbidden, "Forbidden"},
	CodeLimitNotFound:       {http.StatusNotFound, "Limit not found"},
	CodeLeaseNotFound:       {http.StatusNotFound, "Lease not found"},
	CodeNotFound:            {http.StatusNotFound, "Not found"},
	CodeMethodNotAllowed:    {http.StatusMethodNotAllowed, "Method not allowed"},
	CodeSlotsExceedCapacity: {http.StatusConflict, "Slots exceed capacity"},
	CodeSuperseded:          {http.StatusConflict, "Superseded"},
	CodeBodyTooLarge:        {http.StatusRequestEntityTooLarge, "Body too large"},
	CodeNoSlots:             {http.StatusLocked, "No slots"},
	CodeQueueFull:           {http.StatusServiceUnavailable, "Queue full"},
	CodeShuttingDown:        {http.StatusServiceUnavailable, "Shutting down"},
	CodeStarting:            {http.StatusServiceUnavailable, "Starting"},
	CodeStoreUnavailable:    {http.StatusServiceUnavailable, "Store unavailable"},
	CodeInternal:            {http.StatusInternalServerError, "Internal error"},
}

// Codes returns every code the API can answer with.
func Codes() []Code {
	out := make([]Code, 0, len(codeInfo))
	for c := range codeInfo {
		out = append(out, c)
	}
	return out
}

// Status is the HTTP status that carries c; unknown codes are 500.
func (c Code) Status() int {
	if info, ok := codeInfo[c]; ok {
		return info.status
	}
	return http.StatusInternalServerError
}

// Title is the short human summary of c used as a problem's title.
func (c Code) Title() string {
	if info, ok := codeInfo[c]; ok {
		return info.title
	}
	return "Internal error"
}

// TypeURI is the problem "type" of c: a stable URI that names the code.
func (c Code) TypeURI() string {
	return "https://limitd.dev/problems/" + string(c)
}

// Error is a domain error: a stable code and a message for humans. The
// server turns it into a problem+json body; the client turns that back into
// an *Error, so errors.Is works the same on both sides.
type Error struct {
	Code    Code
	Message string
	// RetryAfter, when positive, is sent as the Retry-After header (seconds).
	RetryAfter int
}

// Errorf returns an *Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Is reports whether target is an *Error with the same code, so that
// errors.Is(err, &limitd.Error{Code: limitd.CodeNoSlots}) works.
func (e *Error) Is(target error) bool {
	var t *Error
	if !errors.As(target, &t) {
		return false
	}
	return t.Code == e.Code
}

// ErrorCode returns the code of err if it is (or wraps) an *Error, and
// CodeInternal otherwise.
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// Problem is an RFC 9457 problem+json body with limitd's stable code.
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail"`
	Code     Code   `json:"code"`
	Instance string `json:"instance,omitempty"`
}
