package client_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/limitd/limitd/client"
	"github.com/limitd/limitd/internal/auth"
	"github.com/limitd/limitd/internal/daemon"
	"github.com/limitd/limitd/internal/servertest"
)

// withAdminToken turns on authentication with one admin token.
func withAdminToken(t *testing.T, token string) servertest.Option {
	t.Helper()
	set, err := auth.Parse(strings.NewReader(auth.FileLine("tests", auth.ScopeAdmin, "*", auth.Hash(token)) + "\n"))
	if err != nil {
		t.Fatalf("tokens: %v", err)
	}
	return func(c *daemon.Config) { c.Tokens = auth.NewKeyring(set) }
}

// FromEnv reads the server and the token from LIMITD_URL and LIMITD_TOKEN,
// as the CLI does. Not parallel: it sets the process's environment.
func TestFromEnv(t *testing.T) {
	const token = "limitd_from-env-test-token"
	srv := servertest.Start(t, t.TempDir(), withAdminToken(t, token))

	t.Run("OK", func(t *testing.T) {
		t.Setenv("LIMITD_URL", srv.URL)
		t.Setenv("LIMITD_TOKEN", token)
		c, err := client.FromEnv(fastBackoff())
		if err != nil {
			t.Fatal(err)
		}
		if c.URL() != srv.URL {
			t.Errorf("URL = %q, want LIMITD_URL %q", c.URL(), srv.URL)
		}
		mustPutLimit(t, c, "from-env", 1)
	})
	t.Run("ErrUnauthorizedWithoutToken", func(t *testing.T) {
		t.Setenv("LIMITD_URL", srv.URL)
		t.Setenv("LIMITD_TOKEN", "")
		c, err := client.FromEnv()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.ListLimits(t.Context()); !errors.Is(err, client.ErrUnauthorized) {
			t.Fatalf("ListLimits without LIMITD_TOKEN = %v, want ErrUnauthorized", err)
		}
	})
	t.Run("WithTokenOverridesEnv", func(t *testing.T) {
		t.Setenv("LIMITD_URL", srv.URL)
		t.Setenv("LIMITD_TOKEN", "limitd_wrong")
		c, err := client.FromEnv(client.WithToken(token))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetLimit(t.Context(), "from-env"); err != nil {
			t.Fatalf("GetLimit with WithToken over a wrong LIMITD_TOKEN: %v", err)
		}
	})
	t.Run("DefaultURL", func(t *testing.T) {
		t.Setenv("LIMITD_URL", "")
		c, err := client.FromEnv()
		if err != nil || c.URL() != client.DefaultURL {
			t.Fatalf("FromEnv with LIMITD_URL empty = %v, %v; want %s", c, err, client.DefaultURL)
		}
	})
	t.Run("ErrBadURL", func(t *testing.T) {
		t.Setenv("LIMITD_URL", "127.0.0.1:7070")
		if _, err := client.FromEnv(); err == nil || !strings.Contains(err.Error(), "LIMITD_URL") {
			t.Fatalf("FromEnv with LIMITD_URL without a scheme = %v, want an error naming LIMITD_URL", err)
		}
	})
}
