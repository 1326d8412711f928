package maintenance_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/maintenance"
	"github.com/kagzi/kagzi/postgres"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func count(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// claimOne starts a run on queue and claims it, and returns its ID.
func claimOne(t *testing.T, store *postgres.Store, queue string) string {
	t.Helper()
	ctx := context.Background()
	nr, err := domain.StartRequest{WorkflowType: "wf", TaskQueue: queue}.Validate(domain.PayloadLimits{MaxBytes: 1024})
	if err != nil {
		t.Fatal(err)
	}
	run, _, err := store.StartRun(ctx, "default", nr)
	if err != nil {
		t.Fatal(err)
	}
	res, err := store.ClaimRuns(ctx, "default", queue, nil, []string{""})
	if err != nil || len(res.Tasks) != 1 || res.Tasks[0].Task.RunID != run.RunID {
		t.Fatalf("claim: %+v, %v", res, err)
	}
	return run.RunID
}

// TestRescueIsNotHeldUpByRetention: with a retention backlog that takes
// many statements to clear (batches of one run), a lease that expires
// meanwhile is still rescued within about the maintainer's interval.
// (When one loop rescued, reaped and then deleted until caught up, the
// rescue waited for the whole backlog.)
func TestRescueIsNotHeldUpByRetention(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	const lease = 2 * time.Second
	store := postgres.NewStore(pool, lease)
	ctx := context.Background()
	const backlog = 20000
	if _, err := pool.Exec(ctx, `INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, status,
			retry_policy, available_at, finished_at)
		SELECT gen_random_uuid(), 'default', 'old', 'wf', 'completed', '{}', now(), now() - interval '8 days'
		FROM generate_series(1, $1)`, backlog); err != nil {
		t.Fatal(err)
	}
	m := maintenance.New(store, slog.New(slog.DiscardHandler), maintenance.Options{
		Interval:          100 * time.Millisecond,
		LeaseDuration:     lease,
		HeartbeatInterval: time.Second,
		Retention:         7 * 24 * time.Hour,
		RetentionBatch:    1,
	})
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = m.Run(mctx) }()
	t.Cleanup(func() { cancel(); <-done })

	oldRuns := `SELECT count(*) FROM workflow_runs WHERE task_queue = 'old'`
	waitFor(t, 10*time.Second, "retention to start", func() bool { return count(t, pool, oldRuns) < backlog })
	runID := claimOne(t, store, "q")
	var expires time.Time
	if err := pool.QueryRow(ctx, `SELECT lease_expires_at FROM workflow_runs WHERE run_id = $1`, runID).Scan(&expires); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Until(expires)+2*time.Second, "the expired lease to be rescued", func() bool {
		return count(t, pool, `SELECT count(*) FROM workflow_runs WHERE run_id = $1 AND status = 'running'`, runID) == 0
	})
	if left := count(t, pool, oldRuns); left == 0 {
		t.Fatalf("retention was done before the rescue: the test proves nothing; make the backlog larger")
	}
	var status string
	var attempt int
	if err := pool.QueryRow(ctx, `SELECT status, attempt FROM workflow_runs WHERE run_id = $1`, runID).Scan(&status, &attempt); err != nil {
		t.Fatal(err)
	}
	if status != string(domain.RunPending) || attempt != 1 {
		t.Errorf("rescued run: status %s, attempt %d; want pending (a retry) after attempt 1", status, attempt)
	}
}

// TestTickAppliesWorkerRetention: offline workers whose last heartbeat is
// older than the worker retention are deleted; live workers, and offline
// ones seen recently, stay.
func TestTickAppliesWorkerRetention(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	store := postgres.NewStore(pool, time.Minute)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO workers (worker_id, namespace, task_queue, status, last_heartbeat_at)
		SELECT gen_random_uuid(), 'default', 'q', s, now() - h * interval '1 hour'
		FROM unnest(ARRAY['offline', 'offline', 'offline', 'offline', 'online', 'draining'],
			ARRAY[25, 48, 1, 0, 0, 0]) AS x(s, h),
			generate_series(1, 3)`); err != nil {
		t.Fatal(err)
	}
	m := maintenance.New(store, slog.New(slog.DiscardHandler), maintenance.Options{
		Interval:          time.Second,
		HeartbeatInterval: time.Hour, // nobody goes offline during the test
		WorkerRetention:   24 * time.Hour,
		RetentionBatch:    2, // several batches
	})
	m.Tick(ctx)
	if n := count(t, pool, `SELECT count(*) FROM workers WHERE last_heartbeat_at < now() - interval '24 hours'`); n != 0 {
		t.Errorf("%d offline workers older than the retention left", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM workers`); n != 12 {
		t.Errorf("%d workers left, want the 12 live or recent ones", n)
	}
}
