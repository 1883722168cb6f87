package auth_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/limitd/limitd"
	"github.com/limitd/limitd/internal/api"
	"github.com/limitd/limitd/internal/auth"
	"github.com/limitd/limitd/internal/daemon"
	"github.com/limitd/limitd/internal/slots"
	"github.com/limitd/limitd/internal/store"
)

// TestOwnLeaseWorksInAnyCase: the check looks the lease up in the form the
// handler acts on, so the team that holds a lease may name it in any case
// (as it may without authentication).
func TestOwnLeaseWorksInAnyCase(t *testing.T) {
	s := startAuthServer(t)
	s.putLimit(t, "team-a:x", 2)
	for _, spelling := range []struct {
		name  string
		apply func(string) string
	}{{"LowerCase", strings.ToLower}, {"MixedCase", mixedCase}} {
		t.Run(spelling.name, func(t *testing.T) {
			id := spelling.apply(s.acquire(t, "team-a:x", tokWorkerA).ID)
			expect(t, s.do(t, "GET", "/v1/leases/"+id, tokReadA, ""), http.StatusOK, "")
			expect(t, s.do(t, "POST", "/v1/leases/"+id+"/renew", tokWorkerA, ""), http.StatusOK, "")
			expect(t, s.do(t, "DELETE", "/v1/leases/"+id, tokWorkerA, ""), http.StatusNoContent, "")
			expect(t, s.do(t, "GET", "/v1/leases/"+id, tokReadA, ""), http.StatusNotFound, limitd.CodeLeaseNotFound)
		})
	}
}

// TestLeaseLookupMissFailsClosed: when the check cannot find a lease, the
// request ends there with the API's 404. It is not passed on to a handler
// that might find the lease by another road and act on it unchecked. The
// lookup here misses every lease, as one that disagreed with the handler
// would.
func TestLeaseLookupMissFailsClosed(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "limitd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mgr := slots.New(slots.Config{Journal: st})
	mgr.Restore(nil, nil, 0)
	blind := func(id string) (string, error) {
		return "", limitd.Errorf(limitd.CodeLeaseNotFound, "lease %q does not exist", id)
	}
	srv := api.New(api.Config{Manager: mgr, Middleware: []func(http.Handler) http.Handler{
		auth.Middleware(auth.NewKeyring(testTokens(t)), blind),
	}})
	srv.SetReady(true)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		hs.Close()
		mgr.Close()
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	do := func(method, path, body string) response {
		t.Helper()
		return send(t, hs.URL, method, path, body, bearer(tokAdmin))
	}
	if r := do("PUT", "/v1/limits/team-a:x", `{"capacity": 1}`); r.status != http.StatusCreated {
		t.Fatalf("PUT: %d %s", r.status, r.body)
	}
	lease, _, err := mgr.Acquire(ctx, "team-a:x", slots.AcquireParams{Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ method, suffix string }{
		{"GET", ""}, {"POST", "/renew"}, {"DELETE", ""},
	} {
		r := do(tc.method, "/v1/leases/"+lease.ID+tc.suffix, "")
		expect(t, r, http.StatusNotFound, limitd.CodeLeaseNotFound)
		if !strings.Contains(r.problem.Detail, "released, expired, or its limit was deleted") {
			t.Errorf("%s%s: detail %q is not the API's lease_not_found", tc.method, tc.suffix, r.problem.Detail)
		}
	}
	got, err := mgr.Lease(lease.ID)
	if err != nil || !got.ExpiresAt.Equal(lease.ExpiresAt) {
		t.Fatalf("a request the check refused reached the lease: %+v, %v (was %+v)", got, err, lease)
	}
}

// TestLeaseRoutesAreStartingUntilStateIsLoaded: before the state is loaded
// every lease looks missing, and a worker told 404 gives its lease up; the
// check answers the API's 503 starting instead.
func TestLeaseRoutesAreStartingUntilStateIsLoaded(t *testing.T) {
	d, err := daemon.Open(context.Background(), daemon.Config{
		DB:     filepath.Join(t.TempDir(), "limitd.db"),
		Tokens: auth.NewKeyring(testTokens(t)),
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(d.Handler())
	t.Cleanup(func() {
		hs.Close()
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	const id = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
	for _, tc := range []struct{ method, suffix string }{
		{"GET", ""}, {"POST", "/renew"}, {"DELETE", ""},
	} {
		r := send(t, hs.URL, tc.method, "/v1/leases/"+id+tc.suffix, "", bearer(tokWorkerA))
		expect(t, r, http.StatusServiceUnavailable, limitd.CodeStarting)
		if r.header.Get("Retry-After") == "" {
			t.Errorf("%s%s: starting without Retry-After", tc.method, tc.suffix)
		}
	}
}
