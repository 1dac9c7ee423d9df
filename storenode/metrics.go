package storenode

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/basaltdb/basalt/internal/status"
	"github.com/basaltdb/basalt/raftstore"
)

// newRegistry builds the store's metrics registry: the process, the gRPC
// server, the engine, the PD client's TSO and this file's store gauges.
func (s *Server) newRegistry() (*prometheus.Registry, *status.GRPCMetrics) {
	return status.NewServerRegistry(append(s.pd.Collectors(), raftstore.NewCollector(s.store), &storeCollector{s: s})...)
}

var (
	watchersDesc = prometheus.NewDesc("basalt_store_watchers",
		"Watchers registered on this store's regions (a cross-region watch has one per region).", nil, nil)
	watchLagDesc = prometheus.NewDesc("basalt_store_watch_lag_seconds",
		"The largest gap between a region's resolved revision and what one of its watchers was last sent, in timestamp time.", nil, nil)
	ownedLeasesDesc = prometheus.NewDesc("basalt_store_owned_leases",
		"Leases whose owning region this store leads.", nil, nil)
	diskDesc = prometheus.NewDesc("basalt_store_disk_bytes",
		"Bytes pebble uses on disk.", nil, nil)
)

// storeCollector reports the store's watch, lease and disk gauges, computed
// at scrape time.
type storeCollector struct{ s *Server }

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- watchersDesc
	ch <- watchLagDesc
	ch <- ownedLeasesDesc
	ch <- diskDesc
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	watchers, maxLagMs := 0, int64(0)
	if s.watches != nil {
		for _, rid := range s.watches.watchedRegions() {
			resolved := s.watches.resolved(rid)
			for _, w := range s.watches.watchers(rid) {
				watchers++
				w.mu.Lock()
				sent := w.lastSent
				w.mu.Unlock()
				if lag := (resolved - sent) >> tsoLogicalBits; sent > 0 && lag > maxLagMs {
					maxLagMs = lag
				}
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(watchersDesc, prometheus.GaugeValue, float64(watchers))
	ch <- prometheus.MustNewConstMetric(watchLagDesc, prometheus.GaugeValue, float64(maxLagMs)/1000)
	owned := 0
	if s.leases != nil {
		owned = s.leases.ownedCount()
	}
	ch <- prometheus.MustNewConstMetric(ownedLeasesDesc, prometheus.GaugeValue, float64(owned))
	ch <- prometheus.MustNewConstMetric(diskDesc, prometheus.GaugeValue, float64(s.eng.DB.Metrics().DiskSpaceUsage()))
}
