package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/basaltdb/basalt/client"
)

// parseLeaseID reads a lease ID as etcdctl writes it: hexadecimal.
func parseLeaseID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 16, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("bad lease ID %q: want a positive hexadecimal number", s)
	}
	return id, nil
}

// ctlLeaseCmd is etcdctl's `lease` with its output: IDs in hexadecimal.
func ctlLeaseCmd(env *ctlEnv) *cobra.Command {
	lease := commandGroup(&cobra.Command{Use: "lease", Short: "Grant, revoke, keep alive and inspect leases"})
	var grantID string
	grant := &cobra.Command{
		Use: "grant TTL", Short: "Create a lease of TTL seconds", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ttl, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || ttl <= 0 {
				return fmt.Errorf("bad TTL %q: want a positive number of seconds", args[0])
			}
			var id int64
			if grantID != "" {
				if id, err = parseLeaseID(grantID); err != nil {
					return err
				}
			}
			return env.withClient(func(ctx context.Context, c *client.Client) error {
				resp, err := c.LeaseGrant(ctx, ttl, id)
				if err != nil {
					return err
				}
				switch env.output {
				case outputJSON:
					return printJSON(cmd.OutOrStdout(), resp)
				case outputTable:
					t := newTable("ID", "TTL")
					t.add(fmt.Sprintf("%016x", resp.GetId()), resp.GetTtl())
					return t.write(cmd.OutOrStdout())
				}
				fmt.Fprintf(cmd.OutOrStdout(), "lease %016x granted with TTL(%ds)\n", resp.GetId(), resp.GetTtl())
				return nil
			})
		},
	}
	grant.Flags().StringVar(&grantID, "id", "", "the lease's ID (hexadecimal); default: a random free one")

	revoke := &cobra.Command{
		Use: "revoke ID", Short: "Revoke a lease and delete every key attached to it", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseLeaseID(args[0])
			if err != nil {
				return err
			}
			return env.withClient(func(ctx context.Context, c *client.Client) error {
				if err := c.LeaseRevoke(ctx, id); err != nil {
					return err
				}
				switch env.output {
				case outputJSON:
					return printJSON(cmd.OutOrStdout(), map[string]any{"id": id, "revoked": true})
				case outputTable:
					t := newTable("ID", "REVOKED")
					t.add(fmt.Sprintf("%016x", id), true)
					return t.write(cmd.OutOrStdout())
				}
				fmt.Fprintf(cmd.OutOrStdout(), "lease %016x revoked\n", id)
				return nil
			})
		},
	}

	var once bool
	keepAlive := &cobra.Command{
		Use: "keep-alive ID", Short: "Keep a lease alive until interrupted (or once)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseLeaseID(args[0])
			if err != nil {
				return err
			}
			if !once && env.output == outputTable {
				return errors.New("keep-alive prints simple or json lines until interrupted; table needs --once")
			}
			c, ctx, cancel, err := env.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			printTTL := func(ttl int64) error {
				switch env.output {
				case outputJSON:
					return json.NewEncoder(cmd.OutOrStdout()).Encode(map[string]int64{"id": id, "ttl": ttl})
				case outputTable:
					t := newTable("ID", "TTL")
					t.add(fmt.Sprintf("%016x", id), ttl)
					return t.write(cmd.OutOrStdout())
				}
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "lease %016x keepalived with TTL(%d)\n", id, ttl)
				return err
			}
			if once {
				defer cancel()
				ttl, err := c.LeaseKeepAliveOnce(ctx, id)
				if err != nil {
					return err
				}
				return printTTL(ttl)
			}
			cancel()
			sig, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			ch, err := c.LeaseKeepAlive(sig, id)
			if err != nil {
				return err
			}
			for ttl := range ch {
				if err := printTTL(ttl); err != nil {
					return err
				}
			}
			if sig.Err() == nil {
				return fmt.Errorf("lease %016x expired or revoked", id)
			}
			return nil
		},
	}
	keepAlive.Flags().BoolVar(&once, "once", false, "renew once and exit")

	var withKeys bool
	ttl := &cobra.Command{
		Use: "timetolive ID", Short: "Show a lease's remaining TTL (and its keys)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseLeaseID(args[0])
			if err != nil {
				return err
			}
			return env.withClient(func(ctx context.Context, c *client.Client) error {
				r, err := c.LeaseTimeToLive(ctx, id, withKeys)
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				switch env.output {
				case outputJSON:
					return printJSON(out, r)
				case outputTable:
					keys := make([]string, len(r.Keys))
					for i, k := range r.Keys {
						keys[i] = string(k)
					}
					t := newTable("ID", "GRANTED_TTL", "REMAINING_TTL", "KEYS")
					t.add(fmt.Sprintf("%016x", id), r.GrantedTTL, r.TTL, strings.Join(keys, ","))
					return t.write(out)
				}
				if r.TTL < 0 {
					fmt.Fprintf(out, "lease %016x already expired\n", id)
					return nil
				}
				if !withKeys {
					fmt.Fprintf(out, "lease %016x granted with TTL(%ds), remaining(%ds)\n", id, r.GrantedTTL, r.TTL)
					return nil
				}
				keys := make([]string, len(r.Keys))
				for i, k := range r.Keys {
					keys[i] = string(k)
				}
				fmt.Fprintf(out, "lease %016x granted with TTL(%ds), remaining(%ds), attached keys(%v)\n", id, r.GrantedTTL, r.TTL, keys)
				return nil
			})
		},
	}
	ttl.Flags().BoolVar(&withKeys, "keys", false, "list the keys attached to the lease")

	list := &cobra.Command{
		Use: "list", Short: "List every lease", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return env.withClient(func(ctx context.Context, c *client.Client) error {
				ids, err := c.Leases(ctx)
				if err != nil {
					return err
				}
				switch env.output {
				case outputJSON:
					return printJSON(cmd.OutOrStdout(), ids)
				case outputTable:
					t := newTable("ID")
					for _, id := range ids {
						t.add(fmt.Sprintf("%016x", id))
					}
					return t.write(cmd.OutOrStdout())
				}
				fmt.Fprintf(cmd.OutOrStdout(), "found %d leases\n", len(ids))
				for _, id := range ids {
					fmt.Fprintf(cmd.OutOrStdout(), "%016x\n", id)
				}
				return nil
			})
		},
	}
	lease.AddCommand(grant, revoke, keepAlive, ttl, list)
	return lease
}
