package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kagzi/kagzi/api"
	"github.com/kagzi/kagzi/domain"
)

// Helpers for claiming, shared by the claim, execution and worker tests.

// taskView is a claimed task as the API shows it, every member decoded.
type taskView struct {
	RunID          string          `json:"run_id"`
	Namespace      string          `json:"namespace"`
	TaskQueue      string          `json:"task_queue"`
	WorkflowType   string          `json:"workflow_type"`
	Version        *string         `json:"version"`
	Input          json.RawMessage `json:"input"`
	Attempt        int             `json:"attempt"`
	LeaseID        string          `json:"lease_id"`
	LeaseExpiresAt time.Time       `json:"lease_expires_at"`
	Steps          []stepView      `json:"steps"`
	StepsTruncated bool            `json:"steps_truncated"`
	StepAttempts   map[string]int  `json:"step_attempts"`
}

type claimResponse struct {
	Tasks []taskView `json:"tasks"`
}

func claimPath(queue string) string { return ns + "/task-queues/" + queue + "/claim" }

// claimTasks claims from queue with body, wants 200, and returns the tasks.
func (e *env) claimTasks(t testing.TB, queue string, body map[string]any) []taskView {
	t.Helper()
	var cr claimResponse
	e.do(t, http.MethodPost, claimPath(queue), body).wantStatus(t, http.StatusOK).decode(t, &cr)
	if cr.Tasks == nil {
		t.Fatalf("claim answered tasks null, want an array")
	}
	return cr.Tasks
}

// claimOne claims from queue, waiting up to wait, and wants exactly one task.
func (e *env) claimOne(t testing.TB, queue string, wait time.Duration) taskView {
	t.Helper()
	tasks := e.claimTasks(t, queue, map[string]any{"wait_ms": wait.Milliseconds()})
	if len(tasks) != 1 {
		t.Fatalf("claim on %s: got %d tasks, want 1", queue, len(tasks))
	}
	return tasks[0]
}

// startClaimed starts a run (extra names its queue, which the test must not
// share with other pending runs) and claims it, returning both.
func (e *env) startClaimed(t testing.TB, workflowType string, extra map[string]any) (runView, taskView) {
	t.Helper()
	run := e.start(t, workflowType, extra)
	task := e.claimOne(t, run.TaskQueue, 5*time.Second)
	if task.RunID != run.RunID {
		t.Fatalf("claimed run %s, want %s (is the queue shared?)", task.RunID, run.RunID)
	}
	return run, task
}

// claimOutcome is the end of a claim sent from another goroutine.
type claimOutcome struct {
	tasks   []taskView
	elapsed time.Duration
	err     error
}

// claimAsync sends a claim from another goroutine.
func (e *env) claimAsync(queue string, body map[string]any, opts ...reqOption) <-chan claimOutcome {
	ch := make(chan claimOutcome, 1)
	go func() {
		start := time.Now()
		r, err := e.try(http.MethodPost, claimPath(queue), body, opts...)
		out := claimOutcome{err: err}
		if err == nil {
			var cr claimResponse
			switch {
			case r.status != http.StatusOK:
				out.err = &statusError{r}
			default:
				out.err = json.Unmarshal(r.body, &cr)
			}
			out.tasks = cr.Tasks
		}
		out.elapsed = time.Since(start)
		ch <- out
	}()
	return ch
}

type statusError struct{ r *resp }

func (s *statusError) Error() string {
	return "status " + http.StatusText(s.r.status) + ": " + s.r.short()
}

// parkClaim sends a claim from another goroutine and returns once the
// distributor holds it parked; the queue must have nothing claimable.
func (e *env) parkClaim(t *testing.T, queue string, body map[string]any, opts ...reqOption) <-chan claimOutcome {
	t.Helper()
	before := e.distributor.Waiting("default", queue)
	ch := e.claimAsync(queue, body, opts...)
	waitFor(t, 5*time.Second, "the claim to park", func() bool {
		return e.distributor.Waiting("default", queue) > before
	})
	return ch
}

// receiveClaim waits for a claim's outcome, failing t after within.
func receiveClaim(t *testing.T, ch <-chan claimOutcome, within time.Duration) claimOutcome {
	t.Helper()
	select {
	case out := <-ch:
		return out
	case <-time.After(within):
		t.Fatalf("the claim did not answer within %s", within)
		return claimOutcome{}
	}
}

// withLongWait raises MaxWait far above the few seconds a test waits for
// anything, so that an answer that came from a wait ending is told apart
// from one that came at once, however loaded the machine.
func withLongWait() envOption {
	return withLimits(func(l *api.Limits) { l.MaxWait = 30 * time.Second })
}

func runIDs(tasks []taskView) []string {
	ids := make([]string, len(tasks))
	for i, tk := range tasks {
		ids[i] = tk.RunID
	}
	return ids
}

// Tests.

func TestClaimBatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var want []string
	for i := range 7 {
		run := e.start(t, "batch", map[string]any{"task_queue": "batch", "input": map[string]int{"i": i}})
		want = append(want, run.RunID)
	}

	first := e.claimTasks(t, "batch", map[string]any{"max_tasks": 5, "wait_ms": 0})
	if got := runIDs(first); !reflect.DeepEqual(got, want[:5]) {
		t.Fatalf("first claim: got runs %v, want the 5 oldest %v", got, want[:5])
	}
	for i, tk := range first {
		if tk.Namespace != "default" || tk.TaskQueue != "batch" || tk.WorkflowType != "batch" || tk.Attempt != 1 {
			t.Errorf("task %d: got %+v, want namespace default, queue batch, type batch, attempt 1", i, tk)
		}
		wantJSON(t, "task input", tk.Input, fmt.Sprintf(`{"i": %d}`, i))
		if d := time.Until(tk.LeaseExpiresAt); d < 25*time.Second || d > 35*time.Second {
			t.Errorf("task %d lease expires in %s, want about the lease duration (30s)", i, d)
		}
		run := e.get(t, tk.RunID)
		if run.Status != "running" || run.LeaseExpiresAt == nil || !run.LeaseExpiresAt.Equal(tk.LeaseExpiresAt) || run.Attempt != 1 {
			t.Errorf("run %d after claim: got status %s attempt %d lease %v, want running, 1, %v",
				i, run.Status, run.Attempt, run.LeaseExpiresAt, tk.LeaseExpiresAt)
		}
	}

	rest := e.claimTasks(t, "batch", map[string]any{"max_tasks": 5, "wait_ms": 0})
	if got := runIDs(rest); !reflect.DeepEqual(got, want[5:]) {
		t.Fatalf("second claim: got runs %v, want the remaining %v", got, want[5:])
	}
	if got := e.claimTasks(t, "batch", map[string]any{"max_tasks": 5, "wait_ms": 0}); len(got) != 0 {
		t.Fatalf("third claim: got %d tasks, want none (no run is held twice)", len(got))
	}
}

func TestClaimValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run := e.start(t, "untouched", map[string]any{"task_queue": "valid"})
	for _, tc := range []struct {
		name  string
		path  string
		body  any
		field string
	}{
		{"max_tasks 0", claimPath("valid"), map[string]any{"max_tasks": 0, "wait_ms": 0}, "max_tasks"},
		{"max_tasks 101", claimPath("valid"), map[string]any{"max_tasks": 101, "wait_ms": 0}, "max_tasks"},
		{"wait_ms negative", claimPath("valid"), map[string]any{"wait_ms": -1}, "wait_ms"},
		{"unknown field", claimPath("valid"), map[string]any{"wait_ms": 0, "max_task": 2}, "max_task"},
		{"max_tasks not an integer", claimPath("valid"), `{"max_tasks": "5", "wait_ms": 0}`, "max_tasks"},
		{"empty workflow type", claimPath("valid"), map[string]any{"wait_ms": 0, "workflow_types": []string{""}}, "workflow_types[0]"},
		{"malformed worker_id", claimPath("valid"), map[string]any{"wait_ms": 0, "worker_id": "w-1"}, "worker_id"},
		{"bad queue name", claimPath("-valid"), map[string]any{"wait_ms": 0}, "queue"},
		{"queue name too long", claimPath(strings.Repeat("q", 64)), map[string]any{"wait_ms": 0}, "queue"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.do(t, http.MethodPost, tc.path, tc.body).wantProblem(t, http.StatusBadRequest, "invalid_argument", tc.field)
		})
	}
	// Nothing was claimed by the refused requests.
	if got := e.get(t, run.RunID); got.Status != "pending" || got.Attempt != 0 {
		t.Fatalf("run after refused claims: got %s attempt %d, want pending attempt 0", got.Status, got.Attempt)
	}
	e.do(t, http.MethodPost, claimPath("valid"), `{"wait_ms": 0}`, withContentType("text/plain")).
		wantProblem(t, http.StatusUnsupportedMediaType, "unsupported_media_type", "")
}

func TestClaimZeroWaitOnEmptyQueueAnswersAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withLongWait())
	start := time.Now()
	r := e.do(t, http.MethodPost, claimPath("empty"), map[string]any{"wait_ms": 0}).wantStatus(t, http.StatusOK)
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("a zero-wait claim took %s", elapsed)
	}
	if got := strings.TrimSpace(string(r.body)); got != `{"tasks":[]}` {
		t.Fatalf("body: got %s, want {\"tasks\":[]}", got)
	}

	// No body at all is a claim with every default (max_tasks 1).
	a := e.start(t, "nobody", map[string]any{"task_queue": "nobody"})
	e.start(t, "nobody", map[string]any{"task_queue": "nobody"})
	var cr claimResponse
	e.do(t, http.MethodPost, claimPath("nobody"), nil).wantStatus(t, http.StatusOK).decode(t, &cr)
	if len(cr.Tasks) != 1 || cr.Tasks[0].RunID != a.RunID {
		t.Fatalf("claim without a body: got %v, want the oldest run %s alone", runIDs(cr.Tasks), a.RunID)
	}
}

func TestClaimWaitIsCappedByMaxWait(t *testing.T) {
	t.Parallel()
	const maxWait = 300 * time.Millisecond
	e := newEnv(t, withLimits(func(l *api.Limits) { l.MaxWait = maxWait }))
	start := time.Now()
	tasks := e.claimTasks(t, "capped", map[string]any{"wait_ms": 10 * 60 * 1000})
	elapsed := time.Since(start)
	if len(tasks) != 0 {
		t.Fatalf("got %d tasks from an empty queue", len(tasks))
	}
	if elapsed < maxWait-50*time.Millisecond || elapsed > maxWait+3*time.Second {
		t.Fatalf("a claim with wait_ms 600000 answered after %s, want about MaxWait (%s)", elapsed, maxWait)
	}
	// The default wait (30 s) is capped too.
	start = time.Now()
	if tasks := e.claimTasks(t, "capped", map[string]any{}); len(tasks) != 0 {
		t.Fatalf("got %d tasks from an empty queue", len(tasks))
	}
	if elapsed := time.Since(start); elapsed > maxWait+3*time.Second {
		t.Fatalf("a claim with the default wait answered after %s, want about MaxWait (%s)", elapsed, maxWait)
	}
}

func TestClaimFiltersWorkflowTypes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.start(t, "alpha", map[string]any{"task_queue": "types"})
	b := e.start(t, "beta", map[string]any{"task_queue": "types"})
	c := e.start(t, "gamma", map[string]any{"task_queue": "types"})

	got := e.claimTasks(t, "types", map[string]any{"workflow_types": []string{"beta"}, "max_tasks": 10, "wait_ms": 0})
	if len(got) != 1 || got[0].RunID != b.RunID || got[0].WorkflowType != "beta" {
		t.Fatalf("claim of beta: got %+v, want only run %s", got, b.RunID)
	}
	got = e.claimTasks(t, "types", map[string]any{"workflow_types": []string{"delta", "gamma"}, "max_tasks": 10, "wait_ms": 0})
	if len(got) != 1 || got[0].RunID != c.RunID {
		t.Fatalf("claim of delta,gamma: got %+v, want only run %s", got, c.RunID)
	}
	// Empty means any.
	got = e.claimTasks(t, "types", map[string]any{"workflow_types": []string{}, "max_tasks": 10, "wait_ms": 0})
	if len(got) != 1 || got[0].RunID != a.RunID {
		t.Fatalf("claim of any type: got %+v, want only run %s", got, a.RunID)
	}
}

func TestParkedClaimReceivesRunStartedLater(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withLongWait())
	ch := e.parkClaim(t, "later", map[string]any{"wait_ms": 30000})
	started := time.Now()
	run := e.start(t, "later", map[string]any{"task_queue": "later"})
	out := receiveClaim(t, ch, 40*time.Second)
	if out.err != nil {
		t.Fatal(out.err)
	}
	if len(out.tasks) != 1 || out.tasks[0].RunID != run.RunID || out.tasks[0].Attempt != 1 {
		t.Fatalf("parked claim: got %+v, want run %s at attempt 1", out.tasks, run.RunID)
	}
	// Woken by the notification, long before the 30 s deadline.
	if d := time.Since(started); d > 5*time.Second {
		t.Fatalf("the run reached the parked claim %s after its start", d)
	}
}

func TestClaimClientGoneLeavesRunClaimable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	ch := e.parkClaim(t, "gone", map[string]any{"wait_ms": 4000}, withContext(ctx))
	cancel()
	if out := receiveClaim(t, ch, 5*time.Second); out.err == nil {
		t.Fatalf("a cancelled claim answered: %+v", out.tasks)
	}
	waitFor(t, 5*time.Second, "the server to drop the parked claim", func() bool {
		return e.distributor.Waiting("default", "gone") == 0
	})

	run := e.start(t, "gone", map[string]any{"task_queue": "gone"})
	// A claim statement already under way for the parked claim may still
	// take the run as the client leaves; then the run is put back at once.
	// Either way the next claim gets it, at its first attempt.
	task := e.claimOne(t, "gone", 5*time.Second)
	if task.RunID != run.RunID || task.Attempt != 1 {
		t.Fatalf("next claim: got %+v, want run %s at attempt 1", task, run.RunID)
	}
	if got := e.get(t, run.RunID); got.Status != "running" || got.Attempt != 1 ||
		got.LeaseExpiresAt == nil || !got.LeaseExpiresAt.Equal(task.LeaseExpiresAt) {
		t.Fatalf("run after the next claim: got %s attempt %d lease %v, want running at attempt 1 under the new lease",
			got.Status, got.Attempt, got.LeaseExpiresAt)
	}
}

// holdingClaimer is the distributor, but a claim that got runs does not
// return until its client is gone, so that the handler finds its client gone
// with runs in hand.
type holdingClaimer struct {
	api.Claimer
	claimed chan struct{}
}

func (h *holdingClaimer) Claim(ctx context.Context, req domain.ClaimRequest) ([]domain.Task, error) {
	tasks, err := h.Claimer.Claim(ctx, req)
	if len(tasks) > 0 {
		close(h.claimed)
		<-ctx.Done()
	}
	return tasks, err
}

func TestClaimHandlerReleasesRunsOfAGoneClient(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// A second server wired as the first (same store, listener and
	// distributor), whose claims hold their runs until the client leaves.
	holder := &holdingClaimer{Claimer: e.distributor, claimed: make(chan struct{})}
	cfg := e.api.Config
	cfg.Claimer = holder
	srv := api.New(cfg)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, hs.URL+claimPath("held"), strings.NewReader(`{"wait_ms": 4000}`))
		if err != nil {
			done <- err
			return
		}
		req.Header.Set("Content-Type", "application/json")
		res, err := hs.Client().Do(req)
		if err == nil {
			res.Body.Close()
		}
		done <- err
	}()
	waitFor(t, 5*time.Second, "the claim to park", func() bool { return e.distributor.Waiting("default", "held") == 1 })
	run := e.start(t, "held", map[string]any{"task_queue": "held"})
	select {
	case <-holder.claimed:
	case <-time.After(5 * time.Second):
		t.Fatal("the parked claim got no run within 5s")
	}
	cancel() // the client leaves with the run claimed for it
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the cancelled claim got an answer")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the cancelled claim did not end within 5s")
	}

	// The run is put back at once (it is not left to its 30 s lease) and
	// the next claim continues the same attempt.
	task := e.claimOne(t, "held", 5*time.Second)
	if task.RunID != run.RunID || task.Attempt != 1 {
		t.Fatalf("next claim: got %+v, want run %s at attempt 1", task, run.RunID)
	}
}
