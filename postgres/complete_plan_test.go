package postgres_test

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kagzi/kagzi/postgres"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

// TestCompletionPlanWithManyRunsInFlight checks the group-committed
// completion in the planner's worst case: statistics taken while no run
// was running, then 2,000 running runs, as in a burn-down. Completing 50 of
// them must look each up by primary key and touch those rows only; joining
// each request against every running run made a completion's cost grow
// with the runs in flight (6 to 16 ms per 50 at 1,000 to 1,600 running).
func TestCompletionPlanWithManyRunsInFlight(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	exec := execer(t, pool)
	exec(`INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, status, retry_policy,
			available_at, finished_at)
		SELECT gen_random_uuid(), 'default', 'q', 'w', 'completed', '{}', now(), now()
		FROM generate_series(1, 20000)`)
	exec(`ANALYZE workflow_runs`)
	exec(`INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, status, retry_policy,
			available_at, attempt, new_attempt, lease_id, lease_expires_at, worker_id, started_at)
		SELECT gen_random_uuid(), 'default', 'q', 'w', 'running', '{}', now(), 1, false, gen_random_uuid(),
			now() + interval '1 minute', w, now()
		FROM generate_series(1, 2000), (SELECT gen_random_uuid() AS w) wk`)

	rows, err := pool.Query(ctx, `SELECT run_id::text, lease_id::text FROM workflow_runs WHERE status = 'running' LIMIT 50`)
	if err != nil {
		t.Fatal(err)
	}
	var nss, runIDs, leaseIDs, outputs []string
	var id, lease string
	if _, err := pgx.ForEachRow(rows, []any{&id, &lease}, func() error {
		nss, runIDs, leaseIDs, outputs = append(nss, "default"), append(runIDs, id), append(leaseIDs, lease), append(outputs, "1")
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	rows, err = tx.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+postgres.CompleteRunsSQL, nss, runIDs, leaseIDs, outputs, nil)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	plan := strings.Join(lines, "\n")
	for _, index := range []string{"workflow_runs_worker_idx", "workflow_runs_running_idx", "workflow_runs_lease_expiry_idx", "workflow_runs_live_idx"} {
		if strings.Contains(plan, index) {
			t.Errorf("the completion walks %s, whose size is the runs in flight:\n%s", index, plan)
		}
	}
	removed := 0
	for _, m := range regexp.MustCompile(`Rows Removed by (?:Join )?Filter: (\d+)`).FindAllStringSubmatch(plan, -1) {
		n, _ := strconv.Atoi(m[1])
		removed += n
	}
	if removed > 0 {
		t.Errorf("the completion of 50 runs looked at %d rows it did not take:\n%s", removed, plan)
	}
	if !strings.Contains(plan, "workflow_runs_pkey") {
		t.Errorf("the completion does not look its runs up by primary key:\n%s", plan)
	}
}

// TestRunEndLookPlanAfterBulkLoad checks the look every completion takes
// at its runs (a child? a parent? signals left?) in the planner's worst
// case, statistics taken on an empty table before a bulk load: it must
// probe an index per run, never read the table through.
func TestRunEndLookPlanAfterBulkLoad(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	exec := execer(t, pool)
	exec(`ANALYZE workflow_runs`)
	exec(`ANALYZE signals`)
	exec(`INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, status, retry_policy,
			available_at, finished_at)
		SELECT gen_random_uuid(), 'default', 'q', 'w', 'completed', '{}', now(), now()
		FROM generate_series(1, 20000)`)
	var ids []string
	rows, err := pool.Query(ctx, `SELECT run_id::text FROM workflow_runs LIMIT 50`)
	if err != nil {
		t.Fatal(err)
	}
	if ids, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	rows, err = pool.Query(ctx, "EXPLAIN (ANALYZE) "+postgres.RunEndWorkSQL, ids)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	plan := strings.Join(lines, "\n")
	if strings.Contains(plan, "Seq Scan on workflow_runs") {
		t.Errorf("the look at ended runs reads the table through:\n%s", plan)
	}
}
