package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// The PD HTTP API's shapes, as far as ctl reads them.
type (
	pdMember struct {
		Name       string `json:"name"`
		ClientAddr string `json:"client_addr"`
	}
	pdMembers struct {
		Members []pdMember `json:"members"`
		Leader  *pdMember  `json:"leader"`
	}
	pdStore struct {
		Store struct {
			ID      uint64 `json:"id"`
			Address string `json:"address"`
		} `json:"store"`
		State       string `json:"state"`
		RegionCount int    `json:"region_count"`
		LeaderCount int    `json:"leader_count"`
	}
	pdPeer struct {
		ID      uint64 `json:"id"`
		StoreID uint64 `json:"store_id"`
		Role    int    `json:"role"`
	}
	pdRegion struct {
		ID        uint64   `json:"id"`
		StartKey  string   `json:"start_key"`
		EndKey    string   `json:"end_key"`
		Peers     []pdPeer `json:"peers"`
		Leader    *pdPeer  `json:"leader"`
		DownPeers []uint64 `json:"down_peers"`
	}
)

// pdURL is the first PD address's API root.
func (e *ctlEnv) pdURL(path string) string {
	return "http://" + strings.Split(e.pdAddr, ",")[0] + path
}

// clusterStatus is `basalt ctl status`: one screen about the cluster.
type clusterStatus struct {
	PDMembers          int      `json:"pd_members"`
	PDLeader           string   `json:"pd_leader"`
	Stores             []string `json:"stores"`
	StoresUp           int      `json:"stores_up"`
	StoresNotUp        int      `json:"stores_not_up"`
	Regions            int      `json:"regions"`
	RegionsNoLeader    []uint64 `json:"regions_without_leader"`
	RegionsUnderRepl   []uint64 `json:"regions_under_replicated"`
	OperatorsInFlight  int      `json:"operators_in_flight"`
	MaxReplicasPerSpec int      `json:"max_replicas"`
}

func (e *ctlEnv) status() (*clusterStatus, error) {
	var members pdMembers
	if err := getJSON(e.pdURL("/pd/api/v1/members"), &members); err != nil {
		return nil, err
	}
	var stores struct{ Stores []pdStore }
	if err := getJSON(e.pdURL("/pd/api/v1/stores"), &stores); err != nil {
		return nil, err
	}
	var regions struct{ Regions []pdRegion }
	if err := getJSON(e.pdURL("/pd/api/v1/regions"), &regions); err != nil {
		return nil, err
	}
	var ops struct{ Running []json.RawMessage }
	if err := getJSON(e.pdURL("/pd/api/v1/operators"), &ops); err != nil {
		return nil, err
	}
	var cfg struct {
		MaxReplicas int `json:"max-replicas"`
	}
	if err := getJSON(e.pdURL("/pd/api/v1/config"), &cfg); err != nil {
		return nil, err
	}
	st := &clusterStatus{PDMembers: len(members.Members), Regions: len(regions.Regions), OperatorsInFlight: len(ops.Running),
		MaxReplicasPerSpec: cfg.MaxReplicas}
	if members.Leader != nil {
		st.PDLeader = members.Leader.Name + " at " + members.Leader.ClientAddr
	}
	for _, s := range stores.Stores {
		if s.State == "Up" {
			st.StoresUp++
		} else {
			st.StoresNotUp++
		}
		st.Stores = append(st.Stores, fmt.Sprintf("store %d %s %s regions %d leaders %d", s.Store.ID, s.Store.Address, s.State, s.RegionCount, s.LeaderCount))
	}
	for _, r := range regions.Regions {
		if r.Leader == nil {
			st.RegionsNoLeader = append(st.RegionsNoLeader, r.ID)
		}
		voters := 0
		for _, p := range r.Peers {
			if p.Role == 0 { // metapb.PeerRole_Voter
				voters++
			}
		}
		if voters-len(r.DownPeers) < cfg.MaxReplicas {
			st.RegionsUnderRepl = append(st.RegionsUnderRepl, r.ID)
		}
	}
	return st, nil
}

func printStatus(w io.Writer, st *clusterStatus) {
	leader := st.PDLeader
	if leader == "" {
		leader = "none"
	}
	fmt.Fprintf(w, "PD: %d members, leader %s\n", st.PDMembers, leader)
	fmt.Fprintf(w, "stores: %d up, %d not up\n", st.StoresUp, st.StoresNotUp)
	for _, s := range st.Stores {
		fmt.Fprintf(w, "  %s\n", s)
	}
	fmt.Fprintf(w, "regions: %d, %d without a leader, %d under-replicated (fewer than %d live voters)\n",
		st.Regions, len(st.RegionsNoLeader), len(st.RegionsUnderRepl), st.MaxReplicasPerSpec)
	if len(st.RegionsNoLeader) > 0 {
		fmt.Fprintf(w, "  without a leader: %v\n", st.RegionsNoLeader)
	}
	if len(st.RegionsUnderRepl) > 0 {
		fmt.Fprintf(w, "  under-replicated: %v\n", st.RegionsUnderRepl)
	}
	fmt.Fprintf(w, "operators in flight: %d\n", st.OperatorsInFlight)
}

func ctlStatusCmd(env *ctlEnv) *cobra.Command {
	return &cobra.Command{
		Use: "status", Short: "One screen about the cluster: PD, stores, regions, operators", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := env.status()
			if err != nil {
				return err
			}
			if env.output == "json" {
				return printJSON(cmd.OutOrStdout(), st)
			}
			printStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
}

// ctlRegionShowCmd is `region show KEY`: the region holding KEY.
func ctlRegionShowCmd(env *ctlEnv) *cobra.Command {
	return &cobra.Command{
		Use: "show KEY", Short: "Show the region holding KEY", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r pdRegion
			if err := getJSON(env.pdURL("/pd/api/v1/regions/key/"+url.PathEscape(args[0])), &r); err != nil {
				return err
			}
			if env.output == "json" {
				return printJSON(cmd.OutOrStdout(), r)
			}
			printRegion(cmd.OutOrStdout(), r)
			return nil
		},
	}
}

func printRegion(w io.Writer, r pdRegion) {
	leader := "none"
	if r.Leader != nil {
		leader = fmt.Sprintf("peer %d on store %d", r.Leader.ID, r.Leader.StoreID)
	}
	fmt.Fprintf(w, "region %d [%s, %s) leader %s\n", r.ID, r.StartKey, r.EndKey, leader)
	for _, p := range r.Peers {
		role := "voter"
		if p.Role != 0 {
			role = "learner"
		}
		fmt.Fprintf(w, "  peer %d on store %d (%s)\n", p.ID, p.StoreID, role)
	}
}

// ctlTransferLeaderCmd is `region transfer-leader ID STORE`: PD's
// transfer-leader operator, then a wait until the leader is there.
func ctlTransferLeaderCmd(env *ctlEnv) *cobra.Command {
	return &cobra.Command{
		Use: "transfer-leader REGION STORE", Short: "Move a region's leadership to its replica on STORE", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			regionID, err1 := strconv.ParseUint(args[0], 10, 64)
			storeID, err2 := strconv.ParseUint(args[1], 10, 64)
			if err1 != nil || err2 != nil || regionID == 0 || storeID == 0 {
				return fmt.Errorf("region and store IDs must be positive numbers, not %q and %q", args[0], args[1])
			}
			body := fmt.Sprintf(`{"name": "transfer-leader", "region_id": %d, "to_store_id": %d}`, regionID, storeID)
			ctx, cancel := context.WithTimeout(context.Background(), env.timeout)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, env.pdURL("/pd/api/v1/operators"), bytes.NewBufferString(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("PD refused the transfer: %s", strings.TrimSpace(string(msg)))
			}
			for {
				var regions struct{ Regions []pdRegion }
				if err := getJSON(env.pdURL("/pd/api/v1/regions"), &regions); err == nil {
					for _, r := range regions.Regions {
						if r.ID == regionID && r.Leader != nil && r.Leader.StoreID == storeID {
							fmt.Fprintf(cmd.OutOrStdout(), "region %d is led from store %d\n", regionID, storeID)
							return nil
						}
					}
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("region %d is not led from store %d after %v", regionID, storeID, env.timeout)
				case <-time.After(100 * time.Millisecond):
				}
			}
		},
	}
}
