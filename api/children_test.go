package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

type childrenPage struct {
	Children []struct {
		RunID       string  `json:"run_id"`
		Status      string  `json:"status"`
		TaskQueue   string  `json:"task_queue"`
		ParentRunID *string `json:"parent_run_id"`
	} `json:"children"`
}

func (e *env) children(t testing.TB, runID string) childrenPage {
	t.Helper()
	var p childrenPage
	e.do(t, http.MethodGet, runPath(runID)+"/children", nil).wantStatus(t, http.StatusOK).decode(t, &p)
	return p
}

func (e *env) childCall(t testing.TB, runID, leaseID, step string, kv ...any) waitView {
	t.Helper()
	var w waitView
	e.workerCall(t, runID, "steps/"+step+"/child", lease(leaseID, kv...)).wantStatus(t, http.StatusOK).decode(t, &w)
	return w
}

type childEnd struct {
	ChildRunID string          `json:"child_run_id"`
	Status     string          `json:"status"`
	Output     json.RawMessage `json:"output"`
	Error      *errorView      `json:"error"`
}

// An awaited child parks its parent; the child's end, on its own
// completion, delivers to the parent and wakes it; the replayed child call
// answers the end, and the child was created once.
func TestAwaitedChildWakesParent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	parent, task := e.startClaimed(t, "p", map[string]any{"task_queue": "parents"})
	w := e.childCall(t, parent.RunID, task.LeaseID, "pay", "workflow_type", "c", "task_queue", "kids", "input", 5, "await", true)
	if w.Resolved {
		t.Fatalf("child call = %+v, want parked", w)
	}
	kids := e.children(t, parent.RunID)
	if len(kids.Children) != 1 || kids.Children[0].ParentRunID == nil || *kids.Children[0].ParentRunID != parent.RunID {
		t.Fatalf("children = %+v", kids)
	}
	if v := e.runWait(t, parent.RunID); v.Status != "sleeping" || len(v.WaitingFor) != 1 || v.WaitingFor[0] != "kagzi.child/pay" {
		t.Fatalf("parent = %+v", v)
	}
	claim := e.parkClaim(t, "parents", map[string]any{"wait_ms": 5000})
	child := e.claimOne(t, "kids", 5*time.Second)
	if child.RunID != kids.Children[0].RunID || string(child.Input) != "5" {
		t.Fatalf("claimed child %+v", child)
	}
	e.runCall(t, child.RunID, "complete", lease(child.LeaseID, "output", map[string]any{"paid": true}))
	out := <-claim
	if out.err != nil || len(out.tasks) != 1 || out.tasks[0].RunID != parent.RunID {
		t.Fatalf("parent claim after the child's end: %+v", out)
	}
	task = out.tasks[0]
	w = e.childCall(t, parent.RunID, task.LeaseID, "pay", "workflow_type", "c", "task_queue", "kids", "input", 5, "await", true)
	if !w.Resolved || w.Output.Signal == nil || w.Output.Signal.Name != "kagzi.child/pay" {
		t.Fatalf("replayed child call = %+v", w)
	}
	var end childEnd
	if err := json.Unmarshal(w.Output.Signal.Input, &end); err != nil || end.Status != "completed" || end.ChildRunID != child.RunID || string(end.Output) != `{"paid":true}` {
		t.Fatalf("end = %+v (%v)", end, err)
	}
	if w.Step == nil || w.Step.Kind != "child" || w.Step.Status != "completed" {
		t.Fatalf("step = %+v", w.Step)
	}
	if n := len(e.children(t, parent.RunID).Children); n != 1 || e.countRuns(t) != 2 {
		t.Fatalf("%d children, %d runs; want 1, 2", n, e.countRuns(t))
	}
}

// A child started without await resolves at once; a failed child's end is
// collected by a later wait; concurrent replays create it once.
func TestChildWithoutAwaitThenWait(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	parent, task := e.startClaimed(t, "p", map[string]any{"task_queue": "parents2"})
	var wg sync.WaitGroup
	ids := make(chan string, 5)
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := e.try(http.MethodPost, runPath(parent.RunID)+"/steps/a/child",
				lease(task.LeaseID, "workflow_type", "c", "task_queue", "kids2"))
			if err != nil || r.status != http.StatusOK {
				ids <- "error"
				return
			}
			var v struct {
				Output struct {
					ChildRunID string `json:"child_run_id"`
				} `json:"output"`
			}
			_ = json.Unmarshal(r.body, &v)
			ids <- v.Output.ChildRunID
		}()
	}
	wg.Wait()
	close(ids)
	var first string
	for id := range ids {
		if first == "" {
			first = id
		}
		if id != first || id == "error" || id == "" {
			t.Fatalf("child ids differ or failed: %q, %q", id, first)
		}
	}
	child := e.claimOne(t, "kids2", 5*time.Second)
	if child.RunID != first {
		t.Fatalf("claimed %s, want the child %s", child.RunID, first)
	}
	e.runCall(t, child.RunID, "fail", lease(child.LeaseID, "error", map[string]any{"message": "declined", "non_retryable": true}))
	// A reserved name may pass the length limit by its prefix.
	long := strings.Repeat("s", 256)
	if w := e.wait(t, parent.RunID, task.LeaseID, "long", "signals", []string{"kagzi.child/" + long}, "timeout_ms", 0); !w.Resolved || !w.Output.TimedOut {
		t.Fatalf("wait on a long child name = %+v", w)
	}
	w := e.wait(t, parent.RunID, task.LeaseID, "collect", "signals", []string{"kagzi.child/a"})
	if !w.Resolved || w.Output.Signal == nil {
		t.Fatalf("wait = %+v", w)
	}
	var end childEnd
	if err := json.Unmarshal(w.Output.Signal.Input, &end); err != nil || end.Status != "failed" || end.Error == nil || end.Error.Message != "declined" {
		t.Fatalf("end = %s (%v)", w.Output.Signal.Input, err)
	}
}

// Ending a parent cancels its live cancel-policy children, not the
// abandoned ones; the cancelled child's end is kept in the parent's inbox.
func TestParentEndCancelsChildren(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	parent, task := e.startClaimed(t, "p", map[string]any{"task_queue": "parents3"})
	e.childCall(t, parent.RunID, task.LeaseID, "c1", "workflow_type", "c", "task_queue", "kids3")
	e.childCall(t, parent.RunID, task.LeaseID, "c2", "workflow_type", "c", "task_queue", "kids3", "parent_close_policy", "abandon")
	e.runCall(t, parent.RunID, "complete", lease(task.LeaseID, "output", 1))
	got := map[string]string{}
	for _, c := range e.children(t, parent.RunID).Children {
		got[c.RunID] = c.Status
	}
	var cancelled, pending int
	for _, st := range got {
		switch st {
		case "cancelled":
			cancelled++
		case "pending":
			pending++
		}
	}
	if cancelled != 1 || pending != 1 {
		t.Fatalf("children = %v, want one cancelled and one pending", got)
	}
	var page struct {
		Signals []signalView `json:"signals"`
	}
	e.do(t, http.MethodGet, runPath(parent.RunID)+"/signals?name=kagzi.child%2Fc1", nil).wantStatus(t, http.StatusOK).decode(t, &page)
	if len(page.Signals) != 1 {
		t.Fatalf("parent inbox = %+v, want the cancelled child's end", page.Signals)
	}
}

// A child finishing on one replica wakes its parent, whose claim is
// parked on another, within the usual pickup time.
func TestChildEndOnAnotherReplicaWakesParent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	second := httptest.NewServer(e.replica(t).API)
	t.Cleanup(second.Close)
	post := func(path string, body any, out any) {
		t.Helper()
		b, _ := json.Marshal(body)
		res, err := http.Post(second.URL+path, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%s on the second replica: %d", path, res.StatusCode)
		}
		if out != nil {
			if err := json.NewDecoder(res.Body).Decode(out); err != nil {
				t.Fatal(err)
			}
		}
	}
	parent, task := e.startClaimed(t, "p", map[string]any{"task_queue": "parents4"})
	if w := e.childCall(t, parent.RunID, task.LeaseID, "pay", "workflow_type", "c", "task_queue", "kids4", "await", true); w.Resolved {
		t.Fatalf("child call = %+v, want parked", w)
	}
	claim := e.parkClaim(t, "parents4", map[string]any{"wait_ms": 10000})
	var got claimResponse
	post(ns+"/task-queues/kids4/claim", map[string]any{"wait_ms": 5000}, &got)
	if len(got.Tasks) != 1 {
		t.Fatalf("second replica claimed %+v", got.Tasks)
	}
	ended := time.Now()
	post(runPath(got.Tasks[0].RunID)+"/complete", lease(got.Tasks[0].LeaseID, "output", 1), nil)
	out := <-claim
	if out.err != nil || len(out.tasks) != 1 || out.tasks[0].RunID != parent.RunID {
		t.Fatalf("the parked claim: %+v", out)
	}
	if d := time.Since(ended); d > time.Second {
		t.Fatalf("the parent was picked up %s after its child ended on another replica", d)
	}
}

// A child held for a moment by another transaction (a heartbeat, a step
// report) when its parent ends is cancelled all the same.
func TestParentEndCancelsABusyChild(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	parent, task := e.startClaimed(t, "p", map[string]any{"task_queue": "parents5"})
	var started struct {
		Output struct {
			ChildRunID string `json:"child_run_id"`
		} `json:"output"`
	}
	e.workerCall(t, parent.RunID, "steps/c1/child", lease(task.LeaseID, "workflow_type", "c", "task_queue", "kids5")).
		wantStatus(t, http.StatusOK).decode(t, &started)
	childID := started.Output.ChildRunID
	ctx := context.Background()
	busy, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Rollback(ctx)
	if _, err := busy.Exec(ctx, `SELECT 1 FROM workflow_runs WHERE run_id = $1 FOR UPDATE`, childID); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		r, err := e.try(http.MethodPost, runPath(parent.RunID)+"/complete", lease(task.LeaseID, "output", 1))
		if err == nil && r.status != http.StatusOK {
			err = fmt.Errorf("complete: %s", r.short())
		}
		done <- err
	}()
	// The parent's end waits for the child's row rather than skip it.
	waitFor(t, 5*time.Second, "the parent's end to wait for the busy child", func() bool {
		var waiting bool
		_ = e.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%parent_close_policy%')`).Scan(&waiting)
		return waiting
	})
	if err := busy.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if v := e.runWait(t, childID); v.Status != "cancelled" {
		t.Fatalf("busy child is %s, want cancelled", v.Status)
	}
}
