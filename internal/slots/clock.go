package slots

import "time"

// Clock is the manager's source of time. It has two faces: the wall clock,
// for the times that are shown and stored (acquired_at, expires_at), and a
// monotonic clock for every deadline, so a wall-clock jump neither expires a
// lease early nor keeps it alive late.
type Clock interface {
	// Read returns both faces at one instant: the wall-clock time, and the
	// monotonic time elapsed since some fixed moment (which never jumps).
	Read() (wall time.Time, mono time.Duration)
	// AfterFunc calls f in its own goroutine once d has passed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop prevents the call if it has not started; it reports whether it did.
	Stop() bool
}

// SystemClock is the real clock.
type SystemClock struct {
	start time.Time
}

// NewSystemClock returns the real clock, its monotonic face counting from now.
func NewSystemClock() *SystemClock { return &SystemClock{start: time.Now()} }

// Read uses one time.Now() for both faces; its monotonic reading, which
// wall-clock changes do not affect, gives the monotonic face.
func (c *SystemClock) Read() (time.Time, time.Duration) {
	now := time.Now()
	return now, now.Sub(c.start)
}

// AfterFunc wraps time.AfterFunc, which runs on the monotonic clock.
func (c *SystemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
