package client_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/limitd/limitd/internal/daemon"
)

// TestMain starts the server that the examples talk to (examples have no
// *testing.T, so the servertest package cannot start it), points
// LIMITD_URL at it as a user's environment would, and checks for leaked
// goroutines once everything is closed, as goleak.VerifyTestMain does; the
// check has to come after the examples' server is closed, which
// VerifyTestMain leaves no room for.
func TestMain(m *testing.M) {
	stop, err := startExampleServer()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	stop()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func startExampleServer() (stop func(), err error) {
	dir, err := os.MkdirTemp("", "limitd-client-examples-")
	if err != nil {
		return nil, err
	}
	d, err := daemon.Open(context.Background(), daemon.Config{
		DB:          filepath.Join(dir, "limitd.db"),
		DefaultTTL:  60 * time.Second,
		MaxTTL:      24 * time.Hour,
		DefaultWait: 30 * time.Second,
		MaxWait:     5 * time.Minute,
		MaxWaiters:  10_000,
		MaxBody:     64 << 10,
	})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("example server: %w", err)
	}
	if _, err := d.Load(context.Background()); err != nil {
		d.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("example server: %w", err)
	}
	hs := httptest.NewServer(d.Handler())
	os.Setenv("LIMITD_URL", hs.URL)
	return func() {
		d.Drain()
		hs.CloseClientConnections()
		hs.Close()
		d.Close()
		os.RemoveAll(dir)
	}, nil
}
