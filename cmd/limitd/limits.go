package main

import (
	"context"
	"flag"
	"strconv"

	"github.com/limitd/limitd"
	"github.com/limitd/limitd/client"
)

// runLimits is "limitd limits": the admin commands for limits.
func runLimits(ctx context.Context, e *env, args []string) error {
	verbs := map[string]subcommand{
		"set":     {"create a limit or change it", limitsSet},
		"get":     {"show one limit", limitsGet},
		"ls":      {"list all limits", limitsList},
		"rm":      {"delete a limit, its leases and waiters", limitsRemove},
		"waiters": {"show the queue of a limit, head first", limitsWaiters},
	}
	return dispatch(ctx, e, "limits", verbs, []string{"set", "get", "ls", "rm", "waiters"}, args)
}

func limitsSet(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("limitd limits set", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	var cf clientFlags
	cf.register(fs, e)
	var out outputFlag
	out.register(fs)
	capacity := fs.Int("capacity", -1, "how many slots may be held at once; 0 pauses the limit (required)")
	var ttl durationFlag
	fs.Var(&ttl, "default-ttl", "TTL of leases that ask for none, e.g. 60s (server default when unset)")
	desc := fs.String("description", "", "free text for humans")
	setUsage(fs, "limitd limits set NAME --capacity N [--default-ttl D] [--description S]",
		"Creates the limit NAME or replaces its configuration. Lowering the capacity revokes no lease: new grants wait until they fit.")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError(fs, "want one limit NAME, got %d arguments", len(pos))
	}
	if *capacity < 0 {
		return usageError(fs, "--capacity is required: an integer from 0 to %d", limitd.MaxCapacity)
	}
	c, err := cf.client(e)
	if err != nil {
		return err
	}
	l, err := c.PutLimit(ctx, pos[0], client.LimitConfig{Capacity: *capacity, DefaultTTL: ttl.d, Description: *desc})
	if err != nil {
		return err
	}
	return printLimits(e, out, false, *l)
}

func limitsGet(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("limitd limits get", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	var cf clientFlags
	cf.register(fs, e)
	var out outputFlag
	out.register(fs)
	setUsage(fs, "limitd limits get NAME [-o json]", "")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError(fs, "want one limit NAME, got %d arguments", len(pos))
	}
	c, err := cf.client(e)
	if err != nil {
		return err
	}
	l, err := c.GetLimit(ctx, pos[0])
	if err != nil {
		return err
	}
	return printLimits(e, out, false, *l)
}

func limitsList(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("limitd limits ls", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	var cf clientFlags
	cf.register(fs, e)
	var out outputFlag
	out.register(fs)
	setUsage(fs, "limitd limits ls [-o json]", "")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageError(fs, "takes no arguments")
	}
	c, err := cf.client(e)
	if err != nil {
		return err
	}
	ls, err := c.ListLimits(ctx)
	if err != nil {
		return err
	}
	return printLimits(e, out, true, ls...)
}

func limitsRemove(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("limitd limits rm", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	var cf clientFlags
	cf.register(fs, e)
	setUsage(fs, "limitd limits rm NAME...",
		"Deletes each limit NAME with its leases (their holders lose them) and answers its waiters 404.")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usageError(fs, "want at least one limit NAME")
	}
	c, err := cf.client(e)
	if err != nil {
		return err
	}
	for _, name := range pos {
		if err := c.DeleteLimit(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

func limitsWaiters(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("limitd limits waiters", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	var cf clientFlags
	cf.register(fs, e)
	var out outputFlag
	out.register(fs)
	setUsage(fs, "limitd limits waiters NAME [-o json]", "")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError(fs, "want one limit NAME, got %d arguments", len(pos))
	}
	c, err := cf.client(e)
	if err != nil {
		return err
	}
	ws, err := c.Waiters(ctx, pos[0])
	if err != nil {
		return err
	}
	if out.json() {
		return writeJSON(e.stdout, limitd.WaiterList{Waiters: nonNil(ws)})
	}
	rows := [][]string{{"POSITION", "SLOTS", "HOLDER", "WAITING_SINCE", "WAITING"}}
	for _, w := range ws {
		rows = append(rows, []string{strconv.Itoa(w.Position), strconv.Itoa(w.Slots), orDash(w.Holder),
			fmtTime(w.WaitingSince), fmtSeconds(w.WaitingSeconds)})
	}
	return table(e.stdout, rows)
}

// printLimits prints limits as the API's JSON (a list body when list is
// set) or as a table.
func printLimits(e *env, out outputFlag, list bool, ls ...limitd.Limit) error {
	if out.json() {
		if list {
			return writeJSON(e.stdout, limitd.LimitList{Limits: nonNil(ls)})
		}
		return writeJSON(e.stdout, ls[0])
	}
	rows := [][]string{{"NAME", "CAPACITY", "IN_USE", "WAITING", "DEFAULT_TTL", "DESCRIPTION"}}
	for _, l := range ls {
		rows = append(rows, []string{l.Name, strconv.Itoa(l.Capacity), strconv.Itoa(l.InUse),
			strconv.Itoa(l.Waiting), fmtSeconds(l.DefaultTTLSeconds), orDash(l.Description)})
	}
	return table(e.stdout, rows)
}

// nonNil makes empty lists print as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
