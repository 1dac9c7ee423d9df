package storenode

import (
	"slices"
	"testing"
)

func TestResolveDemandsCoalesce(t *testing.T) {
	d := newResolveDemands()
	d.add(7)
	d.add(7)
	d.add(3)
	if len(d.wake) != 1 {
		t.Fatalf("%d wake tokens, want 1", len(d.wake))
	}
	<-d.wake
	if got := d.take(); !slices.Equal(slices.Sorted(slices.Values(got)), []uint64{3, 7}) {
		t.Fatalf("took %v, want [3 7]", got)
	}
	if got := d.take(); len(got) != 0 {
		t.Fatalf("took %v again", got)
	}
	// A demand for a region resolving already is kept quietly, and wakes
	// the resolver when that resolve ends.
	d.keep(7)
	if len(d.wake) != 0 {
		t.Fatal("keep woke the resolver")
	}
	d.wakeIfPending(3)
	if len(d.wake) != 0 {
		t.Fatal("a region not demanded woke the resolver")
	}
	d.wakeIfPending(7)
	if len(d.wake) != 1 {
		t.Fatal("the kept demand did not wake the resolver")
	}
	if got := d.take(); !slices.Equal(got, []uint64{7}) {
		t.Fatalf("took %v, want [7]", got)
	}
}
