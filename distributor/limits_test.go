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
// replicas on a queue limited to 2 running runs, samples the number of
// running runs throughout, and checks that all 20 runs finish.
func TestConcurrencyLimitHoldsAcrossReplicas(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	servers := []*server{newServer(t, pool, url, time.Minute), newServer(t, pool, url, time.Minute)}
	patchQueue(t, servers[0], "lim", domain.TaskQueuePatch{MaxConcurrent: domain.Nullable[int]{Set: true, Value: intp(2)}})
	const total = 20
	startRuns(t, servers[0].store.Store, "lim", total, nil)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		completed atomic.Int64
		allDone   = make(chan struct{})
		maxSeen   atomic.Int64
		samples   atomic.Int64
		wg        sync.WaitGroup
	)
	// The sampler reads the running count straight from the database.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			var n int64
			if err := pool.QueryRow(ctx, `SELECT count(*) FROM workflow_runs WHERE task_queue = 'lim' AND status = 'running'`).Scan(&n); err == nil {
				samples.Add(1)
				if n > maxSeen.Load() {
					maxSeen.Store(n)
				}
			}
		}
	}()
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
	if got := maxSeen.Load(); got > 2 {
		t.Errorf("running runs: saw %d at once, want at most 2", got)
	}
	if samples.Load() < 10 {
		t.Errorf("only %d samples of the running count", samples.Load())
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
	select {
	case r := <-ch:
		t.Fatalf("a paused queue handed out %d runs", len(r.tasks))
	default:
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
