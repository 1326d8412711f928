package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/postgres"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

// TestClaimRefusesWorkerDrainedMeanwhile drains a worker while its claim
// runs: the drain holds the worker's row when the claim starts, and commits
// once the claim waits for it. The claim must see the drain, hand the
// worker nothing and leave the run pending on its attempt; a claim that
// read the worker's state apart from claiming would give it the run.
func TestClaimRefusesWorkerDrainedMeanwhile(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	s := postgres.NewStore(pool, time.Minute)
	w, err := s.RegisterWorker(ctx, "default", domain.Worker{TaskQueue: "q", WorkflowTypes: []string{}, MaxConcurrent: 10,
		Labels: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	nr, err := domain.StartRequest{WorkflowType: "wf", TaskQueue: "q", Input: json.RawMessage(`1`)}.Validate(domain.PayloadLimits{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	run, _, err := s.StartRun(ctx, "default", nr)
	if err != nil {
		t.Fatal(err)
	}

	drain, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = drain.Rollback(ctx) }()
	if _, err := drain.Exec(ctx, `UPDATE workers SET status = 'draining' WHERE worker_id = $1`, w.WorkerID); err != nil {
		t.Fatal(err)
	}
	type result struct {
		res domain.ClaimResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := s.ClaimRuns(ctx, "default", "q", nil, []string{w.WorkerID})
		done <- result{res, err}
	}()
	// The claim must wait for the drain's lock on the worker's row.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting bool
		if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%claimants%')`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		select {
		case r := <-done:
			t.Fatalf("the claim did not wait for the drain: got %d runs, err %v", len(r.res.Tasks), r.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for the claim to wait for the drain")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := drain.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the claim did not return after the drain committed")
	}
	if r.err != nil || len(r.res.Tasks) != 0 {
		t.Fatalf("claim of a worker drained meanwhile: got %d runs, err %v; want none", len(r.res.Tasks), r.err)
	}
	var de *domain.Error
	if !errors.As(r.res.Refused[w.WorkerID], &de) || de.Code != domain.CodeWorkerDraining {
		t.Errorf("refused: got %v, want %s", r.res.Refused[w.WorkerID], domain.CodeWorkerDraining)
	}
	got, err := s.GetRun(ctx, "default", run.RunID)
	if err != nil || got.Status != domain.RunPending || got.Attempt != run.Attempt {
		t.Errorf("run after the refused claim: %s at attempt %d (err %v), want pending at attempt %d",
			got.Status, got.Attempt, err, run.Attempt)
	}
}

// TestClaimNotifiesRunsPickedForRefusedSlots claims two runs for an
// anonymous slot and a draining worker's: the second run, locked for a
// moment and then left pending, may have been skipped by a concurrent claim
// that took the queue for empty, so the claim notifies the queue.
func TestClaimNotifiesRunsPickedForRefusedSlots(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	s := postgres.NewStore(pool, time.Minute)
	w, err := s.RegisterWorker(ctx, "default", domain.Worker{TaskQueue: "q", WorkflowTypes: []string{}, MaxConcurrent: 10,
		Labels: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.DrainWorker(ctx, "default", w.WorkerID); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		nr, err := domain.StartRequest{WorkflowType: "wf", TaskQueue: "q", Input: json.RawMessage(fmt.Sprint(i))}.Validate(domain.PayloadLimits{MaxBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.StartRun(ctx, "default", nr); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "LISTEN "+postgres.Channel); err != nil {
		t.Fatal(err)
	}
	for _, types := range [][]string{nil, {"wf"}} {
		res, err := s.ClaimRuns(ctx, "default", "q", types, []string{"", w.WorkerID})
		if err != nil || len(res.Tasks) != 1 || res.Tasks[0].Slot != 0 || res.Refused[w.WorkerID] == nil {
			t.Fatalf("types %v: got %+v, err %v; want one run for slot 0 and the worker refused", types, res, err)
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		n, err := conn.Conn().WaitForNotification(wctx)
		cancel()
		if err != nil || n.Payload != "q:default/q" {
			t.Fatalf("types %v: notification %+v, err %v; want q:default/q", types, n, err)
		}
	}
}

// TestTypedClaimTakesOldestAcrossTypes claims for two types at once: the
// runs come oldest first across both, and no more than the slots.
func TestTypedClaimTakesOldestAcrossTypes(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	var want []string
	for i, typ := range []string{"a", "b", "b", "c", "a", "b"} {
		var id string
		if err := pool.QueryRow(ctx, `INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, status,
				retry_policy, available_at)
			VALUES (gen_random_uuid(), 'default', 'q', $1, 'pending', '{}', now() - interval '1 minute' + $2 * interval '1 second')
			RETURNING run_id`, typ, i).Scan(&id); err != nil {
			t.Fatal(err)
		}
		if typ != "c" {
			want = append(want, id)
		}
	}
	s := postgres.NewStore(pool, time.Minute)
	res, err := s.ClaimRuns(ctx, "default", "q", []string{"b", "a", "b"}, []string{"", "", "", ""})
	if err != nil || len(res.Tasks) != 4 {
		t.Fatalf("got %d tasks, err %v; want 4", len(res.Tasks), err)
	}
	for i, task := range res.Tasks {
		if task.Slot != i || task.Task.RunID != want[i] {
			t.Errorf("task %d: slot %d run %s, want slot %d run %s", i, task.Slot, task.Task.RunID, i, want[i])
		}
	}
	var pending int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM workflow_runs WHERE status = 'pending'`).Scan(&pending); err != nil || pending != 2 {
		t.Errorf("pending runs left: %d (err %v), want 2", pending, err)
	}
}
