package daemon_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/limitd/limitd"
	"github.com/limitd/limitd/internal/daemon"
	"github.com/limitd/limitd/internal/servertest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func call(t *testing.T, method, url, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, data
}

func problemCode(t *testing.T, data []byte) limitd.Code {
	t.Helper()
	var p limitd.Problem
	if err := json.Unmarshal(data, &p); err != nil {
		t.Fatalf("not a problem: %s", data)
	}
	return p.Code
}

func TestQueueBoundAnswers503WithRetryAfter(t *testing.T) {
	srv := servertest.Start(t, t.TempDir(), func(c *daemon.Config) { c.MaxWaiters = 2 })
	call(t, "PUT", srv.URL+"/v1/limits/q", `{"capacity": 1}`)
	call(t, "POST", srv.URL+"/v1/limits/q/acquire", `{}`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 2 {
		req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/v1/limits/q/acquire", strings.NewReader(`{"wait_seconds": 60}`))
		go func() {
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	waitUntil(t, func() bool {
		_, data := call(t, "GET", srv.URL+"/v1/limits/q", "")
		var l limitd.Limit
		json.Unmarshal(data, &l)
		return l.Waiting == 2
	})
	resp, data := call(t, "POST", srv.URL+"/v1/limits/q/acquire", `{"wait_seconds": 60}`)
	if resp.StatusCode != http.StatusServiceUnavailable || problemCode(t, data) != limitd.CodeQueueFull || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third waiter: %d %s Retry-After=%q", resp.StatusCode, data, resp.Header.Get("Retry-After"))
	}
	cancel()
	waitUntil(t, func() bool {
		_, data := call(t, "GET", srv.URL+"/v1/limits/q", "")
		var l limitd.Limit
		json.Unmarshal(data, &l)
		return l.Waiting == 0
	})
}

func TestWaitIsClampedToMaxWait(t *testing.T) {
	srv := servertest.Start(t, t.TempDir(), func(c *daemon.Config) { c.MaxWait = 200 * time.Millisecond })
	call(t, "PUT", srv.URL+"/v1/limits/c", `{"capacity": 0}`)
	start := time.Now()
	resp, data := call(t, "POST", srv.URL+"/v1/limits/c/acquire", `{"wait_seconds": 100000}`)
	if resp.StatusCode != http.StatusLocked || problemCode(t, data) != limitd.CodeNoSlots {
		t.Fatalf("clamped wait: %d %s", resp.StatusCode, data)
	}
	// Not a timing assertion on speed: a wait of 100000 s that was not
	// clamped would simply never have returned within the test's timeout.
	t.Logf("answered after %v", time.Since(start))
	resp, data = call(t, "POST", srv.URL+"/v1/limits/c/acquire", `{"ttl_seconds": 86401}`)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(data), "ttl_seconds") {
		t.Fatalf("ttl over the maximum: %d %s", resp.StatusCode, data)
	}
}

// startHTTP serves the daemon through the same http.Server settings that
// limitd serve uses, with short timeouts.
func startHTTP(t *testing.T, cfg daemon.HTTPConfig) (*servertest.Server, string) {
	t.Helper()
	srv := servertest.Start(t, t.TempDir())
	hs := httptest.NewUnstartedServer(srv.Daemon.Handler())
	real := daemon.NewHTTPServer(srv.Daemon.Handler(), cfg, slogDiscard())
	hs.Config = real
	hs.Listener = daemon.LimitListener(hs.Listener, cfg.MaxConns)
	hs.Start()
	t.Cleanup(hs.Close)
	return srv, hs.URL
}

// A client that sends its headers byte by byte is cut off, while a
// legitimate long-poll that outlasts the read timeout is not.
func TestSlowClientsAreCutButLongPollsAreNot(t *testing.T) {
	_, url := startHTTP(t, daemon.HTTPConfig{ReadHeaderTimeout: 200 * time.Millisecond, ReadTimeout: 300 * time.Millisecond, IdleTimeout: time.Second})
	call(t, "PUT", url+"/v1/limits/slow", `{"capacity": 0}`)

	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n") // and never the final CRLF
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := conn.Read(make([]byte, 1024))
	if err == nil && n > 0 {
		// net/http may answer 408 before closing; either way the
		// connection must end rather than wait for the client.
		if _, err := conn.Read(make([]byte, 1024)); !errors.Is(err, io.EOF) {
			t.Fatalf("slow client's connection still open: %v", err)
		}
	} else if !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("slow client: %v, want the server to close the connection", err)
	}

	// A long-poll of 1 s, three times the read timeout, gets its 423.
	resp, data := call(t, "POST", url+"/v1/limits/slow/acquire", `{"wait_seconds": 1}`)
	if resp.StatusCode != http.StatusLocked {
		t.Fatalf("long-poll past the read timeout: %d %s", resp.StatusCode, data)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// With --max-conns, connections over the cap wait to be accepted until one
// closes; none is refused.
func TestConnectionCap(t *testing.T) {
	_, url := startHTTP(t, daemon.HTTPConfig{ReadHeaderTimeout: time.Second, ReadTimeout: time.Second, IdleTimeout: 5 * time.Second, MaxConns: 1})
	addr := strings.TrimPrefix(url, "http://")
	first, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(first, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := http.ReadResponse(bufio.NewReader(first), nil); err != nil {
		t.Fatal(err)
	}
	second, err := net.Dial("tcp", addr) // the kernel accepts; limitd does not yet
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	fmt.Fprint(second, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	answered := make(chan error, 1)
	go func() {
		_, err := http.ReadResponse(bufio.NewReader(second), nil)
		answered <- err
	}()
	select {
	case err := <-answered:
		t.Fatalf("second connection served while the first was open (err %v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	first.Close()
	if err := <-answered; err != nil {
		t.Fatalf("second connection after the first closed: %v", err)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5 s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}
