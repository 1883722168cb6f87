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
	// The client gives up long before a wait of 100000 s would end, but
	// far after the clamped 0.2 s (plus the 1 s the contract allows), so a
	// broken clamp fails here rather than at the global test timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", srv.URL+"/v1/limits/c/acquire", strings.NewReader(`{"wait_seconds": 100000}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("wait_seconds 100000 with a 0.2 s maximum: no answer: %v", err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusLocked || problemCode(t, data) != limitd.CodeNoSlots {
		t.Fatalf("clamped wait: %d %s", resp.StatusCode, data)
	}
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

// A client that sends its headers slowly (slowloris), or its headers and
// then its body slowly, is cut off at the timeouts, while a legitimate
// long-poll that outlasts the read timeout is not.
func TestSlowClientsAreCutButLongPollsAreNot(t *testing.T) {
	_, url := startHTTP(t, daemon.HTTPConfig{ReadHeaderTimeout: 200 * time.Millisecond, ReadTimeout: 300 * time.Millisecond, IdleTimeout: time.Second})
	addr := strings.TrimPrefix(url, "http://")
	call(t, "PUT", url+"/v1/limits/slow", `{"capacity": 0}`)

	// The long-poll runs while the slow clients are being cut, so the
	// cuts are seen not to hit it.
	longPoll := make(chan int, 1)
	go func() {
		resp, err := http.Post(url+"/v1/limits/slow/acquire", "application/json", strings.NewReader(`{"wait_seconds": 1}`))
		if err != nil {
			longPoll <- 0
			return
		}
		resp.Body.Close()
		longPoll <- resp.StatusCode
	}()

	t.Run("SlowHeaders", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprint(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n") // and never the final CRLF
		answer, err := readUntilClosed(conn)
		t.Logf("slow headers: answered %q, then %v", firstLine(answer), err)
		if err != nil {
			t.Fatalf("slow client: %v, want the server to close the connection", err)
		}
	})

	t.Run("SlowBody", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// Prompt headers announce a body that would take 80 s to trickle
		// in; only the read timeout can end it sooner.
		const bodyLen = 4096
		fmt.Fprintf(conn, "POST /v1/limits/slow/acquire HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{", bodyLen)
		stop := make(chan struct{})
		trickled := make(chan int, 1)
		go func() {
			n := 1
			defer func() { trickled <- n }()
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for n < bodyLen {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if _, err := conn.Write([]byte(" ")); err != nil {
					return
				}
				n++
			}
		}()
		answer, err := readUntilClosed(conn)
		close(stop)
		sent := <-trickled
		_, detail, _ := strings.Cut(answer, "\r\n\r\n")
		t.Logf("slow body: answered %q %s after %d of %d body bytes, then %v", firstLine(answer), detail, sent, bodyLen, err)
		if err != nil {
			t.Fatalf("slow body: %v, want the server to close the connection", err)
		}
		if sent >= bodyLen {
			t.Fatal("the server read the whole trickled body: the read timeout did not cut it")
		}
		if answer != "" && !strings.HasPrefix(answer, "HTTP/1.1 4") {
			t.Fatalf("slow body answered %q, want a 4xx or no answer", firstLine(answer))
		}
	})

	// The long-poll of 1 s, three times the read timeout, gets its 423.
	select {
	case status := <-longPoll:
		if status != http.StatusLocked {
			t.Fatalf("long-poll past the read timeout: status %d, want 423", status)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("long-poll of 1 s not answered within 10 s")
	}
}

// readUntilClosed reads what the server sends until it closes the
// connection. It returns an error only if the connection is still open
// after 10 s: a server that waits on a slow client, rather than cutting it.
func readUntilClosed(conn net.Conn) (string, error) {
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		switch {
		case err == nil:
			continue
		case errors.Is(err, io.EOF) || isReset(err):
			return string(got), nil
		default:
			return string(got), fmt.Errorf("connection still open after 10 s (%w)", err)
		}
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\r\n")
	return line
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
