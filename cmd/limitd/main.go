// Command limitd is the limitd daemon and its command-line tools.
//
// "limitd" and "limitd serve" run the server; the other subcommands are
// small clients of it. main only maps errors to exit codes: every subcommand
// lives in a file of its own, takes its arguments and environment
// explicitly, and returns an error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// version is stamped at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

// env is what a subcommand may touch of the outside world, so tests can run
// subcommands in-process with their own output and environment.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
}

// command runs one subcommand with the arguments that follow its name.
type command struct {
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

func commands() map[string]command {
	return map[string]command{
		"serve":   {"run the server (the default)", runServe},
		"version": {"print the version", runVersion},
		"run":     {"hold a slot of a limit while a command runs", runRun},
		"limits":  {"manage limits: set, get, ls, rm, waiters", runLimits},
		"leases":  {"inspect and revoke leases: ls, get, rm", runLeases},
		"token":   {"create a bearer token: token new NAME SCOPE PATTERN", runToken},
		"health":  {"check that a server is alive", runHealth},
	}
}

// exitError asks main to exit with a given code without printing anything
// more (the subcommand already said what happened).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	// The first signal cancels ctx (a graceful stop); the second, once
	// stop() restored the default handling, kills the process.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	e := &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	code := run(ctx, stop, e, os.Args[1:])
	stop()
	os.Exit(code)
}

// run dispatches to a subcommand and turns its error into an exit code.
func run(ctx context.Context, stopSignals func(), e *env, args []string) int {
	name := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if name == "help" {
		usage(e.stdout)
		return 0
	}
	cmd, ok := commands()[name]
	if !ok {
		fmt.Fprintf(e.stderr, "limitd: unknown command %q\n\n", name)
		usage(e.stderr)
		return 2
	}
	// Subcommands other than serve handle signals themselves (limitd run
	// forwards them); serve wants the first one to start a graceful stop.
	if name != "serve" {
		stopSignals()
		ctx = context.Background()
	} else {
		context.AfterFunc(ctx, stopSignals)
	}
	err := cmd.run(ctx, e, args)
	var exit exitError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &exit):
		return exit.code
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintf(e.stderr, "limitd %s: %v\n", name, err)
		return 1
	}
}

// errUsage marks an error already reported by a FlagSet.
var errUsage = errors.New("usage error")

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: limitd [command] [flags]")
	fmt.Fprintln(w, "\ncommands:")
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nRun \"limitd COMMAND -h\" for a command's flags.")
}

func runVersion(_ context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("limitd version", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	if err := fs.Parse(args); err != nil {
		return parseError(err)
	}
	fmt.Fprintf(e.stdout, "limitd %s\n", version)
	return nil
}

// parseError keeps -h quiet and marks other flag errors as usage errors,
// since the FlagSet has already printed them.
func parseError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return errUsage
}
