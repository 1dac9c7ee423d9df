package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// The playground runs a whole cluster on this machine as child processes of
// this binary: PD members first, then stores.
func playgroundCmd() *cobra.Command {
	var (
		dir, pdAddr string
		pds, stores int
		storePort   int
	)
	cmd := &cobra.Command{
		Use:   "playground",
		Short: "Run a local cluster (PD and stores) until interrupted",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if pds != 1 && pds != 3 && pds != 5 {
				return errors.New("--pd must be 1, 3 or 5")
			}
			if stores < 1 {
				return errors.New("--stores must be at least 1")
			}
			temp := dir == ""
			if temp {
				d, err := os.MkdirTemp("", "basalt-playground-")
				if err != nil {
					return err
				}
				dir = d
			}
			// The handler is in place before the first child starts: an
			// interrupt while the cluster is still coming up stops what
			// started and removes the temporary directory too.
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
			defer signal.Stop(sig)
			pg := &playground{dir: dir, out: cmd.OutOrStdout(), interrupted: sig}
			err := pg.run(pdAddr, pds, stores, storePort)
			if errors.Is(err, errInterrupted) {
				fmt.Fprintln(pg.out, "stopping")
				err = nil
			}
			pg.stop()
			if temp {
				_ = os.RemoveAll(dir)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "data directory (default: a temporary directory, removed on exit)")
	f.IntVar(&pds, "pd", 1, "PD members: 1, 3 or 5 (env: BASALT_PLAYGROUND_PD)")
	_ = f.SetAnnotation("pd", envAnnotation, []string{"BASALT_PLAYGROUND_PD"})
	f.IntVar(&stores, "stores", 3, "stores")
	f.StringVar(&pdAddr, "pd-addr", "127.0.0.1:2379", "first PD member's client address; members use the ports after it (port 0: free ports)")
	f.IntVar(&storePort, "store-port", 20160, "first store's port; stores use the ports after it (0: free ports)")
	addConfigFlag(cmd)
	return cmd
}

// errInterrupted is a SIGINT or SIGTERM while the playground starts or runs.
var errInterrupted = errors.New("interrupted")

type playground struct {
	dir         string
	out         interface{ Write([]byte) (int, error) }
	interrupted <-chan os.Signal

	mu    sync.Mutex
	procs []child
	died  chan string
}

func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (pg *playground) run(pdAddr string, pds, stores, storePort int) error {
	pg.died = make(chan string, 16)
	host, portStr, err := net.SplitHostPort(pdAddr)
	if err != nil {
		return fmt.Errorf("--pd-addr: %w", err)
	}
	base, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("--pd-addr port: %w", err)
	}
	port := func(i int, fixed int) (int, error) {
		if fixed == 0 {
			return freePort(host)
		}
		return fixed + i, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	var clientAddrs, initial []string
	type member struct{ name, client, peer string }
	var members []member
	for i := 0; i < pds; i++ {
		cp, err := port(2*i, base)
		if err != nil {
			return err
		}
		pp, err := port(2*i+1, base)
		if err != nil {
			return err
		}
		m := member{fmt.Sprintf("pd%d", i+1), net.JoinHostPort(host, strconv.Itoa(cp)), net.JoinHostPort(host, strconv.Itoa(pp))}
		members = append(members, m)
		clientAddrs = append(clientAddrs, m.client)
		initial = append(initial, m.name+"="+m.peer)
	}
	replicas := min(stores, 3)
	for _, m := range members {
		if err := pg.spawn(m.name, exe, "pd", "--name", m.name, "--data-dir", filepath.Join(pg.dir, m.name),
			"--client-addr", m.client, "--peer-addr", m.peer, "--initial-cluster", strings.Join(initial, ","),
			"--max-replicas", strconv.Itoa(replicas)); err != nil {
			return err
		}
	}
	if err := pg.waitPD(clientAddrs); err != nil {
		return err
	}
	var storeAddrs []string
	for i := 0; i < stores; i++ {
		sp, err := port(i, storePort)
		if err != nil {
			return err
		}
		addr := net.JoinHostPort(host, strconv.Itoa(sp))
		storeAddrs = append(storeAddrs, addr)
		name := fmt.Sprintf("store%d", i+1)
		if err := pg.spawn(name, exe, "store", "--data-dir", filepath.Join(pg.dir, name), "--addr", addr,
			"--pd", strings.Join(clientAddrs, ","), "--heartbeat-interval", "2s"); err != nil {
			return err
		}
	}
	if err := pg.waitReady(clientAddrs[0], stores); err != nil {
		return err
	}
	fmt.Fprintf(pg.out, "PD:     %s\n", strings.Join(clientAddrs, ","))
	for i, a := range storeAddrs {
		fmt.Fprintf(pg.out, "store%d: %s\n", i+1, a)
	}
	fmt.Fprintf(pg.out, "data:   %s\n", pg.dir)
	fmt.Fprintln(pg.out, "basalt playground ready")
	select {
	case <-pg.interrupted:
		return errInterrupted
	case name := <-pg.died:
		return fmt.Errorf("%s exited; its log is %s", name, filepath.Join(pg.dir, name+".log"))
	}
}

// child is a started process; exited closes once it has been waited for.
type child struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// spawn starts one child, its output in <dir>/<name>.log.
func (pg *playground) spawn(name, exe string, args ...string) error {
	if err := os.MkdirAll(pg.dir, 0o755); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(pg.dir, name+".log"))
	if err != nil {
		return err
	}
	c := exec.Command(exe, args...)
	// The playground's own settings (its config file, its BASALT_*
	// variables) are not its children's: they get theirs as flags.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BASALT_") {
			c.Env = append(c.Env, kv)
		}
	}
	c.Stdout, c.Stderr = logf, logf
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := c.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	exited := make(chan struct{})
	pg.mu.Lock()
	pg.procs = append(pg.procs, child{c, exited})
	pg.mu.Unlock()
	go func() {
		_ = c.Wait()
		logf.Close()
		close(exited)
		select {
		case pg.died <- name:
		default:
		}
	}()
	return nil
}

func getJSON(url string, v any) error {
	return getJSONContext(context.Background(), url, v)
}

// getJSONContext is one GET of PD's HTTP API, within ctx and at most 2 s.
func getJSONContext(ctx context.Context, url string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// childDied is the error for a child that exited while the playground
// started, unless an interrupt came too: a Ctrl-C in a terminal reaches the
// children as well, and their exit is then the interrupt's doing.
func (pg *playground) childDied(name string) error {
	select {
	case <-pg.interrupted:
		return errInterrupted
	default:
	}
	return fmt.Errorf("%s exited while starting; its log is %s", name, filepath.Join(pg.dir, name+".log"))
}

func (pg *playground) waitPD(addrs []string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		var m struct {
			Leader *struct{ Name string } `json:"leader"`
		}
		if getJSON("http://"+addrs[0]+"/pd/api/v1/members", &m) == nil && m.Leader != nil {
			return nil
		}
		select {
		case name := <-pg.died:
			return pg.childDied(name)
		case <-pg.interrupted:
			return errInterrupted
		case <-time.After(100 * time.Millisecond):
		}
	}
	return errors.New("PD did not elect a leader within 60 s")
}

// waitReady waits until every store is up in PD and the first region has
// a leader.
func (pg *playground) waitReady(pdAddr string, stores int) error {
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		var ss struct {
			Stores []struct{ State string } `json:"stores"`
		}
		var rs struct {
			Regions []struct {
				Leader *struct{ Id uint64 } `json:"leader"`
			} `json:"regions"`
		}
		if getJSON("http://"+pdAddr+"/pd/api/v1/stores", &ss) == nil && getJSON("http://"+pdAddr+"/pd/api/v1/regions", &rs) == nil {
			up := 0
			for _, s := range ss.Stores {
				if s.State == "Up" {
					up++
				}
			}
			if up == stores && len(rs.Regions) > 0 && rs.Regions[0].Leader != nil {
				return nil
			}
		}
		select {
		case name := <-pg.died:
			return pg.childDied(name)
		case <-pg.interrupted:
			return errInterrupted
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("the cluster was not ready within 90 s; logs are in %s", pg.dir)
}

// stop ends every child: SIGTERM, then SIGKILL for any still running after
// 15 s.
func (pg *playground) stop() {
	pg.mu.Lock()
	procs := pg.procs
	pg.procs = nil
	pg.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		_ = procs[i].cmd.Process.Signal(syscall.SIGTERM)
	}
	timer := time.NewTimer(15 * time.Second)
	defer timer.Stop()
	late := false
	for _, p := range procs {
		if !late {
			select {
			case <-p.exited:
				continue
			case <-timer.C:
				late = true
			}
		}
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}
