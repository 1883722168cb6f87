package slots

import "time"

// AcquireResult is how an acquire that did not get its slots ended.
type AcquireResult string

// The results of acquires that were not granted, as the metrics name them.
const (
	ResultTimeout  AcquireResult = "timeout"  // no slot within wait_seconds
	ResultCanceled AcquireResult = "canceled" // the client went away
	ResultRejected AcquireResult = "rejected" // 409, 503, or the limit was deleted
)

// Observer is told of events as they happen, for metrics and logs. The
// manager calls it with its lock held, in event order, so an observer must be
// quick, must not block and must not call back into the Manager. Holding the
// lock is what guarantees that LimitDeleted comes after every other event of
// that limit, so per-limit series deleted there stay deleted.
type Observer interface {
	Granted(l LeaseRecord, waited time.Duration)
	NotGranted(limit string, result AcquireResult)
	Renewed(l LeaseRecord)
	// Ended is called when a lease is released or expires (not when its
	// limit is deleted: LimitDeleted covers that).
	Ended(l LeaseRecord, held time.Duration, expired bool)
	LimitChanged(before *LimitRecord, after LimitRecord)
	LimitDeleted(l LimitRecord)
}

// NopObserver ignores every event.
type NopObserver struct{}

func (NopObserver) Granted(LeaseRecord, time.Duration)     {}
func (NopObserver) NotGranted(string, AcquireResult)       {}
func (NopObserver) Renewed(LeaseRecord)                    {}
func (NopObserver) Ended(LeaseRecord, time.Duration, bool) {}
func (NopObserver) LimitChanged(*LimitRecord, LimitRecord) {}
func (NopObserver) LimitDeleted(LimitRecord)               {}
