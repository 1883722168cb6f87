// Package metrics is limitd's Prometheus instrumentation: counters and
// histograms of slot events (it implements slots.Observer), a collector that
// reads every limit's state from the slot manager at scrape time, HTTP
// request metrics labelled by route pattern, SQLite commit metrics, and the
// Go and process collectors.
//
// Everything lives on the registry given to New; there is no global state,
// so tests and several daemons in one process each have their own.
package metrics

import (
	"net/http"

	"github.com/limitd/limitd/internal/slots"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Registry is where the metrics are registered and gathered from; a
// *prometheus.Registry is one. Handler serves what it gathers, so a bare
// Registerer would not do.
type Registry interface {
	prometheus.Registerer
	prometheus.Gatherer
}

// StatsSource gives a snapshot of every limit; *slots.Manager is one.
type StatsSource interface {
	Stats() []slots.LimitStats
}

// StatsFunc adapts a function to StatsSource. The daemon uses it to bind the
// manager late: the manager takes the metrics as its observer, so the
// metrics are built first.
type StatsFunc func() []slots.LimitStats

// Stats calls f.
func (f StatsFunc) Stats() []slots.LimitStats { return f() }

// waitBuckets resolve waits and holds from 100 µs (an uncontended grant, a
// lease given straight back) to 10 minutes (twice the longest default wait;
// longer holds land in +Inf).
func waitBuckets() []float64 {
	return []float64{
		0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
		1, 2.5, 5, 10, 30, 60, 120, 300, 600,
	}
}

// requestBuckets resolve ordinary API requests (not long-polls): 100 µs to
// 10 s.
func requestBuckets() []float64 {
	return []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
}

// commitBuckets resolve SQLite transactions: 100 µs to 5 s.
func commitBuckets() []float64 {
	return []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}
}

// Metrics holds every limitd metric. Its methods are safe for concurrent use.
type Metrics struct {
	acquires    *prometheus.CounterVec
	releases    *prometheus.CounterVec
	expirations *prometheus.CounterVec
	acquireWait *prometheus.HistogramVec
	leaseHold   *prometheus.HistogramVec

	httpRequests        *prometheus.CounterVec
	httpDuration        *prometheus.HistogramVec
	httpAcquireDuration *prometheus.HistogramVec

	commitDuration prometheus.Histogram
	commitBatch    prometheus.Histogram
	commitErrors   prometheus.Counter

	handler http.Handler
}

// The per-limit counter and histogram vectors, which LimitDeleted clears.
func (m *Metrics) perLimit() []*prometheus.MetricVec {
	return []*prometheus.MetricVec{
		m.acquires.MetricVec, m.releases.MetricVec, m.expirations.MetricVec,
		m.acquireWait.MetricVec, m.leaseHold.MetricVec,
	}
}

// New builds limitd's metrics and registers them, a collector of the
// manager's per-limit state, and the Go and process collectors on reg. It
// panics if reg already holds metrics of the same names (a wiring mistake).
func New(reg Registry, mgr StatsSource) *Metrics {
	m := &Metrics{
		acquires: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "limitd_acquires_total",
			Help: "Acquire requests by how they ended: granted, timeout (no slot within wait_seconds), canceled (the client went away) or rejected (409, 503 queue_full or shutting_down, limit deleted while waiting).",
		}, []string{"limit", "result"}),
		releases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "limitd_releases_total",
			Help: "Leases released by their holder (or given back because the client left before its grant was answered).",
		}, []string{"limit"}),
		expirations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "limitd_lease_expirations_total",
			Help: "Leases that expired because they were not renewed in time: crashed or stuck workers.",
		}, []string{"limit"}),
		acquireWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "limitd_acquire_wait_seconds",
			Help:    "Time from an acquire request's arrival to its grant.",
			Buckets: waitBuckets(),
		}, []string{"limit"}),
		leaseHold: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "limitd_lease_hold_seconds",
			Help:    "Time from a lease's grant to its end; end is released or expired.",
			Buckets: waitBuckets(),
		}, []string{"limit", "end"}),

		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "limitd_http_requests_total",
			Help: "HTTP requests by route pattern, method and status (499: the client went away before the answer). Long-poll acquires are counted here too.",
		}, []string{"route", "method", "status"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "limitd_http_request_duration_seconds",
			Help:    "Duration of HTTP requests other than acquires, whose long-polls are in limitd_http_acquire_duration_seconds.",
			Buckets: requestBuckets(),
		}, []string{"route", "method", "status"}),
		httpAcquireDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "limitd_http_acquire_duration_seconds",
			Help:    "Duration of acquire requests (POST /v1/limits/{name}/acquire), waiting included, by status.",
			Buckets: waitBuckets(),
		}, []string{"status"}),

		commitDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "limitd_store_commit_duration_seconds",
			Help:    "Duration of SQLite transactions that commit a batch of changes (group commit), failed ones included.",
			Buckets: commitBuckets(),
		}),
		commitBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "limitd_store_commit_batch_size",
			Help:    "Changes (grants, renewals, releases, limit changes) committed in one SQLite transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11), // 1 to 1024
		}),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "limitd_store_commit_errors_total",
			Help: "SQLite commits that failed; their acquires and renewals were answered 503 store_unavailable, their releases are retried.",
		}),
	}
	reg.MustRegister(
		m.acquires, m.releases, m.expirations, m.acquireWait, m.leaseHold,
		m.httpRequests, m.httpDuration, m.httpAcquireDuration,
		m.commitDuration, m.commitBatch, m.commitErrors,
		newStateCollector(mgr),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		// A collector that fails should not hide every other metric.
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      reg,
	})
	return m
}

// Handler serves the registry's metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler { return m.handler }
