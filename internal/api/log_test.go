package api_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/limitd/limitd/internal/auth"
	"github.com/limitd/limitd/internal/daemon"
	"github.com/limitd/limitd/internal/servertest"
)

// TestRequestLogNamesRouteStatusDurationAndLimit: every request is one
// line with its route pattern (never the path), status, duration and
// request id, and every route that names a limit, directly or through a
// lease, says which.
func TestRequestLogNamesRouteStatusDurationAndLimit(t *testing.T) {
	logs := newLogSink()
	h := newHarness(t, logs.option())
	const name = "logged:x"
	n := 0
	check := func(method, path, body, route string, status int, limit string) reply {
		t.Helper()
		n++
		id := fmt.Sprintf("req-%d", n)
		r := h.do(method, path, body, "X-Request-Id", id)
		if r.Status != status {
			t.Fatalf("%s %s: %d %s, want %d", method, path, r.Status, r.Body, status)
		}
		line := logs.await(t, "for request "+id, requestLine(id))
		if line["level"] != "INFO" || line["method"] != method || line["route"] != route ||
			line["status"] != float64(status) {
			t.Errorf("%s %s: line %v, want level INFO, method %s, route %s, status %d", method, path, line, method, route, status)
		}
		if d, ok := line["duration"].(float64); !ok || d <= 0 {
			t.Errorf("%s %s: duration %v, want a positive number", method, path, line["duration"])
		}
		if got, _ := line["limit"].(string); got != limit {
			t.Errorf("%s %s: limit %q, want %q (line %v)", method, path, got, limit, line)
		}
		return r
	}
	check("PUT", "/v1/limits/"+name, `{"capacity": 1}`, "/v1/limits/{name}", 201, name)
	check("PUT", "/v1/limits/logged%3Ax", `{"capacity": 2}`, "/v1/limits/{name}", 200, name)
	check("GET", "/v1/limits/"+name, "", "/v1/limits/{name}", 200, name)
	check("GET", "/v1/limits/"+name+"/leases", "", "/v1/limits/{name}/leases", 200, name)
	check("GET", "/v1/limits/"+name+"/waiters", "", "/v1/limits/{name}/waiters", 200, name)
	lease := leaseOf(t, check("POST", "/v1/limits/"+name+"/acquire", `{"wait_seconds": 0}`, "/v1/limits/{name}/acquire", 201, name))
	check("GET", "/v1/leases/"+lease.ID, "", "/v1/leases/{id}", 200, name)
	check("POST", "/v1/leases/"+strings.ToLower(lease.ID)+"/renew", "", "/v1/leases/{id}/renew", 200, name)
	check("DELETE", "/v1/leases/"+lease.ID, "", "/v1/leases/{id}", 204, name)
	check("DELETE", "/v1/leases/"+lease.ID, "", "/v1/leases/{id}", 404, "")
	check("GET", "/v1/limits/nope", "", "/v1/limits/{name}", 404, "nope")
	check("GET", "/v1/limits/a%2Fb", "", "/v1/limits/{name}", 400, "")
	check("GET", "/v1/limits", "", "/v1/limits", 200, "")
	check("GET", "/no/such/path", "", "unmatched", 404, "")
	check("DELETE", "/v1/limits/"+name, "", "/v1/limits/{name}", 204, name)

	for _, l := range logs.all(msgIs("request")) {
		if strings.Contains(fmt.Sprint(l["route"]), lease.ID) || strings.Contains(fmt.Sprint(l["route"]), "nope") {
			t.Errorf("a raw path reached the route of a log line: %v", l)
		}
	}
}

const (
	tokOps    = "limitd_ops-token-for-log-tests"
	tokWorker = "limitd_worker-token-for-log-tests"
)

// authOption turns on authentication: "ops" is an admin of every limit,
// "etl" a worker of logged:*.
func authOption(t *testing.T) servertest.Option {
	t.Helper()
	lines := []string{
		auth.FileLine("ops", auth.ScopeAdmin, "*", auth.Hash(tokOps)),
		auth.FileLine("etl", auth.ScopeWorker, "logged:*", auth.Hash(tokWorker)),
	}
	set, err := auth.Parse(strings.NewReader(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	return func(c *daemon.Config) { c.Tokens = auth.NewKeyring(set) }
}

// TestRefusedRequestsAreLoggedOnTheirRoute: a request that authentication
// refuses never reaches the router's handler; its line still names the
// route it was aimed at (not "unmatched") and the limit it named.
func TestRefusedRequestsAreLoggedOnTheirRoute(t *testing.T) {
	logs := newLogSink()
	h := newHarness(t, logs.option(), authOption(t))
	for _, tc := range []struct {
		method, path, token string
		status              int
		route, limit        string
	}{
		{"GET", "/v1/limits/logged:x", "", 401, "/v1/limits/{name}", "logged:x"},
		{"PUT", "/v1/limits/logged:x", tokWorker, 403, "/v1/limits/{name}", "logged:x"},
		{"POST", "/v1/limits/other:x/acquire", tokWorker, 403, "/v1/limits/{name}/acquire", "other:x"},
		{"DELETE", "/v1/leases/01ARZ3NDEKTSV4RRFFQ69G5FAV", "", 401, "/v1/leases/{id}", ""},
		{"GET", "/v1/nothing", "", 401, "unmatched", ""},
	} {
		id := "refused-" + tc.method + tc.path
		hdr := []string{"X-Request-Id", id}
		if tc.token != "" {
			hdr = append(hdr, "Authorization", "Bearer "+tc.token)
		}
		if r := h.do(tc.method, tc.path, "", hdr...); r.Status != tc.status {
			t.Fatalf("%s %s: %d %s, want %d", tc.method, tc.path, r.Status, r.Body, tc.status)
		}
		line := logs.await(t, "for "+id, requestLine(id))
		if line["route"] != tc.route || line["status"] != float64(tc.status) {
			t.Errorf("%s %s: route %v status %v, want %s %d", tc.method, tc.path, line["route"], line["status"], tc.route, tc.status)
		}
		if got, _ := line["limit"].(string); got != tc.limit {
			t.Errorf("%s %s: limit %q, want %q", tc.method, tc.path, got, tc.limit)
		}
	}
}
