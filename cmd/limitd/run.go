package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	iofs "io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/limitd/limitd/client"
)

// Exit statuses of "limitd run" other than CMD's own. They follow the
// conventions of command wrappers such as timeout(1) and env(1), so a
// script can tell them apart from CMD's usual ones (a CMD may of course
// use them too; the message on stderr is what tells for sure).
const (
	// exitLeaseLost: the lease was lost while CMD ran (deleted by an admin,
	// or not renewable until it expired), so CMD's process group was
	// terminated. EX_TEMPFAIL: the work did not finish; try again.
	exitLeaseLost = 75
	// exitNoSlot: no slot became free within --wait; CMD did not run.
	exitNoSlot = 124
	// exitRunFailed: limitd run itself failed before CMD could run (the
	// limit does not exist, the server refused or could not be reached).
	exitRunFailed = 125
	// exitCannotExec: CMD was found but could not be started.
	exitCannotExec = 126
	// exitNotFound: CMD was not found.
	exitNotFound = 127
)

// runReleaseTimeout bounds the release after CMD exits.
const runReleaseTimeout = 10 * time.Second

// forwardedSignals reach CMD's process group. CMD runs in a group of its
// own (so that a lost lease can stop all of it, children included), which
// also keeps the terminal's Ctrl-C from reaching it directly: limitd run
// receives those signals and passes them on.
func forwardedSignals() []os.Signal {
	return []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}
}

const runDescription = `
Holds slots of LIMIT while CMD runs: waits for them, starts CMD in a process
group of its own, renews the lease while CMD runs, and releases it when CMD
exits. SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are forwarded to
CMD's process group. CMD sees LIMITD_LIMIT, LIMITD_LEASE_ID and LIMITD_FENCE
in its environment.

If the lease is lost while CMD runs (an admin deleted it, or the server could
not be reached to renew it until it expired), CMD's process group gets
SIGTERM, then SIGKILL after --kill-grace, and limitd run exits 75.

Exit status: CMD's own; 128+N if CMD was killed by signal N; 75 if the lease
was lost; 124 if no slot was free within --wait; 125 if limitd run failed
before CMD ran (for example, the limit does not exist); 126 if CMD could not
be started; 127 if CMD was not found; 2 for a usage error.`

// runRun is "limitd run": hold a slot of a limit while a command runs.
func runRun(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("limitd run", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	var cf clientFlags
	cf.register(fs, e)
	var limit string
	fs.StringVar(&limit, "l", "", "name of the limit (required)")
	fs.StringVar(&limit, "limit", "", "name of the limit (same as -l)")
	slots := fs.Int("slots", 1, "number of slots to hold")
	var ttl, wait durationFlag
	fs.Var(&ttl, "ttl", "lease TTL, e.g. 30s (the limit's default when unset); renewed every third of it")
	fs.Var(&wait, "wait", "give up (exit 124) if no slot is free within this long, e.g. 5m (default: wait forever; 0: try once)")
	holder := fs.String("holder", "", "holder name shown to admins (default HOST/pid-PID CMD)")
	grace := fs.Duration("kill-grace", 5*time.Second, "after a lost lease, time between SIGTERM and SIGKILL to CMD's process group")
	setUsage(fs, "limitd run -l LIMIT [--slots N] [--ttl D] [--wait D] [--server URL] [--token T] -- CMD [ARGS...]", runDescription)
	if err := fs.Parse(args); err != nil {
		return parseError(err)
	}
	argv := fs.Args()
	switch {
	case limit == "":
		return usageError(fs, "-l LIMIT is required")
	case len(argv) == 0:
		return usageError(fs, "CMD is required (after --)")
	case *slots < 1:
		return usageError(fs, "--slots must be at least 1")
	}
	if *holder == "" {
		*holder = fmt.Sprintf("%s %s", client.DefaultHolder(), filepath.Base(argv[0]))
		if r := []rune(*holder); len(r) > 200 {
			*holder = string(r[:200])
		}
	}
	// The client's retries and renewal failures would otherwise be silent:
	// a script waiting on an unreachable server should say so.
	logger := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{
		Level: slog.LevelWarn,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	c, err := cf.client(e, client.WithHolder(*holder), client.WithLogger(logger))
	if err != nil {
		fmt.Fprintf(e.stderr, "limitd run: %v\n", plainError(err))
		return exitError{exitRunFailed}
	}

	// Signals are caught from the start: one that arrives while we wait
	// for a slot must stop the wait (and not kill us with a waiter left
	// behind), and none may be lost between the grant and CMD's start.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwardedSignals()...)
	defer signal.Stop(sigs)

	opts := []client.AcquireOption{client.Slots(*slots)}
	if ttl.set {
		opts = append(opts, client.TTL(ttl.d))
	}
	if wait.set {
		opts = append(opts, client.Wait(wait.d))
	}
	lease, err := acquireOrSignal(ctx, c, limit, sigs, opts)
	var sig signalError
	switch {
	case errors.As(err, &sig):
		return exitError{128 + int(sig.sig)}
	case errors.Is(err, client.ErrNoSlots):
		fmt.Fprintf(e.stderr, "limitd run: no slot of %q became free within %v\n", limit, wait.d)
		return exitError{exitNoSlot}
	case err != nil:
		fmt.Fprintf(e.stderr, "limitd run: %v\n", plainError(err))
		return exitError{exitRunFailed}
	}
	release := func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), runReleaseTimeout)
		defer cancel()
		if err := lease.Release(rctx); err != nil {
			fmt.Fprintf(e.stderr, "limitd run: %v (the lease expires by itself at %s)\n", plainError(err), fmtTime(lease.ExpiresAt()))
		}
	}

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = e.stdin, e.stdout, e.stderr
	cmd.Env = append(os.Environ(),
		"LIMITD_LIMIT="+lease.Limit(),
		"LIMITD_LEASE_ID="+lease.ID(),
		"LIMITD_FENCE="+strconv.FormatUint(lease.Fence(), 10))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		release()
		fmt.Fprintf(e.stderr, "limitd run: %v\n", err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, iofs.ErrNotExist) {
			return exitError{exitNotFound}
		}
		return exitError{exitCannotExec}
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	// With Setpgid, CMD's pid is its process group's id; a negative pid
	// signals the whole group.
	pgid := cmd.Process.Pid
	lost := lease.Done()
	var kill <-chan time.Time
	var killTimer *time.Timer
	var leaseErr error
	for done := false; !done; {
		select {
		case s := <-sigs:
			_ = syscall.Kill(-pgid, s.(syscall.Signal))
		case <-lost:
			lost = nil
			leaseErr = lease.Err()
			fmt.Fprintf(e.stderr, "limitd run: %v; terminating %s (process group %d)\n", plainError(leaseErr), argv[0], pgid)
			_ = syscall.Kill(-pgid, syscall.SIGTERM)
			killTimer = time.NewTimer(*grace)
			kill = killTimer.C
		case <-kill:
			kill = nil
			fmt.Fprintf(e.stderr, "limitd run: %s still running after %v; killing process group %d\n", argv[0], *grace, pgid)
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		case <-waited:
			done = true
		}
	}
	if killTimer != nil {
		killTimer.Stop()
	}
	release()
	if leaseErr != nil {
		return exitError{exitLeaseLost}
	}
	return exitStatus(cmd.ProcessState)
}

// signalError says a forwarded signal ended the wait for a slot.
type signalError struct{ sig syscall.Signal }

func (e signalError) Error() string { return "interrupted by " + e.sig.String() }

// acquireOrSignal acquires the lease unless a signal arrives first; then
// the wait is abandoned (the server drops the waiter when the request goes
// away) and a lease granted in the meantime is given back.
func acquireOrSignal(ctx context.Context, c *client.Client, limit string, sigs <-chan os.Signal, opts []client.AcquireOption) (*client.Lease, error) {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		lease *client.Lease
		err   error
	}
	got := make(chan result, 1)
	go func() {
		l, err := c.Acquire(actx, limit, opts...)
		got <- result{l, err}
	}()
	select {
	case r := <-got:
		return r.lease, r.err
	case s := <-sigs:
		cancel()
		if r := <-got; r.lease != nil {
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), runReleaseTimeout)
			defer rcancel()
			_ = r.lease.Release(rctx)
		}
		return nil, signalError{s.(syscall.Signal)}
	}
}

// exitStatus passes CMD's exit status on: its code, or 128+N when signal N
// killed it, as shells report it.
func exitStatus(ps *os.ProcessState) error {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitError{128 + int(ws.Signal())}
	}
	if code := ps.ExitCode(); code != 0 {
		return exitError{code}
	}
	return nil
}
