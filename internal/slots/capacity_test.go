package slots_test

import (
	"context"
	"testing"
	"time"

	"github.com/limitd/limitd"
	"github.com/limitd/limitd/internal/slots"
)

// Lowering the capacity rejects every queued request that could never fit
// under it, even when rejecting one lets a smaller one behind it be granted
// at once: a too-large request left queued would block the head for ever.
func TestLoweringCapacityRejectsEveryTooLargeWaiter(t *testing.T) {
	f := newFixture(t)
	f.put(t, "q", 5)
	f.acquire(t, "q", slots.AcquireParams{Slots: 2})
	big1 := f.acquireAsync(t, context.Background(), "q", slots.AcquireParams{Holder: "big1", Slots: 4, Wait: time.Hour})
	small := f.acquireAsync(t, context.Background(), "q", slots.AcquireParams{Holder: "small", Slots: 1, Wait: time.Hour})
	big2 := f.acquireAsync(t, context.Background(), "q", slots.AcquireParams{Holder: "big2", Slots: 4, Wait: time.Hour})
	// At capacity 3 with 2 held, both big requests can never fit, and
	// small fits as soon as big1 is out of its way.
	if _, _, err := f.m.PutLimit(context.Background(), "q", slots.LimitSpec{Capacity: 3}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, recv(t, big1).err, limitd.CodeSlotsExceedCapacity)
	if r := recv(t, small); r.err != nil {
		t.Fatalf("small = %v, want the slot that fits", r.err)
	}
	wantCode(t, recv(t, big2).err, limitd.CodeSlotsExceedCapacity)
	if n := f.waiting(t, "q"); n != 0 {
		t.Fatalf("waiting = %d, want 0", n)
	}
}
