package postgres_test

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/postgres"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

func startN(t *testing.T, s *postgres.Store, queue string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		nr, err := domain.StartRequest{WorkflowType: "wf", TaskQueue: queue}.Validate(domain.PayloadLimits{MaxBytes: 1024})
		if err != nil {
			t.Fatal(err)
		}
		run, _, err := s.StartRun(context.Background(), "default", nr)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = run.RunID
	}
	return ids
}

func TestRetentionDeletesOnlyOldFinishedRuns(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	s := postgres.NewStore(pool, time.Minute)
	ctx := context.Background()
	ids := startN(t, s, "q", 6)
	// 0-2 finished long ago (with a step), 3 finished just now, 4 pending
	// but old, 5 running.
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`UPDATE workflow_runs SET status = 'completed', finished_at = now() - interval '8 days' WHERE run_id = ANY($1)`, ids[0:2])
	exec(`UPDATE workflow_runs SET status = 'cancelled', finished_at = now() - interval '9 days' WHERE run_id = $1`, ids[2])
	exec(`INSERT INTO workflow_steps (run_id, name, attempt, kind, status) VALUES ($1, 's', 1, 'function', 'completed')`, ids[0])
	exec(`UPDATE workflow_runs SET status = 'failed', finished_at = now() WHERE run_id = $1`, ids[3])
	exec(`UPDATE workflow_runs SET created_at = now() - interval '30 days', available_at = now() - interval '30 days' WHERE run_id = $1`, ids[4])
	exec(`UPDATE workflow_runs SET status = 'running', lease_id = gen_random_uuid(), lease_expires_at = now() + interval '1 minute' WHERE run_id = $1`, ids[5])

	n, err := s.DeleteFinishedRuns(ctx, 7*24*time.Hour, 2)
	if err != nil || n != 2 {
		t.Fatalf("first batch: deleted %d, err %v; want 2 (the batch size)", n, err)
	}
	n, err = s.DeleteFinishedRuns(ctx, 7*24*time.Hour, 2)
	if err != nil || n != 1 {
		t.Fatalf("second batch: deleted %d, err %v; want 1", n, err)
	}
	var left []string
	rows, _ := pool.Query(ctx, `SELECT run_id::text FROM workflow_runs ORDER BY run_id`)
	for rows.Next() {
		var id string
		_ = rows.Scan(&id)
		left = append(left, id)
	}
	if rows.Err() != nil || len(left) != 3 || left[0] != ids[3] || left[1] != ids[4] || left[2] != ids[5] {
		t.Errorf("runs left: got %v, want %v", left, ids[3:])
	}
	var steps int
	_ = pool.QueryRow(ctx, `SELECT count(*) FROM workflow_steps`).Scan(&steps)
	if steps != 0 {
		t.Errorf("steps left of deleted runs: %d", steps)
	}
}

// TestRetentionDoesNotBlockClaims runs retention's own statement: while a
// batch holds the locks of every old run of a queue (in an open
// transaction) and retention runs on in batches of one beside it, claims
// on the same queue get their runs at once.
func TestRetentionDoesNotBlockClaims(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	s := postgres.NewStore(pool, time.Minute)
	ctx := context.Background()
	old := startN(t, s, "q", 50)
	if _, err := pool.Exec(ctx, `UPDATE workflow_runs SET status = 'completed', finished_at = now() - interval '8 days' WHERE run_id = ANY($1)`, old); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, status,
			retry_policy, available_at, finished_at)
		SELECT gen_random_uuid(), 'default', 'q', 'wf', 'failed', '{}', now(), now() - interval '9 days'
		FROM generate_series(1, 3000)`); err != nil {
		t.Fatal(err)
	}
	pending := startN(t, s, "q", 3)

	// A retention batch holds its row locks until it commits.
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	const week = 7 * 24 * time.Hour
	tag, err := tx.Exec(ctx, postgres.DeleteFinishedSQL, week.Milliseconds(), 50)
	if err != nil || tag.RowsAffected() != 50 {
		t.Fatalf("a retention batch in a transaction: %v, %d rows", err, tag.RowsAffected())
	}
	// Retention goes on beside it, a run at a time.
	var deleted atomic.Int64
	rctx, stop := context.WithCancel(ctx)
	retention := make(chan error, 1)
	go func() {
		for rctx.Err() == nil {
			n, err := s.DeleteFinishedRuns(rctx, week, 1)
			if err != nil || n == 0 {
				retention <- err
				return
			}
			deleted.Add(n)
		}
		retention <- nil
	}()
	defer func() { stop(); <-retention }()
	deadline := time.Now().Add(10 * time.Second)
	for deleted.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("retention deleted nothing in 10s")
		}
		time.Sleep(time.Millisecond)
	}

	var claimed []string
	for range pending {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		res, err := s.ClaimRuns(cctx, "default", "q", nil, []string{""})
		cancel()
		if err != nil {
			t.Fatalf("claim during retention: %v", err)
		}
		for _, st := range res.Tasks {
			claimed = append(claimed, st.Task.RunID)
		}
	}
	select {
	case err := <-retention:
		t.Fatalf("retention ended (%v) before the claims did: the test proves nothing", err)
	default:
	}
	if len(claimed) != len(pending) {
		t.Fatalf("claimed %v during retention, want %v", claimed, pending)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestDeleteOfflineWorkers deletes, in batches, the offline workers whose
// last heartbeat is older than the retention, and no other.
func TestDeleteOfflineWorkers(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	s := postgres.NewStore(pool, time.Minute)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO workers (worker_id, namespace, task_queue, status, last_heartbeat_at)
		SELECT gen_random_uuid(), 'default', 'q', st, now() - h * interval '1 hour'
		FROM unnest(ARRAY['offline', 'offline', 'offline', 'online', 'draining'], ARRAY[30, 25, 2, 30, 30]) AS x(st, h)`); err != nil {
		t.Fatal(err)
	}
	n, err := s.DeleteOfflineWorkers(ctx, 24*time.Hour, 1)
	if err != nil || n != 1 {
		t.Fatalf("first batch: deleted %d, err %v; want 1 (the batch size)", n, err)
	}
	n, err = s.DeleteOfflineWorkers(ctx, 24*time.Hour, 10)
	if err != nil || n != 1 {
		t.Fatalf("second batch: deleted %d, err %v; want 1", n, err)
	}
	var left []string
	rows, _ := pool.Query(ctx, `SELECT status || ':' || round(EXTRACT(EPOCH FROM now() - last_heartbeat_at) / 3600)
		FROM workers ORDER BY 1`)
	for rows.Next() {
		var w string
		_ = rows.Scan(&w)
		left = append(left, w)
	}
	if want := []string{"draining:30", "offline:2", "online:30"}; rows.Err() != nil || !slices.Equal(left, want) {
		t.Errorf("workers left: got %v, want %v", left, want)
	}
}
