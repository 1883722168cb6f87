// Package daemon wires limitd's parts together: the store, the slot manager
// that journals into it, and the HTTP API in front of the manager. The
// limitd command and the in-process test server both build on it, so tests
// run exactly the wiring that production runs.
package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/limitd/limitd/internal/api"
	"github.com/limitd/limitd/internal/auth"
	"github.com/limitd/limitd/internal/metrics"
	"github.com/limitd/limitd/internal/obslog"
	"github.com/limitd/limitd/internal/slots"
	"github.com/limitd/limitd/internal/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Config is everything the daemon needs besides its listener.
type Config struct {
	DB          string
	Sync        string // "normal" or "full"
	DefaultTTL  time.Duration
	MaxTTL      time.Duration
	DefaultWait time.Duration
	MaxWait     time.Duration
	MaxWaiters  int
	MaxBody     int64
	Logger      *slog.Logger
	Clock       slots.Clock // the system clock when nil
	// Tokens, when set, turns on bearer-token authentication (internal/auth).
	Tokens *auth.Keyring
}

// Daemon is an open limitd: its state may not be loaded yet (see Load).
type Daemon struct {
	Store   *store.Store
	Manager *slots.Manager
	API     *api.Server
	// Registry holds every metric served at /metrics; Metrics feeds it.
	Registry *prometheus.Registry
	Metrics  *metrics.Metrics
	events   *obslog.Logger
	log      *slog.Logger
	clock    slots.Clock // the manager's, for the clamp at Load
	// initDone is closed when the background creation of restored limits'
	// counters has ended; stopInit asks it to end early.
	initDone chan struct{}
	stopInit chan struct{}
	// closeOnce makes Close safe to call twice: the command defers it as a
	// safety net and also calls it to report its error.
	closeOnce sync.Once
	closeErr  error
}

// Open opens the database and builds the manager and API. The API answers
// 503 "starting" until Load has run.
func Open(ctx context.Context, cfg Config) (*Daemon, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := prometheus.NewRegistry()
	// The manager takes the metrics as its observer, so they are built
	// first and read the manager's state through mgr once it is set; no
	// scrape can come before Open returns.
	var mgr *slots.Manager
	met := metrics.New(reg, metrics.StatsFunc(func() []slots.LimitStats { return mgr.Stats() }))
	dbDir := filepath.Dir(cfg.DB)
	commits := newCommitLog(log, commitLogInterval, time.Now, func() string { return probeDir(dbDir) })
	st, err := store.Open(ctx, cfg.DB, store.Options{Synchronous: cfg.Sync, OnCommit: func(changes int, took time.Duration, err error) {
		met.ObserveCommit(changes, took, err)
		commits.observe(changes, err)
	}})
	if err != nil {
		return nil, err
	}
	events := obslog.New(log)
	clock := cfg.Clock
	if clock == nil {
		clock = slots.NewSystemClock()
	}
	mgr = slots.New(slots.Config{Journal: st, Clock: clock, DefaultTTL: cfg.DefaultTTL, MaxWaiters: cfg.MaxWaiters,
		Observer: obslog.Multi(met, events)})
	// Metrics first: requests refused by later middleware are counted too.
	middleware := []func(http.Handler) http.Handler{met.Middleware}
	if cfg.Tokens != nil {
		middleware = append(middleware, auth.Middleware(cfg.Tokens, mgr.LeaseLimit))
	}
	srv := api.New(api.Config{
		Manager:     mgr,
		Logger:      log,
		MaxTTL:      cfg.MaxTTL,
		DefaultWait: cfg.DefaultWait,
		MaxWait:     cfg.MaxWait,
		MaxBody:     cfg.MaxBody,
		Middleware:  middleware,
		Metrics:     met.Handler(),
	})
	initDone := make(chan struct{})
	close(initDone) // until Load starts one
	return &Daemon{Store: st, Manager: mgr, API: srv, Registry: reg, Metrics: met, events: events, log: log, clock: clock,
		initDone: initDone, stopInit: make(chan struct{})}, nil
}

// Load reads the durable state into the manager, expires the leases that
// expired while limitd was down, and marks the API ready.
func (d *Daemon) Load(ctx context.Context) (store.State, error) {
	state, err := d.Store.Load(ctx)
	if err != nil {
		return state, err
	}
	d.clampExpiries(ctx, state.Leases)
	for _, c := range d.Manager.Restore(state.Limits, state.Leases, state.Fence) {
		if err := c.Wait(ctx); err != nil {
			return state, fmt.Errorf("expiring leases that expired while limitd was down: %w", err)
		}
	}
	// initDone is replaced before the API is ready, so nothing that a
	// request or a test does can read the old channel concurrently.
	done := make(chan struct{})
	d.initDone = done
	go d.initCounters(state.Limits, done)
	d.API.SetReady(true)
	return state, nil
}

// clampExpiries bounds the loaded leases' expiries to now plus their TTL
// (see store.ClampExpiries), with "now" from the manager's clock, which
// Restore then reads too. The new expiries are written back, so that the
// next start does not clamp them again to a later time; a failed write
// only costs that, so it is logged and the start goes on.
func (d *Daemon) clampExpiries(ctx context.Context, leases []slots.LeaseRecord) {
	now, _ := d.clock.Read()
	clamped := store.ClampExpiries(leases, now)
	if len(clamped) == 0 {
		return
	}
	first := clamped[0]
	d.log.Warn("leases expired further ahead than their TTL allows, as when the wall clock was set back while limitd was down: each now expires its TTL from now",
		"leases", len(clamped), "example_lease", first.ID, "example_limit", first.Limit, "now", now.UTC())
	// All are queued before waiting on any, so they can share commits.
	commits := make([]*slots.Commit, len(clamped))
	for i, l := range clamped {
		commits[i] = d.Store.Write(slots.Change{Kind: slots.ChangeRenew, Lease: l})
	}
	for _, c := range commits {
		if err := c.Wait(ctx); err != nil {
			d.log.Warn("writing back the clamped expiries failed; the next start clamps them again", "err", err)
			return
		}
	}
}

// CountersInitialized is closed once the counters of the limits restored by
// Load exist (tests wait on it before checking them).
func (d *Daemon) CountersInitialized() <-chan struct{} { return d.initDone }

// initCounters creates the counter series of restored limits at zero, so
// that alerts built on increase() see their first events. It runs after the
// server is ready — with 100,000 limits it takes over a second — and creates
// each limit's series under the manager's lock, only if the limit still
// exists, so a limit deleted meanwhile does not get its series back.
func (d *Daemon) initCounters(limits []slots.LimitRecord, done chan<- struct{}) {
	defer close(done)
	for _, l := range limits {
		select {
		case <-d.stopInit:
			return
		default:
		}
		d.Manager.IfLimit(l.Name, func() { d.Metrics.InitCounters(l.Name) })
	}
}

// Handler is the HTTP handler of the API.
func (d *Daemon) Handler() http.Handler { return d.API.Handler() }

// Drain answers every waiter 503 and turns /readyz to 503; leases stay.
func (d *Daemon) Drain() { d.API.StartDraining() }

// Close stops the manager and commits what is queued before closing the
// database. Serve no requests after it. Calls after the first return the
// first call's result.
func (d *Daemon) Close() error {
	d.closeOnce.Do(func() {
		close(d.stopInit)
		<-d.initDone
		d.Manager.Close()
		defer d.events.Close()
		if err := d.Store.Close(); err != nil {
			d.closeErr = fmt.Errorf("closing the database: %w", err)
		}
	})
	return d.closeErr
}
