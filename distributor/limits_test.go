package distributor_test

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

func intp(n int) *int { return &n }

func patchQueue(t *testing.T, s *server, queue string, p domain.TaskQueuePatch) {
	t.Helper()
	if _, err := s.store.PatchTaskQueue(context.Background(), ns, queue, p); err != nil {
		t.Fatalf("PatchTaskQueue: %v", err)
	}
}

// TestConcurrencyLimitHoldsAcrossReplicas runs 10 claim loops over two
// replicas on a queue limited to 2 running runs, and checks that all 20
// runs finish and that no claim ever made more than 2 run at once: after
// every statement that updates runs, a trigger records how many of the
// queue's runs are running, as that statement's transaction sees them.
func TestConcurrencyLimitHoldsAcrossReplicas(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	for _, sql := range []string{
		`CREATE TABLE running_audit (running bigint NOT NULL)`,
		`CREATE FUNCTION audit_running() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO running_audit SELECT count(*) FROM workflow_runs WHERE task_queue = 'lim' AND status = 'running';
			RETURN NULL;
		END $$`,
		`CREATE TRIGGER audit_running AFTER UPDATE ON workflow_runs FOR EACH STATEMENT EXECUTE FUNCTION audit_running()`,
	} {
		if _, err := pool.Exec(context.Background(), sql); err != nil {
			t.Fatal(err)
		}
	}
	servers := []*server{newServer(t, pool, url, time.Minute), newServer(t, pool, url, time.Minute)}
	patchQueue(t, servers[0], "lim", domain.TaskQueuePatch{MaxConcurrent: domain.Nullable[int]{Set: true, Value: intp(2)}})
	const total = 20
	startRuns(t, servers[0].store.Store, "lim", total, nil)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		completed atomic.Int64
		allDone   = make(chan struct{})
		wg        sync.WaitGroup
	)
	for i := range 10 {
		s := servers[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				tasks, err := s.dist.Claim(ctx, claimReq("lim", 3, 2*time.Second))
				if err != nil {
					return
				}
				for _, task := range tasks {
					// A read between claim and complete keeps each run running a
					// moment, so that runs overlap.
					var running int64
					_ = pool.QueryRow(ctx, `SELECT count(*) FROM workflow_runs WHERE task_queue = 'lim' AND status = 'running'`).Scan(&running)
					if _, err := s.store.CompleteRun(context.Background(), ns, task.RunID, task.LeaseID, json.RawMessage(`1`)); err != nil {
						t.Errorf("complete: %v", err)
					}
					if completed.Add(1) == total {
						close(allDone)
					}
				}
			}
		}()
	}
	select {
	case <-allDone:
	case <-time.After(60 * time.Second):
		t.Fatalf("completed %d of %d runs", completed.Load(), total)
	}
	cancel()
	wg.Wait()
	var most, atLimit int64
	if err := pool.QueryRow(context.Background(), `SELECT max(running), count(*) FILTER (WHERE running = 2) FROM running_audit`).Scan(&most, &atLimit); err != nil {
		t.Fatal(err)
	}
	if most > 2 {
		t.Errorf("running runs: %d at once after some statement, want at most 2", most)
	}
	if atLimit == 0 {
		t.Errorf("the queue never reached its limit of 2: the test proves nothing")
	}
}

func TestTypeLimitAndFreedSlot(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	s := newServer(t, pool, url, time.Minute)
	patchQueue(t, s, "q", domain.TaskQueuePatch{WorkflowTypeLimits: map[string]*int{"a": intp(1)}})
	startRuns(t, s.store.Store, "q", 3, func(r *domain.StartRequest) { r.WorkflowType = "a" })
	startRuns(t, s.store.Store, "q", 2, func(r *domain.StartRequest) { r.WorkflowType = "b" })

	r := receive(t, claimAsync(context.Background(), s.dist, claimReq("q", 10, 0)), 5*time.Second)
	var a []domain.Task
	for _, task := range r.tasks {
		if task.WorkflowType == "a" {
			a = append(a, task)
		}
	}
	if len(a) != 1 || len(r.tasks) != 3 {
		t.Fatalf("claimed %d runs with %d of type a; want 3 with 1 of a", len(r.tasks), len(a))
	}
	// The limit holds the other a runs back; a parked claim gets one as
	// soon as the running a finishes.
	ch := claimAsync(context.Background(), s.dist, claimReq("q", 10, 20*time.Second))
	waitFor(t, "parked", func() bool { return s.dist.Waiting(ns, "q") == 1 })
	if _, err := s.store.CompleteRun(context.Background(), ns, a[0].RunID, a[0].LeaseID, nil); err != nil {
		t.Fatal(err)
	}
	got := receive(t, ch, 5*time.Second)
	if len(got.tasks) != 1 || got.tasks[0].WorkflowType != "a" {
		t.Fatalf("after the slot was freed: got %+v, want one run of type a", got.tasks)
	}
	// A released run frees its slot too.
	if err := s.store.ReleaseRuns(context.Background(), []domain.Lease{{RunID: got.tasks[0].RunID, LeaseID: got.tasks[0].LeaseID}}); err != nil {
		t.Fatal(err)
	}
	again := receive(t, claimAsync(context.Background(), s.dist, claimReq("q", 10, 5*time.Second)), 10*time.Second)
	if len(again.tasks) != 1 || again.tasks[0].WorkflowType != "a" {
		t.Fatalf("after a release: got %+v, want one run of type a", again.tasks)
	}
}

func TestPauseAndResumeServeParkedWaiter(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	s := newServer(t, pool, url, time.Minute)
	paused, resumed := true, false
	patchQueue(t, s, "q", domain.TaskQueuePatch{Paused: &paused})
	ids := startRuns(t, s.store.Store, "q", 1, nil)
	ch := claimAsync(context.Background(), s.dist, claimReq("q", 1, 20*time.Second))
	waitFor(t, "parked claim tried", func() bool { return s.store.claims.Load() >= 1 })
	// The claim has committed: what it took, it took.
	run, err := s.store.GetRun(context.Background(), ns, ids[0])
	if err != nil || run.Status != domain.RunPending {
		t.Fatalf("a paused queue handed out its run: %s (err %v), want pending", run.Status, err)
	}
	if got := s.dist.Waiting(ns, "q"); got != 1 {
		t.Fatalf("waiting claims on the paused queue: got %d, want 1", got)
	}
	patchQueue(t, s, "q", domain.TaskQueuePatch{Paused: &resumed})
	r := receive(t, ch, 5*time.Second)
	if len(r.tasks) != 1 || r.tasks[0].RunID != ids[0] {
		t.Fatalf("after resume: got %+v, want run %s", r.tasks, ids[0])
	}
}

// TestRunFinishingDuringLimitedClaimWakesWaiter finishes the run that holds
// a limited queue's only slot while the claim that found the queue full is
// on its way back: the waiter gets the next run at once, not at the
// backstop an hour later.
func TestRunFinishingDuringLimitedClaimWakesWaiter(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	store, d := newBareDistributor(t, pool)
	if _, err := store.PatchTaskQueue(context.Background(), ns, "lim", domain.TaskQueuePatch{MaxConcurrent: domain.Nullable[int]{Set: true, Value: intp(1)}}); err != nil {
		t.Fatal(err)
	}
	ids := startRuns(t, store.Store, "lim", 2, nil)
	first := receive(t, claimAsync(context.Background(), d, claimReq("lim", 1, 0)), 5*time.Second)
	if len(first.tasks) != 1 {
		t.Fatalf("first claim got %d runs, want 1", len(first.tasks))
	}
	var once sync.Once
	store.afterClaim = func(res domain.ClaimResult) {
		if !res.Limited {
			return
		}
		once.Do(func() {
			if _, err := store.CompleteRun(context.Background(), ns, first.tasks[0].RunID, first.tasks[0].LeaseID, nil); err != nil {
				t.Errorf("complete: %v", err)
			}
			d.Finished(ns, "lim") // what the listener says on the completion's notification
		})
	}
	r := receive(t, claimAsync(context.Background(), d, claimReq("lim", 1, 20*time.Second)), 5*time.Second)
	if len(r.tasks) != 1 || r.tasks[0].RunID != ids[1] {
		t.Fatalf("got %+v, want run %s", r.tasks, ids[1])
	}
}

// TestRefusedClaimKeepsQueueLimited parks a claim on a full limited queue,
// then a claim of a draining worker, refused: the queue is still limited,
// so the run that finishes next wakes the first claim.
func TestRefusedClaimKeepsQueueLimited(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	store, d := newBareDistributor(t, pool)
	ctx := context.Background()
	if _, err := store.PatchTaskQueue(ctx, ns, "lim", domain.TaskQueuePatch{MaxConcurrent: domain.Nullable[int]{Set: true, Value: intp(1)}}); err != nil {
		t.Fatal(err)
	}
	ids := startRuns(t, store.Store, "lim", 2, nil)
	first := receive(t, claimAsync(ctx, d, claimReq("lim", 1, 0)), 5*time.Second)
	if len(first.tasks) != 1 {
		t.Fatalf("first claim got %d runs, want 1", len(first.tasks))
	}
	w, err := store.RegisterWorker(ctx, ns, domain.Worker{TaskQueue: "lim", WorkflowTypes: []string{}, MaxConcurrent: 10, Labels: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.DrainWorker(ctx, ns, w.WorkerID); err != nil {
		t.Fatal(err)
	}

	before := store.claims.Load()
	req := claimReq("lim", 1, 20*time.Second)
	req.WorkflowTypes = []string{"wf"}
	waiting := claimAsync(ctx, d, req)
	waitFor(t, "the waiter's claim", func() bool { return store.claims.Load() == before+1 })
	drained := claimReq("lim", 1, 20*time.Second)
	drained.WorkerID, drained.WorkflowTypes = w.WorkerID, []string{"x"} // a type set of its own
	if r := receive(t, claimAsync(ctx, d, drained), 5*time.Second); r.err == nil {
		t.Fatalf("the draining worker's claim got %d runs and no error", len(r.tasks))
	}

	if _, err := store.CompleteRun(ctx, ns, first.tasks[0].RunID, first.tasks[0].LeaseID, nil); err != nil {
		t.Fatal(err)
	}
	d.Finished(ns, "lim")
	r := receive(t, waiting, 5*time.Second)
	if len(r.tasks) != 1 || r.tasks[0].RunID != ids[1] {
		t.Fatalf("got %+v, want run %s", r.tasks, ids[1])
	}
}
