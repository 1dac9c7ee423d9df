package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	pf.StringVarP(&env.output, "write-out", "w", "simple", "output: simple or json")
	pf.DurationVar(&env.timeout, "timeout", 10*time.Second, "how long one command may take (a watch: to connect)")
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
			if env.output == "json" {
				return printJSON(cmd.OutOrStdout(), resp)
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
				req.RangeEnd = client.PrefixEnd([]byte(args[0]))
			case rangeEnd != "":
				req.RangeEnd = []byte(rangeEnd)
			}
			resp, err := c.Range(ctx, req)
			if err != nil {
				return err
			}
			if env.output == "json" {
				return printJSON(cmd.OutOrStdout(), resp)
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
				req.RangeEnd = client.PrefixEnd([]byte(args[0]))
			}
			resp, err := c.DeleteRange(ctx, req)
			if err != nil {
				return err
			}
			if env.output == "json" {
				return printJSON(cmd.OutOrStdout(), resp)
			}
			fmt.Fprintln(cmd.OutOrStdout(), resp.GetDeleted())
			return nil
		},
	}
	del.Flags().BoolVar(&delPrefix, "prefix", false, "delete every key with KEY as prefix")
	del.Flags().BoolVar(&delPrev, "prev-kv", false, "print the deleted keys")

	var physical bool
	compact := &cobra.Command{
		Use: "compact REVISION", Short: "Discard history before a revision", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r int64
			if _, err := fmt.Sscan(args[0], &r); err != nil {
				return fmt.Errorf("revision %q is not a number", args[0])
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
			fmt.Fprintf(cmd.OutOrStdout(), "compacted revision %d\n", r)
			return nil
		},
	}
	compact.Flags().BoolVar(&physical, "physical", false, "wait until the history is gone from this store")

	pdGet := func(path string) *cobra.Command {
		return &cobra.Command{
			Use: "list", Short: "List " + strings.TrimPrefix(path, "/pd/api/v1/"),
			RunE: func(cmd *cobra.Command, _ []string) error {
				var v any
				if err := getJSON("http://"+strings.Split(env.pdAddr, ",")[0]+path, &v); err != nil {
					return err
				}
				return printJSON(cmd.OutOrStdout(), v)
			},
		}
	}
	member := &cobra.Command{Use: "member", Short: "PD members"}
	member.AddCommand(pdGet("/pd/api/v1/members"))
	store := &cobra.Command{Use: "store", Short: "Stores"}
	store.AddCommand(pdGet("/pd/api/v1/stores"))
	reg := &cobra.Command{Use: "region", Short: "Regions"}
	reg.AddCommand(pdGet("/pd/api/v1/regions"))
	var splitHalf string
	split := &cobra.Command{
		Use:   "split KEY...",
		Short: "Make every KEY a region boundary (or, with --half KEY, halve the region holding KEY)",
		Args: func(_ *cobra.Command, args []string) error {
			if (len(args) == 0) == (splitHalf == "") {
				return errors.New("give split keys, or --half KEY, not both")
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
					if a == "" {
						return errors.New("a split key cannot be empty")
					}
					keys[i] = []byte(a)
				}
				regions, err = c.SplitRegions(ctx, keys)
			}
			if err != nil {
				return err
			}
			if env.output == "json" {
				return printJSON(cmd.OutOrStdout(), regions)
			}
			for _, r := range regions {
				fmt.Fprintf(cmd.OutOrStdout(), "region %d [%q, %q) version %d\n", r.GetId(), r.GetStartKey(), r.GetEndKey(), r.GetRegionEpoch().GetVersion())
			}
			return nil
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
				if _, err := fmt.Sscan(a, &ids[i]); err != nil || ids[i] == 0 {
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
			if env.output == "json" {
				return printJSON(cmd.OutOrStdout(), r)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "region %d [%q, %q) version %d\n", r.GetId(), r.GetStartKey(), r.GetEndKey(), r.GetRegionEpoch().GetVersion())
			return nil
		},
	})

	root.AddCommand(put, get, del, compact, ctlWatchCmd(env), ctlTxnCmd(env), ctlLeaseCmd(env), ctlStatusCmd(env), member, store, reg)
	return root
}

// ctlEnv is what every ctl command shares: the global flags.
type ctlEnv struct {
	pdAddr, output string
	timeout        time.Duration
}

// connect opens a client; the context bounds the command by --timeout.
func (e *ctlEnv) connect() (*client.Client, context.Context, context.CancelFunc, error) {
	ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
	c, err := client.New(ctx, strings.Split(e.pdAddr, ","), client.Options{})
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
