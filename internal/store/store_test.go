package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/limitd/limitd/internal/slots"
	"github.com/limitd/limitd/internal/store"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func mustOpen(tb testing.TB, path string, opts store.Options) *store.Store {
	tb.Helper()
	s, err := store.Open(context.Background(), path, opts)
	if err != nil {
		tb.Fatalf("Open(%s): %v", path, err)
	}
	return s
}

// closeAndLoad closes s, opens its file again and loads it, as a restart
// does; the reopened store is closed when the test ends.
func closeAndLoad(tb testing.TB, s *store.Store, path string) store.State {
	tb.Helper()
	if err := s.Close(); err != nil {
		tb.Fatal(err)
	}
	s = mustOpen(tb, path, store.Options{})
	tb.Cleanup(func() { s.Close() })
	st, err := s.Load(context.Background())
	if err != nil {
		tb.Fatalf("Load after reopening %s: %v", path, err)
	}
	return st
}

func mustCommit(tb testing.TB, s *store.Store, c slots.Change) {
	tb.Helper()
	if err := s.Write(c).Wait(context.Background()); err != nil {
		tb.Fatalf("commit %+v: %v", c, err)
	}
}

var t0 = time.Date(2026, 12, 4, 10, 0, 0, 123456789, time.UTC)

func limitRec(name string, capacity int) slots.LimitRecord {
	return slots.LimitRecord{Name: name, Capacity: capacity, DefaultTTL: 90 * time.Second, Description: "desc ü", CreatedAt: t0, UpdatedAt: t0}
}

func leaseRec(i int, limit string, fence uint64) slots.LeaseRecord {
	return slots.LeaseRecord{
		ID: fmt.Sprintf("01JAAAAAAAAAAAAAAAAAAAA%03d", i), Limit: limit, Slots: 1 + i%3, Holder: "host/pid", Fence: fence,
		AcquiredAt: time.Now().UTC(), ExpiresAt: time.Now().UTC().Add(time.Hour), TTL: time.Hour, IdempotencyKey: fmt.Sprintf("k%d", i),
	}
}

func TestStateSurvivesCloseAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "limitd.db")
	s := mustOpen(t, path, store.Options{})
	mustCommit(t, s, slots.Change{Kind: slots.ChangePutLimit, Limit: limitRec("a", 3)})
	mustCommit(t, s, slots.Change{Kind: slots.ChangePutLimit, Limit: limitRec("b", 0)})
	l1, l2, l3 := leaseRec(1, "a", 1), leaseRec(2, "a", 2), leaseRec(3, "b", 3)
	for _, l := range []slots.LeaseRecord{l1, l2, l3} {
		mustCommit(t, s, slots.Change{Kind: slots.ChangeGrant, Lease: l, Fence: l.Fence})
	}
	renewed := l2
	renewed.ExpiresAt = renewed.ExpiresAt.Add(time.Hour)
	renewed.TTL = 2 * time.Hour
	mustCommit(t, s, slots.Change{Kind: slots.ChangeRenew, Lease: renewed, Fence: 3})
	mustCommit(t, s, slots.Change{Kind: slots.ChangeRelease, Lease: l1, Fence: 3})
	mustCommit(t, s, slots.Change{Kind: slots.ChangeDeleteLimit, Limit: limitRec("b", 0), Fence: 3})
	st := closeAndLoad(t, s, path)
	if len(st.Limits) != 1 || st.Limits[0] != limitRec("a", 3) {
		t.Fatalf("limits = %+v, want only a as written", st.Limits)
	}
	if len(st.Leases) != 1 {
		t.Fatalf("leases = %+v, want only the renewed one", st.Leases)
	}
	got := st.Leases[0]
	if got.ID != renewed.ID || got.Fence != renewed.Fence || !got.ExpiresAt.Equal(renewed.ExpiresAt) || got.TTL != renewed.TTL ||
		got.IdempotencyKey != renewed.IdempotencyKey || got.Holder != renewed.Holder || got.Slots != renewed.Slots {
		t.Fatalf("lease = %+v, want %+v", got, renewed)
	}
	// The fence counter outlives the leases that carried it.
	if st.Fence < 3 {
		t.Fatalf("fence = %d, want at least 3, the highest handed out", st.Fence)
	}
}

// Concurrent changes share transactions: far fewer commits than changes.
func TestConcurrentChangesShareCommits(t *testing.T) {
	var commits, changes atomic.Int64
	s := mustOpen(t, filepath.Join(t.TempDir(), "limitd.db"), store.Options{
		Synchronous: "full",
		OnCommit: func(n int, _ time.Duration, err error) {
			if err == nil {
				commits.Add(1)
				changes.Add(int64(n))
			}
		},
	})
	defer s.Close()
	mustCommit(t, s, slots.Change{Kind: slots.ChangePutLimit, Limit: limitRec("g", 1000)})
	const n = 400
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := leaseRec(i, "g", uint64(i+1))
			mustCommit(t, s, slots.Change{Kind: slots.ChangeGrant, Lease: l, Fence: l.Fence})
		}()
	}
	wg.Wait()
	if changes.Load() != n+1 {
		t.Fatalf("%d changes committed, want %d", changes.Load(), n+1)
	}
	if c := commits.Load(); c > n/2 {
		t.Fatalf("%d commits for %d concurrent changes: they were not grouped", c, n)
	}
	t.Logf("%d changes in %d commits", n+1, commits.Load())
}

// A failed commit fails the changes of its batch, and keeps deletions for a
// retry that happens without any new change arriving, so the store recovers
// when the fault clears. The fault is a trigger that refuses deletions until
// a moment in the near future.
func TestFailedBatchRetriesDeletions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "limitd.db")
	s := mustOpen(t, path, store.Options{})
	mustCommit(t, s, slots.Change{Kind: slots.ChangePutLimit, Limit: limitRec("r", 5)})
	kept := leaseRec(1, "r", 1)
	mustCommit(t, s, slots.Change{Kind: slots.ChangeGrant, Lease: kept, Fence: 1})
	s.Close()
	clears := float64(time.Now().Add(300*time.Millisecond).UnixMilli()) / 1000
	rawExec(t, path, fmt.Sprintf(`CREATE TRIGGER fault BEFORE DELETE ON leases
		WHEN (julianday('now') - 2440587.5) * 86400.0 < %f BEGIN SELECT RAISE(ABORT, 'injected fault'); END`, clears))

	s = mustOpen(t, path, store.Options{RetryDelay: 20 * time.Millisecond})
	defer s.Close()
	if err := s.Write(slots.Change{Kind: slots.ChangeRelease, Lease: kept, Fence: 1}).Wait(context.Background()); err == nil ||
		!strings.Contains(err.Error(), "injected fault") {
		t.Fatalf("release during the fault: %v, want the injected error", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := s.Load(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Leases) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the failed release was never retried")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSecondServerOnSameFileIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "limitd.db")
	s := mustOpen(t, path, store.Options{})
	defer s.Close()
	_, err := store.Open(context.Background(), path, store.Options{})
	if err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second Open: %v, want a clear 'locked by another process' error", err)
	}
}

func TestOpenRefusesBadSettingsAndFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := store.Open(context.Background(), filepath.Join(dir, "x.db"), store.Options{Synchronous: "off"}); err == nil {
		t.Fatal("synchronous=off accepted")
	}
	if _, err := store.Open(context.Background(), filepath.Join(dir, "missing", "x.db"), store.Options{}); err == nil {
		t.Fatal("a database in a missing directory opened")
	}
}

// rawExec changes a closed database behind the store's back.
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

// A database whose rows break the API's rules is refused at load with an
// error naming the row, never loaded into a silently wrong state.
func TestLoadRefusesHostileRows(t *testing.T) {
	cases := map[string]string{
		"BadLimitName":      `INSERT INTO limits VALUES ('bad name', 1, 0, '', 0, 0)`,
		"DefaultTTLTooLong": `INSERT INTO limits VALUES ('a', 1, 99999999999999999, '', 0, 0)`,
		"BadLeaseID":        `INSERT INTO leases VALUES ('nope', 'a', 1, '', 1, 0, 1000000000, 1000000000, '')`,
		"DuplicateFence": `INSERT INTO leases VALUES ('01JAAAAAAAAAAAAAAAAAAAA001', 'a', 1, '', 5, 0, 1000000000, 1000000000, '');
			INSERT INTO leases VALUES ('01JAAAAAAAAAAAAAAAAAAAA002', 'a', 1, '', 5, 0, 1000000000, 1000000000, '')`,
		"TTLBelowMinimum":      `INSERT INTO leases VALUES ('01JAAAAAAAAAAAAAAAAAAAA001', 'a', 1, '', 5, 0, 1000000000, 999999999, '')`,
		"TTLAboveCeiling":      `INSERT INTO leases VALUES ('01JAAAAAAAAAAAAAAAAAAAA001', 'a', 1, '', 5, 0, 1000000000, 86400000000001, '')`,
		"NegativeFenceCounter": `INSERT INTO meta VALUES ('fence', -4)`,
	}
	for name, stmt := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "limitd.db")
			s := mustOpen(t, path, store.Options{})
			s.Close()
			rawExec(t, path, strings.Split(stmt, ";")...)
			s = mustOpen(t, path, store.Options{})
			defer s.Close()
			if _, err := s.Load(context.Background()); err == nil {
				t.Fatal("hostile row loaded without error")
			} else {
				t.Log(err)
			}
		})
	}
}

func TestNewerSchemaIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "limitd.db")
	s := mustOpen(t, path, store.Options{})
	s.Close()
	rawExec(t, path, `INSERT INTO schema_migrations VALUES (999, 'future', 0)`)
	if _, err := store.Open(context.Background(), path, store.Options{}); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("Open of a newer schema: %v", err)
	}
}

func TestNotADatabaseIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "limitd.db")
	rawWrite(t, path, strings.Repeat("this is not sqlite ", 300))
	if _, err := store.Open(context.Background(), path, store.Options{}); err == nil {
		t.Fatal("opened a file that is not a database")
	} else {
		t.Log(err)
	}
}

func rawWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// A wall clock set back while limitd was down makes leases look as if they
// expire further ahead than their TTL allows. That must not stop limitd
// from starting (it used to refuse the whole database), nor keep the slots
// for as long as the clock was off: such a lease is loaded and then bounded
// to now plus its TTL.
func TestLeaseAheadOfTheClockIsClampedNotRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "limitd.db")
	s := mustOpen(t, path, store.Options{})
	mustCommit(t, s, slots.Change{Kind: slots.ChangePutLimit, Limit: limitRec("a", 10)})
	now := time.Now().UTC()
	normal := leaseRec(1, "a", 1)
	normal.AcquiredAt, normal.ExpiresAt, normal.TTL = now.Add(-time.Second), now.Add(time.Minute), 2*time.Minute
	// Granted 48 h "from now" by a clock that was 48 h ahead.
	ahead := leaseRec(2, "a", 2)
	ahead.AcquiredAt, ahead.TTL = now.Add(48*time.Hour), time.Minute
	ahead.ExpiresAt = ahead.AcquiredAt.Add(ahead.TTL)
	// An expiry centuries ahead, its acquisition in the past.
	far := leaseRec(3, "a", 3)
	far.AcquiredAt, far.ExpiresAt, far.TTL = now.Add(-time.Hour), time.Unix(0, 9e18).UTC(), 5*time.Second
	// Granted under a clock 1 h ahead, renewed after it was set right:
	// it expires before it was acquired.
	renewed := leaseRec(4, "a", 4)
	renewed.AcquiredAt, renewed.ExpiresAt, renewed.TTL = now.Add(time.Hour), now.Add(30*time.Second), time.Minute
	for _, l := range []slots.LeaseRecord{normal, ahead, far, renewed} {
		mustCommit(t, s, slots.Change{Kind: slots.ChangeGrant, Lease: l, Fence: l.Fence})
	}
	s.Close()

	s = mustOpen(t, path, store.Options{})
	defer s.Close()
	st, err := s.Load(context.Background())
	if err != nil {
		t.Fatalf("Load refused leases that only a clock set back explains: %v", err)
	}
	if len(st.Leases) != 4 {
		t.Fatalf("loaded %d leases, want 4", len(st.Leases))
	}
	loadNow := time.Now()
	clamped := store.ClampExpiries(st.Leases, loadNow)
	if len(clamped) != 2 || clamped[0].ID != ahead.ID || clamped[1].ID != far.ID {
		t.Fatalf("clamped %+v, want the two leases ahead of the clock", clamped)
	}
	got := map[string]slots.LeaseRecord{}
	for _, l := range st.Leases {
		got[l.ID] = l
	}
	if l := got[normal.ID]; !l.ExpiresAt.Equal(normal.ExpiresAt) || !l.AcquiredAt.Equal(normal.AcquiredAt) {
		t.Errorf("a lease within its TTL was changed: %+v, want %+v", l, normal)
	}
	for _, want := range []slots.LeaseRecord{ahead, far} {
		l := got[want.ID]
		if !l.ExpiresAt.Equal(loadNow.Add(want.TTL)) {
			t.Errorf("lease %s expires at %v, want now + its TTL %v = %v", l.ID, l.ExpiresAt, want.TTL, loadNow.Add(want.TTL))
		}
		if l.AcquiredAt.After(loadNow) || l.ExpiresAt.Before(l.AcquiredAt) {
			t.Errorf("lease %s: acquired %v, expires %v: acquired after now or expiring before it", l.ID, l.AcquiredAt, l.ExpiresAt)
		}
		if l.TTL != want.TTL || l.Fence != want.Fence || l.Slots != want.Slots {
			t.Errorf("clamping changed more than the times: %+v", l)
		}
	}
	// Within its TTL, so its expiry stays; only its acquisition moves back.
	if l := got[renewed.ID]; !l.ExpiresAt.Equal(renewed.ExpiresAt) || l.AcquiredAt.After(loadNow) || l.AcquiredAt.After(l.ExpiresAt) {
		t.Errorf("lease renewed after the step: %+v, want its expiry %v kept and its acquisition not after now", l, renewed.ExpiresAt)
	}
}
