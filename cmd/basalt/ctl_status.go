package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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
		PeerAddr   string `json:"peer_addr"`
		MemberID   uint64 `json:"member_id"`
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
		ID       uint64 `json:"id"`
		StartKey string `json:"start_key"`
		EndKey   string `json:"end_key"`
		Epoch    struct {
			ConfVer uint64 `json:"conf_ver"`
			Version uint64 `json:"version"`
		} `json:"epoch"`
		Peers     []pdPeer `json:"peers"`
		Leader    *pdPeer  `json:"leader"`
		DownPeers []uint64 `json:"down_peers"`
	}
)

// pdAddrs are the --pd addresses, in the order given.
func (e *ctlEnv) pdAddrs() []string {
	var out []string
	for _, a := range strings.Split(e.pdAddr, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// pdGet reads path of PD's HTTP API into v from the first --pd member that
// answers it: a member that is down, or has no leader to send the request
// to, does not fail the command while another can serve it. Each member
// gets at most 2 s of the --timeout.
func (e *ctlEnv) pdGet(path string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
	defer cancel()
	return e.firstPDAnswer(func(addr string) error { return getJSONContext(ctx, "http://"+addr+path, v) })
}

// pdPost sends body to path of PD's HTTP API, trying the --pd members in
// order, each for at most 2 s, until one answers with anything but a
// server error (a member without a leader answers 503): that answer is
// final. The operators PD's API takes are idempotent, so a request a
// member took before failing may be sent again.
func (e *ctlEnv) pdPost(ctx context.Context, path, body string) (code int, msg []byte, err error) {
	err = e.firstPDAnswer(func(addr string) error {
		c, m, err := postJSON(ctx, "http://"+addr+path, body)
		switch {
		case err != nil:
			return err
		case c >= 500:
			return fmt.Errorf("%s: %d %s", addr, c, strings.TrimSpace(string(m)))
		}
		code, msg = c, m
		return nil
	})
	return code, msg, err
}

// firstPDAnswer calls try with each --pd member in order until one's
// answer is taken (try returns nil); the others' errors make the error.
func (e *ctlEnv) firstPDAnswer(try func(addr string) error) error {
	var errs []string
	for _, a := range e.pdAddrs() {
		err := try(a)
		if err == nil {
			return nil
		}
		errs = append(errs, err.Error())
	}
	if len(errs) == 0 {
		return errors.New("--pd: no address given")
	}
	return fmt.Errorf("no PD member answered: %s", strings.Join(errs, "; "))
}

// postJSON is one POST of a JSON body, within ctx and at most 2 s.
func postJSON(ctx context.Context, url, body string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewBufferString(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	msg, err := io.ReadAll(resp.Body)
	return resp.StatusCode, msg, err
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
	if err := e.pdGet("/pd/api/v1/members", &members); err != nil {
		return nil, err
	}
	var stores struct{ Stores []pdStore }
	if err := e.pdGet("/pd/api/v1/stores", &stores); err != nil {
		return nil, err
	}
	var regions struct{ Regions []pdRegion }
	if err := e.pdGet("/pd/api/v1/regions", &regions); err != nil {
		return nil, err
	}
	var ops struct{ Running []json.RawMessage }
	if err := e.pdGet("/pd/api/v1/operators", &ops); err != nil {
		return nil, err
	}
	var cfg struct {
		MaxReplicas int `json:"max-replicas"`
	}
	if err := e.pdGet("/pd/api/v1/config", &cfg); err != nil {
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

// statusTable is the status summary as one two-column table.
func statusTable(st *clusterStatus) *table {
	leader := st.PDLeader
	if leader == "" {
		leader = "none"
	}
	t := newTable("ITEM", "VALUE")
	t.add("PD members", st.PDMembers)
	t.add("PD leader", leader)
	t.add("stores up", st.StoresUp)
	t.add("stores not up", st.StoresNotUp)
	for _, s := range st.Stores {
		t.add("", s)
	}
	t.add("regions", st.Regions)
	t.add("regions without a leader", fmt.Sprintf("%d %v", len(st.RegionsNoLeader), st.RegionsNoLeader))
	t.add(fmt.Sprintf("regions under-replicated (< %d live voters)", st.MaxReplicasPerSpec), fmt.Sprintf("%d %v", len(st.RegionsUnderRepl), st.RegionsUnderRepl))
	t.add("operators in flight", st.OperatorsInFlight)
	return t
}

func ctlStatusCmd(env *ctlEnv) *cobra.Command {
	return &cobra.Command{
		Use: "status", Short: "One screen about the cluster: PD, stores, regions, operators", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := env.status()
			if err != nil {
				return err
			}
			switch env.output {
			case outputJSON:
				return printJSON(cmd.OutOrStdout(), st)
			case outputTable:
				return statusTable(st).write(cmd.OutOrStdout())
			}
			printStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
}

// ctlRegionShowCmd is `region show KEY`: the region holding KEY.
func ctlRegionShowCmd(env *ctlEnv) *cobra.Command {
	return pdDocCmd(env, "show KEY", "Show the region holding KEY", cobra.ExactArgs(1),
		func(args []string) string { return "/pd/api/v1/regions/key/" + url.PathEscape(args[0]) },
		func(w io.Writer, r pdRegion) error { return printRegions(w, env.output, []pdRegion{r}) })
}

// metapb.PeerRole's values, as PD's JSON carries them.
const (
	roleLearner       = 1
	roleIncomingVoter = 2
	roleDemotingVoter = 3
)

// printRegions prints PD's regions as lines or a table (-w json prints
// PD's own document, pdDocCmd).
func printRegions(w io.Writer, output string, regions []pdRegion) error {
	switch output {
	case outputTable:
		t := newTable("ID", "START_KEY", "END_KEY", "VERSION", "LEADER_STORE", "VOTER_STORES", "LEARNER_STORES", "DOWN_PEERS")
		for _, r := range regions {
			leader := ""
			if r.Leader != nil {
				leader = strconv.FormatUint(r.Leader.StoreID, 10)
			}
			var voters, learners []string
			for _, p := range r.Peers {
				if p.Role == roleLearner {
					learners = append(learners, strconv.FormatUint(p.StoreID, 10))
				} else { // a voter, or one entering or leaving in a joint configuration
					voters = append(voters, strconv.FormatUint(p.StoreID, 10))
				}
			}
			t.add(r.ID, r.StartKey, r.EndKey, r.Epoch.Version, leader, strings.Join(voters, ","), strings.Join(learners, ","), len(r.DownPeers))
		}
		return t.write(w)
	}
	for _, r := range regions {
		printRegion(w, r)
	}
	return nil
}

func printRegion(w io.Writer, r pdRegion) {
	leader := "none"
	if r.Leader != nil {
		leader = fmt.Sprintf("peer %d on store %d", r.Leader.ID, r.Leader.StoreID)
	}
	fmt.Fprintf(w, "region %d [%s, %s) leader %s\n", r.ID, r.StartKey, r.EndKey, leader)
	for _, p := range r.Peers {
		role := "voter"
		switch p.Role {
		case roleLearner:
			role = "learner"
		case roleIncomingVoter:
			role = "incoming voter"
		case roleDemotingVoter:
			role = "demoting voter"
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
			code, msg, err := env.pdPost(ctx, "/pd/api/v1/operators", body)
			if err != nil {
				return err
			}
			if code != http.StatusOK {
				return fmt.Errorf("PD refused the transfer: %s", strings.TrimSpace(string(msg)))
			}
			for {
				var regions struct{ Regions []pdRegion }
				if err := env.pdGet("/pd/api/v1/regions", &regions); err == nil {
					for _, r := range regions.Regions {
						if r.ID == regionID && r.Leader != nil && r.Leader.StoreID == storeID {
							return printTransferred(cmd.OutOrStdout(), env.output, regionID, storeID)
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

func printTransferred(w io.Writer, output string, regionID, storeID uint64) error {
	switch output {
	case outputJSON:
		return printJSON(w, map[string]uint64{"region_id": regionID, "leader_store_id": storeID})
	case outputTable:
		t := newTable("REGION", "LEADER_STORE")
		t.add(regionID, storeID)
		return t.write(w)
	}
	_, err := fmt.Fprintf(w, "region %d is led from store %d\n", regionID, storeID)
	return err
}

// pdDocCmd is a command that shows one of PD's documents, at the path
// its arguments name: -w json prints the document as PD gave it;
// otherwise it is decoded into T and printed by print.
func pdDocCmd[T any](env *ctlEnv, use, short string, args cobra.PositionalArgs, path func(args []string) string, print func(w io.Writer, doc T) error) *cobra.Command {
	return &cobra.Command{
		Use: use, Short: short, Args: args,
		RunE: func(cmd *cobra.Command, args []string) error {
			p := path(args)
			var raw json.RawMessage
			if err := env.pdGet(p, &raw); err != nil {
				return err
			}
			if env.output == outputJSON {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			var doc T
			if err := json.Unmarshal(raw, &doc); err != nil {
				return fmt.Errorf("PD's %s: %w", p, err)
			}
			return print(cmd.OutOrStdout(), doc)
		},
	}
}

// pdListCmd is a `list` command over the PD document at path.
func pdListCmd[T any](env *ctlEnv, short, path string, print func(w io.Writer, doc T) error) *cobra.Command {
	return pdDocCmd(env, "list", short, cobra.NoArgs, func([]string) string { return path }, print)
}

// ctlRegionListCmd is `region list`: every region PD knows, in key order.
func ctlRegionListCmd(env *ctlEnv) *cobra.Command {
	return pdListCmd(env, "List every region", "/pd/api/v1/regions", func(w io.Writer, doc struct{ Regions []pdRegion }) error {
		return printRegions(w, env.output, doc.Regions)
	})
}

// ctlStoreListCmd is `store list`.
func ctlStoreListCmd(env *ctlEnv) *cobra.Command {
	return pdListCmd(env, "List every store", "/pd/api/v1/stores", func(w io.Writer, doc struct{ Stores []pdStore }) error {
		if env.output == outputTable {
			t := newTable("ID", "ADDRESS", "STATE", "REGIONS", "LEADERS")
			for _, s := range doc.Stores {
				t.add(s.Store.ID, s.Store.Address, s.State, s.RegionCount, s.LeaderCount)
			}
			return t.write(w)
		}
		for _, s := range doc.Stores {
			fmt.Fprintf(w, "store %d %s %s regions %d leaders %d\n", s.Store.ID, s.Store.Address, s.State, s.RegionCount, s.LeaderCount)
		}
		return nil
	})
}

// ctlMemberListCmd is `member list`: PD's members, in etcdctl's columns
// (PD has no learners); the table adds which member leads.
func ctlMemberListCmd(env *ctlEnv) *cobra.Command {
	return pdListCmd(env, "List PD's members", "/pd/api/v1/members", func(w io.Writer, members pdMembers) error {
		t := newTable("ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER", "IS LEADER")
		for _, m := range members.Members {
			if env.output == outputTable {
				leader := members.Leader != nil && members.Leader.MemberID == m.MemberID
				t.add(fmt.Sprintf("%x", m.MemberID), "started", m.Name, "http://"+m.PeerAddr, "http://"+m.ClientAddr, false, leader)
				continue
			}
			fmt.Fprintf(w, "%x, started, %s, http://%s, http://%s, false\n", m.MemberID, m.Name, m.PeerAddr, m.ClientAddr)
		}
		if env.output == outputTable {
			return t.write(w)
		}
		return nil
	})
}
