package daemon

import (
	"log/slog"
	"time"
)

// NewCommitLog gives tests the commit log with an interval and a clock of
// their own, so its rate limiting is checked without waiting for it.
func NewCommitLog(log *slog.Logger, interval time.Duration, now func() time.Time) func(changes int, err error) {
	return newCommitLog(log, interval, now, func() string { return "" }).observe
}
