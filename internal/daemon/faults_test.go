package daemon_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	if f := failed[0]; f["level"] != "ERROR" || !strings.Contains(f["err"].(string), "disk is full") || f["changes"] == nil ||
		!strings.Contains(fmt.Sprint(f["cause"]), "is full") {
		t.Fatalf("failed commit logged as %v, want level ERROR with the error, the batch size and the cause", f)
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

// ext4Disk is an ext4 file system on a loop device, mounted with
// errors=remount-ro, whose kernel can be made to remount it read-only while
// files are open on it.
//
// That is how a file system turns read-only under a running limitd in
// practice. `mount -o remount,ro` is refused (EBUSY) while any file on it
// is open for writing, as the database is, so a tmpfs cannot be remounted
// read-only under the server; an ext4 error can, and it is sticky: only an
// unmount clears it.
type ext4Disk struct {
	t       *testing.T
	img     string
	dir     string
	trigger string
}

// newExt4Disk makes and mounts the file system. It skips where loop
// devices, ext4 or error injection are not available.
func newExt4Disk(t *testing.T) *ext4Disk {
	t.Helper()
	d := &ext4Disk{t: t, img: filepath.Join(t.TempDir(), "disk.img"), dir: t.TempDir()}
	if err := os.WriteFile(d.img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(d.img, 32<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", d.img).CombinedOutput(); err != nil {
		t.Skipf("cannot make an ext4 file system (%v: %s); the read-only-while-serving case needs one", err, out)
	}
	if err := d.mount(); err != nil {
		t.Skipf("cannot mount a loop device here (%v); the read-only-while-serving case needs one", err)
	}
	if _, err := os.Stat(d.trigger); err != nil {
		t.Skipf("this kernel cannot inject an ext4 error: %v", err)
	}
	return d
}

func (d *ext4Disk) mount() error {
	if out, err := exec.Command("mount", "-o", "loop,errors=remount-ro", d.img, d.dir).CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	d.t.Cleanup(func() { exec.Command("umount", "-l", d.dir).Run() })
	out, err := exec.Command("findmnt", "-n", "-o", "SOURCE", d.dir).Output()
	if err != nil {
		return fmt.Errorf("finding the loop device of %s: %v", d.dir, err)
	}
	d.trigger = filepath.Join("/sys/fs/ext4", filepath.Base(strings.TrimSpace(string(out))), "trigger_fs_error")
	return nil
}

// makeReadOnly injects an ext4 error and waits until the kernel refuses
// writes with EROFS. (The mount still lists "rw": newer kernels mark it
// "emergency_ro" instead.)
func (d *ext4Disk) makeReadOnly() {
	d.t.Helper()
	if err := os.WriteFile(d.trigger, []byte("limitd test: read-only while serving"), 0o200); err != nil {
		d.t.Fatalf("injecting the ext4 error: %v", err)
	}
	waitUntil(d.t, func() bool {
		return errors.Is(os.WriteFile(filepath.Join(d.dir, "probe"), []byte("x"), 0o600), syscall.EROFS)
	})
}

// repair is what an operator does: unmount, check, mount again.
func (d *ext4Disk) repair() {
	d.t.Helper()
	if out, err := exec.Command("umount", d.dir).CombinedOutput(); err != nil {
		d.t.Fatalf("umount: %v %s", err, out)
	}
	// e2fsck exits 1 when it fixed something, which is expected here.
	if out, err := exec.Command("e2fsck", "-f", "-y", d.img).CombinedOutput(); err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() > 1 {
			d.t.Fatalf("e2fsck: %v %s", err, out)
		}
	}
	if err := d.mount(); err != nil {
		d.t.Fatal(err)
	}
}

// When the database's file system turns read-only under a running server,
// acquires and renewals are answered 503 store_unavailable (no slot is
// kept for a grant that is not durable), reads go on, and the log says
// why. The kernel keeps such a file system read-only until it is unmounted,
// so recovery takes a restart, after which every durable lease is there.
func TestReadOnlyWhileServingAnswers503AndKeepsNoSlot(t *testing.T) {
	disk := newExt4Disk(t)
	var out jsonLog
	// --sync full: with normal, SQLite does not fsync the WAL at commit,
	// and the ext4 error drops the dirty pages as a power loss would (tried:
	// after the repair the limit and its lease were gone). Acknowledged
	// leases surviving that is what full is for.
	srv := servertest.Start(t, disk.dir, func(c *daemon.Config) {
		c.Logger = out.logger()
		c.Sync = "full"
	})
	if resp, data := call(t, "PUT", srv.URL+"/v1/limits/ro", `{"capacity": 3}`); resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %d %s", resp.StatusCode, data)
	}
	resp, data := call(t, "POST", srv.URL+"/v1/limits/ro/acquire", `{"ttl_seconds": 600}`)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("acquire before the fault: %d %s", resp.StatusCode, data)
	}
	var held limitd.Lease
	if err := json.Unmarshal(data, &held); err != nil {
		t.Fatal(err)
	}
	resp, data = call(t, "POST", srv.URL+"/v1/limits/ro/acquire", `{"ttl_seconds": 600}`)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("acquire before the fault: %d %s", resp.StatusCode, data)
	}
	var released limitd.Lease
	if err := json.Unmarshal(data, &released); err != nil {
		t.Fatal(err)
	}

	disk.makeReadOnly()

	// A release frees the slot at once (the deletion is retried until it
	// is durable) but is answered 503 too: it is not durable yet.
	resp, data = call(t, "DELETE", srv.URL+"/v1/leases/"+released.ID, "")
	if resp.StatusCode != http.StatusServiceUnavailable || problemCode(t, data) != limitd.CodeStoreUnavailable {
		t.Fatalf("release on a read-only file system: %d %s", resp.StatusCode, data)
	}
	t.Logf("release answered: %d %s", resp.StatusCode, data)

	resp, data = call(t, "POST", srv.URL+"/v1/limits/ro/acquire", `{"wait_seconds": 0}`)
	if resp.StatusCode != http.StatusServiceUnavailable || problemCode(t, data) != limitd.CodeStoreUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("acquire on a read-only file system: %d %s Retry-After=%q", resp.StatusCode, data, resp.Header.Get("Retry-After"))
	}
	t.Logf("acquire answered: %d %s", resp.StatusCode, data)
	if got := inUse(t, srv.URL, "ro"); got != 1 {
		t.Fatalf("in_use = %d, want 1 (the lease held before the fault): the refused grant kept a slot", got)
	}
	resp, data = call(t, "POST", srv.URL+"/v1/leases/"+held.ID+"/renew", "")
	if resp.StatusCode != http.StatusServiceUnavailable || problemCode(t, data) != limitd.CodeStoreUnavailable {
		t.Fatalf("renew on a read-only file system: %d %s", resp.StatusCode, data)
	}
	t.Logf("renew answered: %d %s", resp.StatusCode, data)
	if resp, data := call(t, "GET", srv.URL+"/v1/leases/"+held.ID, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("reading a lease on a read-only file system: %d %s", resp.StatusCode, data)
	}
	// SQLite says only "disk I/O error": the log must say why.
	failed := out.lines(t, commitFailedMsg)
	if len(failed) == 0 || failed[0]["level"] != "ERROR" || !strings.Contains(fmt.Sprint(failed[0]["cause"]), "read-only") {
		t.Fatalf("the failed commit was not logged at error with its cause: %v", failed)
	}
	t.Logf("log: %v", failed[0])

	srv.Close()
	disk.repair()
	srv = servertest.Start(t, disk.dir, func(c *daemon.Config) { c.Sync = "full" })
	if resp, data := call(t, "GET", srv.URL+"/v1/leases/"+held.ID, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("the lease granted before the fault, after the repair and restart: %d %s", resp.StatusCode, data)
	}
	if resp, data := call(t, "POST", srv.URL+"/v1/limits/ro/acquire", `{"wait_seconds": 0}`); resp.StatusCode != http.StatusCreated {
		t.Fatalf("acquire after the repair and restart: %d %s", resp.StatusCode, data)
	}
	// The release that was never durable is back until its TTL passes:
	// its client was told 503, not 204.
	if got := inUse(t, srv.URL, "ro"); got != 3 {
		t.Fatalf("in_use = %d after the restart, want 3: the held lease, the one whose release was not durable, and the new one", got)
	}
}
