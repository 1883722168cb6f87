package daemon_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/limitd/limitd"
	"github.com/limitd/limitd/internal/daemon"
	"github.com/limitd/limitd/internal/servertest"
)

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// smallDisk mounts a tmpfs of the given size on a fresh directory, so a
// test can fill it or make it read-only. It skips where mounting is not
// allowed (not root, or no mount namespace rights).
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s); the disk-full and read-only cases need one", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

func inUse(t *testing.T, url, name string) int {
	t.Helper()
	_, data := call(t, "GET", url+"/v1/limits/"+name, "")
	var l limitd.Limit
	if err := json.Unmarshal(data, &l); err != nil {
		t.Fatal(err)
	}
	return l.InUse
}

// fill writes into dir until the file system is full.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			break
		}
	}
	// The last partial chunk may have left a few bytes: take them too.
	for {
		if _, err := f.Write([]byte{0}); err != nil {
			break
		}
	}
	return path
}

// With the disk full, an acquire is answered 503 store_unavailable and
// takes no slot (nothing is acknowledged that is not durable); once space
// is freed, limitd works again without a restart.
func TestDiskFullAnswers503AndRecovers(t *testing.T) {
	dir := smallDisk(t, "4m")
	var out jsonLog
	srv := servertest.Start(t, dir, func(c *daemon.Config) { c.Logger = out.logger() })
	if resp, data := call(t, "PUT", srv.URL+"/v1/limits/full", `{"capacity": 5}`); resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %d %s", resp.StatusCode, data)
	}
	filler := fill(t, dir)

	var refused bool
	// Each grant adds a WAL frame; within a few the write hits ENOSPC.
	for i := 0; i < 50 && !refused; i++ {
		resp, data := call(t, "POST", srv.URL+"/v1/limits/full/acquire", `{"wait_seconds": 0, "holder": "`+strings.Repeat("x", 200)+`"}`)
		switch resp.StatusCode {
		case http.StatusCreated:
			var l limitd.Lease
			json.Unmarshal(data, &l)
			call(t, "DELETE", srv.URL+"/v1/leases/"+l.ID, "")
		case http.StatusServiceUnavailable:
			if problemCode(t, data) != limitd.CodeStoreUnavailable || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("disk full: %d %s", resp.StatusCode, data)
			}
			t.Logf("disk full answered: %s", data)
			refused = true
		default:
			t.Fatalf("disk full: unexpected %d %s", resp.StatusCode, data)
		}
	}
	if !refused {
		t.Fatal("no acquire failed although the disk was full")
	}
	if got := inUse(t, srv.URL, "full"); got != 0 {
		t.Fatalf("in_use = %d after failed grants: a grant that was never durable holds a slot", got)
	}

	// The operator learns it from the log too, not only from a metric.
	failed := out.lines(t, commitFailedMsg)
	if len(failed) == 0 {
		t.Fatal("no error logged for the failed commit")
	}
	if f := failed[0]; f["level"] != "ERROR" || !strings.Contains(f["err"].(string), "disk is full") || f["changes"] == nil {
		t.Fatalf("failed commit logged as %v, want level ERROR with the error and the batch size", f)
	}
	t.Logf("log: %v", failed[0])

	os.Remove(filler)
	waitUntil(t, func() bool {
		resp, _ := call(t, "POST", srv.URL+"/v1/limits/full/acquire", `{"wait_seconds": 0}`)
		return resp.StatusCode == http.StatusCreated
	})
	if back := out.lines(t, commitsBackMsg); len(back) != 1 || back[0]["failed_commits"].(float64) < 1 {
		t.Fatalf("recovery logged as %v, want one line counting the failed commits", back)
	}
}

// A database on a read-only file system is refused at start with a clear
// error.
func TestReadOnlyDatabaseIsRefusedAtStart(t *testing.T) {
	dir := smallDisk(t, "4m")
	srv := servertest.Start(t, dir)
	call(t, "PUT", srv.URL+"/v1/limits/ro", `{"capacity": 1}`)
	srv.Close()
	if out, err := exec.Command("mount", "-o", "remount,ro", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot remount read-only: %v %s", err, out)
	}
	_, err := daemon.Open(context.Background(), daemon.Config{DB: filepath.Join(dir, "limitd.db")})
	if err == nil {
		t.Fatal("opened a database on a read-only file system")
	}
	if !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("error %q does not say the database is read-only", err)
	}
	t.Log(err)
}
