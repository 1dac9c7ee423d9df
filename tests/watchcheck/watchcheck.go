// Package watchcheck checks a recorded watch against the history of writes
// for etcd's watch guarantees: ordered, unique, atomic, bookmarkable,
// reliable, prev_kv correct, and resumable (a watch started later from a
// revision sees exactly the first watch's events from there on).
package watchcheck

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/basaltdb/basalt/proto/kvpb"
)

// Write is one write a client issued to a watched key.
type Write struct {
	Key    string
	Value  string // unique per key among puts; empty for a delete
	Delete bool
	// Rev is the revision it was acknowledged at; 0 when the call failed
	// and the write may or may not have happened.
	Rev int64
}

// Response is one watch response as delivered.
type Response struct {
	Revision int64 // header revision
	Progress bool  // a progress notification (no events)
	Events   []*kvpb.Event
}

// History is what the writers did.
type History struct {
	byKey map[string][]Write
}

// NewHistory indexes writes.
func NewHistory(writes []Write) *History {
	h := &History{byKey: map[string][]Write{}}
	for _, w := range writes {
		h.byKey[w.Key] = append(h.byKey[w.Key], w)
	}
	return h
}

// Check checks responses of a watch that started at start (events from
// start on) with prevKV as asked, against the history, up to until: every
// write acknowledged at a revision in [start, until] must have been seen.
// It returns every violation found (at most a few per kind).
func Check(h *History, start, until int64, prevKV bool, resps []Response) []error {
	var errs []error
	report := func(format string, args ...any) {
		if len(errs) < 20 {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	type seenKey struct {
		key string
		rev int64
	}
	seen := map[seenKey]bool{}
	last := map[string]*kvpb.Event{} // the previous event on each key
	var lastRev, progressRev int64
	for i, r := range resps {
		if r.Progress {
			if len(r.Events) > 0 {
				report("response %d: a progress notification carries events", i)
			}
			if r.Revision < progressRev {
				report("response %d: progress went back from %d to %d", i, progressRev, r.Revision)
			}
			progressRev = max(progressRev, r.Revision)
			continue
		}
		for j, e := range r.Events {
			rev := e.GetKv().GetModRevision()
			key := string(e.GetKv().GetKey())
			// Ordered and atomic: revisions only go up, and a revision
			// continues within one response only.
			if rev < lastRev || (rev == lastRev && j == 0) {
				report("response %d: event %s@%d after revision %d (out of order, or a revision split across responses)", i, key, rev, lastRev)
			}
			// Bookmarkable: nothing at or below a progress revision after it.
			if rev <= progressRev {
				report("response %d: event %s@%d at or below the progress notification %d sent before it", i, key, rev, progressRev)
			}
			if rev < start {
				report("response %d: event %s@%d below the start revision %d", i, key, rev, start)
			}
			lastRev = max(lastRev, rev)
			sk := seenKey{key, rev}
			if seen[sk] {
				report("response %d: event %s@%d delivered twice", i, key, rev)
			}
			seen[sk] = true
			// Every event is a write that was issued, at its revision if
			// it was acknowledged.
			if !issued(h, key, e) {
				report("response %d: event %s %s@%d=%q matches no write issued", i, e.GetType(), key, rev, e.GetKv().GetValue())
			}
			if prev := last[key]; prevKV && prev != nil {
				want := prev.GetKv()
				got := e.GetPrevKv()
				switch {
				case prev.GetType() == kvpb.Event_DELETE && got != nil:
					report("response %d: %s@%d has prev_kv %q after a delete", i, key, rev, got.GetValue())
				case prev.GetType() == kvpb.Event_PUT && (got == nil || string(got.GetValue()) != string(want.GetValue()) || got.GetModRevision() != want.GetModRevision()):
					report("response %d: %s@%d has prev_kv %v, the previous event was %q@%d", i, key, rev, got, want.GetValue(), want.GetModRevision())
				}
			}
			last[key] = e
		}
		if len(r.Events) > 0 && r.Revision < lastRev {
			report("response %d: header revision %d below its events' %d", i, r.Revision, lastRev)
		}
	}
	// Reliable: every acknowledged write in [start, until] was delivered.
	for key, ws := range h.byKey {
		for _, w := range ws {
			if w.Rev == 0 || w.Rev < start || w.Rev > until {
				continue
			}
			if !seen[seenKey{key, w.Rev}] {
				report("write %s@%d (delete=%v, %q) acknowledged but never delivered", key, w.Rev, w.Delete, w.Value)
			}
		}
	}
	return errs
}

func issued(h *History, key string, e *kvpb.Event) bool {
	rev := e.GetKv().GetModRevision()
	for _, w := range h.byKey[key] {
		if w.Rev != 0 && w.Rev != rev {
			continue
		}
		if e.GetType() == kvpb.Event_DELETE && w.Delete {
			return true
		}
		if e.GetType() == kvpb.Event_PUT && !w.Delete && w.Value == string(e.GetKv().GetValue()) {
			return true
		}
	}
	return false
}

// CheckResumed checks that a watch started from rev saw exactly the
// events the first watch saw from rev on, in the same order, up to the
// first watch's last event.
func CheckResumed(first, resumed []Response, rev int64) []error {
	flatten := func(rs []Response) []string {
		var out []string
		for _, r := range rs {
			for _, e := range r.Events {
				if e.GetKv().GetModRevision() >= rev {
					out = append(out, fmt.Sprintf("%s %s@%d=%q", e.GetType(), e.GetKv().GetKey(), e.GetKv().GetModRevision(), e.GetKv().GetValue()))
				}
			}
		}
		return out
	}
	a, b := flatten(first), flatten(resumed)
	if len(b) > len(a) {
		b = b[:len(a)]
	}
	if len(b) < len(a) {
		return []error{fmt.Errorf("resumed watch from %d saw %d events, the first watch %d", rev, len(b), len(a))}
	}
	for i := range a {
		if a[i] != b[i] {
			return []error{fmt.Errorf("resumed watch from %d: event %d is %s, the first watch saw %s", rev, i, b[i], a[i])}
		}
	}
	return nil
}

// Log records the writes concurrent writers issue.
type Log struct {
	mu     sync.Mutex
	writes []Write
}

// Add records one write.
func (l *Log) Add(w Write) {
	l.mu.Lock()
	l.writes = append(l.writes, w)
	l.mu.Unlock()
}

// All returns a copy of every write recorded so far.
func (l *Log) All() []Write {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Write(nil), l.writes...)
}

// CheckFiltered checks a watch that asked to filter out puts (noPut) or
// deletes (noDelete) against an unfiltered watch of the same range from the
// same revision: up to the last revision both vouched for (an event's or a
// progress notification's), it must have delivered exactly the unfiltered
// watch's events of the other kind, in revision order, with the same
// prev_kv, and a revision's events in one response.
//
// Within one revision the two may differ in order: a store replays a
// revision's events from its history in key order and sends live ones in
// the order the transaction wrote them (docs/storenode.md), so a watch
// that resumed from history and one that saw the transaction live list a
// multi-key transaction's events differently. etcd's guarantees say
// nothing of the order within a revision.
func CheckFiltered(all, filtered []Response, noPut, noDelete bool) []error {
	upTo := min(vouched(all), vouched(filtered))
	describe := func(e *kvpb.Event) string {
		s := fmt.Sprintf("%s %s@%d=%q", e.GetType(), e.GetKv().GetKey(), e.GetKv().GetModRevision(), e.GetKv().GetValue())
		if p := e.GetPrevKv(); p != nil {
			s += fmt.Sprintf(" (prev %q@%d)", p.GetValue(), p.GetModRevision())
		}
		return s
	}
	kept := func(e *kvpb.Event) bool {
		return !(noPut && e.GetType() == kvpb.Event_PUT) && !(noDelete && e.GetType() == kvpb.Event_DELETE)
	}
	type event struct {
		rev  int64
		desc string
	}
	var wantEvents, gotEvents []event
	for _, r := range all {
		for _, e := range r.Events {
			if kept(e) && e.GetKv().GetModRevision() <= upTo {
				wantEvents = append(wantEvents, event{e.GetKv().GetModRevision(), describe(e)})
			}
		}
	}
	var errs []error
	var lastRev int64
	for i, r := range filtered {
		for j, e := range r.Events {
			rev := e.GetKv().GetModRevision()
			if rev < lastRev || (rev == lastRev && j == 0) {
				errs = append(errs, fmt.Errorf("filtered watch, response %d: event %s after revision %d (out of order, or a revision split across responses)", i, describe(e), lastRev))
			}
			lastRev = max(lastRev, rev)
			if !kept(e) {
				errs = append(errs, fmt.Errorf("filtered watch, response %d: delivered %s, which its filter drops", i, describe(e)))
			}
			if rev <= upTo {
				gotEvents = append(gotEvents, event{rev, describe(e)})
			}
		}
	}
	// Each revision's events in one order (by their description) for the
	// comparison; the order of revisions is checked above (and, for the
	// unfiltered watch, by Check), so sorting by revision first moves
	// nothing across revisions.
	canonical := func(evs []event) []string {
		slices.SortStableFunc(evs, func(a, b event) int {
			return cmp.Or(cmp.Compare(a.rev, b.rev), strings.Compare(a.desc, b.desc))
		})
		out := make([]string, len(evs))
		for i, e := range evs {
			out[i] = e.desc
		}
		return out
	}
	want, got := canonical(wantEvents), canonical(gotEvents)
	for i := 0; i < max(len(want), len(got)) && len(errs) < 5; i++ {
		switch {
		case i >= len(got):
			errs = append(errs, fmt.Errorf("filtered watch (up to %d): missing %s, event %d of the unfiltered watch's", upTo, want[i], i))
		case i >= len(want):
			errs = append(errs, fmt.Errorf("filtered watch (up to %d): delivered %s, which the unfiltered watch did not", upTo, got[i]))
		case got[i] != want[i]:
			errs = append(errs, fmt.Errorf("filtered watch (up to %d): event %d is %s, the unfiltered watch's is %s", upTo, i, got[i], want[i]))
		}
		if i < len(got) && i < len(want) && got[i] != want[i] {
			break
		}
	}
	return errs
}

// vouched is the revision up to which a watch delivered everything: its
// last event's or progress notification's.
func vouched(resps []Response) int64 {
	var rev int64
	for _, r := range resps {
		if r.Progress {
			rev = max(rev, r.Revision)
		}
		for _, e := range r.Events {
			rev = max(rev, e.GetKv().GetModRevision())
		}
	}
	return rev
}
