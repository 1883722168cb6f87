package api_test

import (
	"bytes"
	"encoding/json"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/limitd/limitd"
	"github.com/limitd/limitd/internal/daemon"
	"github.com/limitd/limitd/internal/servertest"
)

// fuzzRoutes are the request shapes the fuzzer mutates: a method and a path
// template whose %s takes the fuzzed path segment.
var fuzzRoutes = []struct{ method, path string }{
	{"PUT", "/v1/limits/%s"},
	{"GET", "/v1/limits/%s"},
	{"DELETE", "/v1/limits/%s"},
	{"GET", "/v1/limits/%s/leases"},
	{"GET", "/v1/limits/%s/waiters"},
	{"POST", "/v1/limits/%s/acquire"},
	{"GET", "/v1/leases/%s"},
	{"POST", "/v1/leases/%s/renew"},
	{"DELETE", "/v1/leases/%s"},
	{"GET", "/v1/limits"},
	{"PATCH", "/v1/limits/%s"},
}

// FuzzHandlers sends arbitrary paths, bodies and Idempotency-Keys to every
// handler. Whatever arrives, the answer is never a 500 or a panic, every
// error is a well-formed problem+json with a known code, and no limit ever
// holds more slots than its capacity allowed when they were granted: each
// grant is checked against its limit before it is given back, and after
// each input the limit it named holds nothing (every grant was given back)
// and has no waiter left.
func FuzzHandlers(f *testing.F) {
	seeds := []struct {
		route int
		seg   string
		body  string
		key   string
	}{
		{0, "api", `{"capacity": 3}`, ""},
		{0, "api", `{"capacity": 3, "default_ttl_seconds": 1.5, "description": "x"}`, ""},
		{0, "a%2Fb", `{"capacity": 1}`, ""},
		{0, "api", `{"capacity": -1}`, ""},
		{0, "api", `{"capacity": 1e99}`, ""},
		{5, "api", ``, ""},
		{5, "api", `{"slots": 2, "ttl_seconds": 5, "wait_seconds": 0, "holder": "h"}`, "key-1"},
		{5, "api", `{"slots": 0}`, ""},
		{5, "api", `{"slots": 1.5}`, ""},
		{5, "api", `{"wait_seconds": -1}`, ""},
		{5, "api", `{"ttl_seconds": "NaN"}`, ""},
		{5, "api", `{} {}`, ""},
		{5, "api", `[1,2]`, ""},
		{5, "api", `null`, "k"},
		{5, "api", `{"bogus": true}`, "k k"},
		{6, "01JAAAAAAAAAAAAAAAAAAAAAAA", ``, ""},
		{7, "01JAAAAAAAAAAAAAAAAAAAAAAA", `{"ttl_seconds": 0}`, ""},
		{8, "%00", ``, ""},
		{1, strings.Repeat("a", 129), ``, ""},
		{1, ".hidden", ``, ""},
		{10, "api", `{}`, ""},
	}
	for _, s := range seeds {
		f.Add(s.route, s.seg, []byte(s.body), s.key)
	}
	srv := servertest.Start(f, f.TempDir(), func(c *daemon.Config) {
		// Fuzzed acquires may queue; keep every wait short.
		c.DefaultWait = 5 * time.Millisecond
		c.MaxWait = 5 * time.Millisecond
		c.MaxBody = 4 << 10
	})
	h := srv.Daemon.Handler()
	f.Fuzz(func(t *testing.T, route int, seg string, body []byte, key string) {
		if route < 0 {
			route = -route
		}
		r := fuzzRoutes[route%len(fuzzRoutes)]
		path := r.path
		if strings.Contains(path, "%s") {
			path = strings.Replace(path, "%s", seg, 1)
		}
		req, err := http.NewRequest(r.method, "http://limitd"+path, bytes.NewReader(body))
		if err != nil {
			return // not a request a client could send
		}
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		checkResponse(t, r.method, path, rec)
		// Keep the state small: give back whatever was granted. No other
		// lease is live, so the grant alone must fit in the capacity,
		// which no other input can have lowered since.
		if rec.Code == http.StatusCreated && strings.HasPrefix(rec.Header().Get("Location"), "/v1/leases/") {
			var l limitd.Lease
			if err := json.Unmarshal(rec.Body.Bytes(), &l); err != nil {
				t.Fatalf("%s %s: granted lease does not parse: %v: %s", r.method, path, err, rec.Body)
			}
			if lim, ok := fuzzLimit(t, h, url.PathEscape(l.Limit)); !ok || lim.InUse > lim.Capacity || lim.InUse != l.Slots {
				t.Fatalf("%s %s: granted %d slots of %+v (found: %v)", r.method, path, l.Slots, lim, ok)
			}
			del, _ := http.NewRequest("DELETE", "http://limitd"+rec.Header().Get("Location"), nil)
			dr := httptest.NewRecorder()
			h.ServeHTTP(dr, del)
			if dr.Code != http.StatusNoContent {
				t.Fatalf("giving back %s: %d %s", l.ID, dr.Code, dr.Body)
			}
		}
		if strings.HasPrefix(r.path, "/v1/limits/%s") {
			if lim, ok := fuzzLimit(t, h, seg); ok && (lim.InUse != 0 || lim.Waiting != 0 || lim.InUse > lim.Capacity) {
				t.Fatalf("after %s %s: limit %+v holds slots or waiters although every grant was given back", r.method, path, lim)
			}
		}
	})
}

// fuzzLimit reads a limit through the API; ok is false when the request
// does not name one that exists.
func fuzzLimit(t *testing.T, h http.Handler, seg string) (limitd.Limit, bool) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://limitd/v1/limits/"+seg, nil)
	if err != nil {
		return limitd.Limit{}, false
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		return limitd.Limit{}, false
	}
	var l limitd.Limit
	if err := json.Unmarshal(rec.Body.Bytes(), &l); err != nil {
		t.Fatalf("GET /v1/limits/%s: %v: %s", seg, err, rec.Body)
	}
	return l, true
}

func checkResponse(t *testing.T, method, path string, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("%s %s: status %d: %s", method, path, rec.Code, rec.Body)
	}
	if rec.Code < 400 {
		return
	}
	ct, _, _ := mime.ParseMediaType(rec.Header().Get("Content-Type"))
	if ct != "application/problem+json" {
		t.Fatalf("%s %s: error %d with content type %q", method, path, rec.Code, ct)
	}
	var p limitd.Problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatalf("%s %s: problem body does not parse: %v: %s", method, path, err, rec.Body)
	}
	if p.Status != rec.Code || p.Code.Status() != rec.Code || p.Detail == "" || p.Title == "" {
		t.Fatalf("%s %s: inconsistent problem for status %d: %+v", method, path, rec.Code, p)
	}
}

// FuzzRequestValidation checks the decoded request types directly: Validate
// never panics, and whatever it accepts is inside the documented bounds.
func FuzzRequestValidation(f *testing.F) {
	f.Add(1, 60.0, 30.0, "holder", 3, 60.0, "desc")
	f.Add(0, 0.5, -1.0, "\x00", -1, 1e300, strings.Repeat("é", 1025))
	f.Add(1000001, 86400.0001, 1e308, "", 1000001, 0.0, "")
	f.Fuzz(func(t *testing.T, slots int, ttl, wait float64, holder string, capacity int, defTTL float64, desc string) {
		maxTTL := 24 * time.Hour
		a := limitd.AcquireRequest{Slots: &slots, TTLSeconds: &ttl, WaitSeconds: &wait, Holder: holder}
		if a.Validate(maxTTL) == nil {
			if slots < 1 || slots > limitd.MaxSlots || ttl < 1 || ttl > maxTTL.Seconds() || wait < 0 || len([]rune(holder)) > limitd.MaxHolderLength {
				t.Fatalf("accepted out-of-bounds acquire %+v (slots %d ttl %v wait %v)", a, slots, ttl, wait)
			}
			if d := limitd.Duration(ttl); d < limitd.MinTTL || d > maxTTL+time.Microsecond {
				t.Fatalf("ttl %v became duration %v", ttl, d)
			}
		}
		s := limitd.LimitSpec{Capacity: &capacity, DefaultTTLSeconds: &defTTL, Description: desc}
		if s.Validate(maxTTL) == nil {
			if capacity < 0 || capacity > limitd.MaxCapacity || defTTL < 1 || defTTL > maxTTL.Seconds() {
				t.Fatalf("accepted out-of-bounds limit %+v (capacity %d ttl %v)", s, capacity, defTTL)
			}
		}
		if limitd.ValidateName(holder) == nil {
			if len(holder) == 0 || len(holder) > limitd.MaxNameLength || strings.ContainsAny(holder, "/% \x00") {
				t.Fatalf("accepted bad name %q", holder)
			}
		}
	})
}
