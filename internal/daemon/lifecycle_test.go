package daemon_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/limitd/limitd/internal/daemon"
)

// TestCloseTwiceIsSafe protects the command's shutdown path, which defers
// Close as a safety net and also calls it to report its error: a second
// call must neither panic nor report a failure the first did not have.
func TestCloseTwiceIsSafe(t *testing.T) {
	for _, loaded := range []bool{false, true} {
		d, err := daemon.Open(context.Background(), daemon.Config{DB: filepath.Join(t.TempDir(), "limitd.db"), Logger: slogDiscard()})
		if err != nil {
			t.Fatal(err)
		}
		if loaded {
			if _, err := d.Load(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.Close(); err != nil {
			t.Fatalf("loaded=%v: first Close: %v", loaded, err)
		}
		if err := d.Close(); err != nil {
			t.Fatalf("loaded=%v: second Close: %v", loaded, err)
		}
	}
}
