package auth_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/limitd/limitd"
	"github.com/limitd/limitd/internal/auth"
	"github.com/limitd/limitd/internal/daemon"
	"github.com/limitd/limitd/internal/servertest"
)

// The tokens of the test server, by role.
const (
	tokAdmin   = "limitd_admin-token-for-tests"
	tokWorkerA = "limitd_worker-a-token"
	tokWorkerB = "limitd_worker-b-token"
	tokReadA   = "limitd_read-a-token"
	tokExactA  = "limitd_exact-team-a-token"
	tokUnknown = "limitd_nobody-has-this-one"
)

func testTokens(t *testing.T) *auth.Set {
	return mustParse(t, strings.Join([]string{
		"ops admin * " + hashHex(tokAdmin),
		"etl-a worker team-a:* " + hashHex(tokWorkerA),
		"etl-b worker team-b:* " + hashHex(tokWorkerB),
		"dash-a read team-a:* " + hashHex(tokReadA),
		"exact-a worker team-a " + hashHex(tokExactA),
	}, "\n"))
}

// lockedBuffer collects log output written from many goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type authServer struct {
	*servertest.Server
	keyring *auth.Keyring
	logs    *lockedBuffer
}

func startAuthServer(t *testing.T) *authServer {
	t.Helper()
	return startAuthServerLogging(t, func(w io.Writer) slog.Handler {
		return slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})
	})
}

// startAuthServerLogging is startAuthServer with the log format of handler.
func startAuthServerLogging(t *testing.T, handler func(io.Writer) slog.Handler) *authServer {
	t.Helper()
	k := auth.NewKeyring(testTokens(t))
	logs := &lockedBuffer{}
	s := servertest.Start(t, t.TempDir(), func(c *daemon.Config) {
		c.Tokens = k
		c.Logger = slog.New(handler(logs))
	})
	return &authServer{Server: s, keyring: k, logs: logs}
}

type response struct {
	status  int
	header  http.Header
	problem limitd.Problem
	body    []byte
}

// do sends a request whose path is used exactly as given (percent-encoding
// included); token "" sends no Authorization header.
func (s *authServer) do(t *testing.T, method, path, token, body string) response {
	t.Helper()
	return s.doHeader(t, method, path, body, bearer(token))
}

func (s *authServer) doHeader(t *testing.T, method, path, body string, setHeader func(http.Header)) response {
	t.Helper()
	return send(t, s.URL, method, path, body, setHeader)
}

// bearer sends token, or no Authorization header when it is "".
func bearer(token string) func(http.Header) {
	return func(h http.Header) {
		if token != "" {
			h.Set("Authorization", "Bearer "+token)
		}
	}
}

// send is doHeader for any server at base.
func send(t *testing.T, base, method, path, body string, setHeader func(http.Header)) response {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	setHeader(req.Header)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := response{status: res.StatusCode, header: res.Header, body: data}
	if strings.HasPrefix(res.Header.Get("Content-Type"), "application/problem+json") {
		if err := json.Unmarshal(data, &r.problem); err != nil {
			t.Fatalf("%s %s: bad problem body %q: %v", method, path, data, err)
		}
	}
	return r
}

func expect(t *testing.T, r response, status int, code limitd.Code) {
	t.Helper()
	if r.status != status || (code != "" && r.problem.Code != code) {
		t.Fatalf("got %d %q (%s), want %d %q", r.status, r.problem.Code, r.body, status, code)
	}
}

func (s *authServer) putLimit(t *testing.T, name string, capacity int) {
	t.Helper()
	r := s.do(t, "PUT", "/v1/limits/"+name, tokAdmin, `{"capacity": `+itoa(capacity)+`}`)
	if r.status != http.StatusCreated && r.status != http.StatusOK {
		t.Fatalf("PUT %s: %d %s", name, r.status, r.body)
	}
}

func (s *authServer) acquire(t *testing.T, name, token string) limitd.Lease {
	t.Helper()
	r := s.do(t, "POST", "/v1/limits/"+name+"/acquire", token, `{"wait_seconds": 0}`)
	expect(t, r, http.StatusCreated, "")
	var l limitd.Lease
	if err := json.Unmarshal(r.body, &l); err != nil {
		t.Fatal(err)
	}
	return l
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestMissingUnknownAndMalformedTokensAre401(t *testing.T) {
	s := startAuthServer(t)
	s.putLimit(t, "team-a:x", 1)

	check := func(t *testing.T, r response) {
		t.Helper()
		expect(t, r, http.StatusUnauthorized, limitd.CodeUnauthorized)
		if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
			t.Fatalf("WWW-Authenticate = %q, want Bearer", got)
		}
	}
	t.Run("Missing", func(t *testing.T) {
		r := s.do(t, "GET", "/v1/limits/team-a:x", "", "")
		check(t, r)
		if !strings.Contains(r.problem.Detail, "Authorization: Bearer") {
			t.Fatalf("detail %q does not say what to send", r.problem.Detail)
		}
	})
	t.Run("Unknown", func(t *testing.T) {
		check(t, s.do(t, "GET", "/v1/limits/team-a:x", tokUnknown, ""))
	})
	t.Run("HashInsteadOfToken", func(t *testing.T) {
		check(t, s.do(t, "GET", "/v1/limits/team-a:x", hashHex(tokAdmin), ""))
	})
	for name, value := range map[string]string{
		"Basic":         "Basic b3BzOnNlY3JldA==",
		"NoToken":       "Bearer",
		"EmptyToken":    "Bearer ",
		"TwoTokens":     "Bearer " + tokAdmin + " " + tokAdmin,
		"BadCharacters": "Bearer " + tokAdmin + ",x",
		"OnlyPadding":   "Bearer ==",
		"NoScheme":      tokAdmin,
		"TooLong":       "Bearer " + strings.Repeat("a", 5000),
	} {
		t.Run("Malformed"+name, func(t *testing.T) {
			check(t, s.doHeader(t, "GET", "/v1/limits/team-a:x", "", func(h http.Header) { h.Set("Authorization", value) }))
		})
	}
	t.Run("MalformedTwice", func(t *testing.T) {
		check(t, s.doHeader(t, "GET", "/v1/limits/team-a:x", "", func(h http.Header) {
			h.Add("Authorization", "Bearer "+tokAdmin)
			h.Add("Authorization", "Bearer "+tokAdmin)
		}))
	})
	t.Run("SchemeIsCaseInsensitive", func(t *testing.T) {
		r := s.doHeader(t, "GET", "/v1/limits/team-a:x", "", func(h http.Header) { h.Set("Authorization", "bearer  "+tokAdmin) })
		expect(t, r, http.StatusOK, "")
	})
	t.Run("UnknownPathNeedsToken", func(t *testing.T) {
		check(t, s.do(t, "GET", "/v1/nothing", "", ""))
		expect(t, s.do(t, "GET", "/v1/nothing", tokReadA, ""), http.StatusNotFound, limitd.CodeNotFound)
		expect(t, s.do(t, "PATCH", "/v1/limits/team-a:x", tokReadA, ""), http.StatusMethodNotAllowed, limitd.CodeMethodNotAllowed)
	})
}

// TestEveryAPIRouteNeedsToken walks the router's own list, so a route added
// later cannot be left open by accident.
func TestEveryAPIRouteNeedsToken(t *testing.T) {
	s := startAuthServer(t)
	open := map[string]bool{"GET /healthz": true, "GET /readyz": true, "GET /metrics": true}
	for _, rt := range s.Daemon.API.Routes() {
		path := strings.NewReplacer("{name}", "team-a:x", "{id}", "01ARZ3NDEKTSV4RRFFQ69G5FAV").Replace(rt.Pattern)
		r := s.do(t, rt.Method, path, "", "")
		if open[rt.Method+" "+rt.Pattern] {
			if r.status == http.StatusUnauthorized {
				t.Errorf("%s %s needs a token; probes and scrapers have none", rt.Method, rt.Pattern)
			}
			continue
		}
		if r.status != http.StatusUnauthorized {
			t.Errorf("%s %s without a token: %d, want 401", rt.Method, rt.Pattern, r.status)
		}
	}
}

func TestScopes(t *testing.T) {
	s := startAuthServer(t)
	s.putLimit(t, "team-a:x", 2)

	t.Run("WorkerOnAdminRoutes", func(t *testing.T) {
		r := s.do(t, "PUT", "/v1/limits/team-a:x", tokWorkerA, `{"capacity": 100}`)
		expect(t, r, http.StatusForbidden, limitd.CodeForbidden)
		if !strings.Contains(r.problem.Detail, "scope worker") || !strings.Contains(r.problem.Detail, "needs scope admin") {
			t.Fatalf("detail %q does not name the scopes", r.problem.Detail)
		}
		expect(t, s.do(t, "PUT", "/v1/limits/team-a:new", tokWorkerA, `{"capacity": 1}`), http.StatusForbidden, limitd.CodeForbidden)
		expect(t, s.do(t, "DELETE", "/v1/limits/team-a:x", tokWorkerA, ""), http.StatusForbidden, limitd.CodeForbidden)
		r = s.do(t, "GET", "/v1/limits/team-a:x", tokWorkerA, "")
		expect(t, r, http.StatusOK, "")
		var l limitd.Limit
		if err := json.Unmarshal(r.body, &l); err != nil || l.Capacity != 2 {
			t.Fatalf("a forbidden PUT changed the limit: %s", r.body)
		}
		expect(t, s.do(t, "GET", "/v1/limits/team-a:new", tokAdmin, ""), http.StatusNotFound, limitd.CodeLimitNotFound)
	})
	t.Run("ReadCannotTakeSlots", func(t *testing.T) {
		lease := s.acquire(t, "team-a:x", tokWorkerA)
		expect(t, s.do(t, "POST", "/v1/limits/team-a:x/acquire", tokReadA, ""), http.StatusForbidden, limitd.CodeForbidden)
		expect(t, s.do(t, "POST", "/v1/leases/"+lease.ID+"/renew", tokReadA, ""), http.StatusForbidden, limitd.CodeForbidden)
		expect(t, s.do(t, "DELETE", "/v1/leases/"+lease.ID, tokReadA, ""), http.StatusForbidden, limitd.CodeForbidden)
		expect(t, s.do(t, "GET", "/v1/leases/"+lease.ID, tokReadA, ""), http.StatusOK, "")
		expect(t, s.do(t, "GET", "/v1/limits/team-a:x/leases", tokReadA, ""), http.StatusOK, "")
		expect(t, s.do(t, "GET", "/v1/limits/team-a:x/waiters", tokReadA, ""), http.StatusOK, "")
	})
	t.Run("WorkerLeaseLifecycle", func(t *testing.T) {
		lease := s.acquire(t, "team-a:x", tokWorkerA)
		expect(t, s.do(t, "POST", "/v1/leases/"+lease.ID+"/renew", tokWorkerA, ""), http.StatusOK, "")
		expect(t, s.do(t, "DELETE", "/v1/leases/"+lease.ID, tokWorkerA, ""), http.StatusNoContent, "")
	})
	t.Run("ProbesNeedNoToken", func(t *testing.T) {
		expect(t, s.do(t, "GET", "/healthz", "", ""), http.StatusOK, "")
		expect(t, s.do(t, "GET", "/readyz", "", ""), http.StatusOK, "")
		if r := s.do(t, "GET", "/metrics", "", ""); r.status == http.StatusUnauthorized {
			t.Fatalf("/metrics needs a token: %s", r.body)
		}
	})
}

func TestPatternEscapes(t *testing.T) {
	s := startAuthServer(t)
	for _, name := range []string{"team-a:x", "team-a:y", "team-b:x", "team-a", "team-ab"} {
		s.putLimit(t, name, 5)
	}
	for _, tc := range []struct {
		name, token, path string
		status            int
		code              limitd.Code
	}{
		{"OwnLimit", tokWorkerA, "/v1/limits/team-a:x/acquire", 201, ""},
		{"OtherTeam", tokWorkerA, "/v1/limits/team-b:x/acquire", 403, limitd.CodeForbidden},
		{"PrefixWithoutSeparator", tokWorkerA, "/v1/limits/team-ab/acquire", 403, limitd.CodeForbidden},
		{"PrefixItself", tokWorkerA, "/v1/limits/team-a/acquire", 403, limitd.CodeForbidden},
		{"ExactOwn", tokExactA, "/v1/limits/team-a/acquire", 201, ""},
		{"ExactIsNotPrefix", tokExactA, "/v1/limits/team-ab/acquire", 403, limitd.CodeForbidden},
		{"ExactIsNotPrefixColon", tokExactA, "/v1/limits/team-a:x/acquire", 403, limitd.CodeForbidden},
		{"EncodedOwn", tokWorkerA, "/v1/limits/team-a%3Ax/acquire", 201, ""},
		{"EncodedOther", tokWorkerA, "/v1/limits/team-b%3Ax/acquire", 403, limitd.CodeForbidden},
		{"EncodedFullyOther", tokWorkerA, "/v1/limits/%74%65%61%6d-b%3ax/acquire", 403, limitd.CodeForbidden},
		// The router matches the decoded path here and the handler decodes
		// again: the check must see the name the handler acts on.
		{"DoubleEncodedOther", tokWorkerA, "/v1/limits/team-b%253Ax/acquire", 403, limitd.CodeForbidden},
		{"EncodedSlashIsBadName", tokWorkerA, "/v1/limits/team-a%3A%2F..%2F..%2Fteam-b%3Ax/acquire", 400, limitd.CodeInvalidRequest},
		{"EncodedStarIsBadName", tokWorkerA, "/v1/limits/team-a%3A%2A/acquire", 400, limitd.CodeInvalidRequest},
		{"BadNameNeedsTokenFirst", "", "/v1/limits/team-a%2Fx/acquire", 401, limitd.CodeUnauthorized},
		{"DotDotIsNoRoute", tokWorkerA, "/v1/limits/team-a:x/../../limits/team-b:x/acquire", 404, limitd.CodeNotFound},
		{"ReadOtherTeam", tokWorkerA, "/v1/limits/team-b:x", 403, limitd.CodeForbidden},
		{"LeasesOfOtherTeam", tokReadA, "/v1/limits/team-b:x/leases", 403, limitd.CodeForbidden},
		{"WaitersOfOtherTeam", tokReadA, "/v1/limits/team-b:x/waiters", 403, limitd.CodeForbidden},
		{"UnknownLimitOfOwnTeam", tokWorkerA, "/v1/limits/team-a:nope", 404, limitd.CodeLimitNotFound},
		// 403 whether or not the limit exists: nothing to learn about others.
		{"UnknownLimitOfOtherTeam", tokWorkerA, "/v1/limits/team-b:nope", 403, limitd.CodeForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := "GET"
			body := ""
			if strings.HasSuffix(tc.path, "/acquire") {
				method, body = "POST", `{"wait_seconds": 0}`
			}
			r := s.do(t, method, tc.path, tc.token, body)
			expect(t, r, tc.status, tc.code)
			if tc.status == 403 && !strings.Contains(r.problem.Detail, "pattern") {
				t.Fatalf("detail %q does not name the pattern", r.problem.Detail)
			}
		})
	}
	r := s.do(t, "GET", "/v1/limits/team-b:x", tokAdmin, "")
	var l limitd.Limit
	if err := json.Unmarshal(r.body, &l); err != nil || l.InUse != 0 {
		t.Fatalf("another team's limit was touched: %s", r.body)
	}
}

func TestListShowsOnlyCoveredLimits(t *testing.T) {
	s := startAuthServer(t)
	for _, name := range []string{"team-a", "team-a:x", "team-a:y", "team-ab", "team-b:x"} {
		s.putLimit(t, name, 1)
	}
	for _, tc := range []struct {
		token string
		want  []string
	}{
		{tokAdmin, []string{"team-a", "team-a:x", "team-a:y", "team-ab", "team-b:x"}},
		{tokWorkerA, []string{"team-a:x", "team-a:y"}},
		{tokReadA, []string{"team-a:x", "team-a:y"}},
		{tokWorkerB, []string{"team-b:x"}},
		{tokExactA, []string{"team-a"}},
	} {
		r := s.do(t, "GET", "/v1/limits", tc.token, "")
		expect(t, r, http.StatusOK, "")
		var list limitd.LimitList
		if err := json.Unmarshal(r.body, &list); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, l := range list.Limits {
			got = append(got, l.Name)
		}
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("list = %v, want %v", got, tc.want)
		}
	}
}

// TestOtherTeamsLeasesLookMissing: a lease of a limit the token does not
// cover cannot be read, renewed or released, and the answer is the same 404
// as for a lease that does not exist, so its existence does not leak.
func TestOtherTeamsLeasesLookMissing(t *testing.T) {
	s := startAuthServer(t)
	s.putLimit(t, "team-b:x", 1)
	lease := s.acquire(t, "team-b:x", tokWorkerB)
	const missing = "01ARZ3NDEKTSV4RRFFQ69G5FAV"

	// ULIDs are case-insensitive and the handlers accept any case, so the
	// check must hide the lease in every case too.
	for _, spelling := range []struct {
		name  string
		apply func(string) string
	}{
		{"AsIssued", func(id string) string { return id }},
		{"LowerCase", strings.ToLower},
		{"MixedCase", mixedCase},
	} {
		for _, tc := range []struct{ method, suffix string }{
			{"GET", ""}, {"POST", "/renew"}, {"DELETE", ""},
		} {
			t.Run(spelling.name+"/"+tc.method+tc.suffix, func(t *testing.T) {
				foreign := s.do(t, tc.method, "/v1/leases/"+spelling.apply(lease.ID)+tc.suffix, tokWorkerA, "")
				expect(t, foreign, http.StatusNotFound, limitd.CodeLeaseNotFound)
				absent := s.do(t, tc.method, "/v1/leases/"+spelling.apply(missing)+tc.suffix, tokWorkerA, "")
				expect(t, absent, http.StatusNotFound, limitd.CodeLeaseNotFound)
				if strings.ReplaceAll(foreign.problem.Detail, lease.ID, missing) != absent.problem.Detail ||
					foreign.problem.Title != absent.problem.Title || foreign.problem.Type != absent.problem.Type {
					t.Fatalf("a hidden lease can be told from a missing one:\n%+v\n%+v", foreign.problem, absent.problem)
				}
			})
		}
	}
	// Still held, never renewed by the other team.
	r := s.do(t, "GET", "/v1/leases/"+lease.ID, tokWorkerB, "")
	expect(t, r, http.StatusOK, "")
	var got limitd.Lease
	if err := json.Unmarshal(r.body, &got); err != nil || !got.ExpiresAt.Equal(lease.ExpiresAt) {
		t.Fatalf("the lease changed: %s (was %+v)", r.body, lease)
	}
	expect(t, s.do(t, "DELETE", "/v1/leases/"+lease.ID, tokWorkerB, ""), http.StatusNoContent, "")
}

// mixedCase lower-cases every other letter of a lease id.
func mixedCase(id string) string {
	b := []byte(id)
	for i := 0; i < len(b); i += 2 {
		if b[i] >= 'A' && b[i] <= 'Z' {
			b[i] += 'a' - 'A'
		}
	}
	return string(b)
}

func TestAuditNamesTokenAndLogsNoToken(t *testing.T) {
	s := startAuthServer(t)
	s.putLimit(t, "team-a:x", 1)
	lease := s.acquire(t, "team-a:x", tokWorkerA)
	expect(t, s.do(t, "DELETE", "/v1/leases/"+lease.ID, tokWorkerA, ""), http.StatusNoContent, "")
	s.do(t, "GET", "/v1/limits", tokUnknown, "")
	s.do(t, "PUT", "/v1/limits/team-a:x", tokWorkerA, `{"capacity": 9}`)
	expect(t, s.do(t, "DELETE", "/v1/limits/team-a:x", tokAdmin, ""), http.StatusNoContent, "")

	logs := s.logs.String()
	for _, want := range []string{"limit created", "limit deleted"} {
		found := false
		for _, line := range strings.Split(logs, "\n") {
			if strings.Contains(line, `msg="`+want+`"`) && strings.Contains(line, "token=ops") {
				found = true
			}
		}
		if !found {
			t.Errorf("no %q audit line with token=ops in:\n%s", want, logs)
		}
	}
	if !strings.Contains(logs, "token=etl-a") {
		t.Errorf("request log lines do not name the worker token:\n%s", logs)
	}
	for _, tok := range []string{tokAdmin, tokWorkerA, tokUnknown, "admin-token", "worker-a-token", "nobody-has"} {
		if strings.Contains(logs, tok) {
			t.Fatalf("the logs contain a token (%q):\n%s", tok, logs)
		}
	}
}

// TestRevokedTokenKeepsAdmittedWaiter: swapping the token set (what SIGHUP
// does) refuses new requests of a revoked token at once but does not drop a
// long-poll that was admitted before.
func TestRevokedTokenKeepsAdmittedWaiter(t *testing.T) {
	s := startAuthServer(t)
	s.putLimit(t, "team-a:x", 1)
	held := s.acquire(t, "team-a:x", tokWorkerA)

	waited := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", s.URL+"/v1/limits/team-a:x/acquire", strings.NewReader(`{"wait_seconds": 30}`))
		req.Header.Set("Authorization", "Bearer "+tokWorkerA)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			waited <- 0
			return
		}
		res.Body.Close()
		waited <- res.StatusCode
	}()
	waitFor(t, func() bool {
		l, err := s.Daemon.Manager.GetLimit("team-a:x")
		return err == nil && l.Waiting == 1
	})

	s.keyring.Swap(mustParse(t, "ops admin * "+hashHex(tokAdmin)+"\n"))
	expect(t, s.do(t, "GET", "/v1/limits/team-a:x", tokWorkerA, ""), http.StatusUnauthorized, limitd.CodeUnauthorized)
	expect(t, s.do(t, "DELETE", "/v1/leases/"+held.ID, tokAdmin, ""), http.StatusNoContent, "")
	select {
	case status := <-waited:
		if status != http.StatusCreated {
			t.Fatalf("the admitted waiter got %d, want 201", status)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the admitted waiter was not granted")
	}
}

// waitFor polls a condition of in-process state that has no event to wait
// on, for at most 5 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
