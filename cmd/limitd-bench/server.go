package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// server is a process the tool started: limitd, or the baseline.
type server struct {
	// startup is the time from starting the process to /readyz answering 200.
	startup time.Duration
	cmd     *exec.Cmd
	url     string
	dir     string
	done    chan error
}

func buildServer(ctx context.Context) (string, func(), error) {
	dir, err := os.MkdirTemp("", "limitd-bench-bin")
	if err != nil {
		return "", nil, err
	}
	bin := filepath.Join(dir, "limitd")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/limitd")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("building limitd (run from the repository root, or pass --bin): %w", err)
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// startServer runs limitd on a free port with the database in dir (a new
// temp dir when empty) and waits until it is ready.
func startServer(ctx context.Context, o options, dir string, extra ...string) (*server, error) {
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "limitd-bench-db"); err != nil {
			return nil, err
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	args := append([]string{"serve", "--addr", addr, "--db", filepath.Join(dir, "limitd.db"), "--sync", o.sync,
		"--log-level", "warn", "--max-waiters", "100000"}, extra...)
	args = append(args, strings.Fields(o.extra)...)
	return startProcess(ctx, o, exec.Command(o.bin, args...), addr, dir)
}

// startBaseline runs the in-memory baseline (memServer) in a process of its
// own, this tool's binary with -baseline-server, so that it pays the same
// cross-process wake-ups as limitd and its CPU can be read apart from the
// load's.
func startBaseline(ctx context.Context, o options) (*server, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	dir, err := os.MkdirTemp("", "limitd-bench-baseline")
	if err != nil {
		return nil, err
	}
	return startProcess(ctx, o, exec.Command(self, "-baseline-server", addr), addr, dir)
}

// startProcess starts cmd, a server that listens on addr, and waits until
// its /readyz answers 200; dir is removed when it stops.
func startProcess(ctx context.Context, o options, cmd *exec.Cmd, addr, dir string) (*server, error) {
	if o.keepLogs {
		cmd.Stderr = os.Stderr
	}
	started := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, url: "http://" + addr, dir: dir, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait() }()
	if _, err := s.waitReady(ctx, 60*time.Second); err != nil {
		s.stop()
		return nil, err
	}
	s.startup = time.Since(started)
	return s, nil
}

// waitReady polls /readyz until it answers 200 and returns how long it took.
func (s *server) waitReady(ctx context.Context, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(s.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(start), nil
			}
		}
		select {
		case err := <-s.done:
			return 0, fmt.Errorf("%s exited before it was ready: %v", filepath.Base(s.cmd.Path), err)
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Millisecond):
		}
		if time.Since(start) > limit {
			return 0, fmt.Errorf("%s not ready after %v", filepath.Base(s.cmd.Path), limit)
		}
	}
}

// stop ends the server gracefully and removes its database.
func (s *server) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
	os.RemoveAll(s.dir)
}

// rss is the server's resident memory in bytes.
func (s *server) rss() (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", s.cmd.Process.Pid)
}

// cpu is the server's user+system CPU time so far.
func (s *server) cpu() (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// Fields after the ")" that closes the command name; utime and stime
	// are the 14th and 15th fields of the whole line.
	rest := string(data[strings.LastIndexByte(string(data), ')')+2:])
	f := strings.Fields(rest)
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const clkTck = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / clkTck, nil
}

func raiseFileLimit() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}
