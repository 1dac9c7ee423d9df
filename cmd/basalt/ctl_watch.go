package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/basaltdb/basalt/client"
	"github.com/basaltdb/basalt/proto/kvpb"
)

// ctlWatchCmd is `basalt ctl watch`, printing as etcdctl does: the event
// type, the key and the value on lines of their own (the previous key and
// value after them with --prev-kv). It runs until interrupted.
func ctlWatchCmd(env *ctlEnv) *cobra.Command {
	var prefix, prevKV, progress bool
	var rangeEnd string
	var rev int64
	cmd := &cobra.Command{
		Use: "watch KEY", Short: "Watch a key, a range or a prefix until interrupted", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if prefix && rangeEnd != "" {
				return errors.New("give --prefix or --range-end, not both")
			}
			if env.output == outputTable {
				return errors.New("watch prints simple or json lines until interrupted, not a table")
			}
			c, _, cancelConnect, err := env.connect()
			if err != nil {
				return err
			}
			cancelConnect()
			defer c.Close()
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			req := &kvpb.WatchCreateRequest{Key: []byte(args[0]), StartRevision: rev, PrevKv: prevKV, ProgressNotify: progress}
			switch {
			case prefix:
				req.Key, req.RangeEnd = prefixRange(args[0])
			case rangeEnd != "":
				req.RangeEnd = []byte(rangeEnd)
			}
			w := c.Watch(ctx, req, client.WatchOptions{})
			defer w.Close()
			for r := range w.C {
				if err := printWatchResponse(cmd.OutOrStdout(), env.output, r); err != nil {
					return err
				}
				if r.Canceled {
					if r.CompactRevision > 0 {
						return fmt.Errorf("watch canceled: revision %d is compacted (the oldest available is %d)", rev, r.CompactRevision)
					}
					return fmt.Errorf("watch canceled: %v", r.Err)
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&prefix, "prefix", false, "watch every key with KEY as prefix")
	f.StringVar(&rangeEnd, "range-end", "", "watch [KEY, END)")
	f.Int64Var(&rev, "rev", 0, "start from this revision (default: from now)")
	f.BoolVar(&prevKV, "prev-kv", false, "print each event's previous key and value")
	f.BoolVar(&progress, "progress-notify", false, "print progress notifications")
	return cmd
}

func printWatchResponse(out io.Writer, format string, r *client.WatchResponse) error {
	if format == "json" {
		return printJSON(out, r)
	}
	if r.IsProgressNotify() {
		_, err := fmt.Fprintf(out, "progress notify: %d\n", r.Header.GetRevision())
		return err
	}
	for _, e := range r.Events {
		fmt.Fprintln(out, e.GetType())
		if p := e.GetPrevKv(); p != nil {
			fmt.Fprintf(out, "%s\n%s\n", p.GetKey(), p.GetValue())
		}
		if _, err := fmt.Fprintf(out, "%s\n%s\n", e.GetKv().GetKey(), e.GetKv().GetValue()); err != nil {
			return err
		}
	}
	return nil
}
