package pd

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/basaltdb/basalt/internal/status"
	"github.com/basaltdb/basalt/raftstore"
)

// newRegistry builds the member's metrics registry: the process, the gRPC
// servers, its own raft group's engine, and the cluster gauges below (which
// only the leader knows; followers report them empty).
func (s *Server) newRegistry() (*prometheus.Registry, *status.GRPCMetrics) {
	return status.NewServerRegistry(raftstore.NewCollector(s.store), &pdCollector{s: s})
}

var (
	pdLeaderDesc     = prometheus.NewDesc("basalt_pd_is_leader", "1 while this member is the serving leader.", nil, nil)
	pdTSORequests    = prometheus.NewDesc("basalt_pd_tso_requests_total", "TSO requests this member served.", nil, nil)
	pdTSOTimestamps  = prometheus.NewDesc("basalt_pd_tso_timestamps_total", "Timestamps this member handed out.", nil, nil)
	pdRegionsDesc    = prometheus.NewDesc("basalt_pd_regions", "Regions the leader knows.", nil, nil)
	pdStoresDesc     = prometheus.NewDesc("basalt_pd_stores", "Stores by state.", []string{"state"}, nil)
	pdStoreRegions   = prometheus.NewDesc("basalt_pd_store_regions", "Replicas per store, from its heartbeats.", []string{"store", "role"}, nil)
	pdOperatorsDesc  = prometheus.NewDesc("basalt_pd_operators_running", "Operators in flight, by kind.", []string{"kind"}, nil)
	pdHeartbeatsDesc = prometheus.NewDesc("basalt_pd_region_heartbeats_total", "Region heartbeats the leader handled.", nil, nil)
)

type pdCollector struct{ s *Server }

func (c *pdCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{pdLeaderDesc, pdTSORequests, pdTSOTimestamps, pdRegionsDesc, pdStoresDesc, pdStoreRegions, pdOperatorsDesc, pdHeartbeatsDesc} {
		ch <- d
	}
}

func (c *pdCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	leader := 0.0
	if s.IsLeader() {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(pdLeaderDesc, prometheus.GaugeValue, leader)
	ch <- prometheus.MustNewConstMetric(pdTSORequests, prometheus.CounterValue, float64(s.tso.requests.Load()))
	ch <- prometheus.MustNewConstMetric(pdTSOTimestamps, prometheus.CounterValue, float64(s.tso.timestamps.Load()))
	ch <- prometheus.MustNewConstMetric(pdHeartbeatsDesc, prometheus.CounterValue, float64(s.cluster.heartbeatCount()))
	if !s.IsLeader() {
		return
	}
	ch <- prometheus.MustNewConstMetric(pdRegionsDesc, prometheus.GaugeValue, float64(s.cluster.regionCount()))
	byState := map[StoreState]int{StoreUp: 0, StoreDisconnected: 0, StoreDown: 0, StoreOffline: 0, StoreTombstone: 0}
	for _, st := range s.cluster.storeStatuses() {
		byState[st.State]++
		id := strconv.FormatUint(st.Store.GetId(), 10)
		ch <- prometheus.MustNewConstMetric(pdStoreRegions, prometheus.GaugeValue, float64(st.RegionCount), id, "all")
		ch <- prometheus.MustNewConstMetric(pdStoreRegions, prometheus.GaugeValue, float64(st.LeaderCount), id, "leader")
	}
	for state, n := range byState {
		ch <- prometheus.MustNewConstMetric(pdStoresDesc, prometheus.GaugeValue, float64(n), string(state))
	}
	running, _ := s.cluster.ops.list()
	// Every kind is reported, 0 included, so a dashboard's series exist
	// before the first operator does.
	byKind := map[string]int{}
	for _, k := range []opKind{opLeader, opRegion, opReplica, opSplit, opMerge, opAdmin} {
		byKind[string(k)] = 0
	}
	for _, op := range running {
		byKind[string(op.Kind)]++
	}
	for kind, n := range byKind {
		ch <- prometheus.MustNewConstMetric(pdOperatorsDesc, prometheus.GaugeValue, float64(n), kind)
	}
}
