package main

import (
	"context"
	"flag"
	"strconv"
	"time"

	"github.com/limitd/limitd"
)

// runLeases is "limitd leases": inspect and revoke leases.
func runLeases(ctx context.Context, e *env, args []string) error {
	verbs := map[string]subcommand{
		"ls":  {"list the live leases of a limit, oldest first", leasesList},
		"get": {"show one lease", leasesGet},
		"rm":  {"release a lease (its holder loses it)", leasesRemove},
	}
	return dispatch(ctx, e, "leases", verbs, []string{"ls", "get", "rm"}, args)
}

func leasesList(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("limitd leases ls", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	var cf clientFlags
	cf.register(fs, e)
	var out outputFlag
	out.register(fs)
	setUsage(fs, "limitd leases ls LIMIT [-o json]", "")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError(fs, "want one LIMIT, got %d arguments", len(pos))
	}
	c, err := cf.client(e)
	if err != nil {
		return err
	}
	ls, err := c.Leases(ctx, pos[0])
	if err != nil {
		return err
	}
	if out.json() {
		return writeJSON(e.stdout, limitd.LeaseList{Leases: nonNil(ls)})
	}
	return printLeases(e, ls...)
}

func leasesGet(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("limitd leases get", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	var cf clientFlags
	cf.register(fs, e)
	var out outputFlag
	out.register(fs)
	setUsage(fs, "limitd leases get ID [-o json]", "")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError(fs, "want one lease ID, got %d arguments", len(pos))
	}
	c, err := cf.client(e)
	if err != nil {
		return err
	}
	l, err := c.GetLease(ctx, pos[0])
	if err != nil {
		return err
	}
	if out.json() {
		return writeJSON(e.stdout, l)
	}
	return printLeases(e, *l)
}

func leasesRemove(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("limitd leases rm", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	var cf clientFlags
	cf.register(fs, e)
	setUsage(fs, "limitd leases rm ID...",
		"Releases each lease ID and wakes the waiters of its limit. Its holder finds out at its next renewal and loses the lease.")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usageError(fs, "want at least one lease ID")
	}
	c, err := cf.client(e)
	if err != nil {
		return err
	}
	for _, id := range pos {
		if err := c.ReleaseLease(ctx, id); err != nil {
			return err
		}
	}
	return nil
}

func printLeases(e *env, ls ...limitd.Lease) error {
	now := time.Now()
	rows := [][]string{{"ID", "LIMIT", "SLOTS", "HOLDER", "FENCE", "ACQUIRED", "EXPIRES_IN", "TTL"}}
	for _, l := range ls {
		rows = append(rows, []string{l.ID, l.Limit, strconv.Itoa(l.Slots), orDash(l.Holder),
			strconv.FormatUint(l.Fence, 10), fmtTime(l.AcquiredAt),
			fmtSeconds(max(l.ExpiresAt.Sub(now), 0).Seconds()), fmtSeconds(l.TTLSeconds)})
	}
	return table(e.stdout, rows)
}
