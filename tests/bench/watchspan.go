package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// The watch over a prefix cut into many regions: etcd's benchmark tool
// watches one key, so this workload is the harness's own, run the same way
// against both systems with clientv3. On Basalt the prefix is split into
// watchSpanRegions regions first; etcd has one raft group, so for it the
// prefix is like any other.
//
// The prefix starts with 0xff: the range workloads read ["\x01", "\xfe"),
// and the 16 regions must not cut that range (a first version used "wl/",
// which made the 100,000-key range cross 17 regions and the range rows
// measure the split, not the read).
const (
	watchSpanPrefix  = "\xffwl/"
	watchSpanRegions = 16
	watchSpanConns   = 10
	watchSpanPerConn = 10
	watchSpanRate    = 100 // puts a second, as the single-key workload's --put-rate
)

// watchSpanKey is the i-th put's key: the puts go round the regions.
func watchSpanKey(i int) string {
	return fmt.Sprintf("%s%02d/%06d", watchSpanPrefix, i%watchSpanRegions, i)
}

// watchSpanSplits are the split keys that cut the prefix into
// watchSpanRegions regions.
func watchSpanSplits() []string {
	var keys []string
	for r := 1; r < watchSpanRegions; r++ {
		keys = append(keys, fmt.Sprintf("%s%02d/", watchSpanPrefix, r))
	}
	return keys
}

// runWatchSpan opens watchSpanConns clients with watchSpanPerConn watches
// each on the prefix, puts total keys at watchSpanRate from one more client,
// and measures, as etcd's watch-latency does, each event from the start of
// its put to its arrival at each watcher. rps is events delivered a second.
func runWatchSpan(endpoints string, total int) (result, error) {
	eps := strings.Split(endpoints, ",")
	newClient := func(i int) (*clientv3.Client, error) {
		return clientv3.New(clientv3.Config{Endpoints: []string{eps[i%len(eps)]}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var clients []*clientv3.Client
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	var (
		mu      sync.Mutex
		started = make(map[string]time.Time, total)
		lat     []time.Duration
		wg      sync.WaitGroup
		errs    = make(chan error, watchSpanConns*watchSpanPerConn)
	)
	for c := 0; c < watchSpanConns; c++ {
		cli, err := newClient(c)
		if err != nil {
			return result{}, err
		}
		clients = append(clients, cli)
		for w := 0; w < watchSpanPerConn; w++ {
			// WithCreatedNotify: a watcher counts from the moment the server
			// confirmed it, so no put races its creation.
			wch := cli.Watch(ctx, watchSpanPrefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
			if r, ok := <-wch; !ok || !r.Created {
				return result{}, fmt.Errorf("watch %d/%d not created: %v", c, w, r.Err())
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				got := 0
				for r := range wch {
					now := time.Now()
					if err := r.Err(); err != nil {
						errs <- err
						return
					}
					mu.Lock()
					for _, e := range r.Events {
						lat = append(lat, now.Sub(started[string(e.Kv.Key)]))
					}
					mu.Unlock()
					if got += len(r.Events); got >= total {
						return
					}
				}
				errs <- fmt.Errorf("a watch ended after %d of %d events", got, total)
			}()
		}
	}
	writer, err := newClient(watchSpanConns)
	if err != nil {
		return result{}, err
	}
	clients = append(clients, writer)
	begin := time.Now()
	tick := time.NewTicker(time.Second / watchSpanRate)
	for i := 0; i < total; i++ {
		<-tick.C
		k := watchSpanKey(i)
		mu.Lock()
		started[k] = time.Now()
		mu.Unlock()
		if _, err := writer.Put(ctx, k, "v"); err != nil {
			tick.Stop()
			cancel()
			wg.Wait()
			return result{}, fmt.Errorf("put %s: %w", k, err)
		}
	}
	tick.Stop()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		cancel()
		<-done
		return result{}, fmt.Errorf("not every event arrived within the deadline")
	}
	select {
	case err := <-errs:
		return result{}, err
	default:
	}
	elapsed := time.Since(begin)
	// The next round writes the same keys again: start from an empty prefix.
	if _, err := writer.Delete(context.Background(), watchSpanPrefix, clientv3.WithPrefix()); err != nil {
		return result{}, err
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return result{rps: float64(len(lat)) / elapsed.Seconds(), p50: lat[len(lat)/2].Seconds(), p99: lat[len(lat)*99/100].Seconds()}, nil
}
