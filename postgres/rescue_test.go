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

// TestRescueExpiredBatch rescues 600 runs of one queue whose leases
// expired, half with attempts left: batches of 500 end them all, retried or
// failed by their policies, and the queue and every failed run's watchers
// are notified (one payload per failed run: a batch's IDs together would
// pass NOTIFY's 8000-byte limit and fail the whole rescue).
func TestRescueExpiredBatch(t *testing.T) {
	t.Parallel()
	pool, dbURL := pgtest.NewPool(t)
	s := postgres.NewStore(pool, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lis, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close(context.Background())
	if _, err := lis.Exec(ctx, "LISTEN "+postgres.Channel); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, status,
			retry_policy, available_at, attempt, new_attempt, lease_id, lease_expires_at, input)
		SELECT gen_random_uuid(), 'default', 'q', 'w', 'running',
			jsonb_build_object('max_attempts', 1 + 4 * (i % 2), 'initial_interval_ms', 1000,
				'backoff_coefficient', 2, 'max_interval_ms', 60000),
			now(), 1, false, gen_random_uuid(), now() - interval '1 second', to_json(repeat('x', 1000))
		FROM generate_series(1, 600) AS i`); err != nil {
		t.Fatal(err)
	}
	retried, failed := 0, 0
	for _, want := range []int{500, 100} {
		r, f, err := s.RescueExpired(ctx, 500)
		if err != nil || r+f != want {
			t.Fatalf("rescue: %d retried, %d failed, %v; want %d in all", r, f, err, want)
		}
		retried, failed = retried+r, failed+f
	}
	if retried != 300 || failed != 300 {
		t.Fatalf("rescued: %d retried, %d failed; want 300 each", retried, failed)
	}
	var wrong int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM workflow_runs WHERE NOT (
		(retry_policy->>'max_attempts' = '1' AND status = 'failed' AND finished_at IS NOT NULL) OR
		(retry_policy->>'max_attempts' = '5' AND status = 'pending' AND available_at > now() AND finished_at IS NULL))
		OR lease_id IS NOT NULL OR NOT new_attempt OR error->>'type' IS DISTINCT FROM 'lease_expired'`).Scan(&wrong); err != nil || wrong != 0 {
		t.Fatalf("%d runs not rescued as their policy says (%v)", wrong, err)
	}

	finished := map[string]bool{}
	queued := 0
	for len(finished) < failed || queued == 0 {
		n, err := lis.WaitForNotification(ctx)
		if err != nil {
			t.Fatalf("after %d failed runs' and %d queue notifications: %v", len(finished), queued, err)
		}
		switch kind, rest, _ := strings.Cut(n.Payload, ":"); {
		case kind == "q" && rest == "default/q":
			queued++
		case kind == "f" && strings.HasPrefix(rest, "default/q/"):
			for id := range strings.SplitSeq(strings.TrimPrefix(rest, "default/q/"), ",") {
				finished[id] = true
			}
		default:
			t.Fatalf("unexpected notification %q", n.Payload)
		}
	}
	var notFailed int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM workflow_runs WHERE run_id::text = ANY($1) AND status <> 'failed'`,
		mapKeys(finished)).Scan(&notFailed); err != nil || notFailed != 0 {
		t.Fatalf("%d of the runs notified as finished are not failed (%v)", notFailed, err)
	}
}

func mapKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}
