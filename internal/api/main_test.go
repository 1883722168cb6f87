package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/limitd/limitd"
	"github.com/limitd/limitd/internal/servertest"
	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: a
// waiter, a timer or a commit loop that outlives its server is a leak in
// production too.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// harness is one real in-process limitd (servertest) and an HTTP client for
// it. restart closes the server gracefully and starts it again on the same
// database, as a restarted daemon would.
type harness struct {
	tb   testing.TB
	dir  string
	opts []servertest.Option
	srv  *servertest.Server
	*apiClient
}

func newHarness(tb testing.TB, opts ...servertest.Option) *harness {
	tb.Helper()
	h := &harness{tb: tb, dir: tb.TempDir(), opts: opts}
	h.srv = servertest.Start(tb, h.dir, opts...)
	h.apiClient = newAPIClient(tb, h.srv.URL)
	return h
}

func (h *harness) restart() {
	h.tb.Helper()
	h.srv.Close()
	h.srv = servertest.Start(h.tb, h.dir, h.opts...)
	h.apiClient.hc.CloseIdleConnections()
	h.apiClient.base = h.srv.URL
}

// apiClient speaks to the API over real HTTP. Requests started with goDo run
// in goroutines that end with the test: the client's context is cancelled
// and every such goroutine is awaited before the server closes.
type apiClient struct {
	tb     testing.TB
	base   string
	hc     *http.Client
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newAPIClient(tb testing.TB, base string) *apiClient {
	tr := &http.Transport{MaxIdleConnsPerHost: 128}
	ctx, cancel := context.WithCancel(context.Background())
	c := &apiClient{tb: tb, base: base, hc: &http.Client{Transport: tr}, ctx: ctx, cancel: cancel}
	// Registered after servertest.Start's own cleanup, so it runs first:
	// no request is left hanging on a server that is being closed.
	tb.Cleanup(func() {
		c.cancel()
		c.wg.Wait()
		tr.CloseIdleConnections()
	})
	return c
}

// reply is a whole HTTP response, read and closed.
type reply struct {
	Status int
	Header http.Header
	Body   []byte
	// At is when the response arrived.
	At time.Time
}

// try sends a request; hdr is pairs of header name and value. An empty body
// sends none.
func (c *apiClient) try(ctx context.Context, method, path, body string, hdr ...string) (reply, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return reply{}, err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	return reply{Status: resp.StatusCode, Header: resp.Header, Body: data, At: time.Now()}, nil
}

// do sends a request and fails the test if no response arrives. Only for
// the test's own goroutine.
func (c *apiClient) do(method, path, body string, hdr ...string) reply {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	r, err := c.try(ctx, method, path, body, hdr...)
	if err != nil {
		c.tb.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// outcome is what a request started with goDo ended with.
type outcome struct {
	reply
	Err error
}

// goDo sends a request in the background. Its outcome arrives on the
// returned channel (buffered: nobody has to read it).
func (c *apiClient) goDo(ctx context.Context, method, path, body string, hdr ...string) <-chan outcome {
	ch := make(chan outcome, 1)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx, cancel := mergeCancel(ctx, c.ctx)
		defer cancel()
		r, err := c.try(ctx, method, path, body, hdr...)
		ch <- outcome{r, err}
	}()
	return ch
}

// mergeCancel returns a context that ends when either a or b does.
func mergeCancel(a, b context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(a)
	stop := context.AfterFunc(b, cancel)
	return ctx, func() { stop(); cancel() }
}

// ---- typed helpers -------------------------------------------------------------

func (c *apiClient) putLimit(name string, capacity int) limitd.Limit {
	c.tb.Helper()
	r := c.do("PUT", "/v1/limits/"+name, jsonOf(c.tb, map[string]any{"capacity": capacity}))
	if r.Status != http.StatusCreated && r.Status != http.StatusOK {
		c.tb.Fatalf("PUT limit %s capacity %d: %d %s", name, capacity, r.Status, r.Body)
	}
	var l limitd.Limit
	decode(c.tb, r, &l)
	return l
}

func (c *apiClient) limit(name string) limitd.Limit {
	c.tb.Helper()
	r := c.do("GET", "/v1/limits/"+name, "")
	if r.Status != http.StatusOK {
		c.tb.Fatalf("GET limit %s: %d %s", name, r.Status, r.Body)
	}
	var l limitd.Limit
	decode(c.tb, r, &l)
	return l
}

func (c *apiClient) leases(name string) []limitd.Lease {
	c.tb.Helper()
	r := c.do("GET", "/v1/limits/"+name+"/leases", "")
	if r.Status != http.StatusOK {
		c.tb.Fatalf("GET leases of %s: %d %s", name, r.Status, r.Body)
	}
	var l limitd.LeaseList
	decode(c.tb, r, &l)
	return l.Leases
}

func (c *apiClient) waiters(name string) []limitd.Waiter {
	c.tb.Helper()
	r := c.do("GET", "/v1/limits/"+name+"/waiters", "")
	if r.Status != http.StatusOK {
		c.tb.Fatalf("GET waiters of %s: %d %s", name, r.Status, r.Body)
	}
	var l limitd.WaiterList
	decode(c.tb, r, &l)
	return l.Waiters
}

// acquire expects a 201 and returns the lease.
func (c *apiClient) acquire(name, body string, hdr ...string) limitd.Lease {
	c.tb.Helper()
	r := c.do("POST", "/v1/limits/"+name+"/acquire", body, hdr...)
	if r.Status != http.StatusCreated {
		c.tb.Fatalf("acquire %s %s: %d %s", name, body, r.Status, r.Body)
	}
	return leaseOf(c.tb, r)
}

func (c *apiClient) release(id string) {
	c.tb.Helper()
	if r := c.do("DELETE", "/v1/leases/"+id, ""); r.Status != http.StatusNoContent {
		c.tb.Fatalf("release %s: %d %s", id, r.Status, r.Body)
	}
}

// goAcquire starts an acquire that may wait; see goDo.
func (c *apiClient) goAcquire(ctx context.Context, name, body string, hdr ...string) <-chan outcome {
	return c.goDo(ctx, "POST", "/v1/limits/"+name+"/acquire", body, hdr...)
}

// waitQueued waits until the limit's queue holds exactly n waiters, so that
// a test knows the order in which its requests arrived.
func (c *apiClient) waitQueued(name string, n int) []limitd.Waiter {
	c.tb.Helper()
	var ws []limitd.Waiter
	eventually(c.tb, 5*time.Second, func() bool {
		ws = c.waiters(name)
		return len(ws) == n
	}, "limit %s to have %d waiters queued", name, n)
	return ws
}

func leaseOf(tb testing.TB, r reply) limitd.Lease {
	tb.Helper()
	var l limitd.Lease
	decode(tb, r, &l)
	if l.ID == "" {
		tb.Fatalf("no lease in %d %s", r.Status, r.Body)
	}
	return l
}

// await returns the outcome of a background request, failing the test if it
// does not arrive within d.
func await(tb testing.TB, ch <-chan outcome, d time.Duration, what string) outcome {
	tb.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(d):
		tb.Fatalf("%s: no answer within %v", what, d)
		return outcome{}
	}
}

// notYet fails if a background request has already been answered. A waiter
// that must stay queued is checked this way after an event that could have
// wrongly woken it, and after the server listed it as still queued.
func notYet(tb testing.TB, ch <-chan outcome, what string) {
	tb.Helper()
	select {
	case o := <-ch:
		tb.Fatalf("%s was answered but must still wait: %d %s (err %v)", what, o.Status, o.Body, o.Err)
	default:
	}
}

// eventually polls cond every few milliseconds until it holds or d passes.
func eventually(tb testing.TB, d time.Duration, cond func() bool, format string, args ...any) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for "+format, append([]any{d}, args...)...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func decode(tb testing.TB, r reply, v any) {
	tb.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		tb.Fatalf("decoding %d response %q: %v", r.Status, r.Body, err)
	}
}

func jsonOf(tb testing.TB, v any) string {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// wantProblem checks that r is the problem+json answer of code with the
// status the code maps to, and that its detail mentions every one of
// detailHas (the field and the rule).
func wantProblem(tb testing.TB, r reply, code limitd.Code, detailHas ...string) limitd.Problem {
	tb.Helper()
	if r.Status != code.Status() {
		tb.Fatalf("status %d, want %d (%s): %s", r.Status, code.Status(), code, r.Body)
	}
	ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || ct != "application/problem+json" {
		tb.Fatalf("Content-Type %q, want application/problem+json", r.Header.Get("Content-Type"))
	}
	var p limitd.Problem
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		tb.Fatalf("problem body %q: %v", r.Body, err)
	}
	if p.Code != code || p.Status != r.Status || p.Title == "" || p.Type == "" || p.Detail == "" {
		tb.Fatalf("problem %+v, want code %s and status %d with a title, type and detail", p, code, r.Status)
	}
	for _, s := range detailHas {
		if !strings.Contains(p.Detail, s) {
			tb.Errorf("detail %q does not mention %q", p.Detail, s)
		}
	}
	return p
}
