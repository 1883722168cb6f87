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
	"time"

	"github.com/limitd/limitd/internal/api"
	"github.com/limitd/limitd/internal/auth"
	"github.com/limitd/limitd/internal/slots"
	"github.com/limitd/limitd/internal/store"
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
	log     *slog.Logger
}

// Open opens the database and builds the manager and API. The API answers
// 503 "starting" until Load has run.
func Open(ctx context.Context, cfg Config) (*Daemon, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st, err := store.Open(ctx, cfg.DB, store.Options{Synchronous: cfg.Sync})
	if err != nil {
		return nil, err
	}
	mgr := slots.New(slots.Config{Journal: st, Clock: cfg.Clock, DefaultTTL: cfg.DefaultTTL, MaxWaiters: cfg.MaxWaiters})
	var middleware []func(http.Handler) http.Handler
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
	})
	return &Daemon{Store: st, Manager: mgr, API: srv, log: log}, nil
}

// Load reads the durable state into the manager, expires the leases that
// expired while limitd was down, and marks the API ready.
func (d *Daemon) Load(ctx context.Context) (store.State, error) {
	state, err := d.Store.Load(ctx)
	if err != nil {
		return state, err
	}
	for _, c := range d.Manager.Restore(state.Limits, state.Leases, state.Fence) {
		if err := c.Wait(ctx); err != nil {
			return state, fmt.Errorf("expiring leases that expired while limitd was down: %w", err)
		}
	}
	d.API.SetReady(true)
	return state, nil
}

// Handler is the HTTP handler of the API.
func (d *Daemon) Handler() http.Handler { return d.API.Handler() }

// Drain answers every waiter 503 and turns /readyz to 503; leases stay.
func (d *Daemon) Drain() { d.API.StartDraining() }

// Close stops the manager and commits what is queued before closing the
// database. Serve no requests after it.
func (d *Daemon) Close() error {
	d.Manager.Close()
	if err := d.Store.Close(); err != nil {
		return fmt.Errorf("closing the database: %w", err)
	}
	return nil
}
