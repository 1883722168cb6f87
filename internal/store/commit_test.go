package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/limitd/limitd/internal/slots"
	"github.com/limitd/limitd/internal/store"
)

// Changes are committed in the order they were appended, whichever goroutine
// commits them: the writer, or callers committing their own changes while
// they wait. Each goroutine here appends a grant and its release without
// waiting in between, then waits for the release; if any release were
// committed before its grant, the grant's row would outlive it and the
// reloaded state would hold leases.
func TestChangesCommitInAppendOrderWhoeverCommits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "limitd.db")
	s := mustOpen(t, path, store.Options{})
	mustCommit(t, s, slots.Change{Kind: slots.ChangePutLimit, Limit: limitRec("o", 1000)})
	const goroutines, each = 32, 25
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				n := g*each + i
				l := leaseRec(n, "o", uint64(n+1))
				l.ID = fmt.Sprintf("01JBBBBBBBBBBBBBBBBBBBB%03d", n)
				l.IdempotencyKey = ""
				grant := s.Write(slots.Change{Kind: slots.ChangeGrant, Lease: l, Fence: l.Fence})
				release := s.Write(slots.Change{Kind: slots.ChangeRelease, Lease: l, Fence: l.Fence})
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				if err := release.Wait(ctx); err != nil {
					t.Error(err)
				}
				if err := grant.Wait(ctx); err != nil {
					t.Error(err)
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	if st := closeAndLoad(t, s, path); len(st.Leases) != 0 {
		t.Fatalf("%d leases outlived their release, e.g. %s: changes were committed out of order", len(st.Leases), st.Leases[0].ID)
	}
}
