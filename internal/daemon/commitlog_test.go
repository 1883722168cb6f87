package daemon_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/limitd/limitd/internal/daemon"
)

// jsonLog is a JSON slog output that tests read back line by line. The
// store's writer goroutine logs into it while the test reads.
type jsonLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *jsonLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *jsonLog) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// lines returns the records whose msg starts with prefix.
func (l *jsonLog) lines(t *testing.T, prefix string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(l.buf.Bytes(), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("log line is not JSON: %s", line)
		}
		if msg, _ := rec["msg"].(string); len(msg) >= len(prefix) && msg[:len(prefix)] == prefix {
			out = append(out, rec)
		}
	}
	return out
}

const (
	commitFailedMsg = "database commit failed"
	commitsBackMsg  = "database commits succeed again"
)

// A disk that fails every commit must not flood the log (which is often on
// that disk), yet the log must say when the failures started, that they go
// on, how many there were, and when they ended.
func TestFailedCommitsAreLoggedAtMostOncePerInterval(t *testing.T) {
	var out jsonLog
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	at := func(d time.Duration) { now = time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC).Add(d) }
	observe := daemon.NewCommitLog(out.logger(), 10*time.Second, func() time.Time { return now })
	full := errors.New("database or disk is full (13)")

	observe(5, nil)
	at(0)
	observe(3, full)
	at(time.Second)
	observe(1, full)
	at(2 * time.Second)
	observe(2, full)
	if got := out.lines(t, commitFailedMsg); len(got) != 1 {
		t.Fatalf("%d error lines for 3 failures within the interval, want 1: %v", len(got), got)
	}
	at(10 * time.Second)
	observe(4, full)
	at(12 * time.Second)
	observe(1, nil)
	observe(1, nil)

	failed := out.lines(t, commitFailedMsg)
	if len(failed) != 2 {
		t.Fatalf("%d error lines, want the first failure and one after the interval: %v", len(failed), failed)
	}
	first, later := failed[0], failed[1]
	if first["level"] != "ERROR" || first["err"] != full.Error() || first["changes"] != 3.0 || first["suppressed"] != 0.0 {
		t.Errorf("first failure logged as %v, want level ERROR with the error and the batch size 3", first)
	}
	if later["changes"] != 4.0 || later["suppressed"] != 2.0 || later["failed_commits"] != 4.0 {
		t.Errorf("line after the interval: %v, want batch size 4, 2 suppressed, 4 failed commits", later)
	}
	back := out.lines(t, commitsBackMsg)
	if len(back) != 1 || back[0]["level"] != "INFO" || back[0]["failed_commits"] != 4.0 || back[0]["outage"] != float64(12*time.Second) {
		t.Fatalf("recovery logged as %v, want one INFO line with 4 failed commits over 12 s", back)
	}

	// A new outage is news again: logged at once, not held back by the
	// interval of the previous one.
	at(13 * time.Second)
	observe(1, full)
	if failed := out.lines(t, commitFailedMsg); len(failed) != 3 || failed[2]["failed_commits"] != 1.0 {
		t.Fatalf("a new outage's first failure was not logged at once: %v", failed)
	}
}
