package metrics_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/limitd/limitd/internal/daemon"
)

// TestScrapeCountsAcquireTimeoutRejectAndRelease checks exact values after
// each known action on a live server.
func TestScrapeCountsAcquireTimeoutRejectAndRelease(t *testing.T) {
	h := newHarness(t)
	h.do("PUT", "/v1/limits/jobs", `{"capacity": 2}`, http.StatusCreated)

	e := h.scrape()
	for name, want := range map[string]float64{
		"limitd_limit_capacity": 2, "limitd_limit_slots_in_use": 0, "limitd_limit_waiters": 0,
		"limitd_limit_leases": 0, "limitd_limit_oldest_waiter_seconds": 0,
		"limitd_releases_total": 0, "limitd_lease_expirations_total": 0,
	} {
		if got := e.value(name, "limit", "jobs"); got != want {
			t.Errorf("new limit: %s = %v, want %v", name, got, want)
		}
	}
	// A new limit's counters exist at zero, so its first event is an
	// increase that rate() can see.
	for _, result := range []string{"granted", "timeout", "canceled", "rejected"} {
		if got := e.value("limitd_acquires_total", "limit", "jobs", "result", result); got != 0 {
			t.Errorf("new limit: acquires_total{result=%q} = %v, want 0", result, got)
		}
	}

	id := h.acquire("jobs", `{"slots": 2, "holder": "w1"}`)
	h.do("POST", "/v1/limits/jobs/acquire", `{"wait_seconds": 0}`, http.StatusLocked)
	h.do("POST", "/v1/limits/jobs/acquire", `{"slots": 3}`, http.StatusConflict)

	e = h.scrape()
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"limitd_limit_slots_in_use", nil, 2},
		{"limitd_limit_leases", nil, 1},
		{"limitd_limit_waiters", nil, 0},
		{"limitd_acquires_total", []string{"result", "granted"}, 1},
		{"limitd_acquires_total", []string{"result", "timeout"}, 1},
		{"limitd_acquires_total", []string{"result", "rejected"}, 1},
		{"limitd_acquires_total", []string{"result", "canceled"}, 0},
	} {
		if got := e.value(c.name, append([]string{"limit", "jobs"}, c.labels...)...); got != c.want {
			t.Errorf("after acquires: %s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := e.histogram("limitd_acquire_wait_seconds", "limit", "jobs").GetSampleCount(); got != 1 {
		t.Errorf("acquire_wait_seconds count = %d, want 1 (only grants are timed)", got)
	}

	h.do("DELETE", "/v1/leases/"+id, "", http.StatusNoContent)
	e = h.scrape()
	if got := e.value("limitd_limit_slots_in_use", "limit", "jobs"); got != 0 {
		t.Errorf("after release: slots_in_use = %v, want 0", got)
	}
	if got := e.value("limitd_limit_leases", "limit", "jobs"); got != 0 {
		t.Errorf("after release: leases = %v, want 0", got)
	}
	if got := e.value("limitd_releases_total", "limit", "jobs"); got != 1 {
		t.Errorf("after release: releases_total = %v, want 1", got)
	}
	if got := e.value("limitd_lease_expirations_total", "limit", "jobs"); got != 0 {
		t.Errorf("after release: lease_expirations_total = %v, want 0", got)
	}
	if got := e.histogram("limitd_lease_hold_seconds", "limit", "jobs", "end", "released").GetSampleCount(); got != 1 {
		t.Errorf("lease_hold_seconds{end=released} count = %d, want 1", got)
	}
	if got := e.histogram("limitd_lease_hold_seconds", "limit", "jobs", "end", "expired").GetSampleCount(); got != 0 {
		t.Errorf("lease_hold_seconds{end=expired} count = %d, want 0", got)
	}

	// Three changes reached SQLite: the limit, the grant and the release;
	// each was committed before its answer was sent.
	if got := e.histogram("limitd_store_commit_batch_size").GetSampleSum(); got != 3 {
		t.Errorf("store_commit_batch_size sum = %v, want 3 changes", got)
	}
	commits := e.histogram("limitd_store_commit_duration_seconds").GetSampleCount()
	if batches := e.histogram("limitd_store_commit_batch_size").GetSampleCount(); commits != batches || commits < 1 || commits > 3 {
		t.Errorf("store commits: %d timed, %d sized; want the same number, 1 to 3", commits, batches)
	}
	if got := e.value("limitd_store_commit_errors_total"); got != 0 {
		t.Errorf("store_commit_errors_total = %v, want 0", got)
	}
}

// TestScrapeShowsWaitersAndCanceledAcquires checks the queue gauges while a
// long-poll waits, and the canceled count when its client goes away.
func TestScrapeShowsWaitersAndCanceledAcquires(t *testing.T) {
	h := newHarness(t)
	h.do("PUT", "/v1/limits/q", `{"capacity": 1}`, http.StatusCreated)
	id := h.acquire("q", `{"holder": "first"}`)

	granted, _ := h.goDo("POST", "/v1/limits/q/acquire", `{"wait_seconds": 30, "holder": "second"}`)
	e := h.waitFor("the second acquire queues", 5*time.Second, func(e exposition) bool {
		return e.value("limitd_limit_waiters", "limit", "q") == 1
	})
	if got := e.value("limitd_limit_oldest_waiter_seconds", "limit", "q"); got <= 0 || got > 30 {
		t.Errorf("oldest_waiter_seconds = %v with one waiter, want in (0, 30]", got)
	}
	h.do("DELETE", "/v1/leases/"+id, "", http.StatusNoContent)
	if r := <-granted; r.status != http.StatusCreated {
		t.Fatalf("queued acquire: status %d, want 201: %s", r.status, r.body)
	}
	e = h.scrape()
	if got := e.value("limitd_acquires_total", "limit", "q", "result", "granted"); got != 2 {
		t.Errorf("acquires_total{granted} = %v, want 2", got)
	}
	if got := e.value("limitd_limit_waiters", "limit", "q"); got != 0 {
		t.Errorf("waiters after the grant = %v, want 0", got)
	}
	if got := e.value("limitd_limit_oldest_waiter_seconds", "limit", "q"); got != 0 {
		t.Errorf("oldest_waiter_seconds with nobody waiting = %v, want 0", got)
	}
	wait := e.histogram("limitd_acquire_wait_seconds", "limit", "q")
	if wait.GetSampleCount() != 2 || wait.GetSampleSum() <= 0 {
		t.Errorf("acquire_wait_seconds: count %d sum %v, want 2 and > 0", wait.GetSampleCount(), wait.GetSampleSum())
	}

	// The slot is held again (by "second"): a third acquire queues, and its
	// client goes away.
	gone, cancel := h.goDo("POST", "/v1/limits/q/acquire", `{"wait_seconds": 30, "holder": "third"}`)
	h.waitFor("the third acquire queues", 5*time.Second, func(e exposition) bool {
		return e.value("limitd_limit_waiters", "limit", "q") == 1
	})
	cancel()
	<-gone
	e = h.waitFor("the server notices the disconnect", 5*time.Second, func(e exposition) bool {
		return e.value("limitd_acquires_total", "limit", "q", "result", "canceled") == 1 &&
			e.find("limitd_http_requests_total", "route", "/v1/limits/{name}/acquire", "status", "499") != nil
	})
	if got := e.value("limitd_limit_waiters", "limit", "q"); got != 0 {
		t.Errorf("waiters after the disconnect = %v, want 0", got)
	}
	if got := e.value("limitd_http_requests_total", "route", "/v1/limits/{name}/acquire", "method", "POST", "status", "499"); got != 1 {
		t.Errorf("http_requests_total{acquire, 499} = %v, want 1", got)
	}
}

// TestScrapeCountsExpiry lets a 1 s lease expire on the real clock.
func TestScrapeCountsExpiry(t *testing.T) {
	h := newHarness(t)
	h.do("PUT", "/v1/limits/crashy", `{"capacity": 1}`, http.StatusCreated)
	h.acquire("crashy", `{"ttl_seconds": 1}`)

	// One scrape is not atomic across families: wait for both the counter
	// and the histogram to show the expiry.
	e := h.waitFor("the lease expires", 10*time.Second, func(e exposition) bool {
		return e.value("limitd_lease_expirations_total", "limit", "crashy") == 1 &&
			e.histogram("limitd_lease_hold_seconds", "limit", "crashy", "end", "expired").GetSampleCount() == 1
	})
	if got := e.value("limitd_limit_slots_in_use", "limit", "crashy"); got != 0 {
		t.Errorf("slots_in_use after expiry = %v, want 0", got)
	}
	if got := e.value("limitd_limit_leases", "limit", "crashy"); got != 0 {
		t.Errorf("leases after expiry = %v, want 0", got)
	}
	if got := e.value("limitd_releases_total", "limit", "crashy"); got != 0 {
		t.Errorf("releases_total after expiry = %v, want 0", got)
	}
	held := e.histogram("limitd_lease_hold_seconds", "limit", "crashy", "end", "expired")
	// Never before expires_at; the generous upper bound only guards
	// against a hold measured in the wrong unit.
	if held.GetSampleCount() != 1 || held.GetSampleSum() < 1 || held.GetSampleSum() > 5 {
		t.Errorf("lease_hold_seconds{end=expired}: count %d sum %v, want 1 and in [1, 5]", held.GetSampleCount(), held.GetSampleSum())
	}
}

// TestDeletedLimitLeavesNoSeries checks that deleting a limit removes all of
// its series, counters and histograms included, and nobody else's.
func TestDeletedLimitLeavesNoSeries(t *testing.T) {
	h := newHarness(t)
	for _, name := range []string{"gone", "kept", "gone2"} {
		h.do("PUT", "/v1/limits/"+name, `{"capacity": 1}`, http.StatusCreated)
		id := h.acquire(name, `{"holder": "w"}`)
		h.do("POST", "/v1/limits/"+name+"/acquire", `{"wait_seconds": 0}`, http.StatusLocked)
		h.do("DELETE", "/v1/leases/"+id, "", http.StatusNoContent)
		h.acquire(name, `{"holder": "still-holding"}`)
	}
	waiter, _ := h.goDo("POST", "/v1/limits/gone/acquire", `{"wait_seconds": 30}`)
	h.waitFor("a waiter queues on gone", 5*time.Second, func(e exposition) bool {
		return e.value("limitd_limit_waiters", "limit", "gone") == 1
	})
	// Five gauges, four acquire results, releases, expirations, the wait
	// histogram and two hold histograms.
	if got := h.scrape().seriesWith("limit", "gone"); len(got) != 14 {
		t.Fatalf("before deletion %d series carry limit=gone, want 14: %v", len(got), got)
	}

	h.do("DELETE", "/v1/limits/gone", "", http.StatusNoContent)
	if r := <-waiter; r.status != http.StatusNotFound {
		t.Errorf("waiter of a deleted limit: status %d, want 404", r.status)
	}
	e := h.scrape()
	if got := e.seriesWith("limit", "gone"); len(got) != 0 {
		t.Errorf("series of the deleted limit are still exported:\n%s", strings.Join(got, "\n"))
	}
	// A limit whose name starts with the deleted one's keeps its series.
	for _, name := range []string{"kept", "gone2"} {
		if got := e.value("limitd_acquires_total", "limit", name, "result", "granted"); got != 2 {
			t.Errorf("acquires_total{limit=%q,granted} = %v, want 2", name, got)
		}
		if got := e.value("limitd_limit_slots_in_use", "limit", name); got != 1 {
			t.Errorf("slots_in_use{limit=%q} = %v, want 1", name, got)
		}
	}

	// Created again, the limit starts from zero.
	h.do("PUT", "/v1/limits/gone", `{"capacity": 4}`, http.StatusCreated)
	e = h.scrape()
	if got := e.value("limitd_acquires_total", "limit", "gone", "result", "granted"); got != 0 {
		t.Errorf("re-created limit: acquires_total{granted} = %v, want 0", got)
	}
	if got := e.histogram("limitd_acquire_wait_seconds", "limit", "gone").GetSampleCount(); got != 0 {
		t.Errorf("re-created limit: acquire_wait_seconds count = %d, want 0", got)
	}
	if got := e.value("limitd_limit_capacity", "limit", "gone"); got != 4 {
		t.Errorf("re-created limit: capacity = %v, want 4", got)
	}
}

// TestHTTPMetricsUseRoutePatterns checks the request metrics' labels: the
// route pattern (never the path), a bounded method, the status; acquires
// timed apart from the other requests.
func TestHTTPMetricsUseRoutePatterns(t *testing.T) {
	h := newHarness(t)
	h.do("GET", "/v1/limits/nope", "", http.StatusNotFound)
	h.do("GET", "/v1/limits/a%2Fb", "", http.StatusBadRequest)
	h.do("GET", "/no/such/path", "", http.StatusNotFound)
	h.do("BREW", "/v1/limits", "", http.StatusMethodNotAllowed)
	h.do("PUT", "/v1/limits/p", `{"capacity": 1}`, http.StatusCreated)
	h.acquire("p", "")

	e := h.scrape()
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"route", "/v1/limits/{name}", "method", "GET", "status", "404"}, 1},
		{[]string{"route", "/v1/limits/{name}", "method", "GET", "status", "400"}, 1},
		{[]string{"route", "unmatched", "method", "GET", "status", "404"}, 1},
		{[]string{"route", "/v1/limits/{name}", "method", "PUT", "status", "201"}, 1},
		{[]string{"route", "/v1/limits/{name}/acquire", "method", "POST", "status", "201"}, 1},
	} {
		if got := e.value("limitd_http_requests_total", c.labels...); got != c.want {
			t.Errorf("http_requests_total%v = %v, want %v", c.labels, got, c.want)
		}
	}
	if m := e.find("limitd_http_requests_total", "method", "other", "status", "405"); m == nil || m.Counter.GetValue() != 1 {
		t.Errorf("a request with an unknown method is not counted once as method=other, 405:\n%s", e.text)
	}
	for _, v := range []string{"/no/such/path", "nope", "a%2Fb", "BREW"} {
		if strings.Contains(e.text, v) {
			t.Errorf("a raw path or method %q reached a label value", v)
		}
	}
	if got := e.histogram("limitd_http_request_duration_seconds", "route", "/v1/limits/{name}", "method", "GET", "status", "404").GetSampleCount(); got != 1 {
		t.Errorf("http_request_duration_seconds{GET /v1/limits/{name} 404} count = %d, want 1", got)
	}
	if m := e.find("limitd_http_request_duration_seconds", "route", "/v1/limits/{name}/acquire"); m != nil {
		t.Errorf("acquires are timed in http_request_duration_seconds: %s", labelString(m))
	}
	if got := e.histogram("limitd_http_acquire_duration_seconds", "status", "201").GetSampleCount(); got != 1 {
		t.Errorf("http_acquire_duration_seconds{201} count = %d, want 1", got)
	}
}

// TestWaitAndHoldSecondsAreExact drives the manager's clock by hand, so the
// histograms' sums and buckets can be checked exactly.
func TestWaitAndHoldSecondsAreExact(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, func(c *daemon.Config) { c.Clock = clock })
	h.do("PUT", "/v1/limits/exact", `{"capacity": 1}`, http.StatusCreated)
	first := h.acquire("exact", `{"ttl_seconds": 60}`)
	second, _ := h.goDo("POST", "/v1/limits/exact/acquire", `{"wait_seconds": 60, "ttl_seconds": 10}`)
	h.waitFor("the second acquire queues", 5*time.Second, func(e exposition) bool {
		return e.value("limitd_limit_waiters", "limit", "exact") == 1
	})
	clock.Advance(2500 * time.Millisecond)
	if got := h.scrape().value("limitd_limit_oldest_waiter_seconds", "limit", "exact"); got != 2.5 {
		t.Errorf("oldest_waiter_seconds = %v, want 2.5", got)
	}
	h.do("DELETE", "/v1/leases/"+first, "", http.StatusNoContent)
	if r := <-second; r.status != http.StatusCreated {
		t.Fatalf("queued acquire: status %d, want 201: %s", r.status, r.body)
	}
	clock.Advance(10 * time.Second) // the second lease's TTL: it expires now

	e := h.scrape()
	wait := e.histogram("limitd_acquire_wait_seconds", "limit", "exact")
	if wait.GetSampleCount() != 2 || wait.GetSampleSum() != 2.5 {
		t.Errorf("acquire_wait_seconds: count %d sum %v, want 2 and 2.5", wait.GetSampleCount(), wait.GetSampleSum())
	}
	if got := cumulative(t, wait, 0.0001); got != 1 {
		t.Errorf("acquire_wait_seconds{le=0.0001} = %d, want 1 (the uncontended grant)", got)
	}
	if got := cumulative(t, wait, 1); got != 1 {
		t.Errorf("acquire_wait_seconds{le=1} = %d, want 1", got)
	}
	if got := cumulative(t, wait, 2.5); got != 2 {
		t.Errorf("acquire_wait_seconds{le=2.5} = %d, want 2", got)
	}
	released := e.histogram("limitd_lease_hold_seconds", "limit", "exact", "end", "released")
	if released.GetSampleCount() != 1 || released.GetSampleSum() != 2.5 {
		t.Errorf("lease_hold_seconds{released}: count %d sum %v, want 1 and 2.5", released.GetSampleCount(), released.GetSampleSum())
	}
	expired := e.histogram("limitd_lease_hold_seconds", "limit", "exact", "end", "expired")
	if expired.GetSampleCount() != 1 || expired.GetSampleSum() != 10 {
		t.Errorf("lease_hold_seconds{expired}: count %d sum %v, want 1 and 10", expired.GetSampleCount(), expired.GetSampleSum())
	}
	if got := cumulative(t, expired, 5); got != 0 {
		t.Errorf("lease_hold_seconds{expired,le=5} = %d, want 0", got)
	}
	if got := e.value("limitd_lease_expirations_total", "limit", "exact"); got != 1 {
		t.Errorf("lease_expirations_total = %v, want 1", got)
	}
}

// TestRestoredLimitsHaveSeriesAtZero checks that a restart creates the
// counters of the limits it loads, and counts the leases that expired while
// limitd was down.
func TestRestoredLimitsHaveSeriesAtZero(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	h := newHarnessIn(t, dir, func(c *daemon.Config) { c.Clock = clock })
	h.do("PUT", "/v1/limits/kept", `{"capacity": 1}`, http.StatusCreated)
	h.do("PUT", "/v1/limits/lapsed", `{"capacity": 1}`, http.StatusCreated)
	h.acquire("lapsed", `{"ttl_seconds": 1}`)
	h.close()

	clock.Advance(time.Minute) // limitd is down while the lease's TTL passes
	h = newHarnessIn(t, dir, func(c *daemon.Config) { c.Clock = clock })
	<-h.srv.Daemon.CountersInitialized() // created in the background once ready
	e := h.scrape()
	if got := e.value("limitd_acquires_total", "limit", "kept", "result", "granted"); got != 0 {
		t.Errorf("restored limit: acquires_total{granted} = %v, want 0", got)
	}
	if got := e.value("limitd_lease_expirations_total", "limit", "lapsed"); got != 1 {
		t.Errorf("lease_expirations_total of a lease that expired while down = %v, want 1", got)
	}
	if got := e.value("limitd_limit_slots_in_use", "limit", "lapsed"); got != 0 {
		t.Errorf("slots_in_use of a limit whose lease expired while down = %v, want 0", got)
	}
}
