package api_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/limitd/limitd"
	"github.com/limitd/limitd/internal/auth"
	"github.com/limitd/limitd/internal/daemon"
)

// openapi.yaml at the repository root is the API reference users read; these
// tests keep it honest: it is a valid OpenAPI document, it has exactly the
// routes the router serves, and every response the real server gives, for
// success and error alike, validates against it (status, Content-Type,
// headers and body schema).

func loadSpec(t *testing.T) *openapi3.T {
	t.Helper()
	path := filepath.Join("..", "..", "openapi.yaml")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the API reference openapi.yaml is missing at the repository root: %v", err)
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(path)
	if err != nil {
		t.Fatalf("loading openapi.yaml: %v", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("openapi.yaml is not a valid OpenAPI document: %v", err)
	}
	return doc
}

// specBase is the path prefix of the document's first server ("" when the
// paths are absolute).
func specBase(doc *openapi3.T) string {
	if len(doc.Servers) == 0 {
		return ""
	}
	u, err := url.Parse(doc.Servers[0].URL)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(u.Path, "/")
}

func TestOpenAPIHasExactlyTheServedRoutes(t *testing.T) {
	doc := loadSpec(t)
	h := newHarness(t)
	base := specBase(doc)

	served := map[string]bool{}
	for _, r := range h.srv.Daemon.API.Routes() {
		served[r.Method+" "+r.Pattern] = true
	}
	documented := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented[strings.ToUpper(method)+" "+base+path] = true
		}
	}
	for _, k := range sortedKeys(served) {
		if !documented[k] {
			t.Errorf("served but not in openapi.yaml: %s", k)
		}
	}
	for _, k := range sortedKeys(documented) {
		if !served[k] {
			t.Errorf("in openapi.yaml but not served: %s", k)
		}
	}

	// Every documented route also answers as documented rather than with
	// the router's 404/405: Routes() is what Handler() serves.
	for _, k := range sortedKeys(documented) {
		method, pattern, _ := strings.Cut(k, " ")
		path := strings.NewReplacer("{name}", "api", "{id}", noSuchLease).Replace(pattern)
		r := h.do(method, path, "")
		if r.Status == http.StatusMethodNotAllowed || (r.Status == http.StatusNotFound && strings.Contains(string(r.Body), `"not_found"`)) {
			t.Errorf("%s: the router answers %d %s", k, r.Status, r.Body)
		}
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// specChecker validates real exchanges against the document.
type specChecker struct {
	t      *testing.T
	url    string
	doc    *openapi3.T
	router routers.Router
	// seen counts validated responses per "METHOD /path status".
	seen map[string]int
}

func newSpecChecker(t *testing.T, doc *openapi3.T, serverURL string) *specChecker {
	t.Helper()
	// Route against the test server: the document's own servers name the
	// default address, not this one.
	routed := *doc
	routed.Servers = openapi3.Servers{{URL: serverURL + specBase(doc)}}
	router, err := gorillamux.NewRouter(&routed)
	if err != nil {
		t.Fatalf("routing openapi.yaml: %v", err)
	}
	return &specChecker{t: t, url: serverURL, doc: &routed, router: router, seen: map[string]int{}}
}

// exchange sends a request and validates the response against the operation
// the document has for it. With validRequest, the request itself must also
// validate (the documented request shapes are the ones the server takes).
func (sc *specChecker) exchange(c *apiClient, validRequest bool, wantStatus int, method, path, body string, hdr ...string) reply {
	sc.t.Helper()
	r := c.do(method, path, body, hdr...)
	if r.Status != wantStatus {
		sc.t.Fatalf("%s %s: %d %s, want %d", method, path, r.Status, r.Body, wantStatus)
	}
	sc.validate(r, validRequest, method, path, body, hdr...)
	return r
}

func (sc *specChecker) validate(r reply, validRequest bool, method, path, body string, hdr ...string) {
	sc.t.Helper()
	ctx := context.Background()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, sc.url+path, rd)
	if err != nil {
		sc.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	route, params, err := sc.router.FindRoute(req)
	if err != nil {
		sc.t.Errorf("%s %s: no operation in openapi.yaml: %v", method, path, err)
		return
	}
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, IncludeResponseStatus: true, MultiError: true}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
	if validRequest {
		if err := openapi3filter.ValidateRequest(ctx, in); err != nil {
			sc.t.Errorf("%s %s %s: the server takes this request (it answered %d) but openapi.yaml rejects it: %v", method, path, body, r.Status, err)
		}
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: r.Status, Header: r.Header, Options: opts}
	out.SetBodyBytes(r.Body)
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		sc.t.Errorf("%s %s: the real %d response does not match openapi.yaml: %v\nbody: %s", method, path, r.Status, oneLine(err), r.Body)
	}
	sc.seen[fmt.Sprintf("%s %s %d", method, route.Path, r.Status)]++
}

func oneLine(err error) string {
	var me openapi3.MultiError
	if errors.As(err, &me) {
		var parts []string
		for _, e := range me {
			parts = append(parts, e.Error())
		}
		return strings.Join(parts, "; ")
	}
	return err.Error()
}

// TestOpenAPIDescribesRealResponses drives every operation to its success
// and error answers and validates each real response.
func TestOpenAPIDescribesRealResponses(t *testing.T) {
	doc := loadSpec(t)
	h := newHarness(t, func(c *daemon.Config) { c.MaxWaiters = 2 })
	sc := newSpecChecker(t, doc, h.srv.URL)
	ok := func(status int, method, path, body string, hdr ...string) reply {
		t.Helper()
		return sc.exchange(h.apiClient, true, status, method, path, body, hdr...)
	}
	bad := func(status int, method, path, body string, hdr ...string) reply {
		t.Helper()
		return sc.exchange(h.apiClient, false, status, method, path, body, hdr...)
	}

	// Operations.
	ok(200, "GET", "/healthz", "")
	ok(200, "GET", "/readyz", "")
	if r := h.do("GET", "/metrics", ""); true {
		sc.validate(r, true, "GET", "/metrics", "")
	}

	// Limits.
	ok(200, "GET", "/v1/limits", "")
	ok(201, "PUT", "/v1/limits/api", `{"capacity": 2, "default_ttl_seconds": 30, "description": "the API"}`)
	ok(200, "PUT", "/v1/limits/api", `{"capacity": 2}`)
	ok(201, "PUT", "/v1/limits/paused", `{"capacity": 0}`)
	ok(200, "GET", "/v1/limits", "")
	ok(200, "GET", "/v1/limits/api", "")
	ok(200, "GET", "/v1/limits/api/leases", "")
	ok(200, "GET", "/v1/limits/api/waiters", "")
	bad(400, "PUT", "/v1/limits/api", `{"capacity": -1}`)
	bad(400, "PUT", "/v1/limits/api", `{"capacity": 1, "bogus": 1}`)
	bad(400, "PUT", "/v1/limits/.bad", `{"capacity": 1}`)
	bad(400, "GET", "/v1/limits/.bad", "")
	bad(400, "DELETE", "/v1/limits/.bad", "")
	bad(400, "GET", "/v1/limits/.bad/leases", "")
	bad(400, "GET", "/v1/limits/.bad/waiters", "")
	bad(413, "PUT", "/v1/limits/api", fmt.Sprintf(`{"capacity": 1, "description": %q}`, strings.Repeat("x", 70000)))
	bad(404, "GET", "/v1/limits/nope", "")
	bad(404, "DELETE", "/v1/limits/nope", "")
	bad(404, "GET", "/v1/limits/nope/leases", "")
	bad(404, "GET", "/v1/limits/nope/waiters", "")

	// Leases.
	first := leaseOf(t, ok(201, "POST", "/v1/limits/api/acquire", `{"slots": 1, "ttl_seconds": 60, "wait_seconds": 0, "holder": "host-3/pid-77"}`, "Idempotency-Key", "req-1"))
	ok(200, "POST", "/v1/limits/api/acquire", `{"slots": 1, "ttl_seconds": 60, "wait_seconds": 0, "holder": "host-3/pid-77"}`, "Idempotency-Key", "req-1")
	second := leaseOf(t, ok(201, "POST", "/v1/limits/api/acquire", ""))
	ok(200, "GET", "/v1/limits/api/leases", "")
	ok(200, "GET", "/v1/leases/"+first.ID, "")
	ok(200, "POST", "/v1/leases/"+first.ID+"/renew", `{"ttl_seconds": 120}`)
	ok(200, "POST", "/v1/leases/"+first.ID+"/renew", "")
	bad(400, "POST", "/v1/limits/api/acquire", `{"slots": 0}`)
	bad(400, "POST", "/v1/limits/api/acquire", "", "Idempotency-Key", "")
	bad(400, "POST", "/v1/limits/.bad/acquire", "")
	bad(404, "POST", "/v1/limits/nope/acquire", "")
	bad(409, "POST", "/v1/limits/api/acquire", `{"slots": 3}`)
	bad(413, "POST", "/v1/limits/api/acquire", fmt.Sprintf(`{"holder": %q}`, strings.Repeat("x", 70000)))
	r := bad(423, "POST", "/v1/limits/api/acquire", `{"wait_seconds": 0}`)
	if r.Header.Get("Retry-After") != "0" {
		t.Errorf("423 with Retry-After %q", r.Header.Get("Retry-After"))
	}
	bad(400, "GET", "/v1/leases/not-a-ulid", "")
	bad(400, "POST", "/v1/leases/not-a-ulid/renew", "")
	bad(400, "POST", "/v1/leases/"+first.ID+"/renew", `{"ttl_seconds": 0}`)
	bad(413, "POST", "/v1/leases/"+first.ID+"/renew", fmt.Sprintf(`{"pad": %q}`, strings.Repeat("x", 70000)))
	bad(400, "DELETE", "/v1/leases/not-a-ulid", "")
	bad(404, "GET", "/v1/leases/"+noSuchLease, "")
	bad(404, "POST", "/v1/leases/"+noSuchLease+"/renew", "")
	bad(404, "DELETE", "/v1/leases/"+noSuchLease, "")

	// Waiters: a listed queue, a superseded one, a full queue.
	old := h.goAcquire(context.Background(), "api", `{"holder": "old"}`, "Idempotency-Key", "waiting")
	h.waitQueued("api", 1)
	ok(200, "GET", "/v1/limits/api/waiters", "")
	ok(200, "GET", "/v1/limits/api", "")
	newer := h.goAcquire(context.Background(), "api", `{"holder": "new"}`, "Idempotency-Key", "waiting")
	o := await(t, old, 5*time.Second, "superseded waiter")
	sc.validate(o.reply, false, "POST", "/v1/limits/api/acquire", `{"holder": "old"}`, "Idempotency-Key", "waiting")
	wantProblem(t, o.reply, limitd.CodeSuperseded)
	h.goAcquire(context.Background(), "api", `{"holder": "second"}`)
	h.waitQueued("api", 2)
	bad(503, "POST", "/v1/limits/api/acquire", "")

	// Release wakes the superseding waiter with a 201.
	ok(204, "DELETE", "/v1/leases/"+second.ID, "")
	o = await(t, newer, 5*time.Second, "superseding waiter")
	sc.validate(o.reply, true, "POST", "/v1/limits/api/acquire", `{"holder": "new"}`, "Idempotency-Key", "waiting")

	// A deleted limit answers its waiters 404.
	waiting := h.goAcquire(context.Background(), "paused", `{"wait_seconds": 30}`)
	h.waitQueued("paused", 1)
	ok(204, "DELETE", "/v1/limits/paused", "")
	o = await(t, waiting, 5*time.Second, "waiter of a deleted limit")
	sc.validate(o.reply, true, "POST", "/v1/limits/paused/acquire", `{"wait_seconds": 30}`)

	// Draining: waiters, acquires and /readyz answer 503 shutting_down.
	drained := h.goAcquire(context.Background(), "api", `{"wait_seconds": 30}`)
	h.waitQueued("api", 2)
	h.srv.Daemon.Drain()
	o = await(t, drained, 5*time.Second, "waiter during the drain")
	sc.validate(o.reply, true, "POST", "/v1/limits/api/acquire", `{"wait_seconds": 30}`)
	bad(503, "POST", "/v1/limits/api/acquire", "")
	bad(503, "GET", "/readyz", "")
	ok(204, "DELETE", "/v1/leases/"+first.ID, "")

	// Starting: state not loaded yet.
	d, err := daemon.Open(context.Background(), daemon.Config{DB: filepath.Join(t.TempDir(), "limitd.db")})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(d.Handler())
	defer func() { hs.Close(); d.Close() }()
	starting := newAPIClient(t, hs.URL)
	for _, p := range []struct{ method, path string }{{"GET", "/readyz"}, {"GET", "/v1/limits"}, {"POST", "/v1/limits/api/acquire"}} {
		r := starting.do(p.method, p.path, "")
		wantProblem(t, r, limitd.CodeStarting)
		sc.validate(r, false, p.method, p.path, "")
	}

	for _, k := range sortedKeys(boolKeys(sc.seen)) {
		t.Logf("validated %-45s x%d", k, sc.seen[k])
	}
	// Every documented operation was exercised.
	for path, item := range sc.doc.Paths.Map() {
		for method := range item.Operations() {
			hit := false
			for k := range sc.seen {
				if strings.HasPrefix(k, strings.ToUpper(method)+" "+path+" ") {
					hit = true
				}
			}
			if !hit {
				t.Errorf("no response of %s %s was validated", method, path)
			}
		}
	}
}

func boolKeys(m map[string]int) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

// With authentication on, every /v1 operation answers 401 without a token
// and 403 to a token whose scope is too weak, as documented.
func TestOpenAPIDescribesAuthErrors(t *testing.T) {
	doc := loadSpec(t)
	var lines strings.Builder
	for _, tok := range []struct{ name, scope, secret string }{{"reader", "read", "read-secret"}, {"ops", "admin", "admin-secret"}} {
		hash := auth.Hash(tok.secret)
		fmt.Fprintf(&lines, "%s %s * %s\n", tok.name, tok.scope, hex.EncodeToString(hash[:]))
	}
	set, err := auth.Parse(strings.NewReader(lines.String()))
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *daemon.Config) { c.Tokens = auth.NewKeyring(set) })
	sc := newSpecChecker(t, doc, h.srv.URL)
	base := specBase(doc)
	for path, item := range doc.Paths.Map() {
		if !strings.HasPrefix(base+path, "/v1/") {
			continue
		}
		for method := range item.Operations() {
			real := strings.NewReplacer("{name}", "api", "{id}", noSuchLease).Replace(base + path)
			r := sc.exchange(h.apiClient, false, http.StatusUnauthorized, method, real, "")
			wantProblem(t, r, limitd.CodeUnauthorized)
			if method == http.MethodGet {
				sc.validate(h.do(method, real, "", "Authorization", "Bearer read-secret"), true, method, real, "", "Authorization", "Bearer read-secret")
				continue
			}
			r = sc.exchange(h.apiClient, false, http.StatusForbidden, method, real, "", "Authorization", "Bearer read-secret")
			wantProblem(t, r, limitd.CodeForbidden)
		}
	}
	// The operations endpoints need no token.
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		sc.validate(h.do("GET", p, ""), true, "GET", p, "")
	}
	for _, k := range sortedKeys(boolKeys(sc.seen)) {
		t.Logf("validated %-45s x%d", k, sc.seen[k])
	}
}
