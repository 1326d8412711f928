package postgres_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

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
	// Three runs held by the worker, stored in the reverse of their
	// run_id order.
	ids := []string{
		"01900000-0000-7000-8000-000000000001",
		"01900000-0000-7000-8000-000000000002",
		"01900000-0000-7000-8000-000000000003",
	}
	for _, id := range slices.Backward(ids) {
		if _, err := pool.Exec(ctx, `
INSERT INTO workflow_runs
SELECT (jsonb_populate_record(r, jsonb_build_object('run_id', $2::uuid, 'status', 'running',
	'worker_id', $3::uuid, 'lease_id', gen_random_uuid(), 'lease_expires_at', now() + interval '1 minute'))).*
FROM workflow_runs r WHERE run_id = $1`, template.RunID, id, w.WorkerID); err != nil {
			t.Fatal(err)
		}
	}
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
			deadline := time.Now().Add(10 * time.Second)
			for {
				var waiting bool
				if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity
					WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%last_heartbeat_at%')`).Scan(&waiting); err != nil {
					t.Fatal(err)
				}
				if waiting {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the heartbeat did not wait for the locked run")
				}
				time.Sleep(5 * time.Millisecond) // pg_stat_activity offers no event to wait on
			}
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
