package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/limitd/limitd"
	"github.com/limitd/limitd/client"
	"github.com/limitd/limitd/internal/auth"
	"github.com/limitd/limitd/internal/daemon"
	"github.com/limitd/limitd/internal/servertest"
)

// cliRun runs "limitd ARGS..." in-process with the given environment and
// returns its output and exit status.
func cliRun(t *testing.T, vars map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(k string) string { return vars[k] }}
	code = run(t.Context(), func() {}, e, args)
	return out.String(), errb.String(), code
}

// cliMust is cliRun that expects exit status 0.
func cliMust(t *testing.T, vars map[string]string, args ...string) string {
	t.Helper()
	out, errOut, code := cliRun(t, vars, args...)
	if code != 0 {
		t.Fatalf("limitd %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func TestCLILimitsAndLeases(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, t.TempDir())
	vars := map[string]string{"LIMITD_URL": srv.URL}

	// Flags may follow the name; durations may be plain seconds.
	out := cliMust(t, vars, "limits", "set", "db", "--capacity", "3", "--default-ttl", "90", "--description", "main database")
	if !strings.Contains(out, "NAME") || !strings.Contains(out, "db") || !strings.Contains(out, "1m30s") || !strings.Contains(out, "main database") {
		t.Errorf("limits set printed:\n%s", out)
	}
	cliMust(t, vars, "limits", "set", "--capacity=0", "api")

	out = cliMust(t, vars, "limits", "ls")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME ") || !strings.HasPrefix(lines[1], "api ") || !strings.HasPrefix(lines[2], "db ") {
		t.Fatalf("limits ls:\n%s", out)
	}
	if got, want := strings.Index(lines[1], "0"), strings.Index(lines[0], "CAPACITY"); got != want {
		t.Errorf("columns not aligned:\n%s", out)
	}

	var list limitd.LimitList
	if err := json.Unmarshal([]byte(cliMust(t, vars, "limits", "ls", "-o", "json")), &list); err != nil || len(list.Limits) != 2 {
		t.Fatalf("limits ls -o json: %+v, %v", list, err)
	}
	var one limitd.Limit
	if err := json.Unmarshal([]byte(cliMust(t, vars, "limits", "get", "db", "--output", "json")), &one); err != nil ||
		one.Capacity != 3 || one.DefaultTTLSeconds != 90 || one.Description != "main database" {
		t.Fatalf("limits get -o json: %+v, %v", one, err)
	}

	c, err := client.New(srv.URL, client.WithHolder("worker-7"))
	if err != nil {
		t.Fatal(err)
	}
	lease, err := c.Acquire(t.Context(), "db", client.Slots(2))
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release(context.Background())

	out = cliMust(t, vars, "leases", "ls", "db")
	if !strings.Contains(out, lease.ID()) || !strings.Contains(out, "worker-7") || !strings.HasPrefix(out, "ID ") {
		t.Errorf("leases ls:\n%s", out)
	}
	var leases limitd.LeaseList
	if err := json.Unmarshal([]byte(cliMust(t, vars, "leases", "ls", "db", "-o", "json")), &leases); err != nil ||
		len(leases.Leases) != 1 || leases.Leases[0].Slots != 2 {
		t.Fatalf("leases ls -o json: %+v, %v", leases, err)
	}
	var got limitd.Lease
	if err := json.Unmarshal([]byte(cliMust(t, vars, "leases", "get", lease.ID(), "-o", "json")), &got); err != nil || got.ID != lease.ID() {
		t.Fatalf("leases get -o json: %+v, %v", got, err)
	}

	// A waiter shows in the queue.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	waited := make(chan error, 1)
	go func() {
		_, err := c.Acquire(ctx, "db", client.Slots(2), client.Holder("queued-1"))
		waited <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(cliMust(t, vars, "limits", "waiters", "db"), "queued-1"); {
		if time.Now().After(deadline) {
			t.Fatal("the waiter never showed in limits waiters")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-waited
	// The server drops the waiter once it sees the connection close; wait
	// for that, or the release below could grant the waiter's slots.
	for deadline := time.Now().Add(10 * time.Second); strings.Contains(cliMust(t, vars, "limits", "waiters", "db"), "queued-1"); {
		if time.Now().After(deadline) {
			t.Fatal("the canceled waiter never left the queue")
		}
		time.Sleep(5 * time.Millisecond)
	}

	// An admin revokes the lease: its holder loses it.
	if out := cliMust(t, vars, "leases", "rm", lease.ID()); out != "" {
		t.Errorf("leases rm printed %q", out)
	}
	if out = cliMust(t, vars, "leases", "ls", "db", "-o", "json"); strings.TrimSpace(out) != "{\n  \"leases\": []\n}" {
		t.Errorf("leases after rm: %s", out)
	}
	_, errOut, code := cliRun(t, vars, "leases", "rm", lease.ID())
	if code != 1 || !strings.Contains(errOut, "lease_not_found") || strings.Contains(errOut, "limitd: ") {
		t.Errorf("leases rm twice: exit %d, %q", code, errOut)
	}

	cliMust(t, vars, "limits", "rm", "db", "api")
	if out := cliMust(t, vars, "limits", "ls", "-o", "json"); !strings.Contains(out, `"limits": []`) {
		t.Errorf("limits after rm: %s", out)
	}
	_, errOut, code = cliRun(t, vars, "limits", "get", "db")
	if code != 1 || !strings.Contains(errOut, `limit_not_found: limit "db" does not exist`) {
		t.Errorf("limits get of a deleted limit: exit %d, %q", code, errOut)
	}
}

func TestCLIServerAndToken(t *testing.T) {
	t.Parallel()
	const token = "cli-test-token-0123456789"
	h := auth.Hash(token)
	set, err := auth.Parse(strings.NewReader("ops admin * " + hex.EncodeToString(h[:]) + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	srv := servertest.Start(t, t.TempDir(), func(c *daemon.Config) { c.Tokens = auth.NewKeyring(set) })

	// --server wins over LIMITD_URL.
	bogus := map[string]string{"LIMITD_URL": "http://127.0.0.1:1", "LIMITD_TOKEN": token}
	cliMust(t, bogus, "limits", "ls", "--server", srv.URL)

	_, errOut, code := cliRun(t, map[string]string{"LIMITD_URL": srv.URL}, "limits", "ls")
	if code != 1 || !strings.Contains(errOut, "unauthorized") {
		t.Fatalf("without a token: exit %d, %q", code, errOut)
	}
	cliMust(t, map[string]string{"LIMITD_URL": srv.URL}, "limits", "ls", "--token", token)
	cliMust(t, map[string]string{"LIMITD_URL": srv.URL, "LIMITD_TOKEN": "wrong"}, "limits", "ls", "--token", token)
	cliMust(t, map[string]string{"LIMITD_URL": srv.URL, "LIMITD_TOKEN": token}, "limits", "set", "x", "--capacity", "1")

	// The token never shows in help.
	_, errOut, _ = cliRun(t, map[string]string{"LIMITD_TOKEN": token}, "limits", "ls", "-h")
	if strings.Contains(errOut, token) || !strings.Contains(errOut, "LIMITD_TOKEN") {
		t.Errorf("limits ls -h:\n%s", errOut)
	}
}

func TestCLIUsageErrors(t *testing.T) {
	t.Parallel()
	vars := map[string]string{"LIMITD_URL": "http://127.0.0.1:1"}
	for _, args := range [][]string{
		{"limits"},
		{"limits", "frob"},
		{"limits", "set", "x"},
		{"limits", "set", "--capacity", "1"},
		{"limits", "set", "a", "b", "--capacity", "1"},
		{"limits", "get"},
		{"limits", "ls", "extra"},
		{"limits", "ls", "-o", "yaml"},
		{"limits", "set", "x", "--capacity", "1", "--default-ttl", "soon"},
		{"leases", "ls"},
		{"leases", "rm"},
		{"run", "--", "true"},
		{"run", "-l", "x"},
	} {
		if _, errOut, code := cliRun(t, vars, args...); code != 2 || errOut == "" {
			t.Errorf("limitd %s: exit %d, stderr %q; want 2 and a message", strings.Join(args, " "), code, errOut)
		}
	}
	for _, args := range [][]string{{"limits", "-h"}, {"limits", "help"}, {"leases", "--help"}, {"limits", "set", "-h"}, {"run", "-h"}} {
		if _, _, code := cliRun(t, vars, args...); code != 0 {
			t.Errorf("limitd %s: exit %d, want 0", strings.Join(args, " "), code)
		}
	}
	// A malformed name or id is refused before any request.
	if _, errOut, code := cliRun(t, vars, "leases", "rm", "nope"); code != 1 || !strings.Contains(errOut, "invalid_request") {
		t.Errorf("leases rm nope: exit %d, %q", code, errOut)
	}
}

func TestParseDuration(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{
		"90": 90 * time.Second, "0.5": 500 * time.Millisecond, "0": 0, "1m30s": 90 * time.Second, "250ms": 250 * time.Millisecond,
	} {
		if got, err := parseDuration(in); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "-5s", "soon", "1e30"} {
		if _, err := parseDuration(in); err == nil {
			t.Errorf("parseDuration(%q) accepted", in)
		}
	}
}

func TestParseInterspersed(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	n := fs.Int("n", 0, "")
	pos, err := parseInterspersed(fs, []string{"a", "-n", "3", "b", "--", "-n", "c"})
	if err != nil || *n != 3 || !reflect.DeepEqual(pos, []string{"a", "b", "-n", "c"}) {
		t.Fatalf("got %q, n=%d, %v", pos, *n, err)
	}
}

func TestFmtSeconds(t *testing.T) {
	t.Parallel()
	for in, want := range map[float64]string{60: "1m", 90: "1m30s", 3600: "1h", 0.5: "500ms", 86400: "24h", 3661: "1h1m1s"} {
		if got := fmtSeconds(in); got != want {
			t.Errorf("fmtSeconds(%v) = %q, want %q", in, got, want)
		}
	}
}
