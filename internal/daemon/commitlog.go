package daemon

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
)

// commitLogInterval is the shortest gap between two log lines about failed
// commits. A full or read-only disk fails every commit, several a second
// under load, and the log is often on that same disk.
const commitLogInterval = 10 * time.Second

// commitLog logs failed database commits, which otherwise reach only a
// metric and the problem detail of the client whose grant failed. The
// first failure is logged at once; while the failures go on, at most one
// line per interval follows, with how many failures it did not log; the
// first commit that succeeds again is logged too, so the log shows when an
// outage ended and how large it was.
type commitLog struct {
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time
	// probe says in words what is wrong with the storage, or "" if it
	// finds nothing: SQLite reports a read-only file system only as "disk
	// I/O error".
	probe func() string

	// The store commits one batch at a time, but on whichever goroutine
	// commits it; the mutex keeps this correct whatever the store does.
	mu         sync.Mutex
	failing    bool
	since      time.Time // the first failure of the current outage
	lastLine   time.Time
	failures   int // failed commits in the current outage
	suppressed int // failed commits not logged since the last line
}

func newCommitLog(log *slog.Logger, interval time.Duration, now func() time.Time, probe func() string) *commitLog {
	return &commitLog{log: log, interval: interval, now: now, probe: probe}
}

// observe is called after every commit with its size and error.
func (c *commitLog) observe(changes int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		if !c.failing {
			return // the common case: no clock read, no allocation
		}
		c.log.Info("database commits succeed again", "failed_commits", c.failures,
			"outage", c.now().Sub(c.since).Round(time.Millisecond))
		c.failing, c.failures, c.suppressed = false, 0, 0
		return
	}
	now := c.now()
	c.failures++
	if !c.failing {
		c.failing, c.since = true, now
	} else if now.Sub(c.lastLine) < c.interval {
		c.suppressed++
		return
	}
	attrs := []any{"err", err, "changes", changes, "failed_commits", c.failures, "suppressed", c.suppressed}
	if cause := c.probe(); cause != "" {
		attrs = append(attrs, "cause", cause)
	}
	c.log.Error("database commit failed: acquires and renewals are answered 503 store_unavailable, releases are retried", attrs...)
	c.lastLine, c.suppressed = now, 0
}

// probeDir tries what a commit does, writing a file in dir, and describes
// what stops it. It runs only when a failure is logged, at most once per
// interval, so its file is no burden.
func probeDir(dir string) string {
	f, err := os.CreateTemp(dir, ".limitd-probe-*")
	if err == nil {
		_, err = f.Write([]byte{0})
		f.Close()
		os.Remove(f.Name())
	}
	switch {
	case err == nil:
		return ""
	case errors.Is(err, syscall.EROFS):
		return "the file system of " + dir + " is read-only"
	case errors.Is(err, syscall.ENOSPC):
		return "the file system of " + dir + " is full"
	case errors.Is(err, syscall.EDQUOT):
		return "the disk quota on " + dir + " is exceeded"
	case errors.Is(err, fs.ErrPermission):
		return "limitd may not write in " + dir
	}
	return "writing a file in " + dir + " fails too: " + err.Error()
}
