package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/postgres"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

// heldRun is a run held under a lease, as a claim leaves it.
type heldRun struct {
	namespace, runID, leaseID string
}

// startHeld starts n runs in namespace and puts each under a lease of its
// own, as if claimed.
func startHeld(t testing.TB, pool *pgxpool.Pool, s *postgres.Store, namespace string, n int) []heldRun {
	t.Helper()
	ctx := context.Background()
	runs := make([]heldRun, n)
	for i := range runs {
		nr, err := domain.StartRequest{WorkflowType: "w"}.Validate(domain.PayloadLimits{MaxBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		run, _, err := s.StartRun(ctx, namespace, nr)
		if err != nil {
			t.Fatal(err)
		}
		runs[i] = heldRun{namespace, run.RunID, uuid.NewString()}
		if _, err := pool.Exec(ctx, `UPDATE workflow_runs SET status = 'running', attempt = 1,
			lease_id = $2, lease_expires_at = now() + interval '5 minutes', started_at = now()
			WHERE run_id = $1`, run.RunID, runs[i].leaseID); err != nil {
			t.Fatal(err)
		}
	}
	return runs
}

// runRow is what a test checks of a run after completions.
func runRow(t testing.TB, pool *pgxpool.Pool, runID string) (status string, output *string) {
	t.Helper()
	err := pool.QueryRow(context.Background(),
		`SELECT status, output::text FROM workflow_runs WHERE run_id = $1`, runID).Scan(&status, &output)
	if err != nil {
		t.Fatal(err)
	}
	return status, output
}

// poison is an output PostgreSQL refuses (invalid UTF-8 inside a string),
// given to the store directly, past the API's validation.
var poison = json.RawMessage("{\"s\":\"bad \xfe\xff\"}")

func goodOutput(runID string) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"run":%q}`, runID))
}

// One request's output that the database refuses fails that request
// alone: concurrent completions of two namespaces, group-committed
// together, and a batch completion with a poisoned item all commit their
// good items, and each poisoned one gets its own 400.
func TestPoisonedCompletionFailsAlone(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	s := postgres.NewStore(pool, 0)
	ctx := context.Background()
	good := startHeld(t, pool, s, "a", 120)
	bad := startHeld(t, pool, s, "b", 30)

	type outcome struct {
		run heldRun
		err error
	}
	var (
		wg       sync.WaitGroup
		start    = make(chan struct{})
		outcomes = make(chan outcome, len(good)+len(bad))
	)
	complete := func(r heldRun, output json.RawMessage) {
		defer wg.Done()
		<-start
		_, err := s.CompleteRun(ctx, r.namespace, r.runID, r.leaseID, output)
		outcomes <- outcome{r, err}
	}
	for i := range max(len(good), len(bad)) {
		if i < len(good) {
			wg.Add(1)
			go complete(good[i], goodOutput(good[i].runID))
		}
		if i < len(bad) {
			wg.Add(1)
			go complete(bad[i], poison)
		}
	}
	close(start)
	wg.Wait()
	close(outcomes)
	isBad := map[string]bool{}
	for _, r := range bad {
		isBad[r.runID] = true
	}
	for o := range outcomes {
		wantOutcome(t, pool, o.run, o.err, isBad[o.run.runID])
	}

	// The same within one batch: good and poisoned items interleaved.
	good, bad = startHeld(t, pool, s, "a", 6), startHeld(t, pool, s, "a", 3)
	items := []domain.RunCompletion{}
	runs := []heldRun{}
	for i, r := range good {
		items = append(items, domain.RunCompletion{RunID: r.runID, LeaseID: r.leaseID, Output: goodOutput(r.runID)})
		runs = append(runs, r)
		if i%2 == 1 {
			b := bad[i/2]
			items = append(items, domain.RunCompletion{RunID: b.runID, LeaseID: b.leaseID, Output: poison})
			runs = append(runs, b)
		}
	}
	errs := s.CompleteRuns(ctx, "a", items)
	if len(errs) != len(items) {
		t.Fatalf("CompleteRuns: %d results for %d items", len(errs), len(items))
	}
	for i, err := range errs {
		wantOutcome(t, pool, runs[i], err, string(items[i].Output) == string(poison))
	}
}

// wantOutcome checks a completion's result and its run: a good one
// committed with its output; a poisoned one refused with 400 and its run
// still running.
func wantOutcome(t *testing.T, pool *pgxpool.Pool, r heldRun, err error, poisoned bool) {
	t.Helper()
	status, output := runRow(t, pool, r.runID)
	if !poisoned {
		if err != nil || status != "completed" || output == nil || *output != string(goodOutput(r.runID)) {
			t.Errorf("good completion of %s/%s: error %v, status %s, output %v", r.namespace, r.runID, err, status, output)
		}
		return
	}
	var de *domain.Error
	if !errors.As(err, &de) || de.Code != domain.CodeInvalidArgument || de.Field != "output" {
		t.Errorf("poisoned completion of %s/%s: error %v, want invalid_argument on output", r.namespace, r.runID, err)
	}
	if status != "running" {
		t.Errorf("poisoned completion of %s/%s: run is %s, want running", r.namespace, r.runID, status)
	}
}

// Two completion statements over the same runs, given in opposite orders,
// never deadlock: the statement locks its runs in run_id order whatever
// the order of its requests. A third transaction holds the middle run
// until both statements wait, so that each has locked what it locks
// before it.
func TestCompletionBatchesInOppositeOrdersDoNotDeadlock(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	s := postgres.NewStore(pool, 0)
	ctx := context.Background()
	runs := startHeld(t, pool, s, "a", 5)
	// Other namespaces' running runs, so that the planner does as on a
	// busy server: it visits the runs by index in request order.
	if _, err := pool.Exec(ctx, `INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type,
			status, retry_policy, available_at, lease_id, lease_expires_at)
		SELECT gen_random_uuid(), 'other', 'q', 'w', 'running', '{}', now(), gen_random_uuid(), now() + interval '1 hour'
		FROM generate_series(1, 5000);
		ANALYZE workflow_runs`); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(runs, func(a, b heldRun) int { return strings.Compare(a.runID, b.runID) })

	blocker, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Rollback(ctx)
	if _, err := blocker.Exec(ctx, `SELECT 1 FROM workflow_runs WHERE run_id = $1 FOR UPDATE`, runs[2].runID); err != nil {
		t.Fatal(err)
	}

	desc := slices.Clone(runs)
	slices.Reverse(desc)
	errs := make(chan error, 2)
	for _, order := range [][]heldRun{runs, desc} {
		go func() {
			_, err := pool.Exec(ctx, postgres.CompleteRunsSQL, completeArgs(order)...)
			errs <- err
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d completion statements wait for a lock, want 2", waiting)
		}
		time.Sleep(5 * time.Millisecond) // polls: waiting for a lock offers no event
	}
	if err := blocker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("completion statement: %v", err)
		}
	}
	for _, r := range runs {
		if status, _ := runRow(t, pool, r.runID); status != "completed" {
			t.Errorf("run %s: got %s, want completed", r.runID, status)
		}
	}
}

// completeArgs are CompleteRunsSQL's arguments that complete runs, in
// order, each with its good output.
func completeArgs(runs []heldRun) []any {
	var nss, ids, leases, outputs []string
	for _, r := range runs {
		nss, ids, leases, outputs = append(nss, r.namespace), append(ids, r.runID), append(leases, r.leaseID),
			append(outputs, string(goodOutput(r.runID)))
	}
	return []any{nss, ids, leases, outputs, nil}
}

// A completion statement of many runs of one queue notifies in payloads
// that PostgreSQL accepts (at most 8000 bytes each), naming every run once,
// so that the whole batch commits in one statement.
func TestLargeCompletionBatchNotifiesInChunks(t *testing.T) {
	t.Parallel()
	pool, dbURL := pgtest.NewPool(t)
	s := postgres.NewStore(pool, 0)
	ctx := context.Background()
	runs := startHeld(t, pool, s, "a", 400)

	listen, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer listen.Close(ctx)
	if _, err := listen.Exec(ctx, "LISTEN "+postgres.Channel); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, postgres.CompleteRunsSQL, completeArgs(runs)...); err != nil {
		t.Fatalf("completing %d runs of one queue in one statement: %v", len(runs), err)
	}
	named := map[string]int{}
	for len(named) < len(runs) {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		n, err := listen.WaitForNotification(wctx)
		cancel()
		if err != nil {
			t.Fatalf("after %d of %d runs named: %v", len(named), len(runs), err)
		}
		ids, ok := strings.CutPrefix(n.Payload, "f:a/default/")
		if !ok {
			t.Fatalf("notification %q, want f:a/default/<run IDs>", n.Payload)
		}
		for id := range strings.SplitSeq(ids, ",") {
			named[id]++
		}
	}
	for _, r := range runs {
		if named[r.runID] != 1 {
			t.Errorf("run %s named %d times, want 1", r.runID, named[r.runID])
		}
	}
}
