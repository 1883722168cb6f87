package metrics

import "github.com/prometheus/client_golang/prometheus"

// stateCollector exports each limit's current state from one snapshot of the
// manager per scrape. The values are exact at the scrape's instant, and a
// deleted limit's series vanish with it: nothing is kept between scrapes.
type stateCollector struct {
	mgr      StatsSource
	capacity *prometheus.Desc
	inUse    *prometheus.Desc
	waiters  *prometheus.Desc
	leases   *prometheus.Desc
	oldest   *prometheus.Desc
}

func newStateCollector(mgr StatsSource) *stateCollector {
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, []string{"limit"}, nil)
	}
	return &stateCollector{
		mgr:      mgr,
		capacity: desc("limitd_limit_capacity", "Slots the limit allows to be held at once (0: paused)."),
		inUse:    desc("limitd_limit_slots_in_use", "Slots held by live leases of the limit."),
		waiters:  desc("limitd_limit_waiters", "Acquire requests queued for the limit."),
		leases:   desc("limitd_limit_leases", "Live leases of the limit."),
		oldest:   desc("limitd_limit_oldest_waiter_seconds", "How long the head of the limit's queue has waited (0: nobody waits). It restarts with each long-poll, so it is at most the acquires' wait_seconds."),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.capacity, c.inUse, c.waiters, c.leases, c.oldest} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.mgr.Stats() {
		ch <- prometheus.MustNewConstMetric(c.capacity, prometheus.GaugeValue, float64(s.Capacity), s.Name)
		ch <- prometheus.MustNewConstMetric(c.inUse, prometheus.GaugeValue, float64(s.InUse), s.Name)
		ch <- prometheus.MustNewConstMetric(c.waiters, prometheus.GaugeValue, float64(s.Waiters), s.Name)
		ch <- prometheus.MustNewConstMetric(c.leases, prometheus.GaugeValue, float64(s.Leases), s.Name)
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, s.OldestWait.Seconds(), s.Name)
	}
}
