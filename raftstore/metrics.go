package raftstore

import (
	"github.com/prometheus/client_golang/prometheus"
)

// roundMetrics are the distributions a worker round records. The counters
// live in Stats (atomics tests read directly); Collector exports both.
type roundMetrics struct {
	syncSeconds    prometheus.Histogram
	persistEntries prometheus.Histogram
	applyEntries   prometheus.Histogram
	readyPeers     prometheus.Histogram
}

func newRoundMetrics() roundMetrics {
	sizes := prometheus.ExponentialBuckets(1, 2, 14) // 1 .. 8192
	return roundMetrics{
		syncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "basalt_raftstore_sync_seconds", Help: "How long a round's write batch took to commit (fsync when a Ready asked for one).",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16), // 50 µs .. 1.6 s
		}),
		persistEntries: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "basalt_raftstore_round_persisted_entries", Help: "Raft log entries one worker round persisted in one batch.", Buckets: sizes,
		}),
		applyEntries: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "basalt_raftstore_round_applied_entries", Help: "Committed entries one worker round applied in one batch.", Buckets: sizes,
		}),
		readyPeers: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "basalt_raftstore_round_ready_regions", Help: "Regions with a Ready in one worker round.", Buckets: sizes,
		}),
	}
}

// Collector exports a store's engine metrics: the Stats counters, the round
// distributions, and the regions it holds, leads, and lets hibernate, with
// their apply lag. Register one per Store.
type Collector struct {
	s        *Store
	counters []statCounter
	regions  *prometheus.Desc
	applyLag *prometheus.Desc
}

type statCounter struct {
	desc *prometheus.Desc
	v    func(*Stats) uint64
}

// NewCollector returns the store's collector.
func NewCollector(s *Store) *Collector {
	c := &Collector{s: s,
		regions: prometheus.NewDesc("basalt_raftstore_regions", "Replicas on this store, by role (leader, follower, hibernating, uninitialized).",
			[]string{"role"}, nil),
		applyLag: prometheus.NewDesc("basalt_raftstore_apply_lag_entries", "Committed but not yet applied entries, summed over the store's replicas.",
			nil, nil),
	}
	add := func(name, help string, v func(*Stats) uint64) {
		c.counters = append(c.counters, statCounter{prometheus.NewDesc("basalt_raftstore_"+name+"_total", help, nil, nil), v})
	}
	add("rounds", "Worker rounds.", func(s *Stats) uint64 { return s.Rounds.Load() })
	add("syncs", "Write batches committed with fsync.", func(s *Stats) uint64 { return s.Syncs.Load() })
	add("proposals", "Commands proposed to raft.", func(s *Stats) uint64 { return s.Proposals.Load() })
	add("applied", "Commands applied.", func(s *Stats) uint64 { return s.Applied.Load() })
	add("messages_sent", "Raft messages sent.", func(s *Stats) uint64 { return s.MsgsSent.Load() })
	add("messages_received", "Raft messages received.", func(s *Stats) uint64 { return s.MsgsReceived.Load() })
	add("messages_dropped", "Raft messages dropped (unreachable peer, full queue).", func(s *Stats) uint64 { return s.MsgsDropped.Load() })
	add("read_indexes", "Reads confirmed by a ReadIndex round.", func(s *Stats) uint64 { return s.ReadIndexes.Load() })
	add("lease_reads", "Reads served under the leader's lease.", func(s *Stats) uint64 { return s.LeaseReads.Load() })
	add("snapshots_generated", "Snapshots generated.", func(s *Stats) uint64 { return s.SnapshotsGenerated.Load() })
	add("snapshots_sent", "Snapshots sent.", func(s *Stats) uint64 { return s.SnapshotsSent.Load() })
	add("snapshot_send_failures", "Snapshots that failed to send.", func(s *Stats) uint64 { return s.SnapshotSendFailures.Load() })
	add("snapshots_received", "Snapshots received.", func(s *Stats) uint64 { return s.SnapshotsReceived.Load() })
	add("snapshots_applied", "Snapshots applied.", func(s *Stats) uint64 { return s.SnapshotsApplied.Load() })
	add("hibernations", "Times a region went to sleep.", func(s *Stats) uint64 { return s.Hibernations.Load() })
	add("wakes", "Times a region woke.", func(s *Stats) uint64 { return s.Wakes.Load() })
	add("splits", "Splits applied.", func(s *Stats) uint64 { return s.Splits.Load() })
	add("merges_committed", "Merges committed.", func(s *Stats) uint64 { return s.MergesCommitted.Load() })
	add("merges_rolled_back", "Merges rolled back.", func(s *Stats) uint64 { return s.MergesRolledBack.Load() })
	add("log_truncations", "Raft log truncations.", func(s *Stats) uint64 { return s.Truncations.Load() })
	return c
}

func (c *Collector) histograms() []prometheus.Histogram {
	m := &c.s.metrics
	return []prometheus.Histogram{m.syncSeconds, m.persistEntries, m.applyEntries, m.readyPeers}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, sc := range c.counters {
		ch <- sc.desc
	}
	ch <- c.regions
	ch <- c.applyLag
	for _, h := range c.histograms() {
		h.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, sc := range c.counters {
		ch <- prometheus.MustNewConstMetric(sc.desc, prometheus.CounterValue, float64(sc.v(&c.s.stats)))
	}
	var leaders, followers, hibernating, uninit float64
	var lag uint64
	for _, st := range c.s.Regions() {
		if st == nil {
			continue
		}
		switch {
		case !st.Initialized:
			uninit++
		case st.IsLeader():
			leaders++
		default:
			followers++
		}
		if st.Hibernating {
			hibernating++
		}
		if st.Commit > st.Applied {
			lag += st.Commit - st.Applied
		}
	}
	ch <- prometheus.MustNewConstMetric(c.regions, prometheus.GaugeValue, leaders, "leader")
	ch <- prometheus.MustNewConstMetric(c.regions, prometheus.GaugeValue, followers, "follower")
	ch <- prometheus.MustNewConstMetric(c.regions, prometheus.GaugeValue, hibernating, "hibernating")
	ch <- prometheus.MustNewConstMetric(c.regions, prometheus.GaugeValue, uninit, "uninitialized")
	ch <- prometheus.MustNewConstMetric(c.applyLag, prometheus.GaugeValue, float64(lag))
	for _, h := range c.histograms() {
		h.Collect(ch)
	}
}
