package metrics_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/limitd/limitd/internal/auth"
	"github.com/limitd/limitd/internal/daemon"
)

// TestRefusedRequestsAreCountedOnTheirRoute: authentication answers 401
// and 403 before the router matches the route, so chi knows no pattern for
// them; they are still counted under the route they were aimed at, where an
// alert on refusals per route can see them, and not as "unmatched".
func TestRefusedRequestsAreCountedOnTheirRoute(t *testing.T) {
	const (
		tokOps  = "limitd_ops-token-for-metrics-tests"
		tokRead = "limitd_read-token-for-metrics-tests"
	)
	set, err := auth.Parse(strings.NewReader(strings.Join([]string{
		auth.FileLine("ops", auth.ScopeAdmin, "*", auth.Hash(tokOps)),
		auth.FileLine("dash", auth.ScopeRead, "team-a:*", auth.Hash(tokRead)),
	}, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *daemon.Config) { c.Tokens = auth.NewKeyring(set) })
	send := func(method, path, token, body string, want int) {
		t.Helper()
		req, err := http.NewRequestWithContext(h.ctx, method, h.srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := h.hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		data, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, res.StatusCode, data, want)
		}
	}
	send("PUT", "/v1/limits/team-a:x", tokOps, `{"capacity": 1}`, http.StatusCreated)
	send("GET", "/v1/limits/team-a:x", "", "", http.StatusUnauthorized)
	send("PUT", "/v1/limits/team-a:x", tokRead, `{"capacity": 5}`, http.StatusForbidden)
	send("POST", "/v1/limits/team-b:x/acquire", tokRead, "", http.StatusForbidden)
	send("DELETE", "/v1/leases/01ARZ3NDEKTSV4RRFFQ69G5FAV", "", "", http.StatusUnauthorized)
	send("GET", "/v1/nothing", "", "", http.StatusUnauthorized)

	want := []struct {
		labels []string
		count  float64
	}{
		{[]string{"route", "/v1/limits/{name}", "method", "GET", "status", "401"}, 1},
		{[]string{"route", "/v1/limits/{name}", "method", "PUT", "status", "403"}, 1},
		{[]string{"route", "/v1/limits/{name}/acquire", "method", "POST", "status", "403"}, 1},
		{[]string{"route", "/v1/leases/{id}", "method", "DELETE", "status", "401"}, 1},
		// A path that no route serves stays unmatched, refused or not.
		{[]string{"route", "unmatched", "method", "GET", "status", "401"}, 1},
	}
	e := h.waitFor("the refused requests to be counted", 5*time.Second, func(e exposition) bool {
		for _, w := range want {
			if e.find("limitd_http_requests_total", w.labels...) == nil {
				return false
			}
		}
		return true
	})
	for _, w := range want {
		if got := e.value("limitd_http_requests_total", w.labels...); got != w.count {
			t.Errorf("http_requests_total%v = %v, want %v", w.labels, got, w.count)
		}
	}
	if got := e.histogram("limitd_http_request_duration_seconds", "route", "/v1/limits/{name}", "method", "GET", "status", "401").GetSampleCount(); got != 1 {
		t.Errorf("http_request_duration_seconds{GET /v1/limits/{name} 401} count = %d, want 1", got)
	}
	// The refused acquire is timed with the acquires, as its route says.
	if got := e.histogram("limitd_http_acquire_duration_seconds", "status", "403").GetSampleCount(); got != 1 {
		t.Errorf("http_acquire_duration_seconds{403} count = %d, want 1", got)
	}
	if m := e.find("limitd_http_requests_total", "route", "unmatched", "status", "403"); m != nil {
		t.Errorf("a refused request on a real route is counted as unmatched: %v", m)
	}
}
