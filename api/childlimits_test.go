package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/kagzi/kagzi/api"
	"github.com/kagzi/kagzi/domain"
)

// withChildLimits runs the server with small child limits, so that tests
// reach them quickly.
func withChildLimits(live, depth int) envOption {
	return withLimits(func(l *api.Limits) { l.Children = domain.ChildLimits{MaxLive: live, MaxDepth: depth} })
}

// startChildNoAwait makes the child call of step without await, wants
// 200, and returns the child's run ID.
func (e *env) startChildNoAwait(t testing.TB, runID, leaseID, step, queue string) string {
	t.Helper()
	var v struct {
		Resolved bool `json:"resolved"`
		Output   struct {
			ChildRunID string `json:"child_run_id"`
		} `json:"output"`
	}
	e.workerCall(t, runID, "steps/"+step+"/child", lease(leaseID, "workflow_type", "c", "task_queue", queue)).
		wantStatus(t, http.StatusOK).decode(t, &v)
	if !v.Resolved || v.Output.ChildRunID == "" {
		t.Fatalf("child call %s: got %+v, want resolved with a child_run_id", step, v)
	}
	return v.Output.ChildRunID
}

// countRows counts the runs, the steps and the signals in the test
// database, as one string to compare.
func (e *env) countRows(t testing.TB) string {
	t.Helper()
	var runs, steps, signals int
	err := e.pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM workflow_runs),
		(SELECT count(*) FROM workflow_steps), (SELECT count(*) FROM signals)`).Scan(&runs, &steps, &signals)
	if err != nil {
		t.Fatalf("count rows: %v", err)
	}
	return fmt.Sprintf("%d runs, %d steps, %d signals", runs, steps, signals)
}

// A parent at its most live children is refused a new one with 409
// limit_exceeded, which writes nothing; replays of its children, live or
// ended, answer as before; an ended child frees its place.
func TestChildLimitLiveChildren(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withChildLimits(2, 16))
	var info struct {
		Limits map[string]int64 `json:"limits"`
	}
	e.do(t, http.MethodGet, "/v1/info", nil).wantStatus(t, http.StatusOK).decode(t, &info)
	if info.Limits["max_live_children"] != 2 || info.Limits["max_child_depth"] != 16 {
		t.Fatalf("info limits = %v, want max_live_children 2, max_child_depth 16", info.Limits)
	}

	parent, task := e.startClaimed(t, "p", map[string]any{"task_queue": "cl-parent"})
	c0 := e.startChildNoAwait(t, parent.RunID, task.LeaseID, "c0", "cl-k0")
	c1 := e.startChildNoAwait(t, parent.RunID, task.LeaseID, "c1", "cl-k1")

	before := e.countRows(t)
	p := e.workerCall(t, parent.RunID, "steps/c2/child", lease(task.LeaseID, "workflow_type", "c", "task_queue", "cl-k2")).
		wantProblem(t, http.StatusConflict, "limit_exceeded", "")
	if after := e.countRows(t); after != before {
		t.Fatalf("a refused child call wrote: before %s, after %s (%s)", before, after, p.Detail)
	}
	// An awaited child step too.
	e.workerCall(t, parent.RunID, "steps/c2/child", lease(task.LeaseID, "workflow_type", "c", "await", true)).
		wantProblem(t, http.StatusConflict, "limit_exceeded", "")
	if got := e.startChildNoAwait(t, parent.RunID, task.LeaseID, "c1", "cl-k1"); got != c1 {
		t.Fatalf("replayed c1 at the cap: child %s, want %s", got, c1)
	}
	if after := e.countRows(t); after != before {
		t.Fatalf("replays at the cap wrote: before %s, after %s", before, after)
	}

	// c0 ends: its place is free, and c2 starts.
	k0 := e.claimOne(t, "cl-k0", 5*time.Second)
	if k0.RunID != c0 {
		t.Fatalf("claimed %s on cl-k0, want %s", k0.RunID, c0)
	}
	e.runCall(t, c0, "complete", lease(k0.LeaseID, "output", 1))
	e.startChildNoAwait(t, parent.RunID, task.LeaseID, "c2", "cl-k2")

	// At the cap again (c1, c2 live): the ended c0 and the live c1 replay
	// as before, and a fourth child is refused.
	before = e.countRows(t)
	var w waitView
	e.workerCall(t, parent.RunID, "steps/c0/child", lease(task.LeaseID, "workflow_type", "c", "task_queue", "cl-k0")).
		wantStatus(t, http.StatusOK).decode(t, &w)
	if !w.Resolved || w.Step == nil || w.Step.Status != "completed" {
		t.Fatalf("replayed ended c0 at the cap: %+v", w)
	}
	if got := e.startChildNoAwait(t, parent.RunID, task.LeaseID, "c1", "cl-k1"); got != c1 {
		t.Fatalf("replayed c1 at the cap: child %s, want %s", got, c1)
	}
	e.workerCall(t, parent.RunID, "steps/c3/child", lease(task.LeaseID, "workflow_type", "c", "task_queue", "cl-k3")).
		wantProblem(t, http.StatusConflict, "limit_exceeded", "")
	if after := e.countRows(t); after != before {
		t.Fatalf("calls at the cap wrote: before %s, after %s", before, after)
	}
}

// An awaited child step replays at the cap as before: the parent, woken
// by the await's timeout with its child still live, replays the step and
// takes the timeout, while a new child is refused.
func TestChildLimitReplayOfAwaitedChildAtCap(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withChildLimits(1, 16))
	parent, task := e.startClaimed(t, "p", map[string]any{"task_queue": "cla-parent"})
	body := lease(task.LeaseID, "workflow_type", "c", "task_queue", "cla-kids", "await", true, "timeout_ms", 50)
	var w waitView
	e.workerCall(t, parent.RunID, "steps/a/child", body).wantStatus(t, http.StatusOK).decode(t, &w)
	if w.Resolved {
		t.Fatalf("awaited child call = %+v, want parked", w)
	}
	task = e.claimOne(t, "cla-parent", 5*time.Second) // woken by the timeout
	if task.RunID != parent.RunID {
		t.Fatalf("claimed %s, want the parent %s", task.RunID, parent.RunID)
	}
	before := e.countRows(t)
	body["lease_id"] = task.LeaseID
	w = waitView{}
	e.workerCall(t, parent.RunID, "steps/a/child", body).wantStatus(t, http.StatusOK).decode(t, &w)
	if !w.Resolved || !w.Output.TimedOut {
		t.Fatalf("replayed awaited child at the cap = %+v, want resolved, timed out", w)
	}
	e.workerCall(t, parent.RunID, "steps/b/child", lease(task.LeaseID, "workflow_type", "c", "task_queue", "cla-kids")).
		wantProblem(t, http.StatusConflict, "limit_exceeded", "")
	if after := e.countRows(t); after != before {
		t.Fatalf("calls at the cap wrote: before %s, after %s", before, after)
	}
}

// A chain of children may go max_child_depth deep: the run at that depth is
// refused a child, and nothing is written.
func TestChildLimitDepth(t *testing.T) {
	t.Parallel()
	const maxDepth = 3
	e := newEnv(t, withChildLimits(5, maxDepth))
	run, task := e.startClaimed(t, "p", map[string]any{"task_queue": "cd-0"})
	for d := 1; d <= maxDepth; d++ {
		queue := fmt.Sprintf("cd-%d", d)
		child := e.startChildNoAwait(t, run.RunID, task.LeaseID, "down", queue)
		task = e.claimOne(t, queue, 5*time.Second)
		if task.RunID != child {
			t.Fatalf("claimed %s on %s, want the child %s", task.RunID, queue, child)
		}
		run.RunID = child
	}
	before := e.countRows(t)
	p := e.workerCall(t, run.RunID, "steps/down/child", lease(task.LeaseID, "workflow_type", "c", "task_queue", "cd-x")).
		wantProblem(t, http.StatusConflict, "limit_exceeded", "")
	if after := e.countRows(t); after != before {
		t.Fatalf("a refused child call wrote: before %s, after %s (%s)", before, after, p.Detail)
	}
	// The run at the deepest depth keeps its lease and goes on.
	e.begin(t, run.RunID, "other", map[string]any{"lease_id": task.LeaseID, "kind": "function"})
}

// Concurrent child calls of one parent never pass the cap: exactly the
// cap's worth are started, the rest refused.
func TestChildLimitConcurrentCalls(t *testing.T) {
	t.Parallel()
	const live, calls = 4, 10
	e := newEnv(t, withChildLimits(live, 16))
	parent, task := e.startClaimed(t, "p", map[string]any{"task_queue": "cc-parent"})
	var wg sync.WaitGroup
	statuses := make(chan string, calls)
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := e.try(http.MethodPost, runPath(parent.RunID)+fmt.Sprintf("/steps/s%d/child", i),
				lease(task.LeaseID, "workflow_type", "c", "task_queue", "cc-kids"))
			if err != nil {
				statuses <- err.Error()
				return
			}
			var p struct {
				Code string `json:"code"`
			}
			_ = json.Unmarshal(r.body, &p)
			statuses <- fmt.Sprint(r.status, p.Code)
		}()
	}
	wg.Wait()
	close(statuses)
	got := map[string]int{}
	for s := range statuses {
		got[s]++
	}
	if want := map[string]int{"200": live, "409limit_exceeded": calls - live}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("answers = %v, want %v", got, want)
	}
	var children, steps int
	if err := e.pool.QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM workflow_runs WHERE parent_run_id = $1),
		(SELECT count(*) FROM workflow_steps WHERE run_id = $1)`, parent.RunID).Scan(&children, &steps); err != nil {
		t.Fatal(err)
	}
	if children != live || steps != live {
		t.Fatalf("%d children, %d steps; want %d of each", children, steps, live)
	}
}
