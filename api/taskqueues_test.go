package api_test

import (
	"net/http"
	"testing"
	"time"
)

type taskQueueView struct {
	Name               string         `json:"name"`
	Pending            int            `json:"pending"`
	Available          int            `json:"available"`
	Running            int            `json:"running"`
	Sleeping           int            `json:"sleeping"`
	OldestAvailableAt  *time.Time     `json:"oldest_available_at"`
	Paused             bool           `json:"paused"`
	MaxConcurrent      *int           `json:"max_concurrent"`
	WorkflowTypeLimits map[string]int `json:"workflow_type_limits"`
	WorkersOnline      int            `json:"workers_online"`
}

func (e *env) taskQueues(t *testing.T) map[string]taskQueueView {
	t.Helper()
	var res struct {
		TaskQueues []taskQueueView `json:"task_queues"`
	}
	e.do(t, http.MethodGet, ns+"/task-queues", nil).wantStatus(t, http.StatusOK).decode(t, &res)
	byName := map[string]taskQueueView{}
	for _, q := range res.TaskQueues {
		byName[q.Name] = q
	}
	return byName
}

func TestTaskQueuesListCountsAndSettings(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if got := e.taskQueues(t); len(got) != 0 {
		t.Fatalf("queues of an unused namespace: %v", got)
	}
	e.start(t, "w", map[string]any{"task_queue": "tq"})
	e.start(t, "w", map[string]any{"task_queue": "tq", "start_delay_ms": 600000})
	_, _ = e.startClaimed(t, "w", map[string]any{"task_queue": "tq-run"})
	e.do(t, http.MethodPost, ns+"/workers", map[string]any{"task_queue": "tq-workers"}).wantStatus(t, http.StatusCreated)

	qs := e.taskQueues(t)
	tq := qs["tq"]
	if tq.Pending != 2 || tq.Available != 1 || tq.Running != 0 || tq.OldestAvailableAt == nil || tq.Paused || tq.MaxConcurrent != nil {
		t.Errorf("tq: got %+v, want 2 pending, 1 available, no settings", tq)
	}
	if r := qs["tq-run"]; r.Running != 1 || r.Pending != 0 {
		t.Errorf("tq-run: got %+v, want 1 running", r)
	}
	if w := qs["tq-workers"]; w.WorkersOnline != 1 {
		t.Errorf("tq-workers: got %+v, want 1 worker online", w)
	}
	e.do(t, http.MethodGet, ns+"/task-queues?limt=1", nil).wantProblem(t, http.StatusBadRequest, "invalid_argument", "limt")
}

func TestTaskQueuePatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	path := ns + "/task-queues/tq"
	var q taskQueueView
	e.do(t, http.MethodPatch, path, map[string]any{"max_concurrent": 3, "workflow_type_limits": map[string]any{"a": 1, "b": 2}}).
		wantStatus(t, http.StatusOK).decode(t, &q)
	if q.Name != "tq" || q.MaxConcurrent == nil || *q.MaxConcurrent != 3 || q.WorkflowTypeLimits["a"] != 1 || q.WorkflowTypeLimits["b"] != 2 || q.Paused {
		t.Fatalf("after setting limits: %+v", q)
	}
	// Left-out settings stay; null clears.
	q = taskQueueView{} // decoding into a map merges keys
	e.do(t, http.MethodPatch, path, map[string]any{"paused": true, "workflow_type_limits": map[string]any{"a": nil}}).
		wantStatus(t, http.StatusOK).decode(t, &q)
	if !q.Paused || q.MaxConcurrent == nil || *q.MaxConcurrent != 3 || len(q.WorkflowTypeLimits) != 1 || q.WorkflowTypeLimits["b"] != 2 {
		t.Fatalf("after pausing and clearing a: %+v", q)
	}
	q = taskQueueView{}
	e.do(t, http.MethodPatch, path, map[string]any{"paused": false, "max_concurrent": nil}).wantStatus(t, http.StatusOK).decode(t, &q)
	if q.Paused || q.MaxConcurrent != nil {
		t.Fatalf("after resuming and clearing max_concurrent: %+v", q)
	}
	if got := e.taskQueues(t)["tq"]; got.MaxConcurrent != nil || got.WorkflowTypeLimits["b"] != 2 {
		t.Errorf("listed: %+v", got)
	}

	// Bad input changes nothing.
	e.do(t, http.MethodPatch, path, map[string]any{"max_concurrent": -1}).wantProblem(t, http.StatusBadRequest, "invalid_argument", "max_concurrent")
	e.do(t, http.MethodPatch, path, map[string]any{"paused": "yes"}).wantProblem(t, http.StatusBadRequest, "invalid_argument", "paused")
	e.do(t, http.MethodPatch, path, map[string]any{"bogus": 1}).wantProblem(t, http.StatusBadRequest, "invalid_argument", "bogus")
	e.do(t, http.MethodPatch, ns+"/task-queues/bad%20name", map[string]any{"paused": true}).wantProblem(t, http.StatusBadRequest, "invalid_argument", "queue")
	e.do(t, http.MethodPatch, path, `{"paused":true}`, withContentType("text/plain")).wantProblem(t, http.StatusUnsupportedMediaType, "unsupported_media_type", "")
	if got := e.taskQueues(t)["tq"]; got.Paused || got.MaxConcurrent != nil {
		t.Errorf("a refused patch changed the queue: %+v", got)
	}
}

// TestPausedQueueServesParkedClaimOnResume pauses a queue over HTTP, parks
// a claim on it, and resumes it: the claim gets the run through NOTIFY.
func TestPausedQueueServesParkedClaimOnResume(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.do(t, http.MethodPatch, ns+"/task-queues/tq", map[string]any{"paused": true}).wantStatus(t, http.StatusOK)
	run := e.start(t, "w", map[string]any{"task_queue": "tq"})
	if tasks := e.claimTasks(t, "tq", map[string]any{"wait_ms": 0}); len(tasks) != 0 {
		t.Fatalf("a paused queue handed out %d runs", len(tasks))
	}
	ch := e.claimAsync("tq", map[string]any{"wait_ms": 4000})
	waitFor(t, 5*time.Second, "the claim to park", func() bool { return e.distributor.Waiting("default", "tq") == 1 })
	e.do(t, http.MethodPatch, ns+"/task-queues/tq", map[string]any{"paused": false}).wantStatus(t, http.StatusOK)
	out := <-ch
	if out.err != nil || len(out.tasks) != 1 || out.tasks[0].RunID != run.RunID {
		t.Fatalf("after resume: %+v", out)
	}
	if out.elapsed > 3*time.Second {
		t.Errorf("the parked claim got the run %s after it parked; want it at the resume", out.elapsed)
	}
}
