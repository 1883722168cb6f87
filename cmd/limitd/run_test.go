package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/limitd/limitd/client"
)

// These tests run "limitd run" as a script would: the built binary, against
// the built server binary on 127.0.0.1, with real processes and signals.

// rtEnv is a built limitd, a server running it, and a client of that server.
type rtEnv struct {
	bin string
	url string
	c   *client.Client
}

func rtSetup(t *testing.T) *rtEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the limitd binary")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "limitd")
	if out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	url := rtServe(t, bin)
	c, err := client.New(url)
	if err != nil {
		t.Fatal(err)
	}
	return &rtEnv{bin: bin, url: url, c: c}
}

// rtServe starts the server binary on a port of its choosing and returns
// its URL once it logged that it is ready; it is stopped with SIGTERM when
// the test ends.
func rtServe(t *testing.T, bin string) string {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "limitd.db"), "--log-format", "json")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "limitd ready" {
				addr <- line.Addr
			}
		}
	}()
	exited := make(chan error, 1)
	go func() {
		<-drained // Wait closes the pipe: read it all first
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("limitd serve did not stop within 15s of SIGTERM")
		}
	})
	select {
	case a := <-addr:
		return "http://" + a
	case err := <-exited:
		t.Fatalf("limitd serve exited before it was ready: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("limitd serve not ready within 15s")
	}
	return ""
}

// command is "limitd ARGS..." with LIMITD_URL pointing at the server.
func (e *rtEnv) command(args ...string) *exec.Cmd {
	cmd := exec.Command(e.bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LIMITD_URL=" + e.url}
	return cmd
}

func (e *rtEnv) putLimit(t *testing.T, name string, capacity int) {
	t.Helper()
	if _, err := e.c.PutLimit(t.Context(), name, client.LimitConfig{Capacity: capacity}); err != nil {
		t.Fatal(err)
	}
}

func (e *rtEnv) leases(t *testing.T, name string) int {
	t.Helper()
	ls, err := e.c.Leases(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return len(ls)
}

// started is a "limitd run" whose CMD reported on stdout that it is up.
type started struct {
	cmd    *exec.Cmd
	stdout *bufio.Reader
	stderr *bytes.Buffer
	exited chan struct{}
	err    error // of Wait, once exited is closed
}

// start runs "limitd run ARGS" and reads CMD's first line of output,
// which tests use to learn that CMD runs (and what it wants to tell).
func (e *rtEnv) start(t *testing.T, args ...string) (*started, string) {
	t.Helper()
	s := &started{cmd: e.command(append([]string{"run"}, args...)...), stderr: &bytes.Buffer{}, exited: make(chan struct{})}
	pipe, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stderr = &lockedWriter{w: s.stderr}
	s.stdout = bufio.NewReader(pipe)
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		line, _ := s.stdout.ReadString('\n')
		lines <- strings.TrimSpace(line)
		_, _ = io.Copy(io.Discard, s.stdout)
		s.err = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		<-s.exited
	})
	select {
	case line := <-lines:
		if line == "" {
			<-s.exited
			t.Fatalf("CMD printed nothing; limitd run: %v\n%s", s.err, s.stderr)
		}
		return s, line
	case <-time.After(15 * time.Second):
		t.Fatalf("CMD did not start within 15s\n%s", s.stderr)
		return nil, ""
	}
}

// wait waits for limitd run to exit and returns its exit status.
func (s *started) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-s.exited:
		return exitCode(t, s.err)
	case <-time.After(15 * time.Second):
		t.Fatal("limitd run did not exit within 15s")
		return 0
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	t.Fatalf("running limitd: %v", err)
	return 0
}

// alive reports whether pid is a process that has not exited (a zombie
// has exited).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestRun(t *testing.T) {
	e := rtSetup(t)

	// 8 parallel "limitd run" on a limit of capacity 2 never run more than
	// 2 CMDs at once. CMD appends "start" after the grant and "end" before
	// the release; appends are atomic, so the file's order is an order in
	// which the events happened.
	t.Run("NeverMoreThanCapacity", func(t *testing.T) {
		t.Parallel()
		e.putLimit(t, "run-capacity", 2)
		events := filepath.Join(t.TempDir(), "events")
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				script := fmt.Sprintf(`echo start %d >> %s; sleep 0.5; echo end %d >> %s`, i, events, i, events)
				if out, err := e.command("run", "-l", "run-capacity", "--", "sh", "-c", script).CombinedOutput(); err != nil {
					t.Errorf("limitd run %d: %v\n%s", i, err, out)
				}
			})
		}
		wg.Wait()
		b, err := os.ReadFile(events)
		if err != nil {
			t.Fatal(err)
		}
		running, peak, ended := 0, 0, 0
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			switch strings.Fields(line)[0] {
			case "start":
				running++
				peak = max(peak, running)
			case "end":
				running--
				ended++
			}
		}
		if peak > 2 || ended != 8 {
			t.Fatalf("peak of %d CMDs at once on capacity 2, %d of 8 ended:\n%s", peak, ended, b)
		}
		if peak < 2 {
			t.Errorf("never 2 CMDs at once: the limit serialized them\n%s", b)
		}
		if n := e.leases(t, "run-capacity"); n != 0 {
			t.Errorf("%d leases left", n)
		}
	})

	t.Run("ExitStatus", func(t *testing.T) {
		t.Parallel()
		e.putLimit(t, "run-exit", 1)
		e.putLimit(t, "run-paused", 0)
		notExec := filepath.Join(t.TempDir(), "not-executable")
		if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name string
			args []string
			want int
		}{
			{"CMDsCode", []string{"-l", "run-exit", "--", "sh", "-c", "exit 7"}, 7},
			{"Success", []string{"-l", "run-exit", "--", "true"}, 0},
			{"KilledBySignal", []string{"-l", "run-exit", "--", "sh", "-c", "kill -TERM $$"}, 128 + 15},
			{"CMDNotFound", []string{"-l", "run-exit", "--", "/no/such/cmd"}, 127},
			{"CMDNotExecutable", []string{"-l", "run-exit", "--", notExec}, 126},
			{"LimitNotFound", []string{"-l", "no-such-limit", "--", "true"}, 125},
			{"NoSlotWithinWait", []string{"-l", "run-paused", "--wait", "200ms", "--", "true"}, 124},
			{"Usage", []string{"--", "true"}, 2},
		}
		for _, tc := range cases {
			out, err := e.command(append([]string{"run"}, tc.args...)...).CombinedOutput()
			if got := exitCode(t, err); got != tc.want {
				t.Errorf("%s: exit status %d, want %d\n%s", tc.name, got, tc.want, out)
			}
		}
		if n := e.leases(t, "run-exit"); n != 0 {
			t.Errorf("%d leases left", n)
		}
		if ws, _ := e.c.Waiters(t.Context(), "run-paused"); len(ws) != 0 {
			t.Errorf("waiters left: %v", ws)
		}
	})

	t.Run("CMDSeesLease", func(t *testing.T) {
		t.Parallel()
		e.putLimit(t, "run-env", 1)
		out, err := e.command("run", "-l", "run-env", "--slots", "1", "--ttl", "30", "--", "sh", "-c",
			`echo "$LIMITD_LIMIT $LIMITD_LEASE_ID $LIMITD_FENCE"`).Output()
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(out))
		if len(f) != 3 || f[0] != "run-env" || len(f[1]) != 26 {
			t.Fatalf("CMD saw %q, want the limit, lease id and fence", out)
		}
		if fence, err := strconv.ParseUint(f[2], 10, 64); err != nil || fence == 0 {
			t.Fatalf("fence %q", f[2])
		}
	})

	// SIGTERM to limitd run reaches CMD, and the slot is free as soon as
	// limitd run has exited.
	t.Run("SIGTERMReachesCMDAndReleases", func(t *testing.T) {
		t.Parallel()
		e.putLimit(t, "run-sigterm", 1)
		// The sleep starts before "ready", so it is in the process group
		// when the signal comes, and holds none of the test's pipes: a
		// sleep forked after the signal used to keep the test's stderr pipe
		// open for its 100 s after everything else had exited.
		s, _ := e.start(t, "-l", "run-sigterm", "--", "sh", "-c",
			`trap 'echo got TERM >&2; exit 3' TERM; sleep 100 </dev/null >/dev/null 2>&1 & echo ready; wait`)
		if n := e.leases(t, "run-sigterm"); n != 1 {
			t.Fatalf("%d leases while CMD runs, want 1", n)
		}
		if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := s.wait(t); code != 3 {
			t.Fatalf("exit status %d, want CMD's 3\n%s", code, s.stderr)
		}
		if !strings.Contains(s.stderr.String(), "got TERM") {
			t.Errorf("CMD did not see SIGTERM:\n%s", s.stderr)
		}
		if n := e.leases(t, "run-sigterm"); n != 0 {
			t.Fatalf("%d leases right after limitd run exited; want the slot released at once", n)
		}
	})

	t.Run("SIGINTWhileWaitingLeavesNoWaiter", func(t *testing.T) {
		t.Parallel()
		e.putLimit(t, "run-sigint-wait", 0)
		cmd := e.command("run", "-l", "run-sigint-wait", "--", "true")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waiters := func() int {
			ws, err := e.c.Waiters(t.Context(), "run-sigint-wait")
			if err != nil {
				t.Fatal(err)
			}
			return len(ws)
		}
		rtEventually(t, "limitd run to queue", func() bool { return waiters() == 1 })
		_ = cmd.Process.Signal(syscall.SIGINT)
		if code := exitCode(t, cmd.Wait()); code != 130 {
			t.Fatalf("exit status %d, want 130", code)
		}
		rtEventually(t, "the waiter to leave", func() bool { return waiters() == 0 })
	})

	// A lease lost while CMD runs (an admin revokes it) terminates CMD's
	// whole process group, and limitd run says so and exits 75.
	t.Run("LeaseLostKillsProcessGroup", func(t *testing.T) {
		t.Parallel()
		e.putLimit(t, "run-lost", 1)
		s, line := e.start(t, "-l", "run-lost", "--ttl", "1s", "--", "sh", "-c",
			`sleep 100 & echo "$LIMITD_LEASE_ID $!"; wait`)
		f := strings.Fields(line)
		if len(f) != 2 {
			t.Fatalf("CMD said %q", line)
		}
		child, _ := strconv.Atoi(f[1])
		if err := e.c.ReleaseLease(t.Context(), f[0]); err != nil {
			t.Fatal(err)
		}
		if code := s.wait(t); code != 75 {
			t.Fatalf("exit status %d, want 75\n%s", code, s.stderr)
		}
		if !strings.Contains(s.stderr.String(), "lease lost") {
			t.Errorf("stderr does not say the lease was lost:\n%s", s.stderr)
		}
		rtEventually(t, "CMD's child to be gone", func() bool { return !alive(child) })
	})

	t.Run("LeaseLostKillsCMDThatIgnoresSIGTERM", func(t *testing.T) {
		t.Parallel()
		e.putLimit(t, "run-lost-stubborn", 1)
		s, _ := e.start(t, "-l", "run-lost-stubborn", "--ttl", "1s", "--kill-grace", "300ms", "--", "sh", "-c",
			`trap '' TERM; echo "$LIMITD_LEASE_ID"; while :; do sleep 0.1; done`)
		if err := e.c.DeleteLimit(t.Context(), "run-lost-stubborn"); err != nil {
			t.Fatal(err)
		}
		if code := s.wait(t); code != 75 {
			t.Fatalf("exit status %d, want 75\n%s", code, s.stderr)
		}
		if !strings.Contains(s.stderr.String(), "killing") {
			t.Errorf("stderr does not say CMD was killed:\n%s", s.stderr)
		}
	})

	// The CLI admin commands as a user types them.
	t.Run("AdminCommands", func(t *testing.T) {
		t.Parallel()
		if out, err := e.command("limits", "set", "cli-bin", "--capacity", "4", "--description", "from the binary").CombinedOutput(); err != nil {
			t.Fatalf("limits set: %v\n%s", err, out)
		}
		out, err := e.command("limits", "get", "cli-bin", "-o", "json").Output()
		if err != nil {
			t.Fatal(err)
		}
		var l struct {
			Name     string
			Capacity int
		}
		if err := json.Unmarshal(out, &l); err != nil || l.Name != "cli-bin" || l.Capacity != 4 {
			t.Fatalf("limits get -o json = %s (%v)", out, err)
		}
		out, err = e.command("limits", "get", "nope").CombinedOutput()
		if code := exitCode(t, err); code != 1 || !strings.Contains(string(out), "limit_not_found") {
			t.Fatalf("limits get nope: exit %d\n%s", code, out)
		}
	})
}

func rtEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}
