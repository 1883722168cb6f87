package client_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/limitd/limitd/client"
	"github.com/limitd/limitd/internal/servertest"
)

// fastBackoff keeps retries quick in tests without changing their logic.
func fastBackoff() client.Option {
	return client.WithRetryBackoff(5*time.Millisecond, 50*time.Millisecond)
}

// mustStart starts a real limitd (real SQLite file in a temp dir) and a
// client of it.
func mustStart(t *testing.T, opts ...client.Option) (*servertest.Server, *client.Client) {
	t.Helper()
	srv := servertest.Start(t, t.TempDir())
	return srv, mustClient(t, srv.URL, opts...)
}

func mustClient(t *testing.T, url string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(url, append([]client.Option{fastBackoff()}, opts...)...)
	if err != nil {
		t.Fatalf("client.New(%q): %v", url, err)
	}
	return c
}

// limitName is a limit name unique to the test.
func limitName(t *testing.T) string {
	return regexp.MustCompile(`[^A-Za-z0-9._:-]`).ReplaceAllString(t.Name(), "-")
}

func mustPutLimit(t *testing.T, c *client.Client, name string, capacity int) {
	t.Helper()
	if _, err := c.PutLimit(t.Context(), name, client.LimitConfig{Capacity: capacity}); err != nil {
		t.Fatalf("PutLimit(%q, %d): %v", name, capacity, err)
	}
}

func mustAcquire(t *testing.T, c *client.Client, limit string, opts ...client.AcquireOption) *client.Lease {
	t.Helper()
	l, err := c.Acquire(t.Context(), limit, opts...)
	if err != nil {
		t.Fatalf("Acquire(%q): %v", limit, err)
	}
	t.Cleanup(func() { _ = l.Release(context.Background()) })
	return l
}

// eventually waits until cond holds, checking it every few milliseconds,
// and fails the test after 10 s. For conditions only visible by asking
// the server (queue length, lease list), which sends no event.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitersOf(t *testing.T, c *client.Client, limit string) int {
	t.Helper()
	ws, err := c.Waiters(t.Context(), limit)
	if err != nil {
		t.Fatalf("Waiters(%q): %v", limit, err)
	}
	return len(ws)
}

// recv waits for a value from ch, failing the test after 10 s.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// proxy stands in front of a limitd at a fixed URL, so that a client can
// outlive a server restart (a restarted servertest server has a new
// port), and lets a test cut the connection or step into requests.
type proxy struct {
	*httptest.Server
	rp     *httputil.ReverseProxy
	mu     sync.Mutex
	target *url.URL
	down   bool
	// intercept, if set, sees every request first and returns true if it
	// answered it itself.
	intercept func(w http.ResponseWriter, r *http.Request) bool
	// keys records the Idempotency-Key of every acquire that came in.
	keys []string
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	p := &proxy{}
	p.setTarget(target)
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			p.mu.Lock()
			pr.SetURL(p.target)
			p.mu.Unlock()
		},
	}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		if k := r.Header.Get("Idempotency-Key"); k != "" {
			p.keys = append(p.keys, k)
		}
		down, intercept := p.down, p.intercept
		p.mu.Unlock()
		if intercept != nil && intercept(w, r) {
			return
		}
		if down {
			hangUp(w)
			return
		}
		p.rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	return p
}

// forward passes r to the server behind the proxy.
func (p *proxy) forward(w http.ResponseWriter, r *http.Request) { p.rp.ServeHTTP(w, r) }

func (p *proxy) setTarget(target string) {
	u, err := url.Parse(target)
	if err != nil {
		panic(err)
	}
	p.mu.Lock()
	p.target = u
	p.mu.Unlock()
}

// setDown makes the proxy hang up on every request (a network error for
// the client) until it is set up again.
func (p *proxy) setDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
}

func (p *proxy) setIntercept(f func(w http.ResponseWriter, r *http.Request) bool) {
	p.mu.Lock()
	p.intercept = f
	p.mu.Unlock()
}

func (p *proxy) acquireKeys() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.keys...)
}

// hangUp closes the connection without an answer.
func hangUp(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	conn.Close()
}
