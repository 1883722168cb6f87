package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/limitd/limitd"
	"github.com/limitd/limitd/client"
)

// This file holds what the client subcommands (run, limits, leases) share:
// the server and token flags, output formats, and flag parsing that allows
// flags after positional arguments ("limits set NAME --capacity 3").

// clientFlags are the flags of every subcommand that talks to a server.
type clientFlags struct {
	server string
	token  string
}

func (f *clientFlags) register(fs *flag.FlagSet, e *env) {
	def := e.getenv("LIMITD_URL")
	if def == "" {
		def = client.DefaultURL
	}
	fs.StringVar(&f.server, "server", def, "limitd server URL (env LIMITD_URL)")
	// The default is read after parsing rather than given here, so that
	// -h never prints the token.
	fs.StringVar(&f.token, "token", "", "bearer token (env LIMITD_TOKEN)")
}

// client builds a client from the flags, falling back to LIMITD_TOKEN.
func (f *clientFlags) client(e *env, opts ...client.Option) (*client.Client, error) {
	token := f.token
	if token == "" {
		token = e.getenv("LIMITD_TOKEN")
	}
	if token != "" {
		opts = append(opts, client.WithToken(token))
	}
	return client.New(f.server, opts...)
}

// outputFlag is -o / --output: "table" for people, "json" for scripts.
type outputFlag string

func (o *outputFlag) register(fs *flag.FlagSet) {
	*o = "table"
	fs.Var(o, "o", "output format: table or json")
	fs.Var(o, "output", "output format: table or json")
}

func (o *outputFlag) String() string { return string(*o) }

func (o *outputFlag) Set(s string) error {
	switch s {
	case "table", "json":
		*o = outputFlag(s)
		return nil
	}
	return fmt.Errorf("%q is not an output format: want table or json", s)
}

func (o outputFlag) json() bool { return o == "json" }

// writeJSON prints v the way the API sends it, indented, for jq and friends.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints rows aligned in columns; the first row is the header.
func table(w io.Writer, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// durationFlag is a duration given as Go syntax ("90s", "1m30s") or a
// plain number of seconds ("90", "0.5"), as the API counts them.
type durationFlag struct {
	d   time.Duration
	set bool
}

func (f *durationFlag) String() string {
	if f == nil || !f.set {
		return ""
	}
	return f.d.String()
}

func (f *durationFlag) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	f.d, f.set = d, true
	return nil
}

func parseDuration(s string) (time.Duration, error) {
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		if secs < 0 || secs > limitd.MaxTTLCeiling.Seconds()*365 {
			return 0, fmt.Errorf("%q is out of range", s)
		}
		return limitd.Duration(secs), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration: use 30s, 1m30s or a number of seconds", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return d, nil
}

// parseInterspersed parses args with fs, allowing flags after positional
// arguments; everything after "--" is positional. The positional
// arguments are returned in order.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, parseError(err)
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// usageError prints msg and the flags of fs, and marks the error as a
// usage error (exit status 2).
func usageError(fs *flag.FlagSet, format string, args ...any) error {
	fmt.Fprintf(fs.Output(), "%s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	fs.Usage()
	return errUsage
}

// setUsage gives fs a usage text: a synopsis line, an optional
// description, and the flags.
func setUsage(fs *flag.FlagSet, synopsis, description string) {
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: %s\n", synopsis)
		if description != "" {
			fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(description))
		}
		fmt.Fprintln(w, "\nflags:")
		fs.PrintDefaults()
	}
}

// subcommand is one verb of a command with verbs ("limits set").
type subcommand struct {
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

// dispatch runs the verb named by args[0] of a command with verbs.
func dispatch(ctx context.Context, e *env, name string, verbs map[string]subcommand, order []string, args []string) error {
	help := func(w io.Writer) {
		fmt.Fprintf(w, "usage: limitd %s COMMAND [flags]\n\ncommands:\n", name)
		for _, v := range order {
			fmt.Fprintf(w, "  %-8s %s\n", v, verbs[v].summary)
		}
		fmt.Fprintf(w, "\nRun \"limitd %s COMMAND -h\" for a command's flags.\n", name)
	}
	if len(args) == 0 {
		help(e.stderr)
		return errUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		help(e.stdout)
		return nil
	}
	v, ok := verbs[args[0]]
	if !ok {
		fmt.Fprintf(e.stderr, "limitd %s: unknown command %q\n\n", name, args[0])
		help(e.stderr)
		return errUsage
	}
	return plainError(v.run(ctx, e, args[1:]))
}

// plainError drops the "limitd: " that the client puts before its errors,
// since main already names the command ("limitd limits: ...").
func plainError(err error) error {
	if err == nil || !strings.HasPrefix(err.Error(), "limitd: ") {
		return err
	}
	return trimmedError{err}
}

type trimmedError struct{ err error }

func (e trimmedError) Error() string { return strings.TrimPrefix(e.err.Error(), "limitd: ") }
func (e trimmedError) Unwrap() error { return e.err }

// fmtSeconds prints wire seconds as a short duration ("60s", "1m30s", "500ms").
func fmtSeconds(s float64) string {
	d := limitd.Duration(s)
	if d >= time.Second {
		d = d.Round(time.Second)
	}
	out := d.String()
	if strings.HasSuffix(out, "m0s") {
		out = strings.TrimSuffix(out, "0s")
	}
	if strings.HasSuffix(out, "h0m") {
		out = strings.TrimSuffix(out, "0m")
	}
	return out
}

// fmtTime prints a time in UTC to the second, as the API's times are.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// orDash shows empty cells as "-" so columns stay readable.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
