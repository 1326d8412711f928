package distributor

import (
	"slices"

	"github.com/kagzi/kagzi/domain"
)

// A hand-off gives a run that is becoming claimable straight to a claim
// parked on this replica: the transaction that makes the run claimable
// (a start, a signal that wakes it) claims it for the parked claim instead,
// and the claim is answered once that transaction commits. That saves the
// notification's trip through PostgreSQL and a claim statement on the
// path from a start request to the worker, which is most of the pickup
// latency of an idle worker.
//
// Offer only ever hands a run to a claim whose queue is known to have
// nothing for it (its last claim came up short, and no notification came
// since), so a hand-off does not overtake runs that were claimable first,
// but for those whose notification or timer is still on its way: a few
// milliseconds' worth.

// Slot is one parked claim reserved by Offer. Exactly one of Deliver and
// Cancel must be called, once the caller's transaction has ended.
type Slot struct {
	d *Distributor
	q *queue
	w *waiter
}

var _ domain.HandoffSlot = (*Slot)(nil)

// WorkerID is the worker the parked claim named, or "" for none.
func (s *Slot) WorkerID() string { return s.w.req.WorkerID }

// Offer reserves a claim parked on the queue that would take a run of
// workflowType now, if there is one: the oldest such claim that no claim
// statement is serving and that no other hand-off holds, on a queue whose
// settings did not hold its last claim back. It never blocks.
func (d *Distributor) Offer(namespace, queue, workflowType string) (domain.HandoffSlot, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	q, ok := d.queues[queueKey{namespace, queue}]
	if !ok || d.closed || q.limited {
		return nil, false
	}
	for _, w := range q.waiters {
		if w.answered || w.claiming || w.reserved {
			continue
		}
		if !q.empty[w.typeSet] && !q.empty[""] {
			continue // claimable runs may be waiting for it: those go first
		}
		if len(w.req.WorkflowTypes) > 0 && !slices.Contains(w.req.WorkflowTypes, workflowType) {
			continue
		}
		w.reserved = true
		return &Slot{d: d, q: q, w: w}, true
	}
	return nil, false
}

// Deliver answers the reserved claim with task, claimed for it in a
// transaction that committed. If the claim went away meanwhile, the run is
// released, as a claimed run whose claimant left always is.
func (s *Slot) Deliver(task domain.Task) {
	d := s.d
	d.mu.Lock()
	s.w.reserved = false
	if s.w.answered {
		d.mu.Unlock()
		d.release([]domain.Task{task})
		return
	}
	s.w.claimed = true
	d.answer(s.w, answer{tasks: []domain.Task{task}})
	s.q.waiters = slices.DeleteFunc(s.q.waiters, func(w *waiter) bool { return w == s.w })
	s.q.signal() // a runner left without waiters stops
	d.metrics.handedOff()
	d.mu.Unlock()
}

// Cancel gives the reserved claim back to its queue, nothing claimed for
// it; its runner looks again, in case its deadline passed meanwhile.
func (s *Slot) Cancel() {
	s.d.mu.Lock()
	s.w.reserved = false
	s.q.signal()
	s.d.mu.Unlock()
}
