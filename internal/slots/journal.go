package slots

import (
	"context"
	"time"
)

// LimitRecord is the durable part of a limit.
type LimitRecord struct {
	Name     string
	Capacity int
	// DefaultTTL is the limit's default lease TTL; 0 means the server's.
	DefaultTTL  time.Duration
	Description string
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// LeaseRecord is the durable part of a lease.
type LeaseRecord struct {
	ID             string
	Limit          string
	Slots          int
	Holder         string
	Fence          uint64
	AcquiredAt     time.Time
	ExpiresAt      time.Time // wall clock, as shown to clients and stored
	TTL            time.Duration
	IdempotencyKey string
}

// ChangeKind says what a Change does.
type ChangeKind int

// The kinds of durable change. Deletions (release, expire, delete limit) are
// idempotent, so a journal may retry them after a failed commit; the others
// fail back to their caller.
const (
	ChangeGrant       ChangeKind = iota + 1 // insert Lease
	ChangeRenew                             // set Lease.ExpiresAt and Lease.TTL of Lease.ID
	ChangeRelease                           // delete Lease.ID (released or expired)
	ChangePutLimit                          // upsert Limit
	ChangeDeleteLimit                       // delete Limit.Name and all its leases
)

// Retryable reports whether a failed change may be applied again later
// without changing its meaning.
func (k ChangeKind) Retryable() bool {
	return k == ChangeRelease || k == ChangeDeleteLimit
}

// Change is one durable state change. It holds copies, never pointers into
// the manager's state, so the journal can read it without the manager's lock.
type Change struct {
	Kind  ChangeKind
	Lease LeaseRecord
	Limit LimitRecord
	// Fence is the highest fence handed out when the change was made, so
	// the journal can persist the counter with the change.
	Fence uint64
}

// Entry is one change and the Commit that will tell its outcome.
type Entry struct {
	Change Change
	Commit *Commit
}

// Journal makes changes durable. The manager calls Append with its lock
// held, once at the end of each critical section that changed state, with
// every change of that section in the order it made them — so a release and
// the grant it lets through reach the journal together and can share one
// commit. Append must only queue the entries (copying the slice, which the
// manager reuses) and return; the journal then commits queued changes in
// order, many to a transaction (group commit), and resolves each Commit.
// Callers wait on their Commit outside the lock.
type Journal interface {
	Append(entries []Entry)
}

// Helper is implemented by a Journal that can commit on the goroutine that
// waits for a change: the manager's Commits then call Help in Wait before
// they block. A request that waits for its change then usually commits it
// itself, instead of waking a writer goroutine and being woken back by it,
// which is two hand-offs between threads on the path of every grant. Help
// must return soon when another goroutine is already committing.
type Helper interface {
	Help()
}

// Commit is the outcome of one appended change. It is resolved once, by the
// journal, when the change's transaction has committed or failed.
type Commit struct {
	done chan struct{}
	err  error
	// help commits queued changes on the goroutine that waits for them
	// (see Helper); nil when the journal cannot.
	help func()
	// awaited is set, before the journal receives the Commit, when a
	// goroutine will Wait for it (see Awaited).
	awaited bool
}

// Awaited reports whether a goroutine will Wait for this Commit, and so
// call a Helper journal's Help. A Helper journal must commit the other
// changes on its own (expiries, which nobody waits for); for an awaited one
// it need not wake a goroutine of its own, as long as every Help that finds
// another commit running is followed by a commit that takes its change.
func (c *Commit) Awaited() bool { return c.awaited }

// NewCommit returns an unresolved Commit; journals create one per Append.
func NewCommit() *Commit {
	return &Commit{done: make(chan struct{})}
}

// Resolve records the outcome and wakes every waiter. It must be called
// exactly once.
func (c *Commit) Resolve(err error) {
	c.err = err
	close(c.done)
}

// Done is closed once the commit is resolved.
func (c *Commit) Done() <-chan struct{} { return c.done }

// Err is the commit's outcome; it is only meaningful after Done is closed.
func (c *Commit) Err() error { return c.err }

// OnWait makes Wait call help before it blocks (see Helper), for Commits
// that a journal's own callers create and will wait for: it marks the
// Commit awaited. It must be called before the Commit is shared with
// another goroutine.
func (c *Commit) OnWait(help func()) { c.help, c.awaited = help, true }

// Wait blocks until the commit is resolved or ctx ends.
func (c *Commit) Wait(ctx context.Context) error {
	if c.help != nil {
		select {
		case <-c.done:
			return c.err
		default:
			c.help()
		}
	}
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}
