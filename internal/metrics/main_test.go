package metrics_test

import (
	"context"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/limitd/limitd/internal/servertest"
	"github.com/limitd/limitd/internal/slots"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind (a waiter,
// the log writer, a commit loop).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// harness is a real in-process limitd and an HTTP client for it. Requests
// started with goDo end with the test: their context is cancelled and they
// are awaited before the server closes.
type harness struct {
	tb     testing.TB
	srv    *servertest.Server
	hc     *http.Client
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newHarness(tb testing.TB, opts ...servertest.Option) *harness {
	tb.Helper()
	return newHarnessIn(tb, tb.TempDir(), opts...)
}

// newHarnessIn serves the database in dir: a restart when a server served it
// before.
func newHarnessIn(tb testing.TB, dir string, opts ...servertest.Option) *harness {
	tb.Helper()
	srv := servertest.Start(tb, dir, opts...)
	tr := &http.Transport{}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{tb: tb, srv: srv, hc: &http.Client{Transport: tr}, ctx: ctx, cancel: cancel}
	// Registered after servertest.Start's cleanup, so it runs before it.
	tb.Cleanup(h.close)
	return h
}

// close ends the harness's requests and stops its server gracefully.
func (h *harness) close() {
	h.cancel()
	h.wg.Wait()
	h.hc.CloseIdleConnections()
	h.srv.Close()
}

type reply struct {
	status int
	header http.Header
	body   string
}

func (h *harness) doCtx(ctx context.Context, method, path, body string) (reply, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.srv.URL+path, rd)
	if err != nil {
		return reply{}, err
	}
	resp, err := h.hc.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: string(b)}, err
}

// do sends a request and fails the test unless it is answered with want.
func (h *harness) do(method, path, body string, want int) reply {
	h.tb.Helper()
	r, err := h.doCtx(h.ctx, method, path, body)
	if err != nil {
		h.tb.Fatalf("%s %s: %v", method, path, err)
	}
	if r.status != want {
		h.tb.Fatalf("%s %s: status %d, want %d; body %s", method, path, r.status, want, r.body)
	}
	return r
}

// goDo sends a request in a goroutine; its reply (or error) arrives on the
// returned channel. cancel aborts it as a client going away would.
func (h *harness) goDo(method, path, body string) (replies <-chan reply, cancel context.CancelFunc) {
	ctx, cancel := context.WithCancel(h.ctx)
	ch := make(chan reply, 1)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		r, err := h.doCtx(ctx, method, path, body)
		if err != nil {
			r = reply{status: -1, body: err.Error()}
		}
		ch <- r
	}()
	return ch, cancel
}

// acquire takes a lease and returns its id.
func (h *harness) acquire(limit, body string) string {
	h.tb.Helper()
	r := h.do("POST", "/v1/limits/"+limit+"/acquire", body, http.StatusCreated)
	return strings.TrimPrefix(r.header.Get("Location"), "/v1/leases/")
}

// exposition is one parsed scrape of /metrics.
type exposition struct {
	tb   testing.TB
	text string
	fams map[string]*dto.MetricFamily
}

func (h *harness) scrape() exposition {
	h.tb.Helper()
	r := h.do("GET", "/metrics", "", http.StatusOK)
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		h.tb.Fatalf("/metrics Content-Type %q, want the text exposition format", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(r.body))
	if err != nil {
		h.tb.Fatalf("parsing /metrics: %v\n%s", err, r.body)
	}
	return exposition{tb: h.tb, text: r.body, fams: fams}
}

// find returns the one series of family name whose labels include all of
// labels ("k", "v", ...), or nil if there is none.
func (e exposition) find(name string, labels ...string) *dto.Metric {
	e.tb.Helper()
	f := e.fams[name]
	if f == nil {
		return nil
	}
	var found *dto.Metric
	for _, m := range f.Metric {
		if hasLabels(m, labels...) {
			if found != nil {
				e.tb.Fatalf("%s%v: more than one series matches", name, labels)
			}
			found = m
		}
	}
	return found
}

func hasLabels(m *dto.Metric, labels ...string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		ok := false
		for _, lp := range m.Label {
			if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// value is a counter's or gauge's value; the series must exist.
func (e exposition) value(name string, labels ...string) float64 {
	e.tb.Helper()
	m := e.find(name, labels...)
	switch {
	case m == nil:
		e.tb.Fatalf("no series %s%v in /metrics", name, labels)
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	e.tb.Fatalf("%s%v is neither a counter nor a gauge", name, labels)
	return 0
}

// histogram is a histogram series; it must exist.
func (e exposition) histogram(name string, labels ...string) *dto.Histogram {
	e.tb.Helper()
	m := e.find(name, labels...)
	if m == nil || m.Histogram == nil {
		e.tb.Fatalf("no histogram series %s%v in /metrics", name, labels)
	}
	return m.Histogram
}

// seriesWith lists every series (as family{labels}) that carries the label
// name=value.
func (e exposition) seriesWith(name, value string) []string {
	var out []string
	for fname, f := range e.fams {
		for _, m := range f.Metric {
			if hasLabels(m, name, value) {
				out = append(out, fname+labelString(m))
			}
		}
	}
	sort.Strings(out)
	return out
}

func labelString(m *dto.Metric) string {
	var parts []string
	for _, lp := range m.Label {
		parts = append(parts, lp.GetName()+"="+lp.GetValue())
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// cumulative is the count of a histogram's bucket with upper bound le.
func cumulative(tb testing.TB, h *dto.Histogram, le float64) uint64 {
	tb.Helper()
	for _, b := range h.Bucket {
		if b.GetUpperBound() == le {
			return b.GetCumulativeCount()
		}
	}
	tb.Fatalf("no bucket le=%v", le)
	return 0
}

// waitFor scrapes until cond holds, for at most limit; the state it waits
// for comes from the server's own timers or a client's disconnect, which no
// event of the test's own marks.
func (h *harness) waitFor(what string, limit time.Duration, cond func(e exposition) bool) exposition {
	h.tb.Helper()
	deadline := time.Now().Add(limit)
	for {
		e := h.scrape()
		if cond(e) {
			return e
		}
		if time.Now().After(deadline) {
			h.tb.Fatalf("%s: not within %v; last scrape:\n%s", what, limit, e.text)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fakeClock is a manual slots.Clock: time moves only when the test advances
// it, and timers due by then run inside Advance, in deadline order.
type fakeClock struct {
	mu     sync.Mutex
	wall   time.Time
	mono   time.Duration
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	at      time.Duration
	f       func()
	stopped bool
}

func newFakeClock() *fakeClock {
	return &fakeClock{wall: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)}
}

func (c *fakeClock) Read() (time.Time, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wall, c.mono
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) slots.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.mono + d, f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.wall = c.wall.Add(d)
	c.mono += d
	var due []*fakeTimer
	kept := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.stopped:
		case t.at <= c.mono:
			t.stopped = true
			due = append(due, t)
		default:
			kept = append(kept, t)
		}
	}
	c.timers = kept
	c.mu.Unlock()
	sort.Slice(due, func(i, j int) bool { return due[i].at < due[j].at })
	for _, t := range due {
		t.f() // outside the lock: timer functions read the clock
	}
}
