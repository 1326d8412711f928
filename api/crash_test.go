package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// postTo posts body to path on the server at base (another replica than
// the env's) and decodes the answer into out; it returns the status.
func postTo(t *testing.T, base, path string, body, out any) int {
	t.Helper()
	b, _ := json.Marshal(body)
	res, err := http.Post(base+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer res.Body.Close()
	if out != nil && res.StatusCode == http.StatusOK {
		if err := json.NewDecoder(res.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	return res.StatusCode
}

// expireAndRescue makes the lease of run end as if its replica died, and
// has the maintainer rescue it.
func (e *env) expireAndRescue(t *testing.T, runID string) {
	t.Helper()
	if _, err := e.pool.Exec(context.Background(),
		`UPDATE workflow_runs SET lease_expires_at = now() - interval '1 second' WHERE run_id = $1`, runID); err != nil {
		t.Fatal(err)
	}
	e.maintainer.Tick(context.Background())
}

// A wait killed in the middle of its transaction on replica A (it holds
// the run row and has recorded its step, and is stopped while delivering)
// changes nothing; the run, rescued and claimed through replica B, takes
// the same signal once, for the same step, and a later wait the next one.
// Guard: the run-row lock that sending and waiting both take first, with
// delivery in the wait's one transaction: a send during the stalled wait
// must wait for it (without the send's lock it does not, and the test
// fails), and the killed wait leaves no signal consumed nor step recorded.
func TestSignalConsumedOnceAcrossReplicaKilledMidWait(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withoutMaintainer(), withErrorLogs())
	ctx := context.Background()
	a := httptest.NewServer(e.replica(t).API)
	t.Cleanup(a.Close)
	run := e.start(t, "w", map[string]any{"task_queue": "killed-wait"})
	var claimed claimResponse
	if st := postTo(t, a.URL, claimPath("killed-wait"), map[string]any{"wait_ms": 5000}, &claimed); st != http.StatusOK || len(claimed.Tasks) != 1 {
		t.Fatalf("claim through A: %d %+v", st, claimed.Tasks)
	}
	taskA := claimed.Tasks[0]
	first := e.signal(t, run.RunID, "go", 1, http.StatusAccepted)

	// Hold the signal's row, so that A's wait stops while delivering it.
	hold, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx)
	if _, err := hold.Exec(ctx, `SELECT 1 FROM signals WHERE signal_id = $1 FOR UPDATE`, first.SignalID); err != nil {
		t.Fatal(err)
	}
	waitDone := make(chan int, 1)
	go func() {
		b, _ := json.Marshal(lease(taskA.LeaseID, "signals", []string{"go"}))
		res, err := http.Post(a.URL+runPath(run.RunID)+"/steps/first/wait", "application/json", bytes.NewReader(b))
		if err != nil {
			waitDone <- 0
			return
		}
		res.Body.Close()
		waitDone <- res.StatusCode
	}()
	var pid int
	waitFor(t, 5*time.Second, "A's wait to stall while delivering", func() bool {
		_ = e.pool.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock' AND query LIKE 'UPDATE signals SET status = ''delivered''%'`).Scan(&pid)
		return pid != 0
	})
	// A send meanwhile waits for the run row the stalled wait holds.
	sent := make(chan signalView, 1)
	go func() {
		var sg signalView
		r, err := e.try(http.MethodPost, runPath(run.RunID)+"/signals/go", map[string]any{"input": 2})
		if err == nil && r.status == http.StatusAccepted {
			_ = json.Unmarshal(r.body, &sg)
		}
		sent <- sg
	}()
	waitFor(t, 5*time.Second, "the send to wait for the run row", func() bool {
		var n int
		_ = e.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock' AND query LIKE '%FROM workflow_runs%WHERE namespace = $1 AND run_id = $2 FOR UPDATE%'`).Scan(&n)
		return n == 1
	})
	// Kill the wait's connection mid-transaction, then replica A.
	if _, err := e.pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	select {
	case st := <-waitDone:
		if st == http.StatusOK {
			t.Fatalf("the killed wait answered 200")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the killed wait did not end")
	}
	a.Close()
	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	var second signalView
	select {
	case second = <-sent:
	case <-time.After(5 * time.Second):
		t.Fatal("the send did not end")
	}
	if second.Status != "buffered" || second.Seq != 2 {
		t.Fatalf("send during the killed wait = %+v, want buffered seq 2", second)
	}
	var delivered, steps int
	if err := e.pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM signals WHERE run_id = $1 AND status <> 'buffered'),
		(SELECT count(*) FROM workflow_steps WHERE run_id = $1)`, run.RunID).Scan(&delivered, &steps); err != nil {
		t.Fatal(err)
	}
	if delivered != 0 || steps != 0 {
		t.Fatalf("the killed wait left %d signals consumed and %d steps", delivered, steps)
	}

	// A is gone: its lease expires, and the run goes to replica B.
	e.expireAndRescue(t, run.RunID)
	taskB := e.claimOne(t, "killed-wait", 5*time.Second)
	if taskB.RunID != run.RunID || taskB.LeaseID == taskA.LeaseID {
		t.Fatalf("claim through B = %+v", taskB)
	}
	for range 2 { // the call and its replay
		w := e.wait(t, run.RunID, taskB.LeaseID, "first")
		if !w.Resolved || w.Output.Signal == nil || w.Output.Signal.SignalID != first.SignalID {
			t.Fatalf("wait on first through B = %+v, want %s", w, first.SignalID)
		}
	}
	w := e.wait(t, run.RunID, taskB.LeaseID, "next")
	if !w.Resolved || w.Output.Signal == nil || w.Output.Signal.SignalID != second.SignalID {
		t.Fatalf("wait on next = %+v, want the second signal %s", w, second.SignalID)
	}
	if w := e.wait(t, run.RunID, taskB.LeaseID, "last"); w.Resolved {
		t.Fatalf("wait on last = %+v, want parked: every signal is consumed", w)
	}
	rows, err := e.pool.Query(ctx, `SELECT signal_id, status, coalesce(step, '') FROM signals WHERE run_id = $1 ORDER BY seq`, run.RunID)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var id, status, step string
		if err := rows.Scan(&id, &status, &step); err != nil {
			t.Fatal(err)
		}
		got = append(got, id+":"+status+":"+step)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{first.SignalID + ":delivered:first", second.SignalID + ":delivered:next"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("inbox = %v, want %v", got, want)
	}
	var resolved, asleep int
	if err := e.pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM workflow_steps WHERE run_id = $1 AND kind = 'wait' AND status = 'completed'),
		(SELECT count(*) FROM workflow_runs r WHERE r.status = 'sleeping' AND EXISTS (SELECT 1 FROM signals s
			WHERE s.run_id = r.run_id AND s.status = 'buffered' AND s.name = ANY (r.waiting_for)))`,
		run.RunID).Scan(&resolved, &asleep); err != nil {
		t.Fatal(err)
	}
	if resolved != 2 || asleep != 0 {
		t.Fatalf("%d waits resolved, %d runs asleep with a matching signal; want 2, 0", resolved, asleep)
	}
}

// A child call whose answer is lost after its transaction committed (its
// replica dies before answering), replayed concurrently on two other
// replicas by the parent rescued after its lease expired, creates the child
// once: every replay answers the same child_run_id. Guard: the unique
// (parent, step) index workflow_runs_parent_idx, which the child call's
// lookup under the parent's row lock relies on; a second child for the
// step cannot be stored even by hand.
func TestChildCreatedOnceUnderReplayAndCrash(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withoutMaintainer())
	ctx := context.Background()
	// Replica A commits the child call, then dies before answering.
	replicaA := e.replica(t).API
	committed := make(chan string, 1)
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/steps/pay/child") {
			replicaA.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		replicaA.ServeHTTP(rec, r)
		var v struct {
			Output struct {
				ChildRunID string `json:"child_run_id"`
			} `json:"output"`
		}
		_ = json.Unmarshal(rec.Body.Bytes(), &v)
		if rec.Code != http.StatusOK {
			v.Output.ChildRunID = fmt.Sprintf("status %d: %s", rec.Code, rec.Body)
		}
		committed <- v.Output.ChildRunID
		panic(http.ErrAbortHandler) // the answer never leaves
	}))
	t.Cleanup(a.Close)
	c := httptest.NewServer(e.replica(t).API)
	t.Cleanup(c.Close)

	parent := e.start(t, "p", map[string]any{"task_queue": "crash-parents"})
	var claimed claimResponse
	if st := postTo(t, a.URL, claimPath("crash-parents"), map[string]any{"wait_ms": 5000}, &claimed); st != http.StatusOK || len(claimed.Tasks) != 1 {
		t.Fatalf("claim through A: %d %+v", st, claimed.Tasks)
	}
	call := func(leaseID string) map[string]any {
		return lease(leaseID, "workflow_type", "c", "task_queue", "crash-kids", "input", 7)
	}
	b, _ := json.Marshal(call(claimed.Tasks[0].LeaseID))
	if res, err := http.Post(a.URL+runPath(parent.RunID)+"/steps/pay/child", "application/json", bytes.NewReader(b)); err == nil {
		res.Body.Close()
		t.Fatalf("the child call through A answered %d, want no answer", res.StatusCode)
	}
	childID := <-committed
	var n int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM workflow_runs WHERE parent_run_id = $1 AND parent_step = 'pay' AND run_id::text = $2`,
		parent.RunID, childID).Scan(&n); err != nil || n != 1 {
		t.Fatalf("A's child call committed %q: %d rows (%v), want the child", childID, n, err)
	}
	a.Close()

	// The parent's lease expires; rescued, it is claimed through B and
	// replays the child step, concurrently, through B and C.
	e.expireAndRescue(t, parent.RunID)
	taskB := e.claimOne(t, "crash-parents", 5*time.Second)
	if taskB.RunID != parent.RunID || taskB.Attempt != 2 {
		t.Fatalf("claim after the rescue = %+v, want the parent's second attempt", taskB)
	}
	ids := make(chan string, 6)
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			base := e.srv.URL
			if i%2 == 1 {
				base = c.URL
			}
			b, _ := json.Marshal(call(taskB.LeaseID))
			res, err := http.Post(base+runPath(parent.RunID)+"/steps/pay/child", "application/json", bytes.NewReader(b))
			if err != nil {
				ids <- err.Error()
				return
			}
			defer res.Body.Close()
			var v struct {
				Output struct {
					ChildRunID string `json:"child_run_id"`
				} `json:"output"`
			}
			if err := json.NewDecoder(res.Body).Decode(&v); err != nil || res.StatusCode != http.StatusOK {
				ids <- fmt.Sprintf("status %d (%v)", res.StatusCode, err)
				return
			}
			ids <- v.Output.ChildRunID
		}()
	}
	wg.Wait()
	close(ids)
	for id := range ids {
		if id != childID {
			t.Errorf("replayed child call answered %q, want %s", id, childID)
		}
	}
	kids := e.children(t, parent.RunID)
	if len(kids.Children) != 1 || kids.Children[0].RunID != childID || e.countRuns(t) != 2 {
		t.Fatalf("children = %+v, %d runs; want only %s, 2 runs", kids.Children, e.countRuns(t), childID)
	}
	// The index itself refuses a second child for the step.
	_, err := e.pool.Exec(ctx, `INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, status, input, retry_policy,
		available_at, parent_run_id, parent_step)
		SELECT gen_random_uuid(), namespace, task_queue, workflow_type, 'pending', input, retry_policy, now(), parent_run_id, parent_step
		FROM workflow_runs WHERE run_id = $1`, childID)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23505" || pgErr.ConstraintName != "workflow_runs_parent_idx" {
		t.Fatalf("a second child for the step stored by hand: %v, want a unique violation of workflow_runs_parent_idx", err)
	}
	// The child runs once and its end reaches the rescued parent.
	child := e.claimOne(t, "crash-kids", 5*time.Second)
	if child.RunID != childID || string(child.Input) != "7" {
		t.Fatalf("claimed child %+v, want %s", child, childID)
	}
	e.runCall(t, childID, "complete", lease(child.LeaseID, "output", "paid"))
	w := e.wait(t, parent.RunID, taskB.LeaseID, "collect", "signals", []string{"kagzi.child/pay"})
	var end childEnd
	if !w.Resolved || w.Output.Signal == nil || json.Unmarshal(w.Output.Signal.Input, &end) != nil ||
		end.ChildRunID != childID || end.Status != "completed" {
		t.Fatalf("the child's end at the parent = %+v", w)
	}
}
