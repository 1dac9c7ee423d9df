package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/basaltdb/basalt/client"
	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/proto/metapb"
)

// ctl is the command-line client, with etcdctl's habits: errors are one
// line on stderr and a non-zero exit.
func ctlCmd() *cobra.Command {
	env := &ctlEnv{}
	root := &cobra.Command{Use: "ctl", Short: "Talk to a Basalt cluster"}
	pf := root.PersistentFlags()
	pf.StringVar(&env.pdAddr, "pd", "127.0.0.1:2379", "PD client addresses, comma separated")
	pf.StringVarP(&env.output, "write-out", "w", outputSimple, "output: simple, json or table")
	pf.DurationVar(&env.timeout, "timeout", 10*time.Second, "how long one command may take (a watch: to connect)")
	pf.String("config", "", "a YAML (.yaml, .yml) or TOML (.toml) file setting pd, write-out and timeout (env: BASALT_CTL_CONFIG)")
	// Not BASALT_CONFIG: in a server's container that names the server's
	// file, whose settings ctl does not have.
	_ = pf.SetAnnotation("config", envAnnotation, []string{"BASALT_CTL_CONFIG"})
	// ctl's own settings (--pd, --write-out, --timeout) also come from
	// BASALT_PD, BASALT_WRITE_OUT, BASALT_TIMEOUT and the config file, as
	// the servers' do; a command's local flags (get --limit) do not.
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if err := applySettings(root.PersistentFlags(), os.LookupEnv); err != nil {
			return err
		}
		if env.timeout <= 0 {
			return fmt.Errorf("--timeout %v: want a positive duration", env.timeout)
		}
		return checkOutput(env.output)
	}
	connect := env.connect

	var prevKV bool
	var leaseHex string
	put := &cobra.Command{
		Use: "put KEY VALUE", Short: "Write a key", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var lease int64
			if leaseHex != "" && leaseHex != "0" {
				var err error
				if lease, err = parseLeaseID(leaseHex); err != nil {
					return err
				}
			}
			c, ctx, cancel, err := connect()
			if err != nil {
				return err
			}
			defer cancel()
			defer c.Close()
			resp, err := c.Put(ctx, &kvpb.PutRequest{Key: []byte(args[0]), Value: []byte(args[1]), PrevKv: prevKV, Lease: lease})
			if err != nil {
				return err
			}
			switch env.output {
			case outputJSON:
				return printJSON(cmd.OutOrStdout(), resp)
			case outputTable:
				t := newTable("KEY", "REVISION")
				if prevKV {
					t = newTable("KEY", "REVISION", "PREV_VALUE", "PREV_MOD_REV")
				}
				row := []any{args[0], resp.GetHeader().GetRevision()}
				if prevKV {
					if pk := resp.GetPrevKv(); pk != nil {
						row = append(row, string(pk.GetValue()), pk.GetModRevision())
					} else {
						row = append(row, "", "")
					}
				}
				t.add(row...)
				return t.write(cmd.OutOrStdout())
			}
			fmt.Fprintln(cmd.OutOrStdout(), "OK")
			if pk := resp.GetPrevKv(); pk != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "%s\n%s\n", pk.GetKey(), pk.GetValue())
			}
			return nil
		},
	}
	put.Flags().BoolVar(&prevKV, "prev-kv", false, "print the previous value")
	put.Flags().StringVar(&leaseHex, "lease", "", "attach the key to this lease (hexadecimal ID, as etcdctl)")

	var prefix, keysOnly, countOnly bool
	var rangeEnd, consistency string
	var rev, limit int64
	get := &cobra.Command{
		Use: "get KEY", Short: "Read a key or a range", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if consistency != "l" && consistency != "s" {
				return fmt.Errorf("--consistency %q: want l (linearizable) or s (serializable)", consistency)
			}
			if prefix && rangeEnd != "" {
				return errors.New("give --prefix or --range-end, not both")
			}
			if limit < 0 || rev < 0 {
				return errors.New("--limit and --rev cannot be negative")
			}
			c, ctx, cancel, err := connect()
			if err != nil {
				return err
			}
			defer cancel()
			defer c.Close()
			req := &kvpb.RangeRequest{Key: []byte(args[0]), Revision: rev, Limit: limit, KeysOnly: keysOnly, CountOnly: countOnly,
				Serializable: consistency == "s"}
			switch {
			case prefix:
				req.Key, req.RangeEnd = prefixRange(args[0])
			case rangeEnd != "":
				req.RangeEnd = []byte(rangeEnd)
			}
			resp, err := c.Range(ctx, req)
			if err != nil {
				return err
			}
			switch env.output {
			case outputJSON:
				return printJSON(cmd.OutOrStdout(), resp)
			case outputTable:
				return rangeTable(resp, keysOnly, countOnly).write(cmd.OutOrStdout())
			}
			if countOnly {
				fmt.Fprintln(cmd.OutOrStdout(), resp.GetCount())
				return nil
			}
			for _, kv := range resp.GetKvs() {
				fmt.Fprintln(cmd.OutOrStdout(), string(kv.GetKey()))
				if !keysOnly {
					fmt.Fprintln(cmd.OutOrStdout(), string(kv.GetValue()))
				}
			}
			return nil
		},
	}
	gf := get.Flags()
	gf.BoolVar(&prefix, "prefix", false, "every key with KEY as prefix")
	gf.StringVar(&rangeEnd, "range-end", "", "read [KEY, END)")
	gf.Int64Var(&rev, "rev", 0, "read at this revision")
	gf.Int64Var(&limit, "limit", 0, "return at most this many keys")
	gf.BoolVar(&keysOnly, "keys-only", false, "print keys only")
	gf.BoolVar(&countOnly, "count-only", false, "print the number of keys only")
	gf.StringVar(&consistency, "consistency", "l", "l: linearizable; s: serializable, served by any replica from what it has applied (may trail the latest writes)")

	var delPrefix, delPrev bool
	del := &cobra.Command{
		Use: "del KEY", Short: "Delete a key or every key with a prefix", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, cancel, err := connect()
			if err != nil {
				return err
			}
			defer cancel()
			defer c.Close()
			req := &kvpb.DeleteRangeRequest{Key: []byte(args[0]), PrevKv: delPrev}
			if delPrefix {
				req.Key, req.RangeEnd = prefixRange(args[0])
			}
			resp, err := c.DeleteRange(ctx, req)
			if err != nil {
				return err
			}
			switch env.output {
			case outputJSON:
				return printJSON(cmd.OutOrStdout(), resp)
			case outputTable:
				t := newTable("DELETED", "REVISION")
				t.add(resp.GetDeleted(), resp.GetHeader().GetRevision())
				if err := t.write(cmd.OutOrStdout()); err != nil || !delPrev {
					return err
				}
				prev := newTable("KEY", "VALUE", "MOD_REV")
				for _, kv := range resp.GetPrevKvs() {
					prev.add(string(kv.GetKey()), string(kv.GetValue()), kv.GetModRevision())
				}
				return prev.write(cmd.OutOrStdout())
			}
			fmt.Fprintln(cmd.OutOrStdout(), resp.GetDeleted())
			for _, kv := range resp.GetPrevKvs() {
				fmt.Fprintf(cmd.OutOrStdout(), "%s\n%s\n", kv.GetKey(), kv.GetValue())
			}
			return nil
		},
	}
	del.Flags().BoolVar(&delPrefix, "prefix", false, "delete every key with KEY as prefix")
	del.Flags().BoolVar(&delPrev, "prev-kv", false, "print the deleted keys")

	var physical bool
	compact := &cobra.Command{
		Use: "compact REVISION", Short: "Discard history before a revision", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || r <= 0 {
				return fmt.Errorf("revision %q is not a positive number", args[0])
			}
			c, ctx, cancel, err := connect()
			if err != nil {
				return err
			}
			defer cancel()
			defer c.Close()
			if err := c.Compact(ctx, r, physical); err != nil {
				return err
			}
			switch env.output {
			case outputJSON:
				return printJSON(cmd.OutOrStdout(), map[string]int64{"compacted_revision": r})
			case outputTable:
				t := newTable("COMPACTED_REVISION")
				t.add(r)
				return t.write(cmd.OutOrStdout())
			}
			fmt.Fprintf(cmd.OutOrStdout(), "compacted revision %d\n", r)
			return nil
		},
	}
	compact.Flags().BoolVar(&physical, "physical", false, "wait until the history is gone from this store")

	member := commandGroup(&cobra.Command{Use: "member", Short: "PD members"})
	member.AddCommand(ctlMemberListCmd(env))
	store := commandGroup(&cobra.Command{Use: "store", Short: "Stores"})
	store.AddCommand(ctlStoreListCmd(env))
	reg := commandGroup(&cobra.Command{Use: "region", Short: "Regions"})
	reg.AddCommand(ctlRegionListCmd(env))
	var splitHalf string
	split := &cobra.Command{
		Use:   "split KEY...",
		Short: "Make every KEY a region boundary (or, with --half KEY, halve the region holding KEY)",
		Args: func(_ *cobra.Command, args []string) error {
			switch {
			case len(args) == 0 && splitHalf == "":
				return errors.New("give the split keys, or --half KEY")
			case len(args) > 0 && splitHalf != "":
				return errors.New("give split keys or --half KEY, not both")
			}
			for _, a := range args {
				if a == "" {
					return errors.New("a split key cannot be empty")
				}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, cancel, err := connect()
			if err != nil {
				return err
			}
			defer cancel()
			defer c.Close()
			var regions []*metapb.Region
			if splitHalf != "" {
				regions, err = c.SplitRegionInHalf(ctx, []byte(splitHalf))
			} else {
				keys := make([][]byte, len(args))
				for i, a := range args {
					keys[i] = []byte(a)
				}
				regions, err = c.SplitRegions(ctx, keys)
			}
			if err != nil {
				return err
			}
			return printRegionDescs(cmd.OutOrStdout(), env.output, regions)
		},
	}
	split.Flags().StringVar(&splitHalf, "half", "", "halve the region holding this key at the middle of its data")
	reg.AddCommand(split, ctlRegionShowCmd(env), ctlTransferLeaderCmd(env))
	reg.AddCommand(&cobra.Command{
		Use:   "merge SOURCE TARGET",
		Short: "Merge region SOURCE into its neighbour TARGET (region IDs; their replicas must be on the same stores)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var ids [2]uint64
			for i, a := range args {
				var err error
				if ids[i], err = strconv.ParseUint(a, 10, 64); err != nil || ids[i] == 0 {
					return fmt.Errorf("region ID %q is not a positive number", a)
				}
			}
			c, ctx, cancel, err := connect()
			if err != nil {
				return err
			}
			defer cancel()
			defer c.Close()
			r, err := c.MergeRegions(ctx, ids[0], ids[1])
			if err != nil {
				return err
			}
			return printRegionDescs(cmd.OutOrStdout(), env.output, []*metapb.Region{r})
		},
	})

	root.AddCommand(put, get, del, compact, ctlWatchCmd(env), ctlTxnCmd(env), ctlLeaseCmd(env), ctlStatusCmd(env), member, store, reg)
	return commandGroup(root)
}

// commandGroup makes a command that only holds subcommands fail, with one
// line, when it is run bare or with a subcommand it does not have: cobra
// would print its help and exit 0.
func commandGroup(cmd *cobra.Command) *cobra.Command {
	cmd.Args = cobra.ArbitraryArgs
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var names []string
		for _, sub := range cmd.Commands() {
			if sub.IsAvailableCommand() {
				names = append(names, sub.Name())
			}
		}
		if len(args) == 0 {
			return fmt.Errorf("%s needs a command: %s", cmd.CommandPath(), strings.Join(names, ", "))
		}
		if args[0] == "help" {
			return cmd.Help()
		}
		return fmt.Errorf("unknown command %q for %s (want one of %s)", args[0], cmd.CommandPath(), strings.Join(names, ", "))
	}
	return cmd
}

// prefixRange is the range of keys starting with prefix; as etcdctl's, the
// empty prefix is every key ("\x00" to the end), since the empty key is
// not a key.
func prefixRange(prefix string) (key, end []byte) {
	if prefix == "" {
		return []byte{0}, []byte{0}
	}
	return []byte(prefix), client.PrefixEnd([]byte(prefix))
}

// rangeTable is a range response as a table.
func rangeTable(resp *kvpb.RangeResponse, keysOnly, countOnly bool) *table {
	if countOnly {
		t := newTable("COUNT", "REVISION")
		t.add(resp.GetCount(), resp.GetHeader().GetRevision())
		return t
	}
	t := newTable("KEY", "VALUE", "CREATE_REV", "MOD_REV", "VERSION", "LEASE")
	if keysOnly {
		t = newTable("KEY", "CREATE_REV", "MOD_REV", "VERSION", "LEASE")
	}
	for _, kv := range resp.GetKvs() {
		lease := ""
		if kv.GetLease() != 0 {
			lease = fmt.Sprintf("%016x", kv.GetLease())
		}
		if keysOnly {
			t.add(string(kv.GetKey()), kv.GetCreateRevision(), kv.GetModRevision(), kv.GetVersion(), lease)
		} else {
			t.add(string(kv.GetKey()), string(kv.GetValue()), kv.GetCreateRevision(), kv.GetModRevision(), kv.GetVersion(), lease)
		}
	}
	return t
}

// printRegionDescs prints regions a split or a merge returned.
func printRegionDescs(w io.Writer, output string, regions []*metapb.Region) error {
	switch output {
	case outputJSON:
		return printJSON(w, regions)
	case outputTable:
		t := newTable("ID", "START_KEY", "END_KEY", "VERSION", "CONF_VER")
		for _, r := range regions {
			t.add(r.GetId(), fmt.Sprintf("%q", r.GetStartKey()), fmt.Sprintf("%q", r.GetEndKey()),
				r.GetRegionEpoch().GetVersion(), r.GetRegionEpoch().GetConfVer())
		}
		return t.write(w)
	}
	for _, r := range regions {
		fmt.Fprintf(w, "region %d [%q, %q) version %d\n", r.GetId(), r.GetStartKey(), r.GetEndKey(), r.GetRegionEpoch().GetVersion())
	}
	return nil
}

// ctlEnv is what every ctl command shares: the global flags.
type ctlEnv struct {
	pdAddr, output string
	timeout        time.Duration
}

// connect opens a client; the context bounds the command by --timeout.
func (e *ctlEnv) connect() (*client.Client, context.Context, context.CancelFunc, error) {
	ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
	c, err := client.New(ctx, e.pdAddrs(), client.Options{})
	if err != nil {
		cancel()
		return nil, nil, nil, err
	}
	return c, ctx, cancel, nil
}

// withClient runs fn with a client and a context bounded by --timeout.
func (e *ctlEnv) withClient(fn func(ctx context.Context, c *client.Client) error) error {
	c, ctx, cancel, err := e.connect()
	if err != nil {
		return err
	}
	defer cancel()
	defer c.Close()
	return fn(ctx, c)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
