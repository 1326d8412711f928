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

	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/postgres"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

// loadRunHistory inserts n finished runs of namespace "default", created
// evenly over the last six days with UUIDv7 IDs of their creation time
// (as the server makes them), plus n/100 in namespace "other", then
// analyzes the table as autovacuum would.
func loadRunHistory(tb testing.TB, pool *pgxpool.Pool, n int) {
	tb.Helper()
	_, err := pool.Exec(context.Background(), `
INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, status, retry_policy,
	attempt, new_attempt, available_at, created_at, started_at, finished_at)
SELECT (lpad(to_hex((extract(epoch FROM r.at) * 1000)::bigint), 12, '0') || '7' || substr(md5(i::text), 1, 3)
		|| '8' || substr(md5(random()::text), 1, 15))::uuid,
	CASE WHEN i % 100 = 0 THEN 'other' ELSE 'default' END, 'q' || (i % 5), 'w' || (i % 8),
	CASE WHEN i % 20 = 0 THEN 'failed' WHEN i % 50 = 1 THEN 'cancelled' ELSE 'completed' END,
	'{}', 1, false, r.at, r.at, r.at, r.at + (i % 1000) * interval '1 ms'
FROM generate_series(1, $1::int) i, LATERAL (SELECT now() - interval '6 days' + i * ($2::bigint * interval '1 microsecond')) AS r(at)`,
		n, (6*24*time.Hour).Microseconds()/int64(n))
	if err != nil {
		tb.Fatalf("load runs: %v", err)
	}
	if _, err := pool.Exec(context.Background(), `VACUUM ANALYZE workflow_runs`); err != nil {
		tb.Fatal(err)
	}
}

// TestStatsPlanAfterBulkLoad checks that the stats statement reads only
// the window, through indexes, after a bulk load of history: runs started
// by a run_id range, runs finished by a finished_at range (which index
// serves each is the planner's choice by the namespace's share of the
// table), and never the whole table.
func TestStatsPlanAfterBulkLoad(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	loadRunHistory(t, pool, 200_000)
	for _, f := range []domain.StatsFilter{
		{Namespace: "default", Window: time.Hour, Bucket: time.Minute},
		{Namespace: "default", Window: time.Hour, Bucket: time.Minute, TaskQueue: "q1", WorkflowType: "w1"},
	} {
		sql, args := postgres.StatsQuery(f)
		rows, err := pool.Query(context.Background(), "EXPLAIN "+sql, args...)
		if err != nil {
			t.Fatalf("explain: %v", err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("explain: %v", err)
		}
		plan := strings.Join(lines, "\n")
		// Each half walks an index from the window's start: by run_id
		// (UUIDv7, so by creation time) and by finished_at.
		for _, cond := range []string{"Index Cond: (run_id >= ", "Index Cond: (finished_at >= "} {
			if !strings.Contains(plan, cond) {
				t.Errorf("stats %+v does not bound an index scan by %q:\n%s", f, cond, plan)
			}
		}
		// A plan costed like a scan of the history would be JIT-compiled,
		// which alone takes a third of a second.
		if cost := planCost(t, plan); cost > 50000 {
			t.Errorf("stats %+v costs %.0f, near jit_above_cost:\n%s", f, cost, plan)
		}
		if strings.Contains(plan, "Seq Scan on workflow_runs") {
			t.Errorf("stats %+v scans the table:\n%s", f, plan)
		}
	}
}

// BenchmarkStatsScale measures Store.Stats on a table of a million
// finished runs spread over six days: the last hour by minute (what the
// dashboard asks every few seconds) and the last day by quarter hour. It
// is not a CI test; loading the table takes about a minute:
//
//	go test -run '^$' -bench BenchmarkStatsScale -benchtime 3s ./postgres/
func BenchmarkStatsScale(b *testing.B) {
	pool, _ := pgtest.NewPool(b)
	start := time.Now()
	loadRunHistory(b, pool, 1_000_000)
	b.Logf("loaded 1,000,000 runs in %s", time.Since(start).Round(time.Second))
	store := postgres.NewStore(pool, 30*time.Second)
	for _, f := range []domain.StatsFilter{
		{Namespace: "default", Window: time.Hour, Bucket: time.Minute},
		{Namespace: "default", Window: time.Hour, Bucket: time.Minute, TaskQueue: "q1"},
		{Namespace: "default", Window: 24 * time.Hour, Bucket: 15 * time.Minute},
	} {
		name := f.Window.String() + "/" + f.Bucket.String()
		if f.TaskQueue != "" {
			name += "/task_queue"
		}
		b.Run(name, func(b *testing.B) {
			for range b.N {
				if _, err := store.Stats(context.Background(), f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// planCost is the total cost of the top node of an EXPLAIN.
func planCost(t *testing.T, plan string) float64 {
	t.Helper()
	m := regexp.MustCompile(`cost=[0-9.]+\.\.([0-9.]+)`).FindStringSubmatch(plan)
	if m == nil {
		t.Fatalf("no cost in plan:\n%s", plan)
	}
	cost, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return cost
}

// A caller limited to some namespaces sees those in use among them only;
// nil means every namespace.
func TestListNamespacesAllowed(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	s := postgres.NewStore(pool, 0)
	ctx := context.Background()
	for _, ns := range []string{"alpha", "beta", "gamma"} {
		n, err := domain.StartRequest{WorkflowType: "w"}.Validate(domain.PayloadLimits{MaxBytes: 100})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.StartRun(ctx, ns, n); err != nil {
			t.Fatal(err)
		}
	}
	names := func(allowed []string, page domain.Page) ([]string, string) {
		t.Helper()
		list, next, err := s.ListNamespaces(ctx, allowed, page)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, n := range list {
			if n.Pending != 1 {
				t.Errorf("namespace %s: %d pending, want 1", n.Name, n.Pending)
			}
			out = append(out, n.Name)
		}
		return out, next
	}
	for _, tc := range []struct {
		allowed []string
		page    domain.Page
		want    string
		next    string
	}{
		{nil, domain.Page{Limit: 10}, "alpha,beta,gamma", ""},
		{nil, domain.Page{Limit: 2}, "alpha,beta", "beta"},
		{nil, domain.Page{Limit: 2, After: "beta"}, "gamma", ""},
		{[]string{"gamma", "alpha", "unused"}, domain.Page{Limit: 10}, "alpha,gamma", ""},
		{[]string{"gamma", "alpha"}, domain.Page{Limit: 1}, "alpha", "alpha"},
		{[]string{"gamma", "alpha"}, domain.Page{Limit: 1, After: "alpha"}, "gamma", ""},
		{[]string{}, domain.Page{Limit: 10}, "", ""},
	} {
		got, next := names(tc.allowed, tc.page)
		if strings.Join(got, ",") != tc.want || next != tc.next {
			t.Errorf("ListNamespaces(%v, %+v) = %v, %q; want %s, %q", tc.allowed, tc.page, got, next, tc.want, tc.next)
		}
	}
}
