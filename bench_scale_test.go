package kagzi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

// BenchmarkScale measures claims and the public read paths through the
// assembled server over HTTP, one request at a time, on three tables: empty;
// 100,000 pending runs; and 1,000,000 finished runs beside those 100,000.
// Every answer is the same with and without the history, so cost should
// follow the live runs, never the history: the third figure of each should
// be within 20 % of the second. It is not a CI test;
// filling the table takes about a minute:
//
//	go test -run '^$' -bench BenchmarkScale -benchtime 2s -count 3 -timeout 60m .
func BenchmarkScale(b *testing.B) {
	for _, sc := range []struct {
		name              string
		finished, pending int
	}{
		{"empty", 0, 0},
		{"pending=100k", 0, 100_000},
		{"finished=1M,pending=100k", 1_000_000, 100_000},
	} {
		b.Run(sc.name, func(b *testing.B) {
			pool, url := pgtest.NewPool(b)
			fillRuns(b, pool, sc.finished, sc.pending)
			_, base := benchServerOn(b, pool, url)
			root := strings.TrimSuffix(base, "/v1/namespaces/default")
			for _, g := range []struct{ name, url string }{
				{"list", base + "/workflows"},
				{"list?status=pending,running", base + "/workflows?status=pending,running"},
				{"list?workflow_type=rare", base + "/workflows?workflow_type=rare"},
				{"task-queues", base + "/task-queues"},
				{"metrics", root + "/metrics"},
			} {
				b.Run(g.name, func(b *testing.B) {
					for range b.N {
						get(b, g.url)
					}
				})
			}
			// Claims last, as they change the table: each claims one of the
			// runs added to queue q0 (beside its share of the backlog).
			b.Run("claim", func(b *testing.B) {
				b.StopTimer()
				insertRuns(b, pool, `'q0', 'w0', 'pending', now() - interval '1 hour' + i * interval '1 ms'`, b.N)
				b.StartTimer()
				for range b.N {
					var res struct {
						Tasks []json.RawMessage `json:"tasks"`
					}
					post(b, base+"/task-queues/q0/claim", map[string]any{"max_tasks": 1, "wait_ms": 0}, &res)
					if len(res.Tasks) != 1 {
						b.Fatalf("claim got %d tasks, want 1", len(res.Tasks))
					}
				}
			})
		})
	}
}

// fillRuns adds finished runs, created over the last six days (inside the
// default retention), and pending ones, both spread over five queues and
// eight types and time-ordered like the server's UUIDv7 IDs. The type
// "rare" is one finished run in 100,000 and one pending run in 1,000, so
// that its first page is the same with and without the history. Then
// VACUUM ANALYZE, as autovacuum would.
func fillRuns(b *testing.B, pool *pgxpool.Pool, finished, pending int) {
	b.Helper()
	start := time.Now()
	insertRuns(b, pool, `'q' || (i % 5), CASE WHEN i % 100000 = 0 THEN 'rare' ELSE 'w' || (i % 8) END,
		CASE WHEN i % 20 = 0 THEN 'failed' ELSE 'completed' END, now() - interval '6 days' + i * interval '400 ms'`, finished)
	insertRuns(b, pool, `'q' || (i % 5), CASE WHEN i % 1000 = 0 THEN 'rare' ELSE 'w' || (i % 8) END,
		'pending', now() - interval '1 hour' + i * interval '10 ms'`, pending)
	if _, err := pool.Exec(context.Background(), `VACUUM ANALYZE workflow_runs`); err != nil {
		b.Fatal(err)
	}
	b.Logf("%d finished and %d pending runs in %s", finished, pending, time.Since(start).Round(time.Second))
}

// insertRuns inserts n runs in one statement. shape is the SQL of their
// task_queue, workflow_type, status and creation time, over i from 1 to n.
func insertRuns(b *testing.B, pool *pgxpool.Pool, shape string, n int) {
	b.Helper()
	if n == 0 {
		return
	}
	policy, err := json.Marshal(domain.DefaultRetryPolicy())
	if err != nil {
		b.Fatal(err)
	}
	_, err = pool.Exec(context.Background(), `
INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, status, input, output, error,
	attempt, new_attempt, retry_policy, available_at, created_at, started_at, finished_at)
SELECT
	-- a UUIDv7 of the creation time
	(lpad(to_hex((extract(epoch FROM r.at) * 1000)::bigint), 12, '0') || '7' || substr(md5(i::text), 1, 3)
		|| '8' || substr(md5(random()::text), 1, 15))::uuid,
	'default', r.queue, r.type, r.status, '{"order":42}',
	CASE WHEN r.status = 'completed' THEN '{"ok":true}'::json END,
	CASE WHEN r.status = 'failed' THEN '{"message":"boom","type":"E","non_retryable":false,"details":null}'::jsonb END,
	CASE WHEN r.status = 'pending' THEN 0 ELSE 1 END, r.status = 'pending', $2, r.at, r.at,
	CASE WHEN r.status <> 'pending' THEN r.at END,
	CASE WHEN r.status <> 'pending' THEN r.at + interval '50 ms' END
FROM generate_series(1, $1::int) i, LATERAL (SELECT `+shape+`) AS r(queue, type, status, at)`, n, policy)
	if err != nil {
		b.Fatal(err)
	}
}

// get GETs url and wants 200.
func get(b *testing.B, url string) {
	resp, err := benchClient.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
}
