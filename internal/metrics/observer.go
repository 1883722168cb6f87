package metrics

import (
	"time"

	"github.com/limitd/limitd/internal/slots"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics is a slots.Observer. The manager calls it under its lock, so each
// method only touches in-memory counters.
var _ slots.Observer = (*Metrics)(nil)

const resultGranted = "granted"

// Granted counts a grant and how long its request waited.
func (m *Metrics) Granted(l slots.LeaseRecord, waited time.Duration) {
	m.acquires.WithLabelValues(l.Limit, resultGranted).Inc()
	m.acquireWait.WithLabelValues(l.Limit).Observe(waited.Seconds())
}

// NotGranted counts an acquire that ended without a lease.
func (m *Metrics) NotGranted(limit string, result slots.AcquireResult) {
	m.acquires.WithLabelValues(limit, string(result)).Inc()
}

// Renewed is not counted: renewals show in limitd_http_requests_total.
func (m *Metrics) Renewed(slots.LeaseRecord) {}

// Ended counts a release or an expiry and how long the lease was held.
func (m *Metrics) Ended(l slots.LeaseRecord, held time.Duration, expired bool) {
	end := "released"
	if expired {
		end = "expired"
		m.expirations.WithLabelValues(l.Limit).Inc()
	} else {
		m.releases.WithLabelValues(l.Limit).Inc()
	}
	m.leaseHold.WithLabelValues(l.Limit, end).Observe(held.Seconds())
}

// LimitChanged creates a new limit's series at zero, so that its first
// event shows as an increase rather than as a series appearing at 1 (which
// rate and increase cannot see).
func (m *Metrics) LimitChanged(before *slots.LimitRecord, after slots.LimitRecord) {
	if before != nil {
		return
	}
	m.InitLimit(after.Name)
}

// InitLimit creates a limit's counter and histogram series at zero. The
// manager does not report restored limits as changed; for those the daemon
// calls InitCounters instead.
func (m *Metrics) InitLimit(name string) {
	m.InitCounters(name)
	m.acquireWait.WithLabelValues(name)
	m.leaseHold.WithLabelValues(name, "released")
	m.leaseHold.WithLabelValues(name, "expired")
}

// InitCounters creates only a limit's counter series at zero. Its
// histograms appear with its first event: a histogram series costs some
// kilobytes, and pre-creating them for 100,000 restored limits took 2 s
// of start-up and 700 MiB.
func (m *Metrics) InitCounters(name string) {
	for _, r := range []string{resultGranted, string(slots.ResultTimeout), string(slots.ResultCanceled), string(slots.ResultRejected)} {
		m.acquires.WithLabelValues(name, r)
	}
	m.releases.WithLabelValues(name)
	m.expirations.WithLabelValues(name)
}

// LimitDeleted removes every counter and histogram series of the limit. The
// manager reports no event of a limit after its deletion, so they stay
// removed (until a limit of that name is created again).
func (m *Metrics) LimitDeleted(l slots.LimitRecord) {
	match := prometheus.Labels{"limit": l.Name}
	for _, v := range m.perLimit() {
		v.DeletePartialMatch(match)
	}
}
