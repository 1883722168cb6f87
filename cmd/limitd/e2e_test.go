package main_test

// End-to-end tests of the limitd binary: built with go build, run as a
// process on a free 127.0.0.1 port with a temporary database, driven over
// HTTP, killed with SIGKILL or stopped with SIGTERM, and restarted on the
// same file.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/limitd/limitd"
)

// e2eBuild builds the limitd binary into a temporary directory.
func e2eBuild(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "limitd")
	out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// e2eProc is one running limitd process.
type e2eProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr *e2eLog
	base   string // http://host:port once ready
	hc     *http.Client
	done   chan struct{} // closed when the process has exited
	err    error         // its exit status, once done is closed
}

// e2eLog collects the process's stderr and notices the "limitd ready" line.
type e2eLog struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	ready chan string // receives the listen address once
	sent  bool
}

var e2eReadyAddr = regexp.MustCompile(`limitd ready.*?\baddr["=:]+([0-9.]+:[0-9]+)`)

func (l *e2eLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if !l.sent {
		if m := e2eReadyAddr.FindSubmatch(l.buf.Bytes()); m != nil {
			l.sent = true
			l.ready <- string(m[1])
		}
	}
	return len(p), nil
}

func (l *e2eLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// e2eStart runs bin with args and extra environment variables and waits
// until it logs that it is ready and GET /readyz answers 200.
func e2eStart(t *testing.T, bin string, env []string, args ...string) *e2eProc {
	t.Helper()
	p := e2eLaunch(t, bin, env, args...)
	select {
	case addr := <-p.stderr.ready:
		p.base = "http://" + addr
	case <-p.done:
		t.Fatalf("limitd exited before it was ready: %v\n%s", p.err, p.stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("limitd not ready within 30 s:\n%s", p.stderr)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := p.hc.Get(p.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /readyz not 200 within 10 s (last: %v)\n%s", err, p.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// e2eLaunch starts the process without waiting for it to be ready. It is
// killed when the test ends, if still running.
func e2eLaunch(t *testing.T, bin string, env []string, args ...string) *e2eProc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(e2eCleanEnv(), env...)
	log := &e2eLog{ready: make(chan string, 1)}
	cmd.Stdout = log
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	p := &e2eProc{t: t, cmd: cmd, stderr: log, hc: &http.Client{Transport: tr}, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		tr.CloseIdleConnections()
		if t.Failed() {
			t.Logf("limitd (pid %d) output:\n%s", cmd.Process.Pid, log)
		}
	})
	return p
}

// e2eCleanEnv is the test's environment without LIMITD_ variables, so a
// developer's settings cannot change what the binary does.
func e2eCleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LIMITD_") {
			out = append(out, kv)
		}
	}
	return out
}

func (p *e2eProc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *e2eProc) wait(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		p.t.Fatalf("limitd did not exit within %v:\n%s", d, p.stderr)
	}
	var exit *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &exit):
		return exit.ExitCode()
	}
	p.t.Fatalf("waiting for limitd: %v", p.err)
	return -1
}

type e2eReply struct {
	status int
	header http.Header
	body   []byte
}

func (p *e2eProc) try(ctx context.Context, method, path, body string, hdr ...string) (e2eReply, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, p.base+path, rd)
	if err != nil {
		return e2eReply{}, err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return e2eReply{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return e2eReply{resp.StatusCode, resp.Header, data}, err
}

// do sends a request that must get an answer with the wanted status, and
// decodes its body into out (if not nil).
func (p *e2eProc) do(method, path, body string, want int, out any) e2eReply {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := p.try(ctx, method, path, body)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	if r.status != want {
		p.t.Fatalf("%s %s: %d %s, want %d", method, path, r.status, r.body, want)
	}
	if out != nil {
		if err := json.Unmarshal(r.body, out); err != nil {
			p.t.Fatalf("%s %s: decoding %s: %v", method, path, r.body, err)
		}
	}
	return r
}

func e2eProblem(t *testing.T, r e2eReply, code limitd.Code) {
	t.Helper()
	var p limitd.Problem
	if r.status != code.Status() || !strings.HasPrefix(r.header.Get("Content-Type"), "application/problem+json") ||
		json.Unmarshal(r.body, &p) != nil || p.Code != code {
		t.Fatalf("got %d %q %s, want problem %s", r.status, r.header.Get("Content-Type"), r.body, code)
	}
}

func e2eArgs(dir string, extra ...string) []string {
	return append([]string{"--addr", "127.0.0.1:0", "--db", filepath.Join(dir, "limitd.db"), "--log-format", "json"}, extra...)
}

// ---- SIGKILL -------------------------------------------------------------------

// leaseLog is what the clients know about the leases they were granted.
type leaseLog struct {
	mu        sync.Mutex
	acked     map[string]limitd.Lease // 201 received; expires_at of the last acknowledged renew
	releasing map[string]bool         // a release was sent, its answer not received
	released  map[string]bool         // 204 received
	maxFence  uint64
}

func TestKillDashNineKeepsEveryAcknowledgedLease(t *testing.T) {
	bin := e2eBuild(t)
	dir := t.TempDir()
	p := e2eStart(t, bin, nil, e2eArgs(dir)...)
	p.do("PUT", "/v1/limits/jobs", `{"capacity": 6}`, http.StatusCreated, nil)
	p.do("PUT", "/v1/limits/held", `{"capacity": 16}`, http.StatusCreated, nil)
	p.do("PUT", "/v1/limits/side", `{"capacity": 2, "description": "untouched"}`, http.StatusCreated, nil)
	var side limitd.Lease
	p.do("POST", "/v1/limits/side/acquire", `{"slots": 2, "holder": "side"}`, http.StatusCreated, &side)

	log := &leaseLog{acked: map[string]limitd.Lease{}, releasing: map[string]bool{}, released: map[string]bool{}}
	log.acked[side.ID] = side
	log.maxFence = side.Fence
	ctx, stopTraffic := context.WithCancel(context.Background())
	defer stopTraffic()
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() { e2eWorker(ctx, p, log, w) })
	}

	// Kill mid-traffic, once leases are held, some have been released and
	// waiters are queued.
	deadline := time.Now().Add(20 * time.Second)
	for {
		log.mu.Lock()
		acked, released := len(log.acked), len(log.released)
		log.mu.Unlock()
		var ws limitd.WaiterList
		r, err := p.try(context.Background(), "GET", "/v1/limits/jobs/waiters", "")
		if err == nil && json.Unmarshal(r.body, &ws) == nil && len(ws.Waiters) > 0 && acked > 40 && released > 10 {
			t.Logf("killing with %d waiters queued, %d grants acknowledged, %d releases acknowledged", len(ws.Waiters), acked, released)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("traffic did not build up: %d acknowledged, %d released, waiters %v", acked, released, ws.Waiters)
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.signal(syscall.SIGKILL)
	p.wait(10 * time.Second)
	stopTraffic()
	wg.Wait()

	p2 := e2eStart(t, bin, nil, e2eArgs(dir)...)
	var limits limitd.LimitList
	p2.do("GET", "/v1/limits", "", http.StatusOK, &limits)
	if len(limits.Limits) != 3 || limits.Limits[1].Name != "jobs" || limits.Limits[1].Capacity != 6 ||
		limits.Limits[2].Description != "untouched" || limits.Limits[1].Waiting != 0 {
		t.Fatalf("limits after restart: %+v", limits.Limits)
	}
	var jobs limitd.LeaseList
	p2.do("GET", "/v1/limits/jobs/leases", "", http.StatusOK, &jobs)
	live := map[string]limitd.Lease{}
	inUse := 0
	for _, l := range jobs.Leases {
		live[l.ID] = l
		inUse += l.Slots
		if log.released[l.ID] {
			t.Errorf("lease %s was released (204) before the kill but is back after the restart", l.ID)
		}
	}
	if limits.Limits[1].InUse != inUse || inUse > 6 {
		t.Errorf("in_use %d, the live leases hold %d of a capacity of 6", limits.Limits[1].InUse, inUse)
	}
	checked := 0
	for id, want := range log.acked {
		if log.released[id] || log.releasing[id] {
			continue // released, or its release was in flight: either state is right
		}
		checked++
		var got limitd.Lease
		p2.do("GET", "/v1/leases/"+id, "", http.StatusOK, &got)
		if got.ID != want.ID || got.Fence != want.Fence || got.Slots != want.Slots || got.Holder != want.Holder ||
			got.Limit != want.Limit || !got.AcquiredAt.Equal(want.AcquiredAt) || got.ExpiresAt.Before(want.ExpiresAt) {
			t.Errorf("acknowledged lease after SIGKILL and restart:\n got  %+v\n want %+v (expires_at no earlier)", got, want)
		}
		var renewed limitd.Lease
		p2.do("POST", "/v1/leases/"+id+"/renew", `{"ttl_seconds": 30}`, http.StatusOK, &renewed)
		if renewed.ID != id || renewed.Fence != want.Fence {
			t.Errorf("renewed %+v", renewed)
		}
		p2.do("DELETE", "/v1/leases/"+id, "", http.StatusNoContent, nil)
	}
	t.Logf("%d acknowledged leases survived the kill and were renewed and released", checked)
	if checked < 17 {
		t.Fatalf("only %d acknowledged leases to check", checked)
	}
	var fresh limitd.Lease
	p2.do("PUT", "/v1/limits/fresh", `{"capacity": 1}`, http.StatusCreated, nil)
	p2.do("POST", "/v1/limits/fresh/acquire", "", http.StatusCreated, &fresh)
	if fresh.Fence <= log.maxFence {
		t.Fatalf("fence %d after the restart, not above the %d acknowledged before the kill", fresh.Fence, log.maxFence)
	}
	p2.signal(syscall.SIGTERM)
	if code := p2.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
}

// e2eWorker first takes a lease of "held" that it keeps (and renews), then
// loops on "jobs": acquire, perhaps renew, release, until ctx ends or the
// server goes away. One lease of "jobs" at a time per worker, so the queue
// always moves.
func e2eWorker(ctx context.Context, p *e2eProc, log *leaseLog, w int) {
	rng := rand.New(rand.NewPCG(uint64(w), 7))
	acquire := func(limit, body string) (limitd.Lease, bool) {
		r, err := p.try(ctx, "POST", "/v1/limits/"+limit+"/acquire", body)
		var l limitd.Lease
		if err != nil || r.status != http.StatusCreated || json.Unmarshal(r.body, &l) != nil {
			return l, false
		}
		log.mu.Lock()
		log.acked[l.ID] = l
		log.maxFence = max(log.maxFence, l.Fence)
		log.mu.Unlock()
		return l, true
	}
	renew := func(l limitd.Lease) bool {
		r, err := p.try(ctx, "POST", "/v1/leases/"+l.ID+"/renew", `{"ttl_seconds": 240}`)
		var renewed limitd.Lease
		if err != nil || r.status != http.StatusOK || json.Unmarshal(r.body, &renewed) != nil {
			return false
		}
		log.mu.Lock()
		log.acked[l.ID] = renewed
		log.mu.Unlock()
		return true
	}
	kept, ok := acquire("held", fmt.Sprintf(`{"holder": "keeper-%d", "ttl_seconds": 120}`, w))
	if !ok {
		return
	}
	for ctx.Err() == nil {
		body := fmt.Sprintf(`{"slots": %d, "ttl_seconds": 120, "wait_seconds": 10, "holder": "w%d"}`, 1+rng.IntN(2), w)
		l, ok := acquire("jobs", body)
		if !ok {
			if ctx.Err() != nil {
				return
			}
			continue
		}
		time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
		if rng.IntN(3) == 0 && (!renew(l) || !renew(kept)) {
			return
		}
		log.mu.Lock()
		log.releasing[l.ID] = true
		log.mu.Unlock()
		r, err := p.try(ctx, "DELETE", "/v1/leases/"+l.ID, "")
		if err != nil {
			return
		}
		if r.status == http.StatusNoContent {
			log.mu.Lock()
			delete(log.releasing, l.ID)
			log.released[l.ID] = true
			log.mu.Unlock()
		}
	}
}

// ---- SIGTERM -------------------------------------------------------------------

func TestSigtermAnswersWaiters503AndExitsZero(t *testing.T) {
	bin := e2eBuild(t)
	dir := t.TempDir()
	p := e2eStart(t, bin, nil, e2eArgs(dir)...)
	p.do("PUT", "/v1/limits/drain", `{"capacity": 1}`, http.StatusCreated, nil)
	var held limitd.Lease
	p.do("POST", "/v1/limits/drain/acquire", `{"ttl_seconds": 600, "holder": "keeper"}`, http.StatusCreated, &held)

	const n = 5
	answers := make(chan e2eReply, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			r, err := p.try(context.Background(), "POST", "/v1/limits/drain/acquire", `{"wait_seconds": 60}`)
			if err != nil {
				errs <- err
				return
			}
			answers <- r
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ws limitd.WaiterList
		p.do("GET", "/v1/limits/drain/waiters", "", http.StatusOK, &ws)
		if len(ws.Waiters) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d waiters queued", len(ws.Waiters), n)
		}
		time.Sleep(10 * time.Millisecond)
	}

	start := time.Now()
	p.signal(syscall.SIGTERM)
	for range n {
		select {
		case r := <-answers:
			e2eProblem(t, r, limitd.CodeShuttingDown)
			if r.header.Get("Retry-After") == "" {
				t.Fatal("shutting_down without Retry-After")
			}
		case err := <-errs:
			t.Fatalf("a waiter got no answer: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("a waiter was not answered within 10 s of SIGTERM")
		}
	}
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	t.Logf("waiters answered and process exited %v after SIGTERM", time.Since(start))
	if strings.Contains(p.stderr.String(), `"level":"ERROR"`) {
		t.Errorf("errors logged during a graceful stop:\n%s", p.stderr)
	}

	p2 := e2eStart(t, bin, nil, e2eArgs(dir)...)
	var got limitd.Lease
	p2.do("GET", "/v1/leases/"+held.ID, "", http.StatusOK, &got)
	if got.Fence != held.Fence || !got.ExpiresAt.Equal(held.ExpiresAt) || got.Holder != "keeper" {
		t.Fatalf("lease after a graceful restart %+v, want %+v", got, held)
	}
	var ws limitd.WaiterList
	p2.do("GET", "/v1/limits/drain/waiters", "", http.StatusOK, &ws)
	if len(ws.Waiters) != 0 {
		t.Fatalf("waiters after restart: %+v", ws.Waiters)
	}
	p2.do("DELETE", "/v1/leases/"+held.ID, "", http.StatusNoContent, nil)
	var next limitd.Lease
	p2.do("POST", "/v1/limits/drain/acquire", "", http.StatusCreated, &next)
	if next.Fence <= held.Fence {
		t.Fatalf("fence %d after restart, not above %d", next.Fence, held.Fence)
	}
	p2.signal(syscall.SIGINT)
	if code := p2.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGINT, want 0", code)
	}
}

// ---- flags and environment ------------------------------------------------------

func e2eFreePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestFlagsFallBackToEnvironmentVariables(t *testing.T) {
	bin := e2eBuild(t)
	dir := t.TempDir()
	addr := e2eFreePort(t)
	db := filepath.Join(dir, "from-env.db")
	p := e2eStart(t, bin, []string{
		"LIMITD_ADDR=" + addr,
		"LIMITD_DB=" + db,
		"LIMITD_LOG_FORMAT=json",
		"LIMITD_DEFAULT_TTL=7s",
		"LIMITD_MAX_WAITERS=1",
		"LIMITD_MAX_WAIT=200ms",
		"LIMITD_DEFAULT_WAIT=100ms",
	}, "serve")
	if p.base != "http://"+addr {
		t.Fatalf("listening on %s, want LIMITD_ADDR %s", p.base, addr)
	}
	if _, err := os.Stat(db); err != nil {
		t.Fatalf("LIMITD_DB: %v", err)
	}
	if !strings.HasPrefix(strings.TrimSpace(p.stderr.String()), "{") {
		t.Fatalf("LIMITD_LOG_FORMAT=json, but the log is:\n%s", p.stderr)
	}
	p.do("PUT", "/v1/limits/env", `{"capacity": 1}`, http.StatusCreated, nil)
	var l limitd.Lease
	p.do("POST", "/v1/limits/env/acquire", "", http.StatusCreated, &l)
	if l.TTLSeconds != 7 {
		t.Fatalf("LIMITD_DEFAULT_TTL=7s, lease ttl_seconds %v", l.TTLSeconds)
	}
	// LIMITD_DEFAULT_WAIT: an acquire without wait_seconds gives up after 0.1 s.
	start := time.Now()
	r := p.do("POST", "/v1/limits/env/acquire", "", http.StatusLocked, nil)
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Fatalf("LIMITD_DEFAULT_WAIT=100ms, the acquire took %v", took)
	}
	e2eProblem(t, r, limitd.CodeNoSlots)
	// LIMITD_MAX_WAITERS=1: a second waiter is refused.
	first := make(chan struct{})
	go func() {
		defer close(first)
		_, _ = p.try(context.Background(), "POST", "/v1/limits/env/acquire", `{"wait_seconds": 60}`)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var lim limitd.Limit
		p.do("GET", "/v1/limits/env", "", http.StatusOK, &lim)
		if lim.Waiting == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first waiter never queued")
		}
		time.Sleep(5 * time.Millisecond)
	}
	e2eProblem(t, p.do("POST", "/v1/limits/env/acquire", `{"wait_seconds": 60}`, http.StatusServiceUnavailable, nil), limitd.CodeQueueFull)
	<-first // LIMITD_MAX_WAIT=200ms clamps its 60 s
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}

	// A flag on the command line wins over its environment variable.
	p = e2eStart(t, bin, []string{"LIMITD_ADDR=256.0.0.1:1", "LIMITD_DEFAULT_TTL=7s"},
		e2eArgs(dir, "--default-ttl", "9s")...)
	p.do("PUT", "/v1/limits/flag", `{"capacity": 1}`, http.StatusCreated, nil)
	p.do("POST", "/v1/limits/flag/acquire", "", http.StatusCreated, &l)
	if l.TTLSeconds != 9 {
		t.Fatalf("--default-ttl 9s with LIMITD_DEFAULT_TTL=7s: ttl_seconds %v", l.TTLSeconds)
	}
}

func TestBadFlagValueExitsNonZeroNamingTheFlag(t *testing.T) {
	bin := e2eBuild(t)
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"max-waiters 0", []string{"--max-waiters", "0"}, nil, "--max-waiters"},
		{"default-ttl not a duration", []string{"--default-ttl", "banana"}, nil, "default-ttl"},
		{"default-ttl above max-ttl", []string{"--default-ttl", "2h", "--max-ttl", "1h"}, nil, "--default-ttl"},
		{"max-ttl above 24h", []string{"--max-ttl", "48h"}, nil, "--max-ttl"},
		{"default-wait above max-wait", []string{"--default-wait", "10m"}, nil, "--default-wait"},
		{"log-format xml", []string{"--log-format", "xml"}, nil, "--log-format"},
		{"log-level loud", []string{"--log-level", "loud"}, nil, "--log-level"},
		{"sync maybe", []string{"--sync", "maybe"}, nil, "--sync"},
		{"max-body 10", []string{"--max-body", "10"}, nil, "--max-body"},
		{"unknown flag", []string{"--no-such-flag"}, nil, "no-such-flag"},
		{"stray argument", []string{"extra"}, nil, "extra"},
		{"env max-body not a number", nil, []string{"LIMITD_MAX_BODY=lots"}, "LIMITD_MAX_BODY"},
		{"env max-waiters 0", nil, []string{"LIMITD_MAX_WAITERS=0"}, "max-waiters"},
		{"env shutdown-grace not a duration", nil, []string{"LIMITD_SHUTDOWN_GRACE=soon"}, "LIMITD_SHUTDOWN_GRACE"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// The bad value goes last, so it overrides the harmless ones.
			args := append(append([]string{"serve"}, e2eArgs(dir)...), c.args...)
			p := e2eLaunch(t, bin, c.env, args...)
			code := p.wait(20 * time.Second)
			if code == 0 {
				t.Fatalf("exit code 0, want non-zero:\n%s", p.stderr)
			}
			if out := p.stderr.String(); !strings.Contains(out, c.want) {
				t.Fatalf("exit code %d; the message does not name %q:\n%s", code, c.want, out)
			}
		})
	}
}

// ---- storage faults ------------------------------------------------------------

// A second limitd on a database that a running one holds must not start:
// two servers on one file would each hand out the full capacity. It exits
// non-zero and says the database is locked by another process, and the
// first one goes on serving, writes included.
func TestSecondServerOnALockedDatabaseExitsNonZero(t *testing.T) {
	bin := e2eBuild(t)
	dir := t.TempDir()
	first := e2eStart(t, bin, nil, e2eArgs(dir)...)
	first.do("PUT", "/v1/limits/locked", `{"capacity": 1}`, http.StatusCreated, nil)

	second := e2eLaunch(t, bin, nil, e2eArgs(dir)...)
	code := second.wait(30 * time.Second)
	out := second.stderr.String()
	t.Logf("second limitd: exit %d:\n%s", code, out)
	if code == 0 {
		t.Fatal("a second limitd on a locked database exited 0")
	}
	if !strings.Contains(out, "locked by another process") {
		t.Fatal("the second limitd's message does not say the database is locked by another process")
	}
	if strings.Contains(out, "limitd ready") {
		t.Fatal("the second limitd said it was ready")
	}
	var l limitd.Lease
	first.do("POST", "/v1/limits/locked/acquire", "", http.StatusCreated, &l)
	first.do("DELETE", "/v1/leases/"+l.ID, "", http.StatusNoContent, nil)
}
