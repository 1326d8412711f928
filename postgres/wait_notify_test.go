package postgres_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/postgres"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

// TestWaitWithoutDeadlineNotifiesNobody: a run parked in a wait with no
// deadline makes nothing claimable, so its queue is not notified (that
// would send its parked claims to look for nothing, and keep them from a
// hand-off meanwhile); one with a deadline is, for the claims' timers.
// Notifications arrive in commit order, so the first one heard must be the
// second wait's.
func TestWaitWithoutDeadlineNotifiesNobody(t *testing.T) {
	t.Parallel()
	pool, dbURL := pgtest.NewPool(t)
	ctx := context.Background()
	s := postgres.NewStore(pool, time.Minute)
	claimed := map[string]domain.Task{}
	for _, q := range []string{"forever", "deadline"} {
		nr, err := domain.StartRequest{WorkflowType: "wf", TaskQueue: q, Input: json.RawMessage(`1`)}.Validate(domain.PayloadLimits{MaxBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.StartRun(ctx, "default", nr); err != nil {
			t.Fatal(err)
		}
		res, err := s.ClaimRuns(ctx, "default", q, nil, []string{""})
		if err != nil || len(res.Tasks) != 1 {
			t.Fatalf("claim on %s: %d tasks, %v", q, len(res.Tasks), err)
		}
		claimed[q] = res.Tasks[0].Task
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "LISTEN "+postgres.Channel); err != nil {
		t.Fatal(err)
	}
	hour := time.Hour
	for _, w := range []struct {
		queue   string
		timeout *time.Duration
	}{{"forever", nil}, {"deadline", &hour}} {
		task := claimed[w.queue]
		res, err := s.Wait(ctx, "default", task.RunID, task.LeaseID, domain.WaitRequest{Step: "w", Signals: []string{"go"}, Timeout: w.timeout})
		if err != nil || res.Resolved {
			t.Fatalf("wait on %s: resolved %v, err %v; want parked", w.queue, res.Resolved, err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := conn.WaitForNotification(wctx)
	if err != nil {
		t.Fatal(err)
	}
	if n.Payload != "q:default/deadline" {
		t.Fatalf("first notification after the waits: %q, want the one of the wait with a deadline", n.Payload)
	}
}
