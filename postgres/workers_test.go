package postgres_test

import (
	"context"
	"encoding/json"
	"iter"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/postgres"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

// A worker heartbeat locks the runs it extends in run_id order, as the
// batched completions do, whatever order the rows are stored in: while it
// waits for the lock of a run, it holds those of the runs before it and
// none after it. (Locked in any other order, a heartbeat and a completion
// batch can deadlock.)
func TestWorkerHeartbeatLocksRunsInRunIDOrder(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	s := postgres.NewStore(pool, time.Minute)
	ctx := context.Background()
	// Three runs held by the worker, stored in the reverse of their
	// run_id order.
	ids := []string{
		"01900000-0000-7000-8000-000000000001",
		"01900000-0000-7000-8000-000000000002",
		"01900000-0000-7000-8000-000000000003",
	}
	w := workerHolding(t, pool, s, slices.Backward(ids))
	for name, hb := range map[string]domain.WorkerHeartbeat{
		"every run held": {},
		"runs listed":    {RunIDs: domain.HeldRunIDs{Set: true, IDs: []string{ids[2], ids[1], ids[0]}}},
	} {
		t.Run(name, func(t *testing.T) {
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			if _, err := tx.Exec(ctx, `SELECT FROM workflow_runs WHERE run_id = $1 FOR UPDATE`, ids[1]); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				_, err := s.WorkerHeartbeat(ctx, "default", w.WorkerID, hb)
				done <- err
			}()
			waitForHeartbeatLock(t, pool)
			var free []string
			rows, err := pool.Query(ctx, `SELECT run_id::text FROM workflow_runs WHERE run_id = ANY ($1::uuid[]) ORDER BY run_id FOR UPDATE SKIP LOCKED`,
				[]string{ids[0], ids[2]})
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					t.Fatal(err)
				}
				free = append(free, id)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(free, ids[2:]) {
				t.Errorf("while the heartbeat waits for %s, the runs not locked are %v, want %v", ids[1], free, ids[2:])
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("WorkerHeartbeat: %v", err)
			}
		})
	}
}

// workerHolding registers a worker and makes it hold a running run of each
// of ids, inserted in that order.
func workerHolding(t *testing.T, pool *pgxpool.Pool, s *postgres.Store, ids iter.Seq2[int, string]) domain.Worker {
	t.Helper()
	ctx := context.Background()
	w, err := s.RegisterWorker(ctx, "default", domain.Worker{TaskQueue: "q", WorkflowTypes: []string{}, MaxConcurrent: 10, Labels: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	n, err := domain.StartRequest{WorkflowType: "w", TaskQueue: "q", Input: json.RawMessage(`1`)}.Validate(domain.PayloadLimits{MaxBytes: 100})
	if err != nil {
		t.Fatal(err)
	}
	template, _, err := s.StartRun(ctx, "default", n)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if _, err := pool.Exec(ctx, `
INSERT INTO workflow_runs
SELECT (jsonb_populate_record(r, jsonb_build_object('run_id', $2::uuid, 'status', 'running',
	'worker_id', $3::uuid, 'lease_id', gen_random_uuid(), 'lease_expires_at', now() + interval '1 minute'))).*
FROM workflow_runs r WHERE run_id = $1`, template.RunID, id, w.WorkerID); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// waitForHeartbeatLock returns once a worker heartbeat waits for a lock.
func waitForHeartbeatLock(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting bool
		if err := pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%last_heartbeat_at%')`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the heartbeat did not wait for the locked run")
		}
		time.Sleep(5 * time.Millisecond) // pg_stat_activity offers no event to wait on
	}
}

// A run cancelled while the heartbeat waits for its lock is answered
// cancelled, not lost: the heartbeat skips it on the run's new version,
// though the heartbeat's snapshot still shows it running.
func TestWorkerHeartbeatSeesCancelCommittedWhileItWaits(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	s := postgres.NewStore(pool, time.Minute)
	ctx := context.Background()
	id := "01900000-0000-7000-8000-000000000001"
	w := workerHolding(t, pool, s, slices.All([]string{id}))

	cancel, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel.Rollback(ctx)
	if _, err := cancel.Exec(ctx, `UPDATE workflow_runs SET status = 'cancelled', lease_id = NULL,
		lease_expires_at = NULL, finished_at = now() WHERE run_id = $1`, id); err != nil {
		t.Fatal(err)
	}
	done := make(chan domain.HeartbeatResult, 1)
	go func() {
		res, err := s.WorkerHeartbeat(ctx, "default", w.WorkerID, domain.WorkerHeartbeat{RunIDs: domain.HeldRunIDs{Set: true, IDs: []string{id}}})
		if err != nil {
			t.Errorf("WorkerHeartbeat: %v", err)
		}
		done <- res
	}()
	waitForHeartbeatLock(t, pool)
	if err := cancel.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if !slices.Equal(res.Cancelled, []string{id}) || len(res.Lost) != 0 {
		t.Errorf("heartbeat answered lost %v, cancelled %v; want the run cancelled", res.Lost, res.Cancelled)
	}
}
