package obslog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/limitd/limitd/internal/obslog"
	"github.com/limitd/limitd/internal/slots"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func lines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, l)
		}
		out = append(out, m)
	}
	return out
}

func testLease() slots.LeaseRecord {
	return slots.LeaseRecord{ID: "01JLEASE", Limit: "jobs", Slots: 2, Holder: "host-3/pid-7", Fence: 9,
		TTL: 30 * time.Second, ExpiresAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func TestLeaseLifecycleIsLoggedAtDebugInOrder(t *testing.T) {
	var buf bytes.Buffer
	l := obslog.New(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	lease := testLease()
	rec := slots.LimitRecord{Name: "jobs", Capacity: 3}
	l.LimitChanged(nil, rec)
	l.Granted(lease, 1500*time.Millisecond)
	l.Renewed(lease)
	l.Ended(lease, 4*time.Second, false)
	l.Ended(lease, 30*time.Second, true)
	l.NotGranted("jobs", slots.ResultTimeout)
	after := rec
	after.Capacity = 5
	l.LimitChanged(&rec, after)
	l.LimitDeleted(after)
	l.Close()

	got := lines(t, &buf)
	want := []string{"limit created", "lease granted", "lease renewed", "lease released", "lease expired",
		"acquire not granted", "limit changed", "limit deleted"}
	if len(got) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(got), len(want), buf.String())
	}
	for i, w := range want {
		if got[i]["msg"] != w || got[i]["level"] != "DEBUG" || got[i]["limit"] != "jobs" {
			t.Errorf("line %d: msg %v level %v limit %v, want %q at DEBUG for jobs", i, got[i]["msg"], got[i]["level"], got[i]["limit"], w)
		}
	}
	granted := got[1]
	if granted["lease"] != "01JLEASE" || granted["holder"] != "host-3/pid-7" || granted["slots"] != 2.0 ||
		granted["fence"] != 9.0 || granted["waited"] != float64(1500*time.Millisecond) {
		t.Errorf("lease granted line lacks the lease's details: %v", granted)
	}
	if got[4]["held"] != float64(30*time.Second) {
		t.Errorf("lease expired line: held %v, want 30s", got[4]["held"])
	}
	if got[5]["result"] != "timeout" {
		t.Errorf("acquire not granted line: result %v, want timeout", got[5]["result"])
	}
	if got[6]["capacity_before"] != 3.0 || got[6]["capacity"] != 5.0 {
		t.Errorf("limit changed line: capacity %v -> %v, want 3 -> 5", got[6]["capacity_before"], got[6]["capacity"])
	}
}

func TestNothingIsLoggedAboveDebug(t *testing.T) {
	var buf bytes.Buffer
	l := obslog.New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	lease := testLease()
	l.Granted(lease, 0)
	l.Ended(lease, time.Second, true)
	l.LimitChanged(nil, slots.LimitRecord{Name: "jobs"})
	l.Close()
	l.Close() // twice is fine
	if buf.Len() != 0 {
		t.Errorf("logged at info level:\n%s", buf.String())
	}
}

// blockingHandler stands for a log output that has stopped accepting
// writes (a full pipe).
type blockingHandler struct {
	slog.Handler
	release chan struct{}
}

func (h blockingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelDebug {
		<-h.release
	}
	return h.Handler.Handle(ctx, r)
}

// TestStalledOutputNeverBlocksTheManager checks that events are dropped, and
// the drop reported, rather than the caller (the manager, under its lock)
// waiting on the log output.
func TestStalledOutputNeverBlocksTheManager(t *testing.T) {
	var buf bytes.Buffer
	release := make(chan struct{})
	h := blockingHandler{Handler: slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}), release: release}
	l := obslog.New(slog.New(h))

	const events = 10_000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range events {
			l.NotGranted("jobs", slots.ResultCanceled)
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("reporting events blocked on a stalled log output")
	}
	close(release)
	l.Close()

	var logged, dropped int
	for _, m := range lines(t, &buf) {
		switch m["msg"] {
		case "acquire not granted":
			logged++
		case "slot events were not logged: the log output was too slow":
			dropped += int(m["dropped"].(float64))
		}
	}
	if dropped == 0 || logged+dropped != events {
		t.Errorf("%d events logged and %d reported dropped, want some dropped and %d in all", logged, dropped, events)
	}
}

// recorder notes each event's name.
type recorder struct {
	name   string
	events *[]string
}

func (r recorder) note(e string) { *r.events = append(*r.events, r.name+":"+e) }

func (r recorder) Granted(slots.LeaseRecord, time.Duration)     { r.note("granted") }
func (r recorder) NotGranted(string, slots.AcquireResult)       { r.note("not granted") }
func (r recorder) Renewed(slots.LeaseRecord)                    { r.note("renewed") }
func (r recorder) Ended(slots.LeaseRecord, time.Duration, bool) { r.note("ended") }
func (r recorder) LimitChanged(*slots.LimitRecord, slots.LimitRecord) {
	r.note("changed")
}
func (r recorder) LimitDeleted(slots.LimitRecord) { r.note("deleted") }

func TestMultiReportsEveryEventToEachObserverInOrder(t *testing.T) {
	var events []string
	m := obslog.Multi(recorder{"a", &events}, recorder{"b", &events})
	lease := testLease()
	m.Granted(lease, 0)
	m.NotGranted("jobs", slots.ResultRejected)
	m.Renewed(lease)
	m.Ended(lease, 0, false)
	m.LimitChanged(nil, slots.LimitRecord{})
	m.LimitDeleted(slots.LimitRecord{})
	want := "a:granted b:granted a:not granted b:not granted a:renewed b:renewed a:ended b:ended a:changed b:changed a:deleted b:deleted"
	if got := strings.Join(events, " "); got != want {
		t.Errorf("events\n got %s\nwant %s", got, want)
	}
}
