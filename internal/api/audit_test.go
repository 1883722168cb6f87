package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestLimitAuditLinesShowBeforeAndAfter checks the info audit lines of
// creating, replacing and deleting a limit: the capacity replaced and the
// new one; what a deletion ended.
func TestLimitAuditLinesShowBeforeAndAfter(t *testing.T) {
	logs := newLogSink()
	h := newHarness(t, logs.option())
	h.putLimit("audited", 3)
	h.putLimit("audited", 5)
	h.putLimit("audited", 1)
	h.acquire("audited", `{"wait_seconds": 0}`)
	waiter := h.goAcquire(h.ctx, "audited", `{"wait_seconds": 30}`)
	h.waitQueued("audited", 1)
	if r := h.do("DELETE", "/v1/limits/audited", ""); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", r.Status, r.Body)
	}
	if o := await(t, waiter, 5*time.Second, "the waiter of the deleted limit"); o.Status != http.StatusNotFound {
		t.Fatalf("waiter of the deleted limit: %d %s, want 404", o.Status, o.Body)
	}

	want := []struct {
		msg   string
		attrs map[string]float64
	}{
		{"limit created", map[string]float64{"capacity": 3}},
		{"limit replaced", map[string]float64{"capacity_before": 3, "capacity": 5}},
		{"limit replaced", map[string]float64{"capacity_before": 5, "capacity": 1}},
		{"limit deleted", map[string]float64{"capacity": 1, "in_use": 1, "waiting": 1}},
	}
	got := logs.all(func(l map[string]any) bool {
		return l["limit"] == "audited" && l["msg"] != "request" && strings.HasPrefix(fmt.Sprint(l["msg"]), "limit ")
	})
	if len(got) != len(want) {
		t.Fatalf("%d audit lines, want %d:\n%s", len(got), len(want), logs.dump())
	}
	for i, w := range want {
		if got[i]["msg"] != w.msg || got[i]["level"] != "INFO" {
			t.Errorf("audit line %d: %v, want %q at INFO", i, got[i], w.msg)
			continue
		}
		for k, v := range w.attrs {
			if got[i][k] != v {
				t.Errorf("%s: %s = %v, want %v (line %v)", w.msg, k, got[i][k], v, got[i])
			}
		}
	}
}

// TestConcurrentReplacesAuditAConsistentHistory: each "limit replaced" line
// names as replaced the capacity that the change before it set, even when
// PUTs race. Read apart from the change, two racing PUTs would both claim to
// have replaced the same capacity and the trail would lose one change.
func TestConcurrentReplacesAuditAConsistentHistory(t *testing.T) {
	logs := newLogSink()
	h := newHarness(t, logs.option())
	const racers = 8
	capacity := 1
	h.putLimit("raced", capacity)
	for round := 0; round < 5; round++ {
		prefix := fmt.Sprintf("round-%d-", round)
		var wg sync.WaitGroup
		start := make(chan struct{})
		statuses := make([]int, racers)
		for i := range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				r, err := h.try(h.ctx, "PUT", "/v1/limits/raced", fmt.Sprintf(`{"capacity": %d}`, 100*(round+1)+i),
					"X-Request-Id", fmt.Sprintf("%s%d", prefix, i))
				if err == nil {
					statuses[i] = r.Status
				}
			}()
		}
		close(start)
		wg.Wait()
		for i, s := range statuses {
			if s != http.StatusOK {
				t.Fatalf("round %d PUT %d: status %d, want 200", round, i, s)
			}
		}
		lines := logs.all(func(l map[string]any) bool {
			id, _ := l["request_id"].(string)
			return l["msg"] == "limit replaced" && strings.HasPrefix(id, prefix)
		})
		if len(lines) != racers {
			t.Fatalf("round %d: %d \"limit replaced\" lines, want %d:\n%s", round, len(lines), racers, logs.dump())
		}
		// The changes happened one after another: starting from the
		// capacity before the round, each line's capacity_before must be
		// the capacity of exactly one line, or the one before the round.
		byBefore := make(map[float64]map[string]any, racers)
		for _, l := range lines {
			before := l["capacity_before"].(float64)
			if other, dup := byBefore[before]; dup {
				t.Fatalf("round %d: two changes both replaced capacity %v:\n%v\n%v", round, before, other, l)
			}
			byBefore[before] = l
		}
		cur := float64(capacity)
		for range racers {
			l, ok := byBefore[cur]
			if !ok {
				t.Fatalf("round %d: no change replaced capacity %v; lines:\n%v", round, cur, lines)
			}
			cur = l["capacity"].(float64)
		}
		if final := h.limit("raced").Capacity; float64(final) != cur {
			t.Fatalf("round %d: the audit trail ends at capacity %v, the limit has %d", round, cur, final)
		}
		capacity = int(cur)
	}
}
