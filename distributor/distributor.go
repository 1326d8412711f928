// Package distributor serves long-poll claims. It parks claims per
// (namespace, task queue), claims work for all of a queue's waiters at once
// with one statement per set of workflow types, and otherwise waits, without
// any query, for the first of: a notification for the queue, the next time
// a delayed, sleeping or retrying run becomes available, a waiter's
// deadline, a slow backstop poll, or shutdown.
package distributor

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/kagzi/kagzi/domain"
)

// Store is what the distributor needs of storage.
type Store interface {
	// ClaimRuns claims, oldest available first, up to len(slots) claimable
	// runs of the queue whose type is in types (any when empty), and gives
	// the claimed runs to slots in order: each slot is a worker ID, or ""
	// for none. Slots of workers that may not claim are refused. The result
	// gives each task with the index of its slot, and says whether the
	// queue's settings (paused, concurrency limits) held the claim back.
	ClaimRuns(ctx context.Context, namespace, queue string, types []string, slots []string) (domain.ClaimResult, error)
	// ReleaseRuns puts runs claimed for waiters that are gone back to
	// pending at once, without consuming an attempt.
	ReleaseRuns(ctx context.Context, leases []domain.Lease) error
	// NextAvailableIn returns how long until the next run of the queue
	// whose type is in types (any when empty) that was not claimable
	// `since` ago becomes claimable, if any will; the duration is negative
	// for one that became claimable meanwhile. It is measured by the
	// database's clock, so that a skew between it and this process's clock
	// cannot turn into a busy loop.
	NextAvailableIn(ctx context.Context, namespace, queue string, types []string, since time.Duration) (time.Duration, bool, error)
}

// Options tune a Distributor; zero values take the defaults.
type Options struct {
	// Backstop is the mean interval of the slow poll that bounds how long
	// a lost notification can delay work. Default 30s, jittered ±25%.
	Backstop time.Duration
	// Metrics receives the distributor's measurements; nil records none.
	Metrics *Metrics
}

// Distributor parks claims and hands them work.
type Distributor struct {
	store    Store
	logger   *slog.Logger
	backstop time.Duration
	metrics  *Metrics

	mu     sync.Mutex
	queues map[queueKey]*queue
	closed bool

	done chan struct{} // closed when the distributor stops
	wg   sync.WaitGroup
}

type queueKey struct{ namespace, name string }

// queue is the parked state of one (namespace, task queue). Its runner
// goroutine lives while it has waiters; everything else is guarded by the
// distributor's mutex.
type queue struct {
	key     queueKey
	waiters []*waiter // in arrival order
	wake    chan struct{}
	// empty holds the type sets (domain.ClaimRequest.TypeSet) a claim found
	// nothing for since the last notification; "" is any type.
	empty map[string]bool
	// notified counts notifications, so that a claim racing one does not
	// mark the queue empty.
	notified uint64
	// limited is set when the queue's settings held back its last claim:
	// then a run that finishes may free a slot, and is worth a claim.
	limited bool
	// finished counts the runs of the queue that finished, limited or not,
	// so that one finishing while a claim is held back by the limits (and
	// limited not yet set) is not missed.
	finished uint64
}

type waiter struct {
	req      domain.ClaimRequest
	typeSet  string
	deadline time.Time
	claimed  bool // the runner has tried at least once (for wait 0)
	answered bool
	// claiming is set while a claim statement runs for the waiter, and
	// reserved while a hand-off (Offer) holds it: each keeps the other
	// off, so that a waiter is never claimed for twice at once.
	claiming bool
	reserved bool
	result   chan answer // buffered; written once, under the mutex
}

// answer is what a parked claim gets: tasks, or why it may not claim.
type answer struct {
	tasks []domain.Task
	err   error
}

// New returns a distributor. It does no I/O until claims arrive.
func New(store Store, logger *slog.Logger, opts Options) *Distributor {
	if opts.Backstop <= 0 {
		opts.Backstop = 30 * time.Second
	}
	return &Distributor{
		store:    store,
		logger:   logger.With("component", "distributor"),
		backstop: opts.Backstop,
		metrics:  opts.Metrics,
		queues:   map[queueKey]*queue{},
		done:     make(chan struct{}),
	}
}

// Run blocks until ctx ends, then stops: parked claims answer with no tasks
// at once, and new ones do too. It returns when every runner has finished.
func (d *Distributor) Run(ctx context.Context) error {
	<-ctx.Done()
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	close(d.done)
	d.wg.Wait()
	return nil
}

// Notify says that work may have become claimable on a queue, or that its
// next available time may have changed. It never blocks.
func (d *Distributor) Notify(namespace, queue string) {
	d.metrics.notification()
	d.mu.Lock()
	defer d.mu.Unlock()
	if q, ok := d.queues[queueKey{namespace, queue}]; ok {
		q.invalidate()
	}
}

// Finished says that a run of a queue became terminal. That frees a slot
// only on a queue whose limits held claims back; others ignore it, so
// finishing runs costs no claims.
func (d *Distributor) Finished(namespace, queue string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if q, ok := d.queues[queueKey{namespace, queue}]; ok {
		q.finished++
		if q.limited {
			q.invalidate()
		}
	}
}

// NotifyAll says that notifications may have been missed (the listener
// reconnected): every queue with waiters claims again.
func (d *Distributor) NotifyAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, q := range d.queues {
		q.invalidate()
	}
}

// invalidate forgets what the queue was known not to have and wakes its
// runner. The caller holds the mutex.
func (q *queue) invalidate() {
	q.notified++
	clear(q.empty)
	q.signal()
}

func (q *queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Claim parks req until runs are claimed for it or its wait ends. It
// returns at most req.MaxTasks tasks, or none when the wait ended empty or
// the distributor is stopping. If ctx ends first (the client went away),
// runs already claimed for it are released and ctx's error is returned.
func (d *Distributor) Claim(ctx context.Context, req domain.ClaimRequest) ([]domain.Task, error) {
	start := time.Now()
	w := &waiter{
		req:      req,
		typeSet:  req.TypeSet(),
		deadline: start.Add(req.Wait),
		result:   make(chan answer, 1),
	}
	k := queueKey{req.Namespace, req.TaskQueue}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return []domain.Task{}, nil
	}
	q, ok := d.queues[k]
	if !ok {
		q = &queue{key: k, wake: make(chan struct{}, 1), empty: map[string]bool{}}
		d.queues[k] = q
		d.wg.Add(1)
		go d.run(q)
	}
	q.waiters = append(q.waiters, w)
	q.signal() // the runner must learn the new deadline, even if it needs no query
	d.metrics.parked(1)
	d.mu.Unlock()

	select {
	case a := <-w.result:
		d.metrics.claimDone(start, len(a.tasks))
		return a.tasks, a.err
	case <-ctx.Done():
	}
	d.mu.Lock()
	if !w.answered {
		w.answered = true
		q.waiters = slices.DeleteFunc(q.waiters, func(x *waiter) bool { return x == w })
		d.metrics.parked(-1)
		d.mu.Unlock()
		return nil, ctx.Err()
	}
	d.mu.Unlock()
	// Answered while the client left: what was claimed for it goes back.
	if a := <-w.result; len(a.tasks) > 0 {
		d.release(a.tasks)
	}
	return nil, ctx.Err()
}

// Waiting returns the number of claims parked on a queue.
func (d *Distributor) Waiting(namespace, queue string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if q, ok := d.queues[queueKey{namespace, queue}]; ok {
		return len(q.waiters)
	}
	return 0
}

// Release puts back tasks that were claimed but could not be handed over.
func (d *Distributor) Release(tasks []domain.Task) { d.release(tasks) }

func (d *Distributor) release(tasks []domain.Task) {
	leases := make([]domain.Lease, len(tasks))
	for i, t := range tasks {
		leases[i] = domain.Lease{RunID: t.RunID, LeaseID: t.LeaseID}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.store.ReleaseRuns(ctx, leases); err != nil {
		// The leases will expire and the rescuer will put the runs back.
		d.logger.Error("release claimed runs", "runs", len(leases), "error", err)
	}
	d.metrics.released(len(leases))
}

// run is the runner of one queue: it claims when something may be there,
// answers waiters whose deadline passed, and otherwise sleeps.
func (d *Distributor) run(q *queue) {
	defer d.wg.Done()
	var (
		// nextAvailable is, by type set, when a delayed run of its types
		// becomes claimable: a waiter for some types is not woken by the
		// timers of others.
		nextAvailable = map[string]time.Time{}
		backstopAt    = time.Now().Add(d.jitteredBackstop())
		timer         = time.NewTimer(time.Hour)
	)
	defer timer.Stop()
	for {
		now := time.Now()
		d.mu.Lock()
		for set, at := range nextAvailable {
			if !now.Before(at) {
				// A run of these types is claimable: not empty for them,
				// nor for claims of any type.
				delete(nextAvailable, set)
				delete(q.empty, set)
				delete(q.empty, "")
			}
		}
		if !now.Before(backstopAt) {
			backstopAt = now.Add(d.jitteredBackstop())
			q.invalidate()
		}
		d.mu.Unlock()

		claimed, err := d.claimRound(q)
		if err != nil {
			d.logger.Error("claim", "namespace", q.key.namespace, "task_queue", q.key.name, "error", err)
		}
		for _, c := range claimed {
			if !c.short {
				delete(nextAvailable, c.set)
				continue
			}
			// Runs that became claimable since the claim began count too:
			// the claim may have missed them by a hair.
			in, ok, err := d.store.NextAvailableIn(context.Background(), q.key.namespace, q.key.name, c.types, time.Since(c.start))
			switch {
			case err != nil:
				d.logger.Error("next available time", "namespace", q.key.namespace, "task_queue", q.key.name, "error", err)
			case ok:
				nextAvailable[c.set] = time.Now().Add(max(in, time.Millisecond))
			default:
				delete(nextAvailable, c.set)
			}
		}

		d.mu.Lock()
		d.expire(q, time.Now())
		if len(q.waiters) == 0 {
			delete(d.queues, q.key)
			d.mu.Unlock()
			return
		}
		wakeAt := backstopAt
		for _, w := range q.waiters {
			if w.deadline.Before(wakeAt) {
				wakeAt = w.deadline
			}
		}
		for _, at := range nextAvailable {
			wakeAt = minTime(wakeAt, at)
		}
		if err != nil {
			// The database failed: try again soon, not in a tight loop.
			wakeAt = minTime(wakeAt, time.Now().Add(time.Second))
		}
		d.mu.Unlock()

		timer.Reset(time.Until(wakeAt))
		select {
		case <-q.wake:
		case <-timer.C:
		case <-d.done:
			d.mu.Lock()
			for _, w := range q.waiters {
				d.answer(w, answer{tasks: []domain.Task{}})
			}
			q.waiters = nil
			delete(d.queues, q.key)
			d.mu.Unlock()
			return
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// setClaim is how the claim for one type set went.
type setClaim struct {
	set   string
	types []string
	start time.Time
	// short is set when the claim came up short: the queue has nothing
	// more for the set right now.
	short bool
}

// claimRound claims once for every type set whose waiters are not known to
// find nothing, and hands out what it got. It reports how the claims that
// succeeded went.
func (d *Distributor) claimRound(q *queue) (claimed []setClaim, err error) {
	d.mu.Lock()
	groups := map[string][]*waiter{}
	var order []string
	for _, w := range q.waiters {
		if w.reserved {
			continue // a hand-off is claiming a run for it
		}
		if q.empty[w.typeSet] || q.empty[""] {
			w.claimed = true // nothing to find: a zero wait is done
			continue
		}
		w.claiming = true
		if _, ok := groups[w.typeSet]; !ok {
			order = append(order, w.typeSet)
		}
		groups[w.typeSet] = append(groups[w.typeSet], w)
	}
	notified, finished := q.notified, q.finished
	d.mu.Unlock()

	for _, set := range order {
		waiters := groups[set]
		var slots []string
		for _, w := range waiters {
			for range w.req.MaxTasks {
				slots = append(slots, w.req.WorkerID)
			}
		}
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, cerr := d.store.ClaimRuns(ctx, q.key.namespace, q.key.name, waiters[0].req.WorkflowTypes, slots)
		cancel()
		d.metrics.claimStatement()
		if cerr != nil {
			err = cerr // limited stays as it was: the claim did not learn
			d.mu.Lock()
			for _, w := range waiters {
				w.claimed, w.claiming = true, false
			}
			d.mu.Unlock()
			continue
		}
		d.mu.Lock()
		q.limited = res.Limited
		if res.Limited && q.finished != finished {
			// A run finished while the limits held this claim back, before
			// limited said that it matters: claim again.
			q.invalidate()
		}
		d.mu.Unlock()
		eligible := len(slots)
		for _, w := range waiters {
			if res.Refused[w.req.WorkerID] != nil {
				eligible -= w.req.MaxTasks
			}
		}
		short := len(res.Tasks) < eligible
		claimed = append(claimed, setClaim{set: set, types: waiters[0].req.WorkflowTypes, start: start, short: short})
		d.deliver(q, set, waiters, res, short, notified)
	}
	return claimed, err
}

// deliver hands claimed tasks to the waiters they were claimed for, in
// arrival order, and releases those of waiters that left meanwhile.
func (d *Distributor) deliver(q *queue, set string, waiters []*waiter, res domain.ClaimResult, short bool, notified uint64) {
	perWaiter := make([][]domain.Task, len(waiters))
	var slotOwner []int
	for i, w := range waiters {
		for range w.req.MaxTasks {
			slotOwner = append(slotOwner, i)
		}
	}
	for _, st := range res.Tasks {
		i := slotOwner[st.Slot]
		perWaiter[i] = append(perWaiter[i], st.Task)
	}
	var orphans []domain.Task
	d.mu.Lock()
	if short && q.notified == notified {
		q.empty[set] = true
	}
	for i, w := range waiters {
		w.claimed, w.claiming = true, false
		if err := res.Refused[w.req.WorkerID]; err != nil {
			d.answer(w, answer{err: err}) // drained, gone offline or removed while parked
			continue
		}
		if len(perWaiter[i]) == 0 {
			continue
		}
		if w.answered {
			orphans = append(orphans, perWaiter[i]...)
			continue
		}
		d.answer(w, answer{tasks: perWaiter[i]})
	}
	q.waiters = slices.DeleteFunc(q.waiters, func(w *waiter) bool { return w.answered })
	d.mu.Unlock()
	if len(orphans) > 0 {
		d.release(orphans)
	}
}

// expire answers, with no tasks, waiters whose deadline passed and whose
// queue was tried for them at least once. The caller holds the mutex.
func (d *Distributor) expire(q *queue, now time.Time) {
	q.waiters = slices.DeleteFunc(q.waiters, func(w *waiter) bool {
		if w.claimed && !w.reserved && !now.Before(w.deadline) {
			d.answer(w, answer{tasks: []domain.Task{}})
			return true
		}
		return false
	})
}

// answer gives w its answer. The caller holds the mutex.
func (d *Distributor) answer(w *waiter, a answer) {
	if w.answered {
		return
	}
	w.answered = true
	w.result <- a
	d.metrics.parked(-1)
}

func (d *Distributor) jitteredBackstop() time.Duration {
	quarter := d.backstop / 4
	return d.backstop - quarter + rand.N(2*quarter+1)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
