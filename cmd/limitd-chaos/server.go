package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"
)

// buildServer builds limitd into dir. The package path (not ./cmd/limitd)
// lets the tool and its test build from any directory inside the module.
func buildServer(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "limitd")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/limitd/limitd/cmd/limitd")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building limitd (run inside the limitd module, or pass --bin): %v\n%s", err, out)
	}
	return bin, nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// server is the limitd process under test. Restarts reuse its address and
// database, so clients keep talking to "the same" server across crashes.
type server struct {
	bin, addr, db, logPath string
	maxTTL                 time.Duration
	cmd                    *exec.Cmd
	done                   chan error
	log                    *os.File
	// expected is set before the tool itself stops the process; an exit
	// without it (a panic, a fatal error) is counted in unexpected.
	expected   *atomic.Bool
	unexpected atomic.Int32
	lastExit   atomic.Value // string: the last unexpected exit's error
}

func (s *server) url() string { return "http://" + s.addr }

// start runs the process and waits until /readyz answers 200.
func (s *server) start(ctx context.Context) error {
	if s.log == nil {
		f, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		s.log = f
	}
	fmt.Fprintf(s.log, "---- chaos: starting limitd at %s\n", time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(s.bin, "serve", "--addr", s.addr, "--db", s.db, "--log-level", "warn",
		"--max-ttl", s.maxTTL.String(), "--default-ttl", s.maxTTL.String(), "--shutdown-grace", "2s")
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		return err
	}
	expected := new(atomic.Bool)
	s.cmd, s.done, s.expected = cmd, make(chan error, 1), expected
	go func() {
		err := cmd.Wait()
		if !expected.Load() {
			s.unexpected.Add(1)
			s.lastExit.Store(fmt.Sprint(err))
		}
		s.done <- err
	}()
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := hc.Get(s.url() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("limitd not ready within 30s (log: %s)", s.logPath)
		}
		select {
		case err := <-s.done:
			s.done <- err
			s.kill()
			return fmt.Errorf("limitd exited before it was ready: %v (log: %s)", err, s.logPath)
		case <-ctx.Done():
			s.kill()
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// kill SIGKILLs the process and waits for it to be gone.
func (s *server) kill() {
	if s.cmd == nil {
		return
	}
	s.expected.Store(true)
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
	s.cmd = nil
}

// stop sends SIGTERM and returns the exit error (nil for status 0); after
// grace it kills the process.
func (s *server) stop(grace time.Duration) error {
	if s.cmd == nil {
		return errors.New("not running")
	}
	s.expected.Store(true)
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-s.done:
	case <-time.After(grace):
		_ = s.cmd.Process.Signal(syscall.SIGKILL)
		<-s.done
		err = fmt.Errorf("did not exit within %v of SIGTERM", grace)
	}
	s.cmd = nil
	if s.log != nil {
		s.log.Close()
		s.log = nil
	}
	return err
}
