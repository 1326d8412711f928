package distributor_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/kagzi/kagzi/distributor"
	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

// newHandoffDistributor is newBareDistributor whose store hands runs to its
// parked claims.
func newHandoffDistributor(t *testing.T) (*countingStore, *distributor.Distributor) {
	t.Helper()
	pool, _ := pgtest.NewPool(t)
	store, d := newBareDistributor(t, pool)
	store.HandOffTo(d)
	return store, d
}

// startOne starts one run of type wf on queue through StartRun, as the
// start endpoint does.
func startOne(t *testing.T, store *countingStore, queue string) domain.Run {
	t.Helper()
	nr, err := domain.StartRequest{WorkflowType: "wf", TaskQueue: queue, Input: json.RawMessage(`{"n":1}`)}.
		Validate(domain.PayloadLimits{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	run, created, err := store.StartRun(context.Background(), ns, nr)
	if err != nil || !created {
		t.Fatalf("StartRun: created %v, err %v", created, err)
	}
	return run
}

// TestStartHandsRunToParkedClaim: a run started while a claim is parked on
// an empty queue is created claimed for it, and the claim is answered
// before the start returns, with no claim statement and no notification.
func TestStartHandsRunToParkedClaim(t *testing.T) {
	t.Parallel()
	store, d := newHandoffDistributor(t)
	ch := claimAsync(context.Background(), d, claimReq("q", 5, 30*time.Second))
	waitFor(t, "parked", func() bool { return store.claims.Load() == 1 })

	run := startOne(t, store, "q")
	if run.Status != domain.RunRunning || run.Attempt != 1 || run.StartedAt == nil || run.LeaseExpiresAt == nil {
		t.Fatalf("started run: status %s, attempt %d, started %v, lease until %v; want running, attempt 1",
			run.Status, run.Attempt, run.StartedAt, run.LeaseExpiresAt)
	}
	r := receive(t, ch, time.Second)
	if r.err != nil || len(r.tasks) != 1 {
		t.Fatalf("claim: got %d tasks, err %v; want the started run", len(r.tasks), r.err)
	}
	task := r.tasks[0]
	if task.RunID != run.RunID || task.Attempt != 1 || string(task.Input) != `{"n":1}` || !task.Fresh ||
		task.WorkflowType != "wf" || task.TaskQueue != "q" || task.Namespace != ns {
		t.Fatalf("task: got %+v, want run %s, attempt 1, its input", task, run.RunID)
	}
	if got := store.claims.Load(); got != 1 {
		t.Errorf("claim statements: got %d, want 1 (the first look only)", got)
	}
	// The lease handed out is the run's: the worker can complete it.
	if _, err := store.CompleteRun(context.Background(), ns, task.RunID, task.LeaseID, json.RawMessage(`"ok"`)); err != nil {
		t.Fatalf("complete under the handed-out lease: %v", err)
	}
}

// TestBatchStartHandsRunsToParkedClaims: a batch hands its first runs to
// the claims parked for their types, one run per claim, in batch order,
// and leaves the others pending for the claims to come.
func TestBatchStartHandsRunsToParkedClaims(t *testing.T) {
	t.Parallel()
	store, d := newHandoffDistributor(t)
	reqA, reqB := claimReq("q", 10, 30*time.Second), claimReq("q", 10, 30*time.Second)
	reqA.WorkflowTypes, reqB.WorkflowTypes = []string{"a"}, []string{"b"}
	chA := claimAsync(context.Background(), d, reqA)
	waitFor(t, "a parked", func() bool { return store.claims.Load() == 1 })
	chB := claimAsync(context.Background(), d, reqB)
	waitFor(t, "b parked", func() bool { return store.claims.Load() == 2 })

	types := []string{"c", "b", "a", "a", "b"}
	n := 0
	ids := startRuns(t, store.Store, "q", len(types), func(r *domain.StartRequest) { r.WorkflowType = types[n]; n++ })
	a, b := receive(t, chA, time.Second), receive(t, chB, time.Second)
	if len(a.tasks) != 1 || a.tasks[0].RunID != ids[2] {
		t.Errorf("claim of a: got %+v, want the first a, %s", a.tasks, ids[2])
	}
	if len(b.tasks) != 1 || b.tasks[0].RunID != ids[1] {
		t.Errorf("claim of b: got %+v, want the first b, %s", b.tasks, ids[1])
	}
	for i, want := range []domain.RunStatus{domain.RunPending, domain.RunRunning, domain.RunRunning, domain.RunPending, domain.RunPending} {
		run, err := store.GetRun(context.Background(), ns, ids[i])
		if err != nil || run.Status != want {
			t.Errorf("run %d (%s): status %s (err %v), want %s", i, types[i], run.Status, err, want)
		}
	}
}

// TestHandoffWaitsForClaimInFlight: a claim whose claim statement is
// running is not handed a run (it could get two at once): the run is
// created pending, and that claim statement, or the next, finds it.
func TestHandoffWaitsForClaimInFlight(t *testing.T) {
	t.Parallel()
	store, d := newHandoffDistributor(t)
	store.gate = make(chan struct{})
	ch := claimAsync(context.Background(), d, claimReq("q", 1, 30*time.Second))
	waitFor(t, "parked", func() bool { return d.Waiting(ns, "q") == 1 })
	if _, ok := d.Offer(ns, "q", "wf"); ok {
		t.Fatal("Offer reserved a claim that has not been looked for yet: runs started before it would wait behind it")
	}
	run := startOne(t, store, "q")
	if run.Status != domain.RunPending {
		t.Fatalf("run started while the claim statement runs: %s, want pending", run.Status)
	}
	close(store.gate)
	d.Notify(ns, "q") // what the start's NOTIFY does through the listener
	r := receive(t, ch, 5*time.Second)
	if len(r.tasks) != 1 || r.tasks[0].RunID != run.RunID {
		t.Fatalf("claim: got %+v, want run %s", r.tasks, run.RunID)
	}
}

// TestHandoffRespectsQueueSettingsAndWorkers: a paused queue, or a worker
// drained since it parked its claim, gets nothing handed: the run is
// created pending, and the parked claim stays parked (the queue) or is
// refused at its next claim (the worker), as without hand-offs.
func TestHandoffRespectsQueueSettingsAndWorkers(t *testing.T) {
	t.Parallel()
	t.Run("paused queue", func(t *testing.T) {
		t.Parallel()
		store, d := newHandoffDistributor(t)
		ch := claimAsync(context.Background(), d, claimReq("q", 1, 30*time.Second))
		waitFor(t, "parked", func() bool { return store.claims.Load() == 1 })
		paused := true
		if _, err := store.PatchTaskQueue(context.Background(), ns, "q", domain.TaskQueuePatch{Paused: &paused}); err != nil {
			t.Fatal(err)
		}
		// The distributor has not heard of the pause (it has no listener):
		// the statement itself must refuse.
		run := startOne(t, store, "q")
		if run.Status != domain.RunPending {
			t.Fatalf("run started on a paused queue: %s, want pending", run.Status)
		}
		if got := d.Waiting(ns, "q"); got != 1 {
			t.Fatalf("parked claims: got %d, want the claim still parked", got)
		}
		resumed := false
		if _, err := store.PatchTaskQueue(context.Background(), ns, "q", domain.TaskQueuePatch{Paused: &resumed}); err != nil {
			t.Fatal(err)
		}
		d.Notify(ns, "q")
		if r := receive(t, ch, 5*time.Second); len(r.tasks) != 1 || r.tasks[0].RunID != run.RunID {
			t.Fatalf("after resume: got %+v, want run %s", r.tasks, run.RunID)
		}
	})
	t.Run("drained worker", func(t *testing.T) {
		t.Parallel()
		store, d := newHandoffDistributor(t)
		w, err := store.RegisterWorker(context.Background(), ns, domain.Worker{TaskQueue: "q", WorkflowTypes: []string{}, Labels: map[string]string{}, MaxConcurrent: 1})
		if err != nil {
			t.Fatal(err)
		}
		req := claimReq("q", 1, 30*time.Second)
		req.WorkerID = w.WorkerID
		ch := claimAsync(context.Background(), d, req)
		waitFor(t, "parked", func() bool { return store.claims.Load() == 1 })
		if _, err := store.DrainWorker(context.Background(), ns, w.WorkerID); err != nil {
			t.Fatal(err)
		}
		run := startOne(t, store, "q")
		if run.Status != domain.RunPending {
			t.Fatalf("run handed to a drained worker: %s, want pending", run.Status)
		}
		d.Notify(ns, "q")
		r := receive(t, ch, 5*time.Second)
		if len(r.tasks) != 0 || !errors.Is(r.err, domain.ErrWorkerDraining) {
			t.Fatalf("claim of the drained worker: got %d tasks, err %v; want refused", len(r.tasks), r.err)
		}
	})
}

// goneOffer is a Handoff whose claim leaves right after it was reserved,
// before the start commits.
type goneOffer struct {
	d      *distributor.Distributor
	cancel context.CancelFunc
	done   <-chan claimResult
	result claimResult
}

func (g *goneOffer) Offer(namespace, queue, workflowType string) (domain.HandoffSlot, bool) {
	slot, ok := g.d.Offer(namespace, queue, workflowType)
	g.cancel()
	g.result = <-g.done
	return slot, ok
}

// TestHandoffToClaimGoneReleasesRun: a run claimed for a parked claim whose
// client left before the start committed goes back to pending at once,
// its attempt kept, for the next claim.
func TestHandoffToClaimGoneReleasesRun(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	store, d := newBareDistributor(t, pool)
	ctx, cancel := context.WithCancel(context.Background())
	ch := claimAsync(ctx, d, claimReq("q", 1, 30*time.Second))
	waitFor(t, "parked", func() bool { return store.claims.Load() == 1 })
	gone := &goneOffer{d: d, cancel: cancel, done: ch}
	store.HandOffTo(gone)

	run := startOne(t, store, "q")
	if gone.result.err == nil {
		t.Fatalf("the gone claim: got %d tasks and no error", len(gone.result.tasks))
	}
	if run.Status != domain.RunRunning {
		t.Fatalf("started run: %s, want running (claimed for the claim that left)", run.Status)
	}
	got, err := store.GetRun(context.Background(), ns, run.RunID)
	if err != nil || got.Status != domain.RunPending || got.Attempt != 1 {
		t.Fatalf("after the hand-off to a gone claim: %s at attempt %d (err %v), want pending, attempt 1 kept",
			got.Status, got.Attempt, err)
	}
	store.HandOffTo(d)
	d.Notify(ns, "q") // what the release's NOTIFY does through the listener
	next := receive(t, claimAsync(context.Background(), d, claimReq("q", 1, 5*time.Second)), 10*time.Second)
	if len(next.tasks) != 1 || next.tasks[0].RunID != run.RunID || next.tasks[0].Attempt != 1 {
		t.Fatalf("next claim: got %+v, want run %s at attempt 1", next.tasks, run.RunID)
	}
}

// TestTwoServersHandOffEachRunOnce is TestTwoServersClaimEachRunOnce with
// hand-offs on both replicas: runs started on one go to its parked claims
// when it has some, to the other's through claims otherwise.
func TestTwoServersHandOffEachRunOnce(t *testing.T) {
	t.Parallel()
	claimEachRunOnceWith(t, true, func(int) []string { return nil }, func(int) string { return "wf" })
	claimEachRunOnceWith(t, true, func(i int) []string { return [][]string{{"a", "b"}, {"b"}, {"a", "b", "c"}, {"c", "a"}}[i%4] },
		func(i int) string { return []string{"a", "b", "c"}[i%3] })
}

// TestHandoffDoesNotWaitForABusyWorkerRow: a start for a parked claim
// whose worker's row another transaction holds (a heartbeat, a
// deregistration: they lock the worker, then its runs) does not wait for
// it, which could close a cycle with a transaction holding the run; the
// run is created pending, and a claim takes it once the row is free.
func TestHandoffDoesNotWaitForABusyWorkerRow(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	store, d := newBareDistributor(t, pool)
	store.HandOffTo(d)
	ctx := context.Background()
	w, err := store.RegisterWorker(ctx, ns, domain.Worker{TaskQueue: "q", WorkflowTypes: []string{}, Labels: map[string]string{}, MaxConcurrent: 10})
	if err != nil {
		t.Fatal(err)
	}
	req := claimReq("q", 10, 30*time.Second)
	req.WorkerID = w.WorkerID
	ch := claimAsync(ctx, d, req)
	waitFor(t, "parked", func() bool { return store.claims.Load() == 1 })

	busy, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = busy.Rollback(ctx) }()
	if _, err := busy.Exec(ctx, `UPDATE workers SET last_heartbeat_at = now() WHERE worker_id = $1`, w.WorkerID); err != nil {
		t.Fatal(err)
	}
	nr, err := domain.StartRequest{WorkflowType: "wf", TaskQueue: "q"}.Validate(domain.PayloadLimits{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	type started struct {
		run domain.Run
		err error
	}
	ch2 := make(chan started, 1)
	go func() {
		run, _, err := store.StartRun(ctx, ns, nr)
		ch2 <- started{run, err}
	}()
	var run domain.Run
	select {
	case st := <-ch2:
		if st.err != nil {
			t.Fatal(st.err)
		}
		run = st.run
	case <-time.After(10 * time.Second):
		t.Fatal("the start waited for the worker's row")
	}
	if run.Status != domain.RunPending {
		t.Fatalf("run started while its claimant's row was busy: %s, want pending", run.Status)
	}
	batch := startRuns(t, store.Store, "q", 2, nil) // a batch start does not wait either
	if err := busy.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	d.Notify(ns, "q")
	r := receive(t, ch, 5*time.Second)
	if len(r.tasks) != 3 || r.tasks[0].RunID != run.RunID || r.tasks[1].RunID != batch[0] {
		t.Fatalf("claim after the row was free: got %+v, want the three runs in order", r.tasks)
	}
}

// TestWaitWithoutDeadlineFreesLimitedSlot: a run that parks in a wait
// with no deadline stops running, so on a queue with a concurrency limit
// it frees a slot: the claim the limit held back gets the next run at
// once, not at the backstop.
func TestWaitWithoutDeadlineFreesLimitedSlot(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	s := newServer(t, pool, url, time.Minute)
	one := 1
	patchQueue(t, s, "q", domain.TaskQueuePatch{MaxConcurrent: domain.Nullable[int]{Set: true, Value: &one}})
	ids := startRuns(t, s.store.Store, "q", 2, nil)
	first := receive(t, claimAsync(context.Background(), s.dist, claimReq("q", 1, 5*time.Second)), 10*time.Second)
	if len(first.tasks) != 1 || first.tasks[0].RunID != ids[0] {
		t.Fatalf("first claim: got %+v, want run %s", first.tasks, ids[0])
	}
	statements := s.store.claims.Load()
	ch := claimAsync(context.Background(), s.dist, claimReq("q", 1, 30*time.Second))
	waitFor(t, "the second claim held back by the limit", func() bool { return s.store.claims.Load() > statements })
	res, err := s.store.Wait(context.Background(), ns, ids[0], first.tasks[0].LeaseID,
		domain.WaitRequest{Step: "approval", Signals: []string{"go"}})
	if err != nil || res.Resolved {
		t.Fatalf("wait: resolved %v, err %v; want parked", res.Resolved, err)
	}
	r := receive(t, ch, 10*time.Second)
	if len(r.tasks) != 1 || r.tasks[0].RunID != ids[1] || r.elapsed > 8*time.Second {
		t.Fatalf("held-back claim: got %+v after %s, want run %s at once", r.tasks, r.elapsed, ids[1])
	}
}
