package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/limitd/limitd"
	"github.com/limitd/limitd/internal/daemon"
)

// serveConfig is every setting of the server. Each has a flag and an
// environment variable (LIMITD_ and the flag's name in upper case with _ for
// -); a flag given on the command line wins over the environment.
type serveConfig struct {
	Addr          string
	DB            string
	DefaultTTL    time.Duration
	MaxTTL        time.Duration
	DefaultWait   time.Duration
	MaxWait       time.Duration
	MaxWaiters    int
	MaxBody       int64
	LogFormat     string
	LogLevel      string
	ShutdownGrace time.Duration
	Sync          string
	HTTP          daemon.HTTPConfig
	PprofAddr     string
	Security      securityConfig
}

func defaultServeConfig() serveConfig {
	return serveConfig{
		Addr:          "127.0.0.1:7070",
		DB:            "./limitd.db",
		DefaultTTL:    60 * time.Second,
		MaxTTL:        24 * time.Hour,
		DefaultWait:   30 * time.Second,
		MaxWait:       5 * time.Minute,
		MaxWaiters:    10_000,
		MaxBody:       64 << 10,
		LogFormat:     "text",
		LogLevel:      "info",
		ShutdownGrace: 5 * time.Second,
		Sync:          "normal",
		HTTP:          daemon.DefaultHTTPConfig(),
	}
}

func (c *serveConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", c.Addr, "listen address (host:port)")
	fs.StringVar(&c.DB, "db", c.DB, "SQLite database file")
	fs.DurationVar(&c.DefaultTTL, "default-ttl", c.DefaultTTL, "lease TTL for acquires and limits that name none")
	fs.DurationVar(&c.MaxTTL, "max-ttl", c.MaxTTL, "longest TTL a request may ask for (at most 24h)")
	fs.DurationVar(&c.DefaultWait, "default-wait", c.DefaultWait, "how long an acquire waits when it names no wait_seconds")
	fs.DurationVar(&c.MaxWait, "max-wait", c.MaxWait, "longest wait of one acquire; longer asks are clamped to it")
	fs.IntVar(&c.MaxWaiters, "max-waiters", c.MaxWaiters, "waiters queued per limit before acquires get 503 queue_full")
	fs.Int64Var(&c.MaxBody, "max-body", c.MaxBody, "largest request body in bytes")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log format: text or json")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "log level: debug, info, warn or error")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", c.ShutdownGrace, "how long a graceful stop waits for requests to finish")
	fs.StringVar(&c.Sync, "sync", c.Sync, "SQLite synchronous mode: normal (survives a process crash) or full (also power loss)")
	fs.DurationVar(&c.HTTP.ReadHeaderTimeout, "read-header-timeout", c.HTTP.ReadHeaderTimeout, "time a client has to send its request headers (against slowloris)")
	fs.DurationVar(&c.HTTP.ReadTimeout, "read-timeout", c.HTTP.ReadTimeout, "time a client has to send a whole request (long-polls are not cut)")
	fs.DurationVar(&c.HTTP.IdleTimeout, "idle-timeout", c.HTTP.IdleTimeout, "how long an unused keep-alive connection stays open")
	fs.IntVar(&c.HTTP.MaxConns, "max-conns", c.HTTP.MaxConns, "open connections at most (0: no cap beyond the file descriptor limit)")
	fs.StringVar(&c.PprofAddr, "pprof-addr", c.PprofAddr, "serve Go's /debug/pprof/ endpoints on this address (off when empty; keep it on loopback)")
	c.Security.register(fs)
}

// Validate checks every setting and names the flag of the first bad one.
func (c serveConfig) Validate() error {
	switch {
	case c.Addr == "":
		return errors.New("--addr is empty")
	case c.DB == "":
		return errors.New("--db is empty")
	case c.MaxTTL < limitd.MinTTL || c.MaxTTL > limitd.MaxTTLCeiling:
		return fmt.Errorf("--max-ttl %v must be from %v to %v", c.MaxTTL, limitd.MinTTL, limitd.MaxTTLCeiling)
	case c.DefaultTTL < limitd.MinTTL || c.DefaultTTL > c.MaxTTL:
		return fmt.Errorf("--default-ttl %v must be from %v to --max-ttl (%v)", c.DefaultTTL, limitd.MinTTL, c.MaxTTL)
	case c.MaxWait < 0:
		return fmt.Errorf("--max-wait %v must not be negative", c.MaxWait)
	case c.DefaultWait < 0 || c.DefaultWait > c.MaxWait:
		return fmt.Errorf("--default-wait %v must be from 0 to --max-wait (%v)", c.DefaultWait, c.MaxWait)
	case c.MaxWaiters < 1:
		return fmt.Errorf("--max-waiters %d must be at least 1", c.MaxWaiters)
	case c.MaxBody < 1024:
		return fmt.Errorf("--max-body %d must be at least 1024 bytes", c.MaxBody)
	case c.LogFormat != "text" && c.LogFormat != "json":
		return fmt.Errorf("--log-format %q must be text or json", c.LogFormat)
	case c.ShutdownGrace < 0:
		return fmt.Errorf("--shutdown-grace %v must not be negative", c.ShutdownGrace)
	case c.Sync != "normal" && c.Sync != "full":
		return fmt.Errorf("--sync %q must be normal or full", c.Sync)
	case c.HTTP.ReadHeaderTimeout <= 0 || c.HTTP.ReadTimeout <= 0 || c.HTTP.IdleTimeout <= 0:
		return errors.New("--read-header-timeout, --read-timeout and --idle-timeout must be positive")
	case c.HTTP.ReadHeaderTimeout > c.HTTP.ReadTimeout:
		return fmt.Errorf("--read-header-timeout %v must not exceed --read-timeout %v", c.HTTP.ReadHeaderTimeout, c.HTTP.ReadTimeout)
	case c.HTTP.MaxConns < 0:
		return fmt.Errorf("--max-conns %d must not be negative", c.HTTP.MaxConns)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	return c.Security.validate(c.Addr)
}

// envName is the environment variable of a flag: --max-ttl is LIMITD_MAX_TTL.
func envName(flagName string) string {
	return "LIMITD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseFlags parses args, then fills every flag not given on the command line
// from its environment variable.
func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if err := fs.Parse(args); err != nil {
		return parseError(err)
	}
	given := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		if v := getenv(envName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("environment variable %s=%q: %w", envName(f.Name), v, err))
			}
		}
	})
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %q", fs.Args()))
	}
	return errors.Join(errs...)
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q must be debug, info, warn or error", s)
	}
	return l, nil
}

func newLogger(format, level string, w io.Writer) *slog.Logger {
	lvl, _ := parseLevel(level)
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func runServe(ctx context.Context, e *env, args []string) error {
	cfg := defaultServeConfig()
	fs := flag.NewFlagSet("limitd serve", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	cfg.register(fs)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: limitd [serve] [flags]\n\nEvery flag can also be set by its environment variable, e.g. --max-ttl by LIMITD_MAX_TTL.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, e.getenv); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := newLogger(cfg.LogFormat, cfg.LogLevel, e.stderr)
	return serve(ctx, cfg, log)
}

// serve runs the server until ctx ends, then stops it gracefully: /readyz
// turns 503, waiters are answered 503 shutting_down, the listener closes,
// in-flight requests get the grace period, and queued writes are committed.
func serve(ctx context.Context, cfg serveConfig, log *slog.Logger) error {
	start := time.Now()
	sec, err := cfg.Security.open(log)
	if err != nil {
		return err
	}
	defer sec.close()
	stopPprof, err := startPprof(cfg.PprofAddr, log)
	if err != nil {
		return err
	}
	defer stopPprof()
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Addr, err)
	}
	defer ln.Close()

	d, err := daemon.Open(ctx, daemon.Config{
		DB:          cfg.DB,
		Sync:        cfg.Sync,
		DefaultTTL:  cfg.DefaultTTL,
		MaxTTL:      cfg.MaxTTL,
		DefaultWait: cfg.DefaultWait,
		MaxWait:     cfg.MaxWait,
		MaxWaiters:  cfg.MaxWaiters,
		MaxBody:     cfg.MaxBody,
		Logger:      log,
		Tokens:      sec.tokens,
	})
	if err != nil {
		return err
	}
	defer d.Close()

	httpSrv := daemon.NewHTTPServer(sec.handler(d.Handler()), cfg.HTTP, log)
	serveErr := make(chan error, 1)
	go func() { serveErr <- httpSrv.Serve(sec.listener(daemon.LimitListener(ln, cfg.HTTP.MaxConns))) }()
	if err := sec.startMetrics(d.Handler()); err != nil {
		httpSrv.Close()
		return err
	}

	// Listening before loading lets probes see a live but unready server.
	state, err := d.Load(ctx)
	if err != nil {
		httpSrv.Close()
		return err
	}
	log.Info("limitd ready", "addr", ln.Addr().String(), "db", cfg.DB, "limits", len(state.Limits),
		"leases", len(state.Leases), "took", time.Since(start).Round(time.Millisecond), "version", version)

	select {
	case err := <-serveErr:
		return fmt.Errorf("serving HTTP: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "grace", cfg.ShutdownGrace)
	d.Drain()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := httpSrv.Shutdown(shutdownCtx); err != nil {
		log.Warn("requests still running at the end of the grace period were cut", "err", err)
		httpSrv.Close()
	}
	sec.stopMetrics() // before the daemon closes: a scrape reads the manager
	if err := d.Close(); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}
