package postgres_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kagzi/kagzi/postgres"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

// TestStepStatementPlansWithLongHistory checks that reading the claimed
// runs' histories and recording new steps look steps up by run through an
// index, whatever the table holds: with statistics taken on an
// empty table, then a large history, neither scans a table.
func TestStepStatementPlansWithLongHistory(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	exec := execer(t, pool)
	exec(`ANALYZE workflow_runs`)
	exec(`ANALYZE workflow_steps`)
	exec(`INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, status, retry_policy,
			available_at, lease_id, lease_expires_at, attempt)
		SELECT gen_random_uuid(), 'default', 'q', 'w', 'running', '{}', now(), gen_random_uuid(),
			now() + interval '1 minute', 1
		FROM generate_series(1, 10000)`)
	exec(`INSERT INTO workflow_steps (run_id, name, attempt, kind, status, output, run_attempt, finished_at)
		SELECT run_id, 'step-' || i, 1, 'function', 'completed', '1', 1, now()
		FROM workflow_runs, generate_series(1, 10) AS i`)

	var runIDs, leaseIDs []string
	rows, err := pool.Query(ctx, `SELECT run_id::text, lease_id::text FROM workflow_runs LIMIT 100`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var r, l string
		if err := rows.Scan(&r, &l); err != nil {
			t.Fatal(err)
		}
		runIDs, leaseIDs = append(runIDs, r), append(leaseIDs, l)
	}
	n := len(runIDs)
	attempts, nss, names, payloads := make([]int, n), make([]string, n), make([]string, n), make([]string, n)
	started := make([]*time.Time, n)
	for i := range n {
		attempts[i], nss[i], names[i], payloads[i] = 1, "default", "new", "null"
	}
	explain := func(sql string, args ...any) string {
		t.Helper()
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) // EXPLAIN of an INSERT plans it only; roll back anyway
		rows, err := tx.Query(ctx, "EXPLAIN "+sql, args...)
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
		"history":   explain(postgres.HistorySQL, runIDs, attempts, int64(4<<20)),
		"new steps": explain(postgres.NewStepsSQL, nss, runIDs, leaseIDs, names, payloads, payloads, started),
	} {
		// A run's steps are found through an index led by run_id: the
		// primary key, or the one that keeps them in order.
		if !strings.Contains(plan, "workflow_steps_pkey") && !strings.Contains(plan, "workflow_steps_run_seq_idx") {
			t.Errorf("%s does not look steps up by run through an index:\n%s", name, plan)
		}
		if name == "new steps" && (!strings.Contains(plan, "workflow_runs_pkey") || strings.Contains(plan, "lease_expiry")) {
			t.Errorf("%s does not lock its runs by primary key:\n%s", name, plan)
		}
		if strings.Contains(plan, "Seq Scan on workflow_steps") || strings.Contains(plan, "Seq Scan on workflow_runs") {
			t.Errorf("%s scans a table:\n%s", name, plan)
		}
	}
}
