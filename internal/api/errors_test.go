package api_test

import (
	"bytes"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/limitd/limitd"
)

// Every bad input of SPEC's error table, and more: each gets its
// problem+json with the stable code, a detail that names the field and the
// rule, and changes nothing that the API can show (nor, checked by a restart
// at the end, anything in the database).

// noSuchLease is a well-formed ULID that no lease has.
const noSuchLease = "01ARZ3NDEKTSV4RRFFQ69G5FAV"

type badInput struct {
	name         string
	method, path string
	body         string
	hdr          []string
	code         limitd.Code
	detail       []string // substrings the detail must contain
}

func badInputs(leaseID string) []badInput {
	long := func(n int) string { return strings.Repeat("x", n) }
	nameRule := limitd.NameRule
	var cases []badInput
	add := func(c ...badInput) { cases = append(cases, c...) }

	// PUT /v1/limits/{name}
	put := func(name, body, detail1 string, detail ...string) badInput {
		return badInput{name: "put/" + name, method: "PUT", path: "/v1/limits/api", body: body,
			code: limitd.CodeInvalidRequest, detail: append([]string{detail1}, detail...)}
	}
	add(
		put("malformed JSON", `{"capacity": 3`, "JSON"),
		put("garbage", `capacity=3`, "JSON"),
		put("unknown field", `{"capacity": 3, "capacty": 4}`, `"capacty"`),
		put("array body", `[{"capacity": 3}]`, "JSON object"),
		put("string body", `"capacity"`, "JSON object"),
		put("two objects", `{"capacity": 3} {"capacity": 4}`, "one JSON object"),
		put("capacity missing", `{"description": "no capacity"}`, `"capacity"`, "required"),
		put("capacity missing, empty body", ``, `"capacity"`, "required"),
		put("capacity null", `{"capacity": null}`, `"capacity"`, "required"),
		put("capacity -1", `{"capacity": -1}`, `"capacity"`, "0 to 1000000"),
		put("capacity 1000001", `{"capacity": 1000001}`, `"capacity"`, "0 to 1000000"),
		put("capacity 1.5", `{"capacity": 1.5}`, `"capacity"`, "integer"),
		put("capacity string", `{"capacity": "3"}`, `"capacity"`, "integer"),
		put("capacity bool", `{"capacity": true}`, `"capacity"`, "integer"),
		put("capacity huge", `{"capacity": 1e99}`, `"capacity"`),
		put("default_ttl_seconds 0.5", `{"capacity": 3, "default_ttl_seconds": 0.5}`, `"default_ttl_seconds"`, "1 to 86400"),
		put("default_ttl_seconds 0", `{"capacity": 3, "default_ttl_seconds": 0}`, `"default_ttl_seconds"`, "1 to 86400"),
		put("default_ttl_seconds 86401", `{"capacity": 3, "default_ttl_seconds": 86401}`, `"default_ttl_seconds"`, "1 to 86400"),
		put("default_ttl_seconds string", `{"capacity": 3, "default_ttl_seconds": "60"}`, `"default_ttl_seconds"`, "number"),
		put("description too long", fmt.Sprintf(`{"capacity": 3, "description": %q}`, long(1025)), `"description"`, "1024"),
		put("description control character", `{"capacity": 3, "description": "a\u0007b"}`, `"description"`, "control"),
		put("description number", `{"capacity": 3, "description": 7}`, `"description"`, "string"),
	)

	// POST /v1/limits/{name}/acquire
	acq := func(name, body, detail1 string, detail ...string) badInput {
		return badInput{name: "acquire/" + name, method: "POST", path: "/v1/limits/api/acquire", body: body,
			code: limitd.CodeInvalidRequest, detail: append([]string{detail1}, detail...)}
	}
	add(
		acq("malformed JSON", `{"slots": `, "JSON"),
		acq("unknown field", `{"slot": 1}`, `"slot"`),
		acq("array body", `[]`, "JSON object"),
		acq("slots 0", `{"slots": 0}`, `"slots"`, "1 to 1000000"),
		acq("slots -1", `{"slots": -1}`, `"slots"`, "1 to 1000000"),
		acq("slots 1.5", `{"slots": 1.5}`, `"slots"`, "integer"),
		acq("slots 1000001", `{"slots": 1000001}`, `"slots"`, "1 to 1000000"),
		acq("slots string", `{"slots": "1"}`, `"slots"`, "integer"),
		acq("ttl_seconds 0.5", `{"ttl_seconds": 0.5}`, `"ttl_seconds"`, "1 to 86400"),
		acq("ttl_seconds 0", `{"ttl_seconds": 0}`, `"ttl_seconds"`, "1 to 86400"),
		acq("ttl_seconds 86401", `{"ttl_seconds": 86401}`, `"ttl_seconds"`, "1 to 86400"),
		acq("ttl_seconds NaN as a string", `{"ttl_seconds": "NaN"}`, `"ttl_seconds"`, "number"),
		acq("ttl_seconds negative", `{"ttl_seconds": -60}`, `"ttl_seconds"`),
		acq("wait_seconds -1", `{"wait_seconds": -1}`, `"wait_seconds"`, "0 or more"),
		acq("wait_seconds string", `{"wait_seconds": "30"}`, `"wait_seconds"`, "number"),
		acq("holder too long", fmt.Sprintf(`{"holder": %q}`, long(257)), `"holder"`, "256"),
		acq("holder control character", `{"holder": "a\nb"}`, `"holder"`, "control"),
		acq("holder number", `{"holder": 7}`, `"holder"`, "string"),
		badInput{name: "acquire/Idempotency-Key empty", method: "POST", path: "/v1/limits/api/acquire",
			hdr: []string{"Idempotency-Key", ""}, code: limitd.CodeInvalidRequest, detail: []string{"Idempotency-Key", "empty"}},
		badInput{name: "acquire/Idempotency-Key twice", method: "POST", path: "/v1/limits/api/acquire",
			hdr: []string{"Idempotency-Key", "a", "Idempotency-Key", "b"}, code: limitd.CodeInvalidRequest, detail: []string{"Idempotency-Key", "once"}},
		badInput{name: "acquire/Idempotency-Key 256 bytes", method: "POST", path: "/v1/limits/api/acquire",
			hdr: []string{"Idempotency-Key", long(256)}, code: limitd.CodeInvalidRequest, detail: []string{"Idempotency-Key", "255"}},
		badInput{name: "acquire/Idempotency-Key with a space", method: "POST", path: "/v1/limits/api/acquire",
			hdr: []string{"Idempotency-Key", "a b"}, code: limitd.CodeInvalidRequest, detail: []string{"Idempotency-Key", "printable"}},
		badInput{name: "acquire/Idempotency-Key not ASCII", method: "POST", path: "/v1/limits/api/acquire",
			hdr: []string{"Idempotency-Key", "clé"}, code: limitd.CodeInvalidRequest, detail: []string{"Idempotency-Key", "ASCII"}},
		// Not malformed, but refused without a change.
		badInput{name: "acquire/slots above capacity", method: "POST", path: "/v1/limits/api/acquire", body: `{"slots": 3}`,
			code: limitd.CodeSlotsExceedCapacity, detail: []string{"3", `"api"`, "2"}},
		badInput{name: "acquire/no free slot without waiting", method: "POST", path: "/v1/limits/api/acquire", body: `{"slots": 2, "wait_seconds": 0}`,
			code: limitd.CodeNoSlots, detail: []string{`"api"`}},
		badInput{name: "acquire/unknown limit", method: "POST", path: "/v1/limits/nope/acquire",
			code: limitd.CodeLimitNotFound, detail: []string{`"nope"`}},
	)

	// Renew and the lease routes.
	ren := func(name, body, detail1 string, detail ...string) badInput {
		return badInput{name: "renew/" + name, method: "POST", path: "/v1/leases/" + leaseID + "/renew", body: body,
			code: limitd.CodeInvalidRequest, detail: append([]string{detail1}, detail...)}
	}
	add(
		ren("malformed JSON", `{`, "JSON"),
		ren("unknown field", `{"ttl": 60}`, `"ttl"`),
		ren("ttl_seconds 0", `{"ttl_seconds": 0}`, `"ttl_seconds"`, "1 to 86400"),
		ren("ttl_seconds 0.5", `{"ttl_seconds": 0.5}`, `"ttl_seconds"`, "1 to 86400"),
		ren("ttl_seconds 86401", `{"ttl_seconds": 86401}`, `"ttl_seconds"`, "1 to 86400"),
		ren("ttl_seconds string", `{"ttl_seconds": "60"}`, `"ttl_seconds"`, "number"),
	)
	for _, route := range []struct{ method, suffix string }{{"GET", ""}, {"POST", "/renew"}, {"DELETE", ""}} {
		for _, id := range []struct{ name, id string }{
			{"short", "abc"},
			{"27 characters", noSuchLease + "A"},
			{"overflowing ULID", "8ZZZZZZZZZZZZZZZZZZZZZZZZZ"},
			{"punctuation", "0000000000000000000000000-"},
			{"encoded slash", "01ARZ3NDEKTSV4RRFFQ69G5FA%2F"},
		} {
			add(badInput{name: fmt.Sprintf("lease %s %s/%s", route.method, route.suffix, id.name), method: route.method,
				path: "/v1/leases/" + id.id + route.suffix, code: limitd.CodeInvalidRequest, detail: []string{"ULID"}})
		}
		add(badInput{name: fmt.Sprintf("lease %s %s/unknown", route.method, route.suffix), method: route.method,
			path: "/v1/leases/" + noSuchLease + route.suffix, code: limitd.CodeLeaseNotFound, detail: []string{noSuchLease}})
	}

	// Bad names, on every route that takes one.
	nameRoutes := []struct{ method, suffix, body string }{
		{"GET", "", ""}, {"PUT", "", `{"capacity": 1}`}, {"DELETE", "", ""},
		{"GET", "/leases", ""}, {"GET", "/waiters", ""}, {"POST", "/acquire", ""},
	}
	for _, route := range nameRoutes {
		for _, n := range []struct{ name, seg string }{
			{"encoded slash", "a%2Fb"},
			{"encoded slash alone", "%2F"},
			{"129 characters", strings.Repeat("a", 129)},
			{"leading dot", ".hidden"},
			{"leading dash", "-x"},
			{"leading underscore", "_x"},
			{"encoded space", "a%20b"},
			{"not ASCII", "caf%C3%A9"},
			{"encoded NUL", "a%00"},
			{"dot dot", "%2E%2E"},
		} {
			add(badInput{name: fmt.Sprintf("name %s %s/%s", route.method, route.suffix, n.name), method: route.method,
				path: "/v1/limits/" + n.seg + route.suffix, body: route.body, code: limitd.CodeInvalidRequest, detail: []string{nameRule}})
		}
	}
	for _, route := range nameRoutes[:5] {
		if route.method == "PUT" {
			continue
		}
		add(badInput{name: fmt.Sprintf("unknown limit %s %s", route.method, route.suffix), method: route.method,
			path: "/v1/limits/nope" + route.suffix, code: limitd.CodeLimitNotFound, detail: []string{`"nope"`}})
	}

	// Bodies over the server's limit (64 KiB).
	big := fmt.Sprintf(`{"holder": %q}`, long(64<<10))
	add(
		badInput{name: "body too large/acquire", method: "POST", path: "/v1/limits/api/acquire", body: big, code: limitd.CodeBodyTooLarge, detail: []string{"65536"}},
		badInput{name: "body too large/put", method: "PUT", path: "/v1/limits/api", body: fmt.Sprintf(`{"capacity": 9, "description": %q}`, long(64<<10)), code: limitd.CodeBodyTooLarge, detail: []string{"65536"}},
		badInput{name: "body too large/renew", method: "POST", path: "/v1/leases/" + leaseID + "/renew", body: big, code: limitd.CodeBodyTooLarge, detail: []string{"65536"}},
	)

	// Paths and methods the API does not have.
	for _, p := range []struct{ method, path string }{
		{"GET", "/v1/nope"}, {"GET", "/v2/limits"}, {"GET", "/"}, {"GET", "/v1/limits/api/leases/extra"},
		{"GET", "/v1/leases"}, {"POST", "/v1/limits/api/release"},
	} {
		add(badInput{name: "unknown path " + p.method + " " + p.path, method: p.method, path: p.path, code: limitd.CodeNotFound, detail: []string{p.path}})
	}
	for _, p := range []struct{ method, path string }{
		{"PATCH", "/v1/limits/api"}, {"POST", "/v1/limits"}, {"DELETE", "/v1/limits"}, {"GET", "/v1/limits/api/acquire"},
		{"PUT", "/v1/leases/" + leaseID}, {"POST", "/v1/limits/api"}, {"POST", "/healthz"}, {"DELETE", "/v1/limits/api/leases"},
	} {
		add(badInput{name: "wrong method " + p.method + " " + p.path, method: p.method, path: p.path, code: limitd.CodeMethodNotAllowed, detail: []string{p.method}})
	}
	return cases
}

// snapshot is everything the API shows of the state.
func (c *apiClient) snapshot() string {
	c.tb.Helper()
	var b bytes.Buffer
	for _, path := range []string{"/v1/limits", "/v1/limits/api/leases", "/v1/limits/api/waiters", "/v1/limits/other/leases"} {
		r := c.do("GET", path, "")
		if r.Status != http.StatusOK {
			c.tb.Fatalf("GET %s: %d %s", path, r.Status, r.Body)
		}
		fmt.Fprintf(&b, "%s\n%s\n", path, r.Body)
	}
	return b.String()
}

func TestBadInputGetsProblemAndChangesNothing(t *testing.T) {
	h := newHarness(t)
	r := h.do("PUT", "/v1/limits/api", `{"capacity": 2, "default_ttl_seconds": 600, "description": "under test"}`)
	if r.Status != http.StatusCreated {
		t.Fatalf("PUT: %d %s", r.Status, r.Body)
	}
	h.putLimit("other", 1)
	lease := h.acquire("api", `{"holder": "keeper"}`, "Idempotency-Key", "kept")
	h.acquire("other", "")
	initial := h.snapshot()

	for _, bad := range badInputs(lease.ID) {
		t.Run(bad.name, func(t *testing.T) {
			before := h.snapshot()
			r := h.do(bad.method, bad.path, bad.body, bad.hdr...)
			wantProblem(t, r, bad.code, bad.detail...)
			if after := h.snapshot(); after != before {
				t.Fatalf("%s %s changed the state:\nbefore %s\nafter  %s", bad.method, bad.path, before, after)
			}
		})
	}

	// Nothing reached the database either.
	h.restart()
	if after := h.snapshot(); after != initial {
		t.Fatalf("after a restart the state differs:\nbefore %s\nafter  %s", initial, after)
	}
}

// RFC 9110 (15.5.6) requires a 405 to list the allowed methods in Allow.
// (A custom chi MethodNotAllowed handler loses the Allow header that chi's
// default one sets.)
func TestMethodNotAllowedListsAllowedMethods(t *testing.T) {
	h := newHarness(t)
	for _, c := range []struct{ method, path, allow string }{
		{"PATCH", "/v1/limits/api", "DELETE, GET, PUT"},
		{"POST", "/v1/limits", "GET"},
		{"GET", "/v1/limits/api/acquire", "POST"},
	} {
		r := h.do(c.method, c.path, "")
		wantProblem(t, r, limitd.CodeMethodNotAllowed)
		got := strings.Join(sortedFields(r.Header.Values("Allow")), ", ")
		if got != c.allow {
			t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, got, c.allow)
		}
	}
}

// sortedFields splits comma-separated header values and sorts them.
func sortedFields(values []string) []string {
	var out []string
	for _, v := range values {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" && f != "HEAD" && f != "OPTIONS" {
				out = append(out, f)
			}
		}
	}
	slices.Sort(out)
	return out
}

// The edges of every range are accepted: the errors above are the values
// just past them.
func TestBoundaryValuesAreAccepted(t *testing.T) {
	h := newHarness(t)
	name128 := "a" + strings.Repeat("b", 127)
	for _, c := range []struct{ method, path, body string }{
		{"PUT", "/v1/limits/" + name128, `{"capacity": 0}`},
		{"PUT", "/v1/limits/A0._-:z", `{"capacity": 1000000, "default_ttl_seconds": 86400, "description": "` + strings.Repeat("é", 1024) + `"}`},
		{"PUT", "/v1/limits/edge", `{"capacity": 1000000, "default_ttl_seconds": 1}`},
		{"POST", "/v1/limits/edge/acquire", `{"slots": 1000000, "ttl_seconds": 86400, "wait_seconds": 0, "holder": "` + strings.Repeat("h", 256) + `"}`},
	} {
		r := h.do(c.method, c.path, c.body)
		if r.Status != http.StatusCreated {
			t.Errorf("%s %s: %d %s, want 201", c.method, c.path, r.Status, r.Body)
		}
	}
	h.putLimit("keyed", 1)
	r := h.do("POST", "/v1/limits/keyed/acquire", `{"ttl_seconds": 1}`, "Idempotency-Key", strings.Repeat("~", 255))
	if r.Status != http.StatusCreated {
		t.Fatalf("255-byte Idempotency-Key: %d %s", r.Status, r.Body)
	}
	l := leaseOf(t, r)
	// Content-Type is not enforced (curl -d sends form encoding).
	r = h.do("POST", "/v1/leases/"+l.ID+"/renew", `{"ttl_seconds": 1}`, "Content-Type", "application/x-www-form-urlencoded")
	if r.Status != http.StatusOK {
		t.Fatalf("renew with a form Content-Type: %d %s", r.Status, r.Body)
	}
}
