package api

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/limitd/limitd"
)

// This file exports the little that middleware living outside this package
// (authentication) needs: the problem writer, so every error has one shape;
// the route lookup, because chi runs middleware before it matches the route
// and fills in the path parameters; the decoding of those parameters, so
// that middleware checks exactly the limit or lease that the handler acts on;
// and the readiness check.

// WriteProblem answers with the problem+json form of e, exactly as the API's
// own handlers do (including Retry-After and WWW-Authenticate headers).
func WriteProblem(w http.ResponseWriter, r *http.Request, e *limitd.Error) {
	writeProblem(w, r, e)
}

// MatchRoute finds the route that the router will serve r with: its pattern
// (as in Routes) and its path parameters as they appear in the path, still
// percent-encoded, as the handlers receive them. It returns "" when no route
// has r's method and path (the router answers 404 or 405). It works only in
// Config.Middleware, where the router's context is set.
func MatchRoute(r *http.Request) (pattern string, params map[string]string) {
	rctx := chi.RouteContext(r.Context())
	if rctx == nil || rctx.Routes == nil {
		return "", nil
	}
	// The same path the router matches: chi prefers the raw path, so that
	// an encoded "/" inside a name stays inside its segment.
	path := r.URL.RawPath
	if path == "" {
		path = r.URL.Path
	}
	if path == "" {
		path = "/"
	}
	// A fresh context: matching into the request's own one would leave
	// parameters behind that the router then appends to.
	tctx := chi.NewRouteContext()
	pattern = rctx.Routes.Find(tctx, r.Method, path)
	if pattern == "" {
		return "", nil
	}
	params = make(map[string]string, len(tctx.URLParams.Keys))
	for i, k := range tctx.URLParams.Keys {
		params[k] = tctx.URLParams.Values[i]
	}
	return pattern, params
}

// ParseLimitName decodes a raw {name} path parameter (still percent-encoded,
// as MatchRoute returns it) into the limit name that the handlers act on, or
// the 400 that they answer.
func ParseLimitName(raw string) (string, error) {
	name, err := url.PathUnescape(raw)
	if err != nil {
		return "", limitd.Errorf(limitd.CodeInvalidRequest, "name %q is not a valid path segment: a limit name is %s", raw, limitd.NameRule)
	}
	return name, limitd.ValidateName(name)
}

// ParseLeaseID decodes a raw {id} path parameter (still percent-encoded, as
// MatchRoute returns it) into the canonical lease id that the handlers act
// on, or the 400 that they answer. ULIDs are case-insensitive and leases are
// keyed by the upper-case form that grants hand out; anything that looks a
// lease up for a request must use this one function, or an id in another
// case would find the lease in one place and miss it in the other.
func ParseLeaseID(raw string) (string, error) {
	id, err := url.PathUnescape(raw)
	if err != nil {
		return "", limitd.Errorf(limitd.CodeInvalidRequest, "lease id %q is not a valid path segment", raw)
	}
	if err := limitd.ValidateLeaseID(id); err != nil {
		return "", err
	}
	return strings.ToUpper(id), nil
}

// CheckReady returns nil once the server serving r has loaded its state, and
// otherwise the 503 that the API answers meanwhile. Middleware that decides
// by that state (which lease belongs to which limit) must call it before it
// reads the state: until then every lease looks missing. A request that did
// not come through the server's router is never ready.
func CheckReady(r *http.Request) *limitd.Error {
	if ri := info(r.Context()); ri != nil && ri.ready != nil && ri.ready.Load() {
		return nil
	}
	return errStarting()
}

func errStarting() *limitd.Error {
	return &limitd.Error{Code: limitd.CodeStarting, Message: "limitd is still loading its state", RetryAfter: 1}
}

// allowedMethods lists, sorted, the methods that some route serves on r's
// path, for the Allow header of a 405.
func allowedMethods(r *http.Request) []string {
	var out []string
	for _, m := range []string{http.MethodDelete, http.MethodGet, http.MethodPost, http.MethodPut} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if pattern, _ := MatchRoute(probe); pattern != "" {
			out = append(out, m)
		}
	}
	return out
}
