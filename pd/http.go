package pd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/basaltdb/basalt/internal/status"
	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/region"
)

// The HTTP JSON API, on the client address, in the shape of TiKV's PD:
//
//	GET    /pd/api/v1/health                   every member's health
//	GET    /pd/api/v1/members                  members and the leader
//	GET    /pd/api/v1/stores                   stores with state and counts
//	POST   /pd/api/v1/store/{id}/state?state=Up|Offline|Tombstone
//	GET    /pd/api/v1/regions                  every region
//	GET    /pd/api/v1/regions/key/{key}        the region holding key
//	GET    /pd/api/v1/operators                running and recent operators
//	POST   /pd/api/v1/operators                add one (see addOperatorRequest)
//	DELETE /pd/api/v1/operators/{region-id}    cancel one
//	GET    /pd/api/v1/schedulers               running schedulers
//	POST   /pd/api/v1/schedulers               {"name": "evict-leader-4"}
//	DELETE /pd/api/v1/schedulers/{name}
//	GET    /pd/api/v1/config                   the scheduling configuration
//	POST   /pd/api/v1/config                   change fields of it (JSON object)
//	GET    /pd/api/v1/tso/stats                TSO requests and timestamps this member served
//	GET    /metrics                            Prometheus metrics (any member)
//	GET    /debug/pprof/                       Go's profiler, with Config.EnablePprof
//
// Followers redirect (307) leader-only calls to the leader.
func (s *Server) httpHandler(metrics prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	status.Register(mux, metrics, s.cfg.EnablePprof)
	mux.HandleFunc("GET /pd/api/v1/health", s.httpHealth)
	mux.HandleFunc("GET /pd/api/v1/tso/stats", s.httpTSOStats)
	mux.HandleFunc("GET /pd/api/v1/members", s.httpMembers)
	mux.HandleFunc("GET /pd/api/v1/stores", s.leaderOnly(s.httpStores))
	mux.HandleFunc("POST /pd/api/v1/store/{id}/state", s.leaderOnly(s.httpStoreState))
	mux.HandleFunc("GET /pd/api/v1/regions", s.leaderOnly(s.httpRegions))
	mux.HandleFunc("GET /pd/api/v1/regions/key/{key}", s.leaderOnly(s.httpRegionByKey))
	mux.HandleFunc("GET /pd/api/v1/operators", s.leaderOnly(s.httpOperators))
	mux.HandleFunc("POST /pd/api/v1/operators", s.leaderOnly(s.httpAddOperator))
	mux.HandleFunc("DELETE /pd/api/v1/operators/{region}", s.leaderOnly(s.httpCancelOperator))
	mux.HandleFunc("GET /pd/api/v1/schedulers", s.leaderOnly(s.httpSchedulers))
	mux.HandleFunc("POST /pd/api/v1/schedulers", s.leaderOnly(s.httpAddScheduler))
	mux.HandleFunc("DELETE /pd/api/v1/schedulers/{name}", s.leaderOnly(s.httpRemoveScheduler))
	mux.HandleFunc("GET /pd/api/v1/config", s.leaderOnly(s.httpConfig))
	mux.HandleFunc("POST /pd/api/v1/config", s.leaderOnly(s.httpSetConfig))
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func httpError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func (s *Server) leaderOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.IsLeader() {
			h(w, r)
			return
		}
		if l := s.leaderMember(); l != nil && l.GetMemberId() != s.memberID && l.GetClientAddr() != "" {
			u := *r.URL
			u.Scheme, u.Host = "http", l.GetClientAddr()
			http.Redirect(w, r, u.String(), http.StatusTemporaryRedirect)
			return
		}
		httpError(w, http.StatusServiceUnavailable, errors.New("no PD leader yet; retry"))
	}
}

type memberHealth struct {
	Name       string `json:"name"`
	MemberID   uint64 `json:"member_id"`
	ClientAddr string `json:"client_addr"`
	Health     bool   `json:"health"`
}

func (s *Server) httpHealth(w http.ResponseWriter, r *http.Request) {
	st := s.store.RegionStatus(pdRegionID)
	var out []memberHealth
	for _, m := range s.allMembers() {
		h := memberHealth{Name: m.GetName(), MemberID: m.GetMemberId(), ClientAddr: m.GetClientAddr()}
		switch {
		case m.GetMemberId() == s.memberID:
			h.Health = st != nil && st.Leader != nil
		case st != nil && st.Leader.GetStoreId() == m.GetMemberId():
			h.Health = true
		default:
			h.Health = probeHealth(r.Context(), m.GetClientAddr())
		}
		out = append(out, h)
	}
	writeJSON(w, http.StatusOK, out)
}

// probeHealth asks another member whether it knows a leader.
func probeHealth(ctx context.Context, addr string) bool {
	if addr == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/pd/api/v1/members", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var m membersJSON
	return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&m) == nil && m.Leader != nil
}

type memberJSON struct {
	Name       string `json:"name"`
	MemberID   uint64 `json:"member_id"`
	ClientAddr string `json:"client_addr"`
	PeerAddr   string `json:"peer_addr"`
}

type membersJSON struct {
	Members []memberJSON `json:"members"`
	Leader  *memberJSON  `json:"leader"`
}

func (s *Server) httpMembers(w http.ResponseWriter, r *http.Request) {
	var out membersJSON
	for _, m := range s.allMembers() {
		out.Members = append(out.Members, memberJSON{m.GetName(), m.GetMemberId(), m.GetClientAddr(), m.GetPeerAddr()})
	}
	if l := s.leaderMember(); l != nil {
		out.Leader = &memberJSON{l.GetName(), l.GetMemberId(), l.GetClientAddr(), l.GetPeerAddr()}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) httpStores(w http.ResponseWriter, r *http.Request) {
	st := s.cluster.storeStatuses()
	writeJSON(w, http.StatusOK, map[string]any{"count": len(st), "stores": st})
}

func (s *Server) httpStoreState(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		httpError(w, http.StatusBadRequest, fmt.Errorf("store ID: %w", err))
		return
	}
	v, ok := metapb.StoreState_value[r.URL.Query().Get("state")]
	if !ok {
		httpError(w, http.StatusBadRequest, errors.New("state must be Up, Offline or Tombstone"))
		return
	}
	if err := s.cluster.setStoreState(r.Context(), id, metapb.StoreState(v)); err != nil {
		httpError(w, http.StatusBadRequest, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"result": "ok"})
}

type regionJSON struct {
	ID           uint64         `json:"id"`
	StartKey     string         `json:"start_key"`
	EndKey       string         `json:"end_key"`
	Epoch        map[string]any `json:"epoch"`
	Peers        []*metapb.Peer `json:"peers"`
	Leader       *metapb.Peer   `json:"leader,omitempty"`
	PendingPeers []*metapb.Peer `json:"pending_peers,omitempty"`
	DownPeers    []uint64       `json:"down_peers,omitempty"`
	ApproxSize   uint64         `json:"approximate_size"`
	ApproxKeys   uint64         `json:"approximate_keys"`
	WrittenBytes uint64         `json:"written_bytes"`
	WrittenKeys  uint64         `json:"written_keys"`
	ReadBytes    uint64         `json:"read_bytes"`
	ReadKeys     uint64         `json:"read_keys"`
	// Interval: the seconds the written and read counts cover.
	Interval uint64 `json:"interval"`
}

func toRegionJSON(ri *regionInfo) regionJSON {
	rj := regionJSON{ID: ri.meta.GetId(), StartKey: fmt.Sprintf("%q", ri.meta.GetStartKey()), EndKey: fmt.Sprintf("%q", ri.meta.GetEndKey()),
		Epoch: map[string]any{"conf_ver": ri.meta.GetRegionEpoch().GetConfVer(), "version": ri.meta.GetRegionEpoch().GetVersion()},
		Peers: ri.meta.GetPeers(), Leader: ri.leader, PendingPeers: ri.pendingPeers,
		ApproxSize: ri.approxSize, ApproxKeys: ri.approxKeys, WrittenBytes: ri.bytesWritten,
		WrittenKeys: ri.keysWritten, ReadBytes: ri.bytesRead, ReadKeys: ri.keysRead, Interval: ri.interval}
	for _, d := range ri.downPeers {
		rj.DownPeers = append(rj.DownPeers, d.GetPeer().GetId())
	}
	return rj
}

func (s *Server) httpRegions(w http.ResponseWriter, r *http.Request) {
	s.cluster.mu.RLock()
	out := make([]regionJSON, 0, len(s.cluster.regions))
	s.cluster.tree.Ascend(nil, func(m *metapb.Region) bool {
		out = append(out, toRegionJSON(s.cluster.regions[m.GetId()]))
		return true
	})
	s.cluster.mu.RUnlock()
	writeJSON(w, http.StatusOK, map[string]any{"count": len(out), "regions": out})
}

func (s *Server) httpRegionByKey(w http.ResponseWriter, r *http.Request) {
	key, err := url.PathUnescape(r.PathValue("key"))
	if err != nil {
		httpError(w, http.StatusBadRequest, err)
		return
	}
	ri := s.cluster.regionByKey([]byte(key))
	if ri == nil {
		httpError(w, http.StatusNotFound, fmt.Errorf("no region holds key %q", key))
		return
	}
	s.cluster.mu.RLock()
	out := toRegionJSON(ri)
	s.cluster.mu.RUnlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) httpOperators(w http.ResponseWriter, r *http.Request) {
	running, recent := s.cluster.ops.list()
	writeJSON(w, http.StatusOK, map[string]any{"running": running, "recent": recent})
}

// addOperatorRequest is the body of POST /operators:
//
//	{"name": "transfer-leader", "region_id": 2, "to_store_id": 3}
//	{"name": "add-peer",        "region_id": 2, "store_id": 4}
//	{"name": "remove-peer",     "region_id": 2, "store_id": 1}
//	{"name": "split-region",    "region_id": 2, "keys": ["m"]}
//	{"name": "merge-region",    "source_region_id": 2, "target_region_id": 3}
type addOperatorRequest struct {
	Name           string   `json:"name"`
	RegionID       uint64   `json:"region_id"`
	StoreID        uint64   `json:"store_id"`
	ToStoreID      uint64   `json:"to_store_id"`
	Keys           []string `json:"keys"`
	SourceRegionID uint64   `json:"source_region_id"`
	TargetRegionID uint64   `json:"target_region_id"`
}

func (s *Server) httpAddOperator(w http.ResponseWriter, r *http.Request) {
	var req addOperatorRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		httpError(w, http.StatusBadRequest, fmt.Errorf("body: %w", err))
		return
	}
	op, err := s.buildAdminOperator(req)
	if err != nil {
		httpError(w, http.StatusBadRequest, err)
		return
	}
	if err := s.cluster.ops.add(op); err != nil {
		httpError(w, http.StatusConflict, err)
		return
	}
	writeJSON(w, http.StatusOK, op)
}

func (s *Server) buildAdminOperator(req addOperatorRequest) (*operator, error) {
	regionID := req.RegionID
	if req.Name == "merge-region" {
		regionID = req.SourceRegionID
	}
	ri := s.cluster.regionByID(regionID)
	if ri == nil {
		return nil, fmt.Errorf("region %d not found", regionID)
	}
	s.cluster.mu.RLock()
	meta := ri.meta
	known := func(id uint64) bool { si := s.cluster.stores[id]; return si != nil && si.meta.GetAddress() != "" }
	s.cluster.mu.RUnlock()
	switch req.Name {
	case "transfer-leader":
		if p := region.FindPeer(meta, req.ToStoreID); p == nil || p.GetRole() != metapb.PeerRole_Voter {
			return nil, fmt.Errorf("store %d has no voter of region %d", req.ToStoreID, regionID)
		}
		return newOperator(regionID, "admin transfer leader", opAdmin, transferLeader{toStore: req.ToStoreID}), nil
	case "add-peer":
		if !known(req.StoreID) {
			return nil, fmt.Errorf("store %d is not registered", req.StoreID)
		}
		if region.FindPeer(meta, req.StoreID) != nil {
			return nil, fmt.Errorf("store %d already has a replica of region %d", req.StoreID, regionID)
		}
		np, err := s.cluster.newPeer(req.StoreID)
		if err != nil {
			return nil, err
		}
		return newOperator(regionID, "admin add peer", opAdmin, addLearner{peer: np},
			promoteLearner{peer: &metapb.Peer{Id: np.GetId(), StoreId: req.StoreID}}), nil
	case "remove-peer":
		p := region.FindPeer(meta, req.StoreID)
		if p == nil {
			return nil, fmt.Errorf("store %d has no replica of region %d", req.StoreID, regionID)
		}
		var steps []opStep
		if ri.leader.GetStoreId() == req.StoreID {
			var to uint64
			for _, o := range meta.GetPeers() {
				if o.GetStoreId() != req.StoreID && o.GetRole() == metapb.PeerRole_Voter {
					to = o.GetStoreId()
					break
				}
			}
			if to == 0 {
				return nil, fmt.Errorf("region %d has no other voter to lead it", regionID)
			}
			steps = append(steps, transferLeader{toStore: to})
		}
		steps = append(steps, removePeer{peer: p})
		return newOperator(regionID, "admin remove peer", opAdmin, steps...), nil
	case "split-region":
		var keys [][]byte
		for _, k := range req.Keys {
			if !region.ContainsKey(meta, []byte(k)) || string(meta.GetStartKey()) == k {
				return nil, fmt.Errorf("split key %q is not strictly inside region %d", k, regionID)
			}
			keys = append(keys, []byte(k))
		}
		return newOperator(regionID, "admin split", opAdmin, splitRegion{fromVersion: meta.GetRegionEpoch().GetVersion(), keys: keys}), nil
	case "merge-region":
		t := s.cluster.regionByID(req.TargetRegionID)
		if t == nil {
			return nil, fmt.Errorf("target region %d not found", req.TargetRegionID)
		}
		if string(meta.GetEndKey()) != string(t.meta.GetStartKey()) && string(t.meta.GetEndKey()) != string(meta.GetStartKey()) {
			return nil, fmt.Errorf("regions %d and %d are not adjacent", regionID, req.TargetRegionID)
		}
		s.cluster.mu.RLock()
		moves, ok := s.cluster.alignmentLocked(ri, t.meta, time.Now())
		s.cluster.mu.RUnlock()
		if !ok {
			return nil, fmt.Errorf("regions %d and %d cannot be put on the same stores (learners, a joint configuration, different replica counts, or a target store that is not up)", regionID, req.TargetRegionID)
		}
		steps, err := s.cluster.moveSteps(ri, moves)
		if err != nil {
			return nil, err
		}
		return newOperator(regionID, "admin merge", opAdmin, append(steps, mergeRegion{target: t.meta})...), nil
	}
	return nil, fmt.Errorf("unknown operator %q (transfer-leader, add-peer, remove-peer, split-region, merge-region)", req.Name)
}

func (s *Server) httpCancelOperator(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("region"), 10, 64)
	if err != nil {
		httpError(w, http.StatusBadRequest, fmt.Errorf("region ID: %w", err))
		return
	}
	if !s.cluster.ops.cancel(id) {
		httpError(w, http.StatusNotFound, fmt.Errorf("region %d has no operator", id))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"result": "canceled"})
}

func (s *Server) httpSchedulers(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.cluster.config().Schedulers)
}

func (s *Server) httpAddScheduler(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Name string `json:"name"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		httpError(w, http.StatusBadRequest, fmt.Errorf("body: %w", err))
		return
	}
	if _, err := parseSchedulerName(body.Name); err != nil {
		httpError(w, http.StatusBadRequest, err)
		return
	}
	cfg := s.cluster.config()
	if slices.Contains(cfg.Schedulers, body.Name) {
		httpError(w, http.StatusConflict, fmt.Errorf("scheduler %q is already running", body.Name))
		return
	}
	cfg.Schedulers = append(slices.Clone(cfg.Schedulers), body.Name)
	if err := s.cluster.setConfig(r.Context(), cfg); err != nil {
		httpError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, cfg.Schedulers)
}

func (s *Server) httpRemoveScheduler(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	cfg := s.cluster.config()
	i := slices.Index(cfg.Schedulers, name)
	if i < 0 {
		httpError(w, http.StatusNotFound, fmt.Errorf("scheduler %q is not running", name))
		return
	}
	cfg.Schedulers = slices.Delete(slices.Clone(cfg.Schedulers), i, i+1)
	if err := s.cluster.setConfig(r.Context(), cfg); err != nil {
		httpError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, cfg.Schedulers)
}

func (s *Server) httpConfig(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.cluster.config())
}

// httpSetConfig applies the fields present in the body over the current
// configuration.
func (s *Server) httpSetConfig(w http.ResponseWriter, r *http.Request) {
	cfg := s.cluster.config()
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		httpError(w, http.StatusBadRequest, fmt.Errorf("config: %w", err))
		return
	}
	if err := s.cluster.setConfig(r.Context(), cfg); err != nil {
		code := http.StatusInternalServerError
		if !errors.Is(err, errNotLeader) && !strings.Contains(err.Error(), "not leader") {
			code = http.StatusBadRequest
		}
		httpError(w, code, err)
		return
	}
	writeJSON(w, http.StatusOK, s.cluster.config())
}

// tsoStatsJSON: what this member's TSO served since it started. Requests
// over timestamps shows how well callers batch.
type tsoStatsJSON struct {
	Requests   int64 `json:"requests"`
	Timestamps int64 `json:"timestamps"`
}

func (s *Server) httpTSOStats(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, tsoStatsJSON{Requests: s.tso.requests.Load(), Timestamps: s.tso.timestamps.Load()})
}
