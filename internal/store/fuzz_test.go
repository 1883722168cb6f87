package store_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/limitd/limitd"
	"github.com/limitd/limitd/internal/slots"
	"github.com/limitd/limitd/internal/store"
)

// FuzzLoad writes arbitrary rows behind the store's back and loads them.
// Load must never panic, and whatever it accepts, once ClampExpiries has
// bounded it to the clock as the daemon does, must be a state the API could
// have produced — a hostile database gives an error, never a silently wrong
// limit or a lease that holds its slots longer than its TTL. The manager
// must then restore it without trouble.
func FuzzLoad(f *testing.F) {
	f.Add("api", int64(3), int64(0), "desc", "01JAAAAAAAAAAAAAAAAAAAAAAA", "api", int64(1), "h", int64(1), int64(0), int64(60e9), int64(60e9), "k", int64(1))
	f.Add("bad name", int64(-1), int64(-5), "\xff", "nope", "", int64(0), "", int64(-1), int64(5), int64(1), int64(0), "", int64(-3))
	// Acquired and expiring far ahead: written under a clock that was set back since.
	f.Add("api", int64(2), int64(0), "", "01JAAAAAAAAAAAAAAAAAAAAAAB", "api", int64(2), "h", int64(7), int64(8e18), int64(8e18+60e9), int64(60e9), "", int64(7))
	f.Add("a", int64(1000001), int64(86401e9), "", "01JAAAAAAAAAAAAAAAAAAAAAAA", "a", int64(9), "", int64(1<<62), int64(0), int64(1<<62), int64(1e9), "", int64(0))

	template := filepath.Join(f.TempDir(), "template.db")
	s, err := store.Open(context.Background(), template, store.Options{})
	if err != nil {
		f.Fatal(err)
	}
	s.Close()
	tmpl, err := os.ReadFile(template)
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, name string, capacity, defTTL int64, desc string,
		id, limitName string, slotCount int64, holder string, fence, acquired, expires, ttl int64, key string, meta int64) {
		path := filepath.Join(t.TempDir(), "limitd.db")
		if err := os.WriteFile(path, tmpl, 0o600); err != nil {
			t.Fatal(err)
		}
		db, err := sql.Open("sqlite", "file:"+path)
		if err != nil {
			t.Fatal(err)
		}
		// Rows the schema's own checks refuse are simply not written.
		db.Exec(`INSERT INTO limits VALUES (?, ?, ?, ?, 0, 0)`, name, capacity, defTTL, desc)
		db.Exec(`INSERT INTO leases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, id, limitName, slotCount, holder, fence, acquired, expires, ttl, key)
		db.Exec(`INSERT INTO meta VALUES ('fence', ?)`, meta)
		db.Close()

		s, err := store.Open(context.Background(), path, store.Options{})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer s.Close()
		st, err := s.Load(context.Background())
		if err != nil {
			return // refused with an error: fine
		}
		for _, l := range st.Limits {
			if limitd.ValidateName(l.Name) != nil || l.Capacity < 0 || l.Capacity > limitd.MaxCapacity || l.DefaultTTL < 0 || l.DefaultTTL > limitd.MaxTTLCeiling {
				t.Fatalf("loaded invalid limit %+v", l)
			}
		}
		now := time.Now()
		store.ClampExpiries(st.Leases, now)
		for _, l := range st.Leases {
			if limitd.ValidateLeaseID(l.ID) != nil || l.Slots < 1 || l.Fence < 1 || l.TTL < limitd.MinTTL || l.TTL > limitd.MaxTTLCeiling ||
				l.ExpiresAt.Before(l.AcquiredAt) || l.AcquiredAt.After(now) || l.ExpiresAt.After(now.Add(l.TTL)) {
				t.Fatalf("loaded invalid lease %+v (now %v)", l, now)
			}
		}
		m := slots.New(slots.Config{Journal: s})
		defer m.Close()
		for _, c := range m.Restore(st.Limits, st.Leases, st.Fence) {
			if err := c.Wait(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		for _, l := range m.Limits() {
			if l.InUse < 0 {
				t.Fatalf("restored limit %+v with negative in_use", l)
			}
		}
	})
}
