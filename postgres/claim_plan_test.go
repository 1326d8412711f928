package postgres_test

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

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
	exec := execer(t, pool)
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
		"any":   explain(postgres.ClaimAnySQL, "default", "q", []string{}, 100, slots, 30000),
		"typed": explain(postgres.ClaimTypedSQL, "default", "q", []string{"w"}, 100, slots, 30000),
		"limited": explain(postgres.ClaimLimitedSQL, "default", "q", []string{}, 100, slots, 30000,
			[]string{}, []string(nil), []int(nil)),
		"limited typed": explain(postgres.ClaimLimitedSQL, "default", "q", []string{"w"}, 100, slots, 30000,
			[]string(nil), []string{"w"}, []int{100}),
	} {
		index := "workflow_runs_claim_idx"
		if strings.Contains(name, "typed") {
			index = "workflow_runs_claim_type_idx"
		}
		if !strings.Contains(plan, index) {
			t.Errorf("%s claim does not walk %s:\n%s", name, index, plan)
		}
		if strings.Contains(plan, "Seq Scan on workflow_runs") {
			t.Errorf("%s claim scans the table:\n%s", name, plan)
		}
		if strings.HasPrefix(name, "limited") && strings.Count(plan, "workflow_runs_pkey") < 2 {
			t.Errorf("%s claim does not lock its runs by primary key:\n%s", name, plan)
		}
	}
}

// TestTypedClaimSkipsOtherTypesBacklog claims type b on a queue with a
// backlog of type a, in the planner's worst case (statistics from before
// the backlog), and checks what the statements really did: they take b's
// runs and read none of a's, on the unlimited and the limited path, and
// the next available time of b ignores a's.
func TestTypedClaimSkipsOtherTypesBacklog(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	exec := execer(t, pool)
	exec(`ANALYZE workflow_runs`)
	const backlog = 50000
	// a's backlog is older than b's runs, and a's delayed runs come due
	// before b's: a filter on the type would read all of them first.
	exec(`INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, status, retry_policy, available_at)
		SELECT gen_random_uuid(), 'default', 'q', 'a', 'pending', '{}', now() - interval '1 hour' + i * interval '1 microsecond'
		FROM generate_series(1, 50000) i`)
	exec(`INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, status, retry_policy, available_at)
		SELECT gen_random_uuid(), 'default', 'q', 'a', 'pending', '{}', now() + interval '1 minute' + i * interval '1 microsecond'
		FROM generate_series(1, 50000) i`)
	exec(`INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, status, retry_policy, available_at)
		SELECT gen_random_uuid(), 'default', 'q', 'b', 'pending', '{}', now() - interval '1 second'
		FROM generate_series(1, 3)`)
	exec(`INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, status, retry_policy, available_at)
		VALUES (gen_random_uuid(), 'default', 'q', 'b', 'pending', '{}', now() + interval '1 hour')`)

	removed := regexp.MustCompile(`Rows Removed by (?:Filter|Index Recheck): (\d+)`)
	// analyze runs sql under EXPLAIN ANALYZE, in a transaction it rolls
	// back, and checks that it read no backlog and walked the type index.
	analyze := func(name, sql string, args ...any) {
		t.Helper()
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, COSTS OFF) "+sql, args...)
		if err != nil {
			t.Fatalf("%s: explain: %v", name, err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("%s: explain: %v", name, err)
		}
		plan := strings.Join(lines, "\n")
		for _, m := range removed.FindAllStringSubmatch(plan, -1) {
			if n, _ := strconv.Atoi(m[1]); n > 10 {
				t.Errorf("%s: %s of a backlog of %d:\n%s", name, m[0], backlog, plan)
			}
		}
		if !strings.Contains(plan, "workflow_runs_claim_type_idx") {
			t.Errorf("%s does not walk workflow_runs_claim_type_idx:\n%s", name, plan)
		}
		if strings.Contains(plan, "Seq Scan on workflow_runs") || strings.Contains(plan, "workflow_runs_claim_idx ") {
			t.Errorf("%s reads the queue beyond type b:\n%s", name, plan)
		}
	}
	slots := make([]*string, 10)
	analyze("claim", postgres.ClaimTypedSQL, "default", "q", []string{"b"}, 10, slots, 30000)
	analyze("limited claim", postgres.ClaimLimitedSQL, "default", "q", []string{"b"}, 10, slots, 30000,
		[]string(nil), []string{"b"}, []int{10})
	analyze("next available time", postgres.NextAvailableSQL, "default", "q", 0, []string{"b"})

	s := postgres.NewStore(pool, time.Minute)
	res, err := s.ClaimRuns(ctx, "default", "q", []string{"b"}, []string{"", "", "", "", ""})
	if err != nil || len(res.Tasks) != 3 {
		t.Fatalf("claim for b: got %d tasks, err %v; want 3", len(res.Tasks), err)
	}
	for _, task := range res.Tasks {
		if task.Task.WorkflowType != "b" {
			t.Errorf("claim for b got a run of type %s", task.Task.WorkflowType)
		}
	}
	// a's runs come due in a minute, b's in an hour.
	in, ok, err := s.NextAvailableIn(ctx, "default", "q", []string{"b"}, 0)
	if err != nil || !ok || in < 50*time.Minute {
		t.Errorf("next available for b: in %s, ok %v, err %v; want about an hour", in, ok, err)
	}
	in, ok, err = s.NextAvailableIn(ctx, "default", "q", nil, 0)
	if err != nil || !ok || in > 2*time.Minute {
		t.Errorf("next available for any type: in %s, ok %v, err %v; want about a minute", in, ok, err)
	}
}

// execer returns a function that runs a statement on pool, or fails t: the
// bulk loads and ANALYZEs of the plan tests.
func execer(t *testing.T, pool *pgxpool.Pool) func(sql string) {
	return func(sql string) {
		t.Helper()
		if _, err := pool.Exec(context.Background(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

// TestClaimsArePlannedPerExecution: the claim statement is planned for each
// execution's parameters, never run from a cached generic plan. A generic
// plan made while the queue was small, or from statistics of an empty
// table, sorted the whole backlog at every claim (a first burn-down after
// such statistics ran at a quarter of the next). The connections that ran
// claims must hold no prepared claim statement.
func TestClaimsArePlannedPerExecution(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	s := postgres.NewStore(pool, time.Minute)
	exec := execer(t, pool)
	exec(`INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, status, retry_policy, available_at)
		SELECT gen_random_uuid(), 'default', 'q', 'w', 'pending', '{}', now() - interval '1 second'
		FROM generate_series(1, 20)`)
	for range 10 { // past the five executions after which a generic plan may be cached
		if _, err := s.ClaimRuns(ctx, "default", "q", nil, []string{""}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ClaimRuns(ctx, "default", "q", []string{"w"}, []string{""}); err != nil {
			t.Fatal(err)
		}
	}
	conns := pool.AcquireAllIdle(ctx)
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	for _, c := range conns {
		var prepared []string
		rows, err := c.Query(ctx, `SELECT left(statement, 120) FROM pg_prepared_statements
			WHERE statement LIKE '%claimants AS ' || 'MATERIALIZED%'`)
		if err == nil {
			prepared, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(prepared) > 0 {
			t.Errorf("a connection holds prepared claim statements, whose generic plans can be cached: %q", prepared)
		}
	}
}

// TestClaimCompletesSleepsThroughAnIndex: the claim completes the due sleep
// steps of the runs it claims (those claimed before). Over runs with many
// steps, a claim of some types (the SDK's) expected so many runs that it
// read all of workflow_steps instead of looking up each run's: it must
// find them through an index.
func TestClaimCompletesSleepsThroughAnIndex(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	exec := execer(t, pool)
	exec(`INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, status, retry_policy,
			available_at, attempt, new_attempt, started_at)
		SELECT gen_random_uuid(), 'default', 'q', 'w', 'sleeping', '{}', now() - interval '1 second', 1, false,
			now() - interval '1 minute'
		FROM generate_series(1, 5000)`)
	exec(`INSERT INTO workflow_steps (run_id, name, attempt, kind, status, run_attempt, wake_up_at, finished_at)
		SELECT run_id, 's' || g, 1, CASE WHEN g = 21 THEN 'sleep' ELSE 'function' END,
			CASE WHEN g = 21 THEN 'running' ELSE 'completed' END, 1,
			CASE WHEN g = 21 THEN now() - interval '1 second' END, CASE WHEN g = 21 THEN NULL ELSE now() END
		FROM workflow_runs, generate_series(1, 21) g`)
	exec(`ANALYZE`)
	slots := make([]*string, 100)
	for name, sql := range map[string]string{"any": postgres.ClaimAnySQL, "typed": postgres.ClaimTypedSQL} {
		types := []string{}
		if name == "typed" {
			types = []string{"w"}
		}
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE) "+sql, "default", "q", types, 100, slots, 30000)
		if err != nil {
			t.Fatal(err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		_ = tx.Rollback(ctx)
		if err != nil {
			t.Fatal(err)
		}
		plan := strings.Join(lines, "\n")
		if strings.Contains(plan, "Seq Scan on workflow_steps") {
			t.Errorf("the %s claim reads all of workflow_steps for its sleep steps:\n%s", name, plan)
		}
		if !strings.Contains(plan, "workflow_steps_sleeping_idx") {
			t.Errorf("the %s claim does not complete sleep steps through workflow_steps_sleeping_idx:\n%s", name, plan)
		}
	}
}
