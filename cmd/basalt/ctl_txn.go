package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/basaltdb/basalt/client"
	"github.com/basaltdb/basalt/proto/kvpb"
)

// ctlTxnCmd is `basalt ctl txn`, reading etcdctl's txn syntax from stdin:
// compares, a blank line, success requests, a blank line, failure
// requests. With -i it prompts for each part as etcdctl does.
//
//	mod("key1") > "0"
//
//	put key1 "overwrote-key1"
//
//	put key1 "created-key1"
func ctlTxnCmd(env *ctlEnv) *cobra.Command {
	var interactive bool
	cmd := &cobra.Command{
		Use: "txn", Short: "Run a transaction read from stdin in etcdctl's syntax (keys must share one region)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			prompt := func(string) {}
			if interactive {
				prompt = func(s string) { fmt.Fprintln(cmd.OutOrStdout(), s) }
			}
			req, err := parseTxn(cmd.InOrStdin(), prompt)
			if err != nil {
				return err
			}
			c, ctx, cancel, err := env.connect()
			if err != nil {
				return err
			}
			defer cancel()
			defer c.Close()
			resp, err := c.Txn(ctx, req)
			if err != nil {
				return err
			}
			switch env.output {
			case outputJSON:
				return printJSON(cmd.OutOrStdout(), resp)
			case outputTable:
				t := newTable("SUCCEEDED", "REVISION")
				t.add(resp.GetSucceeded(), resp.GetHeader().GetRevision())
				if err := t.write(cmd.OutOrStdout()); err != nil {
					return err
				}
				return txnResponsesTable(resp).write(cmd.OutOrStdout())
			}
			printTxnResponse(cmd.OutOrStdout(), resp)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&interactive, "interactive", "i", false, "prompt for compares, success and failure requests")
	return cmd
}

// parseTxn reads the three blank-line-separated parts of a transaction.
func parseTxn(r io.Reader, prompt func(string)) (*kvpb.TxnRequest, error) {
	sc := bufio.NewScanner(r)
	part := func() []string {
		var lines []string
		for sc.Scan() {
			l := strings.TrimSpace(sc.Text())
			if l == "" {
				break
			}
			lines = append(lines, l)
		}
		return lines
	}
	req := &kvpb.TxnRequest{}
	prompt("compares:")
	for _, l := range part() {
		c, err := parseCompare(l)
		if err != nil {
			return nil, err
		}
		req.Compare = append(req.Compare, c)
	}
	prompt("\nsuccess requests (get, put, del):")
	for _, l := range part() {
		op, err := parseRequestOp(l)
		if err != nil {
			return nil, err
		}
		req.Success = append(req.Success, op)
	}
	prompt("\nfailure requests (get, put, del):")
	for _, l := range part() {
		op, err := parseRequestOp(l)
		if err != nil {
			return nil, err
		}
		req.Failure = append(req.Failure, op)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(req.Success) == 0 && len(req.Failure) == 0 && len(req.Compare) == 0 {
		return nil, errors.New("txn: empty transaction")
	}
	return req, nil
}

// parseCompare reads `target("key") op "value"`, target one of value
// (val), version (ver), create (c), mod (m), lease; op one of = != < >.
func parseCompare(line string) (*kvpb.Compare, error) {
	open := strings.Index(line, "(")
	closeIdx := strings.Index(line, ")")
	if open < 0 || closeIdx < open {
		return nil, fmt.Errorf("txn: compare %q: want target(\"key\") op \"value\"", line)
	}
	key, err := unquoteArg(strings.TrimSpace(line[open+1 : closeIdx]))
	if err != nil {
		return nil, fmt.Errorf("txn: compare %q: key: %v", line, err)
	}
	rest, err := argify(line[closeIdx+1:])
	if err != nil || len(rest) != 2 {
		return nil, fmt.Errorf("txn: compare %q: want an operator and a quoted value after the key", line)
	}
	var c client.Cmp
	target := strings.TrimSpace(line[:open])
	switch target {
	case "value", "val":
		c = client.Value(key)
	case "version", "ver":
		c = client.Version(key)
	case "create", "c":
		c = client.CreateRevision(key)
	case "mod", "m":
		c = client.ModRevision(key)
	case "lease":
		c = client.LeaseValue(key)
	default:
		return nil, fmt.Errorf("txn: compare %q: unknown target %q (value, version, create, mod, lease)", line, target)
	}
	switch rest[0] {
	case "=", "!=", "<", ">":
	default:
		return nil, fmt.Errorf("txn: compare %q: unknown operator %q (=, !=, <, >)", line, rest[0])
	}
	var v any = rest[1]
	if target != "value" && target != "val" {
		n, err := strconv.ParseInt(rest[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("txn: compare %q: %s needs an integer, got %q", line, target, rest[1])
		}
		v = n
	}
	return client.CompareProto(client.Compare(c, rest[0], v)), nil
}

// parseRequestOp reads `put KEY VALUE [--lease=ID] [--prev-kv]`,
// `get KEY [END] [--prefix] [--limit=N] [--rev=N] [--keys-only] [--count-only]`
// or `del KEY [END] [--prefix] [--prev-kv]`.
func parseRequestOp(line string) (*kvpb.RequestOp, error) {
	args, err := argify(line)
	if err != nil {
		return nil, fmt.Errorf("txn: %q: %v", line, err)
	}
	var pos []string
	flags := map[string]string{}
	for _, a := range args {
		if strings.HasPrefix(a, "--") {
			name, val, _ := strings.Cut(a[2:], "=")
			flags[name] = val
			continue
		}
		pos = append(pos, a)
	}
	intFlag := func(name string) (int64, error) {
		v, ok := flags[name]
		if !ok {
			return 0, nil
		}
		delete(flags, name)
		n, err := strconv.ParseInt(v, 0, 64)
		if err != nil {
			return 0, fmt.Errorf("txn: %q: --%s needs a number", line, name)
		}
		return n, nil
	}
	boolFlag := func(name string) bool {
		_, ok := flags[name]
		delete(flags, name)
		return ok
	}
	if len(pos) < 2 {
		return nil, fmt.Errorf("txn: %q: want get, put or del and a key", line)
	}
	var opts []client.OpOption
	rangeOpts := func() error {
		if boolFlag("prefix") {
			opts = append(opts, client.WithPrefix())
		}
		if len(pos) == 3 {
			opts = append(opts, client.WithRange(pos[2]))
		} else if len(pos) > 3 {
			return fmt.Errorf("txn: %q: too many arguments", line)
		}
		return nil
	}
	var op client.Op
	switch pos[0] {
	case "put":
		if len(pos) != 3 {
			return nil, fmt.Errorf("txn: %q: put needs a key and a value", line)
		}
		lease, err := intFlag("lease")
		if err != nil {
			return nil, err
		}
		if lease != 0 {
			opts = append(opts, client.WithLease(lease))
		}
		if boolFlag("prev-kv") {
			opts = append(opts, client.WithPrevKV())
		}
		op = client.OpPut(pos[1], pos[2], opts...)
	case "get":
		if err := rangeOpts(); err != nil {
			return nil, err
		}
		limit, err := intFlag("limit")
		if err != nil {
			return nil, err
		}
		rev, err := intFlag("rev")
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.WithLimit(limit), client.WithRev(rev))
		if boolFlag("keys-only") {
			opts = append(opts, client.WithKeysOnly())
		}
		if boolFlag("count-only") {
			opts = append(opts, client.WithCountOnly())
		}
		op = client.OpGet(pos[1], opts...)
	case "del", "delete":
		if err := rangeOpts(); err != nil {
			return nil, err
		}
		if boolFlag("prev-kv") {
			opts = append(opts, client.WithPrevKV())
		}
		op = client.OpDelete(pos[1], opts...)
	default:
		return nil, fmt.Errorf("txn: %q: unknown request %q (get, put, del)", line, pos[0])
	}
	for name := range flags {
		return nil, fmt.Errorf("txn: %q: unknown flag --%s", line, name)
	}
	return client.OpProto(op), nil
}

// argify splits a line into words; a word in double quotes may hold
// spaces and Go escapes.
func argify(s string) ([]string, error) {
	var out []string
	s = strings.TrimSpace(s)
	for s != "" {
		if s[0] == '"' {
			end := 1
			for end < len(s) && (s[end] != '"' || s[end-1] == '\\') {
				end++
			}
			if end == len(s) {
				return nil, fmt.Errorf("unterminated quote in %q", s)
			}
			w, err := strconv.Unquote(s[:end+1])
			if err != nil {
				return nil, err
			}
			out = append(out, w)
			s = strings.TrimSpace(s[end+1:])
			continue
		}
		i := strings.IndexAny(s, " \t")
		if i < 0 {
			i = len(s)
		}
		out = append(out, s[:i])
		s = strings.TrimSpace(s[i:])
	}
	return out, nil
}

func unquoteArg(s string) (string, error) {
	if strings.HasPrefix(s, `"`) {
		return strconv.Unquote(s)
	}
	return s, nil
}

// printTxnResponse prints as etcdctl does: SUCCESS or FAILURE, then each
// response after a blank line.
func printTxnResponse(out io.Writer, resp *kvpb.TxnResponse) {
	if resp.GetSucceeded() {
		fmt.Fprintln(out, "SUCCESS")
	} else {
		fmt.Fprintln(out, "FAILURE")
	}
	for _, r := range resp.GetResponses() {
		fmt.Fprintln(out)
		switch x := r.GetResponse().(type) {
		case *kvpb.ResponseOp_ResponsePut:
			fmt.Fprintln(out, "OK")
		case *kvpb.ResponseOp_ResponseRange:
			for _, kv := range x.ResponseRange.GetKvs() {
				fmt.Fprintf(out, "%s\n%s\n", kv.GetKey(), kv.GetValue())
			}
		case *kvpb.ResponseOp_ResponseDeleteRange:
			fmt.Fprintln(out, x.ResponseDeleteRange.GetDeleted())
		case *kvpb.ResponseOp_ResponseTxn:
			printTxnResponse(out, x.ResponseTxn)
		}
	}
}

// txnResponsesTable lists a transaction's responses, one row per result
// (a range's keys each get a row; a nested transaction's responses follow
// with their depth).
func txnResponsesTable(resp *kvpb.TxnResponse) *table {
	t := newTable("#", "OP", "KEY", "VALUE", "RESULT")
	var walk func(prefix string, r *kvpb.TxnResponse)
	walk = func(prefix string, r *kvpb.TxnResponse) {
		for i, op := range r.GetResponses() {
			n := prefix + strconv.Itoa(i+1)
			switch x := op.GetResponse().(type) {
			case *kvpb.ResponseOp_ResponsePut:
				t.add(n, "put", "", "", "OK")
			case *kvpb.ResponseOp_ResponseRange:
				if len(x.ResponseRange.GetKvs()) == 0 {
					t.add(n, "get", "", "", "0 keys")
				}
				for _, kv := range x.ResponseRange.GetKvs() {
					t.add(n, "get", string(kv.GetKey()), string(kv.GetValue()), "")
				}
			case *kvpb.ResponseOp_ResponseDeleteRange:
				t.add(n, "del", "", "", fmt.Sprintf("%d deleted", x.ResponseDeleteRange.GetDeleted()))
			case *kvpb.ResponseOp_ResponseTxn:
				t.add(n, "txn", "", "", fmt.Sprintf("succeeded %v", x.ResponseTxn.GetSucceeded()))
				walk(n+".", x.ResponseTxn)
			}
		}
	}
	walk("", resp)
	return t
}
