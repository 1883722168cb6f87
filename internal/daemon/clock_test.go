package daemon_test

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/limitd/limitd"
	"github.com/limitd/limitd/internal/daemon"
	"github.com/limitd/limitd/internal/servertest"
)

// rawExec changes a database that no limitd has open.
func rawExec(t *testing.T, path string, stmts ...string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// A wall clock set back while limitd was down (a dead RTC battery, a
// corrected NTP step) makes stored leases look granted in the future.
// limitd must still start — it used to refuse the whole database — and such
// a lease must hold its slots no longer than its TTL from the restart, not
// for as long as the clock was off; the log says what happened, and the
// bounded expiry is written back.
func TestWallClockSetBackWhileDownBoundsLeasesToTheirTTL(t *testing.T) {
	dir := t.TempDir()
	srv := servertest.Start(t, dir)
	call(t, "PUT", srv.URL+"/v1/limits/clock", `{"capacity": 2}`)
	resp, data := call(t, "POST", srv.URL+"/v1/limits/clock/acquire", `{"ttl_seconds": 30}`)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("acquire: %d %s", resp.StatusCode, data)
	}
	var lease limitd.Lease
	if err := json.Unmarshal(data, &lease); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	// As if the lease had been granted by a clock 48 h ahead of the one
	// the restart reads.
	ahead := int64(48 * time.Hour)
	rawExec(t, srv.DB, fmt.Sprintf(`UPDATE leases SET acquired_at_ns = acquired_at_ns + %d, expires_at_ns = expires_at_ns + %d`, ahead, ahead))

	var out jsonLog
	before := time.Now()
	srv = servertest.Start(t, dir, func(c *daemon.Config) { c.Logger = out.logger() })
	resp, data = call(t, "GET", srv.URL+"/v1/leases/"+lease.ID, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("lease after the restart: %d %s", resp.StatusCode, data)
	}
	var got limitd.Lease
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if latest := time.Now().Add(30 * time.Second); got.ExpiresAt.After(latest) || got.ExpiresAt.Before(before.Add(30*time.Second)) {
		t.Fatalf("lease expires at %v after the restart, want its TTL (30 s) from the restart, by %v", got.ExpiresAt, latest)
	}
	if got.AcquiredAt.After(time.Now()) {
		t.Errorf("lease acquired at %v, in the future", got.AcquiredAt)
	}
	if got.Fence != lease.Fence || got.TTLSeconds != 30 {
		t.Errorf("lease %+v changed beyond its times (was %+v)", got, lease)
	}
	warned := out.lines(t, "leases expired further ahead than their TTL allows")
	if len(warned) != 1 || warned[0]["level"] != "WARN" || warned[0]["leases"] != 1.0 || warned[0]["example_lease"] != lease.ID {
		t.Fatalf("clamp logged as %v, want one WARN line naming 1 lease", warned)
	}
	srv.Close()

	// Written back: the next start finds nothing to clamp. (The row now
	// expires before its stored acquisition, which must not stop the start
	// either: a renew after a clock step writes the same.)
	out = jsonLog{}
	srv = servertest.Start(t, dir, func(c *daemon.Config) { c.Logger = out.logger() })
	if warned := out.lines(t, "leases expired further ahead"); len(warned) != 0 {
		t.Fatalf("the clamped expiry was not written back: clamped again at the next start: %v", warned)
	}
	if resp, data := call(t, "DELETE", srv.URL+"/v1/leases/"+lease.ID, ""); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("release of the clamped lease: %d %s", resp.StatusCode, data)
	}
}
