package postgres_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kagzi/kagzi/postgres"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

// TestChildLimitsPlan checks that the child limits, read on every new
// child, count the parent's children and walk up its ancestors through
// indexes, never a scan of the runs: with statistics taken on an empty
// table, then a table of many runs, a few of them a chain of children.
func TestChildLimitsPlan(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	exec := execer(t, pool)
	exec(`ANALYZE workflow_runs`)
	exec(`INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, status, retry_policy, available_at)
		SELECT gen_random_uuid(), 'default', 'q', 'w', 'pending', '{}', now() FROM generate_series(1, 10000)`)
	exec(`INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, status, retry_policy, available_at,
			parent_run_id, parent_step, parent_close_policy)
		SELECT gen_random_uuid(), 'default', 'q', 'w', 'pending', '{}', now(), r.run_id, 's', 'cancel'
		FROM (SELECT run_id FROM workflow_runs LIMIT 100) r`)
	var parent string
	if err := pool.QueryRow(ctx, `SELECT run_id::text FROM workflow_runs WHERE parent_run_id IS NOT NULL LIMIT 1`).Scan(&parent); err != nil {
		t.Fatal(err)
	}
	rows, err := pool.Query(ctx, "EXPLAIN "+postgres.ChildLimitsSQL, parent, 1000, 16)
	if err != nil {
		t.Fatalf("explain: %v", err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("explain: %v", err)
	}
	plan := strings.Join(lines, "\n")
	if strings.Contains(plan, "Seq Scan on workflow_runs") || !strings.Contains(plan, "workflow_runs_parent_idx") ||
		!strings.Contains(plan, "workflow_runs_pkey") {
		t.Errorf("the child limits do not read the runs through their indexes:\n%s", plan)
	}
}
