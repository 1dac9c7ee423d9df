package storenode

import (
	"context"
	"sync"
	"time"

	"github.com/basaltdb/basalt/client"
	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/proto/metapb"
)

// leaseChecks is the data side of the attach protocol (lease.go): before
// a write that attaches leases is proposed, each lease's owner registers
// the region's range and says up to which revision the lease may be
// attached. Answers are cached per lease and region range, and asked for
// again when less than leaseCheckMargin of one is left.
type leaseChecks struct {
	s *Server

	mu    sync.Mutex
	cache map[leaseCheckKey]int64
}

type leaseCheckKey struct {
	lease    int64
	regionID uint64
	version  uint64
}

func newLeaseChecks(s *Server) *leaseChecks {
	return &leaseChecks{s: s, cache: map[leaseCheckKey]int64{}}
}

// nowTS estimates PD's current timestamp from this store's clock. Only the
// cache uses it: a clock behind PD's makes a write carry a check past its
// end, which apply refuses (ErrLeaseCheckStale) and the store asks again.
func nowTS() int64 { return time.Now().UnixMilli() << tsoLogicalBits }

// forWrite returns the checks for a write in desc attaching leases. A
// lease that does not exist gets no check (apply refuses a put that uses
// it; a transaction branch not taken may name it). fresh skips the cache.
func (lc *leaseChecks) forWrite(ctx context.Context, desc *metapb.Region, leases []int64, fresh bool) ([]*kvpb.LeaseCheck, error) {
	var out []*kvpb.LeaseCheck
	now := nowTS()
	for _, l := range leases {
		k := leaseCheckKey{lease: l, regionID: desc.GetId(), version: desc.GetRegionEpoch().GetVersion()}
		if !fresh {
			lc.mu.Lock()
			until, ok := lc.cache[k]
			lc.mu.Unlock()
			if ok && until-now > leaseCheckMargin {
				out = append(out, &kvpb.LeaseCheck{Id: l, ValidUntil: until})
				continue
			}
		}
		until, err := lc.s.router.LeaseAttach(ctx, l, &kvpb.KeySpan{Start: desc.GetStartKey(), End: desc.GetEndKey()})
		if client.IsLeaseNotFound(err) {
			lc.forget(k)
			continue
		}
		if err != nil {
			return nil, err
		}
		lc.mu.Lock()
		lc.cache[k] = until
		lc.mu.Unlock()
		out = append(out, &kvpb.LeaseCheck{Id: l, ValidUntil: until})
	}
	return out, nil
}

func (lc *leaseChecks) forget(k leaseCheckKey) {
	lc.mu.Lock()
	delete(lc.cache, k)
	lc.mu.Unlock()
}

// prune drops the checks that ran out.
func (lc *leaseChecks) prune() {
	now := nowTS()
	lc.mu.Lock()
	defer lc.mu.Unlock()
	for k, until := range lc.cache {
		if until < now {
			delete(lc.cache, k)
		}
	}
}
