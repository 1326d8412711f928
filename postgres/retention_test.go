package postgres_test

import (
	"context"
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

func TestRetentionDoesNotBlockClaims(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	s := postgres.NewStore(pool, time.Minute)
	ctx := context.Background()
	old := startN(t, s, "q", 50)
	if _, err := pool.Exec(ctx, `UPDATE workflow_runs SET status = 'completed', finished_at = now() - interval '8 days' WHERE run_id = ANY($1)`, old); err != nil {
		t.Fatal(err)
	}
	pending := startN(t, s, "q", 3)

	// A retention batch holds its row locks until it commits: claims on
	// the same queue go on meanwhile.
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	tag, err := tx.Exec(ctx, `DELETE FROM workflow_runs WHERE run_id = ANY($1)`, old)
	if err != nil || tag.RowsAffected() != 50 {
		t.Fatalf("delete in a transaction: %v, %d rows", err, tag.RowsAffected())
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	res, err := s.ClaimRuns(cctx, "default", "q", nil, []string{"", "", "", ""})
	if err != nil {
		t.Fatalf("claim during retention: %v", err)
	}
	if len(res.Tasks) != len(pending) {
		t.Fatalf("claimed %d runs during retention, want %d", len(res.Tasks), len(pending))
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}
