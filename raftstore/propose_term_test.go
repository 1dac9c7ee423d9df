package raftstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/basaltdb/basalt/region"
)

// A command bound to a leader term lands only in that term: after the
// leadership moved away and came back, a command built in the old term is
// refused even though this replica leads again.
func TestProposeInTermRefusesAnotherTerm(t *testing.T) {
	c := newTestCluster(t, 3, testConfig())
	c.bootstrap(1, "", "", 1, 2, 3)
	_ = c.store(1).st.Campaign(1)
	c.put(1, "a", "1")
	l := c.leader(1)
	st := l.st.RegionStatus(1)
	oldTerm := st.Term
	propose := func(ts *testStore, term uint64) error {
		pd, err := ts.st.ProposeAsyncInTerm(1, ts.st.RegionStatus(1).Region.GetRegionEpoch(), term, encodePut([]byte("b"), []byte("x")))
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = pd.Wait(ctx)
		return err
	}
	if err := propose(l, oldTerm); err != nil {
		t.Fatalf("in the leader's own term: %v", err)
	}
	if err := propose(l, oldTerm+1); !errors.Is(err, region.ErrNotLeader) {
		t.Fatalf("in a term this replica does not lead: %v", err)
	}
	// Leadership goes away and comes back in a later term.
	var other *testStore
	for _, id := range c.ids {
		if id != l.id {
			other = c.store(id)
			break
		}
	}
	transfer := func(from, to *testStore) {
		reg := from.st.RegionStatus(1).Region
		if err := from.st.TransferLeader(context.Background(), 1, reg.GetRegionEpoch(), region.FindPeer(reg, to.id).GetId()); err != nil {
			t.Fatal(err)
		}
	}
	transfer(l, other)
	waitFor(t, "another leader", 10*time.Second, func() bool { return other.st.RegionStatus(1).IsLeader() })
	transfer(other, l)
	waitFor(t, "the first leader back", 10*time.Second, func() bool {
		s := l.st.RegionStatus(1)
		return s.IsLeader() && s.Term > oldTerm
	})
	if err := propose(l, oldTerm); !errors.Is(err, region.ErrNotLeader) {
		t.Fatalf("a command of an earlier term landed in a later one: %v", err)
	}
	if err := propose(l, l.st.RegionStatus(1).Term); err != nil {
		t.Fatalf("in the new term: %v", err)
	}
}
