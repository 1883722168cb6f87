package auth

import (
	"errors"
	"net/http"
	"strings"

	"github.com/limitd/limitd"
	"github.com/limitd/limitd/internal/api"
)

// LeaseLimitFunc returns the limit of a live lease, or an error when there
// is no such lease (slots.Manager.LeaseLimit).
type LeaseLimitFunc func(id string) (string, error)

// Middleware authenticates every request with the bearer token in its
// Authorization header against the keyring's current set, and authorizes it
// by the route's scope and the limit it touches. It belongs in
// api.Config.Middleware, where the router's context exists.
//
//   - /healthz, /readyz and /metrics need no token (probes and scrapers
//     carry none; put /metrics on its own listener to keep it private).
//   - Every other request needs a known token, or gets 401 unauthorized
//     with WWW-Authenticate: Bearer.
//   - GETs need scope read; acquire, renew and release need worker;
//     everything else (creating, changing and deleting limits) needs admin.
//     A weaker scope gets 403 forbidden.
//   - /v1/limits/{name}/... needs a pattern that covers the name, or gets
//     403. A name that is not valid cannot be covered by any pattern and
//     reaches the handler, which answers the API's 400.
//   - /v1/leases/{id}... needs a pattern that covers the lease's limit. A
//     lease the token cannot see is answered 404, exactly like a lease that
//     does not exist, so one team cannot probe for another's leases. The id
//     is looked up in the canonical form the handler uses (api.ParseLeaseID)
//     and a lease the lookup does not find is answered 404 here, never
//     passed on: whatever the handler would find, the check did not cover.
//     Until the state is loaded the answer is the API's 503 starting, since
//     every lease would look missing.
//   - GET /v1/limits lists only the limits the pattern covers.
//
// The token's NAME is recorded with api.SetPrincipal for the request log and
// the audit trail; the token itself is never logged.
func Middleware(k *Keyring, leaseLimit LeaseLimitFunc) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			pattern, params := api.MatchRoute(r)
			if r.Method == http.MethodGet && (pattern == "/healthz" || pattern == "/readyz" || pattern == "/metrics") {
				next.ServeHTTP(w, r)
				return
			}
			tok, err := authenticate(k.Set(), r)
			if err != nil {
				api.WriteProblem(w, r, err)
				return
			}
			api.SetPrincipal(r.Context(), tok.Name, tok.Scope >= ScopeAdmin)
			if pattern == "" {
				// No such route: the router answers 404 or 405 to a caller
				// that has proven it holds a token.
				next.ServeHTTP(w, r)
				return
			}
			need := RequiredScope(r.Method, pattern)
			if tok.Scope < need {
				api.WriteProblem(w, r, limitd.Errorf(limitd.CodeForbidden,
					"token %q has scope %s: %s %s needs scope %s", tok.Name, tok.Scope, r.Method, pattern, need))
				return
			}
			if pattern == "/v1/limits" {
				r = r.WithContext(api.WithVisibleFilter(r.Context(), tok.Pattern.Match))
			}
			if raw, ok := params["name"]; ok {
				if name, err := api.ParseLimitName(raw); err == nil && !tok.Pattern.Match(name) {
					api.WriteProblem(w, r, limitd.Errorf(limitd.CodeForbidden,
						"token %q (pattern %s) does not cover limit %q", tok.Name, tok.Pattern, name))
					return
				}
			}
			if raw, ok := params["id"]; ok {
				// A malformed id goes on to the handler's 400.
				if id, err := api.ParseLeaseID(raw); err == nil {
					// Readiness first: once it is seen, the state is
					// loaded before the lookup below reads it.
					if e := api.CheckReady(r); e != nil {
						api.WriteProblem(w, r, e)
						return
					}
					// A lease's limit never changes and ids are never
					// reused, so this answer cannot go stale before the
					// handler runs.
					limit, err := leaseLimit(id)
					if err != nil {
						api.WriteProblem(w, r, lookupProblem(id, err))
						return
					}
					if !tok.Pattern.Match(limit) {
						api.WriteProblem(w, r, errLeaseNotFound(id))
						return
					}
				}
			}
			next.ServeHTTP(w, r)
		})
	}
}

// lookupProblem is the answer to a lease lookup that failed.
func lookupProblem(id string, err error) *limitd.Error {
	var e *limitd.Error
	switch {
	case !errors.As(err, &e):
		return limitd.Errorf(limitd.CodeInternal, "internal error")
	case e.Code == limitd.CodeLeaseNotFound:
		return errLeaseNotFound(id)
	}
	return e
}

// errLeaseNotFound must read exactly as the slot manager's, so that a hidden
// lease cannot be told from a missing one.
func errLeaseNotFound(id string) *limitd.Error {
	return limitd.Errorf(limitd.CodeLeaseNotFound, "lease %q does not exist: it was released, expired, or its limit was deleted", id)
}

// RequiredScope is the scope a route needs. Reads need read; the lease
// lifecycle needs worker; anything else, including routes added later and
// not listed here, needs admin, so that forgetting a route fails closed.
func RequiredScope(method, pattern string) Scope {
	switch {
	case method == http.MethodGet:
		return ScopeRead
	case method == http.MethodPost && pattern == "/v1/limits/{name}/acquire",
		method == http.MethodPost && pattern == "/v1/leases/{id}/renew",
		method == http.MethodDelete && pattern == "/v1/leases/{id}":
		return ScopeWorker
	}
	return ScopeAdmin
}

// maxTokenLength bounds what is hashed; tokens limitd makes are 50 bytes.
const maxTokenLength = 1024

// authenticate finds the token of r's Authorization header. The problem
// details say what was wrong with the header but never repeat it.
func authenticate(set *Set, r *http.Request) (Token, *limitd.Error) {
	values := r.Header.Values("Authorization")
	switch {
	case len(values) == 0:
		return Token{}, limitd.Errorf(limitd.CodeUnauthorized, "this request needs a bearer token: send the header \"Authorization: Bearer TOKEN\"")
	case len(values) > 1:
		return Token{}, limitd.Errorf(limitd.CodeUnauthorized, "the Authorization header is given %d times: send it once, as \"Bearer TOKEN\"", len(values))
	}
	scheme, token, ok := strings.Cut(values[0], " ")
	token = strings.TrimLeft(token, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || !wellFormed(token) {
		return Token{}, limitd.Errorf(limitd.CodeUnauthorized, "the Authorization header is malformed: it must be \"Bearer TOKEN\" with a token as printed by \"limitd token new\"")
	}
	tok, ok := set.Lookup(token)
	if !ok {
		return Token{}, limitd.Errorf(limitd.CodeUnauthorized, "the bearer token is not known to this server (unknown or revoked)")
	}
	return tok, nil
}

// wellFormed checks the b64token syntax of RFC 6750 (2.1), which every
// token that "limitd token new" prints satisfies.
func wellFormed(token string) bool {
	if token == "" || len(token) > maxTokenLength {
		return false
	}
	body := strings.TrimRight(token, "=")
	if body == "" {
		return false
	}
	for i := 0; i < len(body); i++ {
		c := body[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~+/", c) >= 0) {
			return false
		}
	}
	return true
}
