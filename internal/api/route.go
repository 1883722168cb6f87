package api

import (
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/limitd/limitd"
)

// This file exports the little that middleware living outside this package
// (authentication) needs: the problem writer, so every error has one shape,
// and the route lookup, because chi runs middleware before it matches the
// route and fills in the path parameters.

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
