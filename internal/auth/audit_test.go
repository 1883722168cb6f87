package auth_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

// jsonLines parses the JSON log written so far.
func jsonLines(t *testing.T, logs *lockedBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// TestAdminReleaseOfLeaseIsAudited: an admin token may release any team's
// lease, and the holder then finds its slots gone; the info audit line says
// which token (by NAME, never the token itself) took which lease of which
// limit. A holder releasing its own lease is routine and not audited.
func TestAdminReleaseOfLeaseIsAudited(t *testing.T) {
	s := startAuthServerLogging(t, func(w io.Writer) slog.Handler {
		return slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo})
	})
	s.putLimit(t, "team-a:x", 2)
	own := s.acquire(t, "team-a:x", tokWorkerA)
	revoked := s.acquire(t, "team-a:x", tokWorkerA)
	expect(t, s.do(t, "DELETE", "/v1/leases/"+own.ID, tokWorkerA, ""), http.StatusNoContent, "")
	// In lower case, to see that the line names the lease as issued.
	expect(t, s.doHeader(t, "DELETE", "/v1/leases/"+strings.ToLower(revoked.ID), "", func(h http.Header) {
		h.Set("Authorization", "Bearer "+tokAdmin)
		h.Set("X-Request-Id", "revoke-1")
	}), http.StatusNoContent, "")
	// Gone already: nothing was revoked, so nothing is audited.
	expect(t, s.do(t, "DELETE", "/v1/leases/"+revoked.ID, tokAdmin, ""), http.StatusNotFound, "")

	var audits []map[string]any
	for _, l := range jsonLines(t, s.logs) {
		if l["msg"] == "lease revoked" {
			audits = append(audits, l)
		}
	}
	if len(audits) != 1 {
		t.Fatalf("%d \"lease revoked\" lines, want 1 (the admin's release only):\n%s", len(audits), s.logs.String())
	}
	a := audits[0]
	for k, want := range map[string]string{
		"level": "INFO", "token": "ops", "lease": revoked.ID, "limit": "team-a:x", "request_id": "revoke-1",
	} {
		if a[k] != want {
			t.Errorf("audit line %s = %v, want %q (line %v)", k, a[k], want, a)
		}
	}
	for _, tok := range []string{tokAdmin, tokWorkerA, "admin-token", "worker-a-token"} {
		if strings.Contains(s.logs.String(), tok) {
			t.Fatalf("the logs contain a token (%q):\n%s", tok, s.logs.String())
		}
	}
}
