package slots_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/limitd/limitd/internal/slots"
)

// helpingJournal commits grants and releases only when a waiter helps
// (slots.Helper): nothing else would ever resolve their Commits. Limit puts,
// which PutLimit waits for without helping, commit at once.
type helpingJournal struct {
	mu     sync.Mutex
	queued []*slots.Commit
	helped atomic.Int64
}

func (j *helpingJournal) Append(entries []slots.Entry) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, e := range entries {
		if e.Change.Kind == slots.ChangePutLimit {
			e.Commit.Resolve(nil)
			continue
		}
		j.queued = append(j.queued, e.Commit)
	}
}

func (j *helpingJournal) Help() {
	j.helped.Add(1)
	j.mu.Lock()
	queued := j.queued
	j.queued = nil
	j.mu.Unlock()
	for _, c := range queued {
		c.Resolve(nil)
	}
}

// A waiter whose grant was decided by another request's release helps
// commit it, so its Commit must carry the journal's Help from the moment it
// was created, not from when the journal received it: the waiter may read it
// first (the race detector checks that ordering here).
func TestWaitersHelpTheJournalCommitTheirGrant(t *testing.T) {
	j := &helpingJournal{}
	m := slots.New(slots.Config{Journal: j, MaxWaiters: 100})
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, _, err := m.PutLimit(ctx, "h", slots.LimitSpec{Capacity: 1}); err != nil {
		t.Fatal(err)
	}
	for round := range 50 {
		held, _, err := m.Acquire(ctx, "h", slots.AcquireParams{Slots: 1, TTL: time.Minute})
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		got := make(chan error, 1)
		go func() {
			l, _, err := m.Acquire(ctx, "h", slots.AcquireParams{Slots: 1, TTL: time.Minute, Wait: time.Minute})
			if err == nil {
				err = m.Release(ctx, l.ID)
			}
			got <- err
		}()
		for {
			if l, _ := m.GetLimit("h"); l.Waiting == 1 {
				break
			}
			time.Sleep(100 * time.Microsecond) // queuing has no event to wait on
		}
		if err := m.Release(ctx, held.ID); err != nil {
			t.Fatalf("round %d: release: %v", round, err)
		}
		if err := <-got; err != nil {
			t.Fatalf("round %d: the waiter: %v", round, err)
		}
	}
	if j.helped.Load() == 0 {
		t.Fatal("no Commit called the journal's Help")
	}
}
