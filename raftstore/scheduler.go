package raftstore

import "sync"

// scheduler hands regions with work to a fixed pool of workers (CockroachDB's
// raft scheduler, TiKV's batch system). A region is in the queue at most
// once and is processed by at most one worker at a time; work that arrives
// while it is being processed requeues it when the worker finishes.
//
// Lock order: scheduler.mu is a leaf; never acquire another lock under it.
type scheduler struct {
	mu      sync.Mutex
	cond    *sync.Cond
	queue   []*peer
	head    int
	stopped bool
}

// Peer scheduling states, guarded by scheduler.mu.
const (
	schedIdle uint8 = iota
	schedQueued
	schedProcessing
	schedProcessingRequeue
)

func newScheduler() *scheduler {
	s := &scheduler{}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// enqueue marks p as having work.
func (s *scheduler) enqueue(p *peer) {
	s.mu.Lock()
	switch p.schedState {
	case schedIdle:
		p.schedState = schedQueued
		s.queue = append(s.queue, p)
		s.cond.Signal()
	case schedProcessing:
		p.schedState = schedProcessingRequeue
	}
	s.mu.Unlock()
}

// next blocks until there is work and returns up to max peers, now marked as
// processing. It returns nil once the scheduler is stopped.
func (s *scheduler) next(dst []*peer, max int) []*peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.head == len(s.queue) && !s.stopped {
		s.cond.Wait()
	}
	if s.stopped {
		return nil
	}
	n := min(max, len(s.queue)-s.head)
	for _, p := range s.queue[s.head : s.head+n] {
		p.schedState = schedProcessing
		dst = append(dst, p)
	}
	clear(s.queue[s.head : s.head+n])
	s.head += n
	if s.head == len(s.queue) {
		s.queue, s.head = s.queue[:0], 0
	} else if s.head > 1024 && s.head*2 > len(s.queue) {
		s.queue = append(s.queue[:0], s.queue[s.head:]...)
		s.head = 0
	}
	return dst
}

// done ends processing of ps; those that received work meanwhile (or whose
// raft still has a Ready, requeue[i]) go back in the queue.
func (s *scheduler) done(ps []*peer, requeue []bool) {
	s.mu.Lock()
	for i, p := range ps {
		if p.schedState == schedProcessingRequeue || requeue[i] {
			p.schedState = schedQueued
			s.queue = append(s.queue, p)
			s.cond.Signal()
		} else {
			p.schedState = schedIdle
		}
	}
	s.mu.Unlock()
}

func (s *scheduler) stop() {
	s.mu.Lock()
	s.stopped = true
	s.cond.Broadcast()
	s.mu.Unlock()
}
