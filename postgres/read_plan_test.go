package postgres_test

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/postgres"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

var sortNode = regexp.MustCompile(`(?m)^(\s*->)?\s*Sort  \(`)

// TestReadPlansAfterBulkLoad checks that every statement on a public read
// path reads through an index once history dwarfs the live runs: a
// sequential scan of workflow_runs or workflow_steps costs time in
// proportion to every run ever kept, on every request or scrape.
func TestReadPlansAfterBulkLoad(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	exec := execer(t, pool)
	// 50,000 finished runs of five queues and ten types (one of them
	// rare), each with a step, and 5,000 live ones.
	exec(`INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, external_id, status,
			retry_policy, available_at, started_at, finished_at)
		SELECT gen_random_uuid(), 'default', 'q' || (i % 5), CASE WHEN i % 10000 = 0 THEN 'rare' ELSE 'w' || (i % 9) END,
			'x' || i, CASE WHEN i % 50 = 0 THEN 'failed' ELSE 'completed' END, '{}', now(), now(), now()
		FROM generate_series(1, 50000) i`)
	exec(`INSERT INTO workflow_steps (run_id, name, attempt, kind, status)
		SELECT run_id, 's', 1, 'function', 'completed' FROM workflow_runs`)
	exec(`INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, status, retry_policy, available_at,
			lease_id, lease_expires_at)
		SELECT gen_random_uuid(), 'default', 'q' || (i % 5), 'w' || (i % 9),
			CASE WHEN i % 10 = 0 THEN 'running' WHEN i % 10 = 1 THEN 'sleeping' ELSE 'pending' END, '{}',
			now() + (i % 3) * interval '1 minute',
			CASE WHEN i % 10 = 0 THEN gen_random_uuid() END, CASE WHEN i % 10 = 0 THEN now() END
		FROM generate_series(1, 5000) i`)
	exec(`ANALYZE workflow_runs`)
	exec(`ANALYZE workflow_steps`)
	var runID string
	if err := pool.QueryRow(ctx, `SELECT run_id FROM workflow_runs WHERE status = 'completed' LIMIT 1`).Scan(&runID); err != nil {
		t.Fatal(err)
	}

	explain := func(sql string, args ...any) string {
		t.Helper()
		rows, err := pool.Query(ctx, "EXPLAIN "+sql, args...)
		if err != nil {
			t.Fatalf("explain %s: %v", sql, err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("explain %s: %v", sql, err)
		}
		return strings.Join(lines, "\n")
	}
	listRuns := func(f domain.RunFilter) string {
		f.Namespace = "default"
		if f.Page.Limit == 0 {
			f.Page.Limit = domain.DefaultPageLimit
		}
		sql, args := postgres.ListRunsQuery(f)
		return explain(sql, args...)
	}
	plans := map[string]string{
		"GetRun":                          explain(postgres.GetRunSQL, "default", runID),
		"ListRuns":                        listRuns(domain.RunFilter{}),
		"ListRuns after a cursor":         listRuns(domain.RunFilter{Page: domain.Page{After: runID}}),
		"ListRuns status=pending":         listRuns(domain.RunFilter{Statuses: []domain.RunStatus{domain.RunPending}}),
		"ListRuns status=pending,running": listRuns(domain.RunFilter{Statuses: []domain.RunStatus{domain.RunPending, domain.RunRunning}}),
		"ListRuns status=sleeping after a cursor": listRuns(domain.RunFilter{Statuses: []domain.RunStatus{domain.RunSleeping},
			Page: domain.Page{After: runID}}),
		"ListRuns status=failed":        listRuns(domain.RunFilter{Statuses: []domain.RunStatus{domain.RunFailed}}),
		"ListRuns workflow_type=rare":   listRuns(domain.RunFilter{WorkflowType: "rare"}),
		"ListRuns task_queue":           listRuns(domain.RunFilter{TaskQueue: "q1"}),
		"ListRuns external_id":          listRuns(domain.RunFilter{ExternalID: "x7"}),
		"ListRuns status and type":      listRuns(domain.RunFilter{Statuses: []domain.RunStatus{domain.RunPending}, WorkflowType: "w1"}),
		"QueueDepths":                   explain(postgres.QueueDepthsSQL),
		"ListTaskQueues":                explain(postgres.TaskQueuesSQL, "default", "", 501, ""),
		"ListTaskQueues after a cursor": explain(postgres.TaskQueuesSQL, "default", "q2", 501, ""),
		"one task queue":                explain(postgres.TaskQueuesSQL, "default", "", 1, "q3"),
		"ListSteps":                     explain(postgres.ListStepsSQL, "default", runID, 0, 501),
		"ListSteps after a cursor":      explain(postgres.ListStepsSQL, "default", runID, 7, 501),
	}
	for name, plan := range plans {
		for _, table := range []string{"workflow_runs", "workflow_steps"} {
			if strings.Contains(plan, "Seq Scan on "+table) {
				t.Errorf("%s scans %s:\n%s", name, table, plan)
			}
		}
		// A list that sorts has read every match to find its first page.
		if (strings.HasPrefix(name, "ListRuns") || strings.HasPrefix(name, "ListSteps")) && sortNode.MatchString(plan) {
			t.Errorf("%s sorts its rows rather than reading them in order from an index:\n%s", name, plan)
		}
	}
}
