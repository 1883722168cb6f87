// Package servertest runs a real limitd in-process for tests: a real SQLite
// file, the real manager and API, behind an httptest.Server on 127.0.0.1.
package servertest

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/limitd/limitd/internal/daemon"
)

// Server is a running in-process limitd.
type Server struct {
	URL    string
	DB     string
	Daemon *daemon.Daemon
	http   *httptest.Server
	closed bool
}

// Option adjusts the daemon's configuration before it starts.
type Option func(*daemon.Config)

// Start opens (or reopens, which is a restart) the database limitd.db in dir
// and serves it. The server is closed when the test ends, if not before.
func Start(tb testing.TB, dir string, opts ...Option) *Server {
	tb.Helper()
	cfg := daemon.Config{
		DB:          filepath.Join(dir, "limitd.db"),
		DefaultTTL:  60 * time.Second,
		MaxTTL:      24 * time.Hour,
		DefaultWait: 30 * time.Second,
		MaxWait:     5 * time.Minute,
		MaxWaiters:  10_000,
		MaxBody:     64 << 10,
	}
	for _, o := range opts {
		o(&cfg)
	}
	d, err := daemon.Open(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("servertest: opening daemon: %v", err)
	}
	if _, err := d.Load(context.Background()); err != nil {
		d.Close()
		tb.Fatalf("servertest: loading state: %v", err)
	}
	hs := httptest.NewServer(d.Handler())
	s := &Server{URL: hs.URL, DB: cfg.DB, Daemon: d, http: hs}
	tb.Cleanup(s.Close)
	return s
}

// Close stops the server gracefully, as limitd serve does: waiters are
// answered 503, in-flight requests finish (httptest's Close waits for them),
// queued writes are committed. It may be called twice.
func (s *Server) Close() {
	if s.closed {
		return
	}
	s.closed = true
	s.Daemon.Drain()
	s.http.Close()
	s.Daemon.Close()
}
