package postgres_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kagzi/kagzi/postgres"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

// TestClaimPlansAfterBulkEnqueue checks the claim statements' plans in the
// planner's worst case: statistics taken while no run was pending, then a
// bulk enqueue. Both must walk the claim index and lock runs by primary key;
// a plan that scans the table or the backlog once per claimed run costs
// seconds per claim on a large backlog.
func TestClaimPlansAfterBulkEnqueue(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	exec := func(sql string) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// A table of finished runs, analyzed with no run pending, as after a
	// quiet spell.
	exec(`INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, status, retry_policy,
			available_at, finished_at)
		SELECT gen_random_uuid(), 'default', 'q', 'w', 'completed', '{}', now(), now()
		FROM generate_series(1, 20000)`)
	exec(`ANALYZE workflow_runs`)
	exec(`INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, status, retry_policy, available_at)
		SELECT gen_random_uuid(), 'default', 'q', 'w', 'pending', '{}', now() - interval '1 second'
		FROM generate_series(1, 20000)`)

	slots := make([]*string, 100)
	explain := func(sql string, args ...any) string {
		t.Helper()
		rows, err := pool.Query(ctx, "EXPLAIN "+sql, args...)
		if err != nil {
			t.Fatalf("explain: %v", err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("explain: %v", err)
		}
		return strings.Join(lines, "\n")
	}
	for name, plan := range map[string]string{
		"unlimited": explain(postgres.ClaimSQL, "default", "q", []string{}, 100, slots, 30000),
		"limited": explain(postgres.ClaimLimitedSQL, "default", "q", []string{}, 100, slots, 30000,
			[]string{}, []string(nil), []int(nil)),
	} {
		if !strings.Contains(plan, "workflow_runs_claim_idx") {
			t.Errorf("%s claim does not walk the claim index:\n%s", name, plan)
		}
		if strings.Contains(plan, "Seq Scan on workflow_runs") {
			t.Errorf("%s claim scans the table:\n%s", name, plan)
		}
		if name == "limited" && strings.Count(plan, "workflow_runs_pkey") < 2 {
			t.Errorf("limited claim does not lock its runs by primary key:\n%s", plan)
		}
	}
}
