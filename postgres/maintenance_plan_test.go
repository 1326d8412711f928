package postgres_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kagzi/kagzi/postgres"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

// TestMaintenancePlansAfterBulkLoad checks the plans of the statements
// every replica's maintenance runs on a timer, after a bulk load on
// statistics taken while the tables were empty: each must read its
// partial index, never the table, or its cost grows with history (the
// reaper took 14.5ms a second at 100,000 workers when it scanned them).
func TestMaintenancePlansAfterBulkLoad(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	exec := execer(t, pool)
	exec(`ANALYZE workers`)
	exec(`ANALYZE workflow_runs`)
	exec(`ANALYZE schedules`)
	// History: many offline workers, finished runs and disabled schedules;
	// a few live ones of each.
	exec(`INSERT INTO workers (worker_id, namespace, task_queue, status, last_heartbeat_at)
		SELECT gen_random_uuid(), 'default', 'q', CASE WHEN i % 1000 = 0 THEN 'online' ELSE 'offline' END,
			now() - (i % 100) * interval '1 hour'
		FROM generate_series(1, 100000) AS i`)
	exec(`INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, status, retry_policy,
			available_at, finished_at)
		SELECT gen_random_uuid(), 'default', 'q', 'w', 'completed', '{}', now(), now() - (i % 10) * interval '1 day'
		FROM generate_series(1, 100000) AS i`)
	exec(`INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, status, retry_policy,
			available_at, lease_id, lease_expires_at)
		SELECT gen_random_uuid(), 'default', 'q', 'w', 'running', '{}', now(), gen_random_uuid(), now() + interval '30 seconds'
		FROM generate_series(1, 100)`)
	exec(`INSERT INTO schedules (schedule_id, namespace, task_queue, workflow_type, cron, enabled, next_fire_at)
		SELECT gen_random_uuid(), 'default', 'q', 'w', '@hourly', i % 1000 = 0, now() + interval '1 hour'
		FROM generate_series(1, 20000) AS i`)

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
	const week = int64(7 * 24 * 3600 * 1000)
	for _, c := range []struct {
		name, plan, index, table string
	}{
		{"reaper", explain(postgres.StaleWorkersSQL, int64(30000)), "workers_live_heartbeat_idx", "workers"},
		{"worker retention", explain(postgres.DeleteOfflineWorkersSQL, int64(24*3600*1000), 500), "workers_offline_idx", "workers"},
		{"run retention", explain(postgres.DeleteFinishedSQL, week, 500), "workflow_runs_finished_idx", "workflow_runs"},
		{"next lease expiry", explain(postgres.NextLeaseExpirySQL), "workflow_runs_lease_expiry_idx", "workflow_runs"},
		{"rescue", explain(postgres.ExpiredLeasesSQL, 500), "workflow_runs_lease_expiry_idx", "workflow_runs"},
		{"next schedule fire", explain(postgres.NextScheduleFireSQL), "schedules_due_idx", "schedules"},
	} {
		if !strings.Contains(c.plan, c.index) {
			t.Errorf("%s does not read %s:\n%s", c.name, c.index, c.plan)
		}
		if strings.Contains(c.plan, "Seq Scan on "+c.table) {
			t.Errorf("%s scans %s:\n%s", c.name, c.table, c.plan)
		}
	}
}
