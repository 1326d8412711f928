package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kagzi/kagzi/api"
	"github.com/kagzi/kagzi/domain"
)

// Helpers for the calls of a worker running a claimed run.

// stepView is a step attempt as the API shows it, every member decoded.
type stepView struct {
	RunID      string          `json:"run_id"`
	Name       string          `json:"name"`
	Kind       string          `json:"kind"`
	Attempt    int             `json:"attempt"`
	Status     string          `json:"status"`
	Input      json.RawMessage `json:"input"`
	Output     json.RawMessage `json:"output"`
	Error      *errorView      `json:"error"`
	RetryAt    *time.Time      `json:"retry_at"`
	WakeUpAt   *time.Time      `json:"wake_up_at"`
	StartedAt  time.Time       `json:"started_at"`
	CreatedAt  time.Time       `json:"created_at"`
	FinishedAt *time.Time      `json:"finished_at"`
	// AlreadyCompleted is the extra member of complete's answer.
	AlreadyCompleted bool `json:"already_completed"`
}

// errorView is a stored run or step error.
type errorView struct {
	Message      string          `json:"message"`
	Type         *string         `json:"type"`
	NonRetryable bool            `json:"non_retryable"`
	Details      json.RawMessage `json:"details"`
}

type beginView struct {
	ShouldExecute bool            `json:"should_execute"`
	Step          stepView        `json:"step"`
	Output        json.RawMessage `json:"output"`
}

type failStepView struct {
	Step             stepView   `json:"step"`
	AlreadyCompleted bool       `json:"already_completed"`
	RetryScheduled   bool       `json:"retry_scheduled"`
	RetryAt          *time.Time `json:"retry_at"`
}

// workerCall sends a worker's call on a run: call is the path below the
// run ("heartbeat", "steps/fetch/begin", ...).
func (e *env) workerCall(t testing.TB, runID, call string, body any) *resp {
	t.Helper()
	return e.do(t, http.MethodPost, runPath(runID)+"/"+call, body)
}

// lease is the body of a call that carries only the lease, plus extra
// members in pairs (name, value).
func lease(id string, kv ...any) map[string]any {
	b := map[string]any{"lease_id": id}
	for i := 0; i+1 < len(kv); i += 2 {
		b[kv[i].(string)] = kv[i+1]
	}
	return b
}

// begin begins a step and wants 200.
func (e *env) begin(t testing.TB, runID, step string, body map[string]any) beginView {
	t.Helper()
	var b beginView
	e.workerCall(t, runID, "steps/"+step+"/begin", body).wantStatus(t, http.StatusOK).decode(t, &b)
	return b
}

// completeStep completes a step with output and wants 200.
func (e *env) completeStep(t testing.TB, runID, leaseID, step string, output any) stepView {
	t.Helper()
	var st stepView
	e.workerCall(t, runID, "steps/"+step+"/complete", lease(leaseID, "output", output)).
		wantStatus(t, http.StatusOK).decode(t, &st)
	return st
}

// failStep fails a step with errBody and wants 200.
func (e *env) failStep(t testing.TB, runID, leaseID, step string, errBody map[string]any) failStepView {
	t.Helper()
	var f failStepView
	e.workerCall(t, runID, "steps/"+step+"/fail", lease(leaseID, "error", errBody)).
		wantStatus(t, http.StatusOK).decode(t, &f)
	return f
}

// runCall sends a call that answers with the run and wants 200.
func (e *env) runCall(t testing.TB, runID, call string, body any) runView {
	t.Helper()
	var run runView
	e.workerCall(t, runID, call, body).wantStatus(t, http.StatusOK).decode(t, &run)
	return run
}

// steps lists a run's step attempts and wants 200.
func (e *env) steps(t testing.TB, runID string) []stepView {
	t.Helper()
	var res struct {
		Steps []stepView `json:"steps"`
	}
	e.do(t, http.MethodGet, runPath(runID)+"/steps", nil).wantStatus(t, http.StatusOK).decode(t, &res)
	return res.Steps
}

// runError decodes a run's error, nil when it has none.
func runError(t testing.TB, run runView) *errorView {
	t.Helper()
	if len(run.Error) == 0 || string(run.Error) == "null" {
		return nil
	}
	var ev errorView
	if err := json.Unmarshal(run.Error, &ev); err != nil {
		t.Fatalf("run error %s: %v", run.Error, err)
	}
	return &ev
}

// wantJSON fails t unless got is the JSON value want (compared as values).
func wantJSON(t testing.TB, what string, got json.RawMessage, want string) {
	t.Helper()
	var g, w any
	if len(got) == 0 {
		got = json.RawMessage("null")
	}
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: %v in %s", what, err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("%s: bad want %s: %v", what, want, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("%s: got %s, want %s", what, got, want)
	}
}

// dbNow is the database's clock, which leases and retries are measured by.
func (e *env) dbNow(t testing.TB) time.Time {
	t.Helper()
	var now time.Time
	if err := e.pool.QueryRow(context.Background(), `SELECT now()`).Scan(&now); err != nil {
		t.Fatalf("read the database clock: %v", err)
	}
	return now
}

// waitDBPast waits until the database's clock is past ts.
func (e *env) waitDBPast(t *testing.T, ts time.Time) {
	t.Helper()
	waitFor(t, time.Until(ts)+10*time.Second, "the database clock to pass "+ts.String(), func() bool {
		var past bool
		err := e.pool.QueryRow(context.Background(), `SELECT now() > $1`, ts).Scan(&past)
		return err == nil && past
	})
}

// snapshot is what GET shows of a run and its steps, to check that a refused
// call changed nothing.
func (e *env) snapshot(t testing.TB, runID string) string {
	t.Helper()
	run := e.do(t, http.MethodGet, runPath(runID), nil).wantStatus(t, http.StatusOK)
	steps := e.do(t, http.MethodGet, runPath(runID)+"/steps", nil).wantStatus(t, http.StatusOK)
	return string(run.body) + string(steps.body)
}

// Tests.

func TestWorkerProtocolEndToEnd(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run := e.start(t, "order", map[string]any{
		"task_queue": "e2e", "input": map[string]any{"order": 42},
		"retry_policy": map[string]any{"initial_interval_ms": 1},
	})
	task := e.claimOne(t, "e2e", 5*time.Second)
	if task.RunID != run.RunID || task.Attempt != 1 {
		t.Fatalf("claim: got %+v, want run %s at attempt 1", task, run.RunID)
	}
	wantJSON(t, "task input", task.Input, `{"order": 42}`)

	// reserve fails once (a step retry ends the lease) and then succeeds.
	b := e.begin(t, run.RunID, "reserve", lease(task.LeaseID, "input", map[string]any{"sku": "x"}))
	if !b.ShouldExecute || b.Step.Status != "running" || b.Step.Attempt != 1 || b.Step.Kind != "function" || b.Step.Name != "reserve" {
		t.Fatalf("first begin: got %+v, want should_execute, a running function step at attempt 1", b)
	}
	wantJSON(t, "begin output", b.Output, `null`)
	wantJSON(t, "step input", b.Step.Input, `{"sku": "x"}`)
	if f := e.failStep(t, run.RunID, task.LeaseID, "reserve", map[string]any{"message": "out of stock"}); !f.RetryScheduled {
		t.Fatalf("fail reserve: got %+v, want a retry", f)
	}
	task2 := e.claimOne(t, "e2e", 5*time.Second)
	if task2.RunID != run.RunID || task2.Attempt != 1 || task2.LeaseID == task.LeaseID {
		t.Fatalf("claim after step retry: got %+v, want run %s at attempt 1 under a new lease", task2, run.RunID)
	}
	b = e.begin(t, run.RunID, "reserve", lease(task2.LeaseID, "input", map[string]any{"sku": "x"}))
	if !b.ShouldExecute || b.Step.Attempt != 2 || b.Step.Status != "running" {
		t.Fatalf("begin after retry: got %+v, want should_execute at attempt 2", b)
	}
	st := e.completeStep(t, run.RunID, task2.LeaseID, "reserve", map[string]any{"reserved": true})
	if st.Status != "completed" || st.Attempt != 2 || st.FinishedAt == nil {
		t.Fatalf("complete reserve: got %+v, want attempt 2 completed", st)
	}
	wantJSON(t, "completed step output", st.Output, `{"reserved": true}`)

	// Replay: the memoized output, no new attempt.
	b = e.begin(t, run.RunID, "reserve", lease(task2.LeaseID, "input", map[string]any{"sku": "x"}))
	if b.ShouldExecute || b.Step.Attempt != 2 || b.Step.Status != "completed" {
		t.Fatalf("replayed begin: got %+v, want should_execute false and attempt 2 completed", b)
	}
	wantJSON(t, "replayed output", b.Output, `{"reserved": true}`)

	b = e.begin(t, run.RunID, "charge", lease(task2.LeaseID))
	if !b.ShouldExecute || b.Step.Attempt != 1 {
		t.Fatalf("begin charge: got %+v", b)
	}
	wantJSON(t, "step input without one", b.Step.Input, `null`)
	e.completeStep(t, run.RunID, task2.LeaseID, "charge", 7)

	done := e.runCall(t, run.RunID, "complete", lease(task2.LeaseID, "output", map[string]any{"done": true}))
	if done.Status != "completed" || done.FinishedAt == nil || done.LeaseExpiresAt != nil || done.Attempt != 1 {
		t.Fatalf("complete: got status %s finished %v lease %v attempt %d, want completed, finished, no lease, attempt 1",
			done.Status, done.FinishedAt, done.LeaseExpiresAt, done.Attempt)
	}
	got := e.get(t, run.RunID)
	if got.Status != "completed" || got.FinishedAt == nil {
		t.Fatalf("GET after complete: got %s finished %v", got.Status, got.FinishedAt)
	}
	wantJSON(t, "run output", got.Output, `{"done": true}`)
	wantJSON(t, "run input", got.Input, `{"order": 42}`)

	var order []string
	for _, s := range e.steps(t, run.RunID) {
		order = append(order, fmt.Sprintf("%s#%d:%s", s.Name, s.Attempt, s.Status))
	}
	if want := []string{"reserve#1:failed", "reserve#2:completed", "charge#1:completed"}; !reflect.DeepEqual(order, want) {
		t.Fatalf("steps: got %v, want %v", order, want)
	}

	// The lease ended with the run.
	e.workerCall(t, run.RunID, "heartbeat", lease(task2.LeaseID)).wantProblem(t, http.StatusConflict, "lease_lost", "")
}

func TestRunHeartbeatExtendsLease(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run, task := e.startClaimed(t, "beat", map[string]any{"task_queue": "beat"})
	var hb struct {
		LeaseExpiresAt time.Time `json:"lease_expires_at"`
	}
	e.workerCall(t, run.RunID, "heartbeat", lease(task.LeaseID)).wantStatus(t, http.StatusOK).decode(t, &hb)
	if !hb.LeaseExpiresAt.After(task.LeaseExpiresAt) {
		t.Fatalf("heartbeat: lease expires at %s, want later than the claim's %s", hb.LeaseExpiresAt, task.LeaseExpiresAt)
	}
	got := e.get(t, run.RunID)
	if got.LeaseExpiresAt == nil || !got.LeaseExpiresAt.Equal(hb.LeaseExpiresAt) || got.Status != "running" {
		t.Fatalf("GET after heartbeat: lease %v status %s, want %s running", got.LeaseExpiresAt, got.Status, hb.LeaseExpiresAt)
	}
}

// fencedCalls are every worker call on a run, with lease as their lease.
func fencedCalls(lease string) []struct {
	call string
	body map[string]any
} {
	return []struct {
		call string
		body map[string]any
	}{
		{"heartbeat", map[string]any{"lease_id": lease}},
		{"steps/other/begin", map[string]any{"lease_id": lease}},
		{"steps/work/complete", map[string]any{"lease_id": lease, "output": 1}},
		{"steps/work/fail", map[string]any{"lease_id": lease, "error": map[string]any{"message": "boom"}}},
		{"sleep", map[string]any{"lease_id": lease, "step": "nap", "duration_ms": 10}},
		{"complete", map[string]any{"lease_id": lease, "output": 1}},
		{"fail", map[string]any{"lease_id": lease, "error": map[string]any{"message": "boom"}}},
	}
}

func TestWorkerCallsAreFencedByLease(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run, task := e.startClaimed(t, "fenced", map[string]any{"task_queue": "fenced"})
	e.begin(t, run.RunID, "work", lease(task.LeaseID))
	before := e.snapshot(t, run.RunID)

	const wrongLease = "0190a000-0000-7000-8000-000000000001"
	for _, c := range fencedCalls(wrongLease) {
		t.Run("wrong lease/"+c.call, func(t *testing.T) {
			e.workerCall(t, run.RunID, c.call, c.body).wantProblem(t, http.StatusConflict, "lease_lost", "")
		})
	}
	for _, c := range fencedCalls(task.LeaseID) {
		t.Run("unknown run/"+c.call, func(t *testing.T) {
			e.workerCall(t, "0190a000-0000-7000-8000-0000000000ff", c.call, c.body).wantProblem(t, http.StatusNotFound, "not_found", "")
		})
		t.Run("missing lease_id/"+c.call, func(t *testing.T) {
			body := map[string]any{}
			for k, v := range c.body {
				if k != "lease_id" {
					body[k] = v
				}
			}
			e.workerCall(t, run.RunID, c.call, body).wantProblem(t, http.StatusBadRequest, "invalid_argument", "lease_id")
		})
		t.Run("malformed lease_id/"+c.call, func(t *testing.T) {
			body := map[string]any{"lease_id": "lease-1"}
			for k, v := range c.body {
				if k != "lease_id" {
					body[k] = v
				}
			}
			e.workerCall(t, run.RunID, c.call, body).wantProblem(t, http.StatusBadRequest, "invalid_argument", "lease_id")
		})
	}
	if after := e.snapshot(t, run.RunID); after != before {
		t.Fatalf("refused calls changed the run:\nbefore %s\nafter  %s", before, after)
	}

	// The rightful lease still works: nothing above took it away.
	e.workerCall(t, run.RunID, "heartbeat", lease(task.LeaseID)).wantStatus(t, http.StatusOK)

	// A cancelled run: every call, even under the right lease, is told to stop.
	e.do(t, http.MethodPost, runPath(run.RunID)+"/cancel", nil).wantStatus(t, http.StatusOK)
	before = e.snapshot(t, run.RunID)
	for _, c := range fencedCalls(task.LeaseID) {
		t.Run("cancelled/"+c.call, func(t *testing.T) {
			e.workerCall(t, run.RunID, c.call, c.body).wantProblem(t, http.StatusConflict, "cancelled", "")
		})
	}
	if after := e.snapshot(t, run.RunID); after != before {
		t.Fatalf("calls on a cancelled run changed it:\nbefore %s\nafter  %s", before, after)
	}
}

func TestExpiredLeaseIsRescued(t *testing.T) {
	t.Parallel()
	// Short leases, so that one expires soon; not so short that the second
	// lease could run out between its claim and its complete on a loaded
	// machine.
	e := newEnv(t, withoutMaintainer(), withLimits(func(l *api.Limits) { l.LeaseDuration = 2 * time.Second }))
	retried := e.start(t, "rescue", map[string]any{"task_queue": "rescue",
		"retry_policy": map[string]any{"max_attempts": 3, "initial_interval_ms": 10}})
	last := e.start(t, "rescue", map[string]any{"task_queue": "rescue",
		"retry_policy": map[string]any{"max_attempts": 1}})
	tasks := e.claimTasks(t, "rescue", map[string]any{"max_tasks": 2, "wait_ms": 0})
	if got := runIDs(tasks); !reflect.DeepEqual(got, []string{retried.RunID, last.RunID}) {
		t.Fatalf("claim: got %v, want both runs", got)
	}
	leaseA := tasks[0].LeaseID
	e.begin(t, retried.RunID, "work", lease(leaseA))

	e.waitDBPast(t, tasks[0].LeaseExpiresAt)
	e.waitDBPast(t, tasks[1].LeaseExpiresAt)
	// Expired but not yet rescued: the lease already changes nothing.
	e.workerCall(t, retried.RunID, "heartbeat", lease(leaseA)).wantProblem(t, http.StatusConflict, "lease_lost", "")
	e.maintainer.Tick(context.Background())

	got := e.get(t, retried.RunID)
	ev := runError(t, got)
	if got.Status != "pending" || got.Attempt != 1 || got.LeaseExpiresAt != nil || ev == nil ||
		ev.Type == nil || *ev.Type != "lease_expired" || !strings.Contains(ev.Message, "lease expired") {
		t.Fatalf("rescued run: got status %s attempt %d lease %v error %s, want pending, attempt 1, no lease, a lease-expired error",
			got.Status, got.Attempt, got.LeaseExpiresAt, got.Error)
	}
	steps := e.steps(t, retried.RunID)
	if len(steps) != 1 || steps[0].Status != "failed" || steps[0].Error == nil || steps[0].Error.Type == nil || *steps[0].Error.Type != "lease_expired" {
		t.Fatalf("the step running when the lease expired: got %+v, want failed with the lease-expired error", steps)
	}

	failed := e.get(t, last.RunID)
	ev = runError(t, failed)
	if failed.Status != "failed" || failed.Attempt != 1 || failed.FinishedAt == nil || ev == nil ||
		ev.Type == nil || *ev.Type != "lease_expired" || !strings.Contains(ev.Message, "lease expired") {
		t.Fatalf("rescued run without attempts left: got status %s attempt %d finished %v error %s, want failed with a lease-expired error",
			failed.Status, failed.Attempt, failed.FinishedAt, failed.Error)
	}

	taskB := e.claimOne(t, "rescue", 5*time.Second)
	if taskB.RunID != retried.RunID || taskB.Attempt != 2 || taskB.LeaseID == leaseA {
		t.Fatalf("claim after rescue: got %+v, want run %s at attempt 2 under a new lease", taskB, retried.RunID)
	}
	e.workerCall(t, retried.RunID, "complete", lease(leaseA, "output", "stale")).wantProblem(t, http.StatusConflict, "lease_lost", "")
	done := e.runCall(t, retried.RunID, "complete", lease(taskB.LeaseID, "output", "fresh"))
	if done.Status != "completed" || done.Attempt != 2 {
		t.Fatalf("complete under lease B: got %s attempt %d", done.Status, done.Attempt)
	}
	wantJSON(t, "output", e.get(t, retried.RunID).Output, `"fresh"`)
}

func TestStepRetryContinuesTheAttempt(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withLongWait())
	run, task := e.startClaimed(t, "step-retry", map[string]any{"task_queue": "step-retry"})
	policy := map[string]any{"initial_interval_ms": 500, "max_attempts": 3}
	b := e.begin(t, run.RunID, "charge", lease(task.LeaseID, "retry_policy", policy))
	if !b.ShouldExecute || b.Step.Attempt != 1 {
		t.Fatalf("begin: got %+v", b)
	}

	failedAt := time.Now()
	f := e.failStep(t, run.RunID, task.LeaseID, "charge", map[string]any{"message": "card declined", "type": "Transient"})
	if !f.RetryScheduled || f.RetryAt == nil || f.Step.RetryAt == nil || !f.RetryAt.Equal(*f.Step.RetryAt) {
		t.Fatalf("fail: got %+v, want a retry with retry_at", f)
	}
	if f.Step.Status != "failed" || f.Step.Attempt != 1 || f.Step.Error == nil || f.Step.Error.Message != "card declined" || f.Step.FinishedAt == nil {
		t.Fatalf("failed step: got %+v", f.Step)
	}
	if d := f.RetryAt.Sub(*f.Step.FinishedAt); d != 500*time.Millisecond {
		t.Fatalf("retry_at is %s after the failure, want the policy's 500ms", d)
	}
	got := e.get(t, run.RunID)
	if got.Status != "pending" || !got.AvailableAt.Equal(*f.RetryAt) || got.LeaseExpiresAt != nil || got.Attempt != 1 {
		t.Fatalf("run after a step retry: got %s available %s lease %v attempt %d, want pending until %s, no lease, attempt 1",
			got.Status, got.AvailableAt, got.LeaseExpiresAt, got.Attempt, f.RetryAt)
	}
	e.workerCall(t, run.RunID, "heartbeat", lease(task.LeaseID)).wantProblem(t, http.StatusConflict, "lease_lost", "")

	out := receiveClaim(t, e.claimAsync("step-retry", map[string]any{"wait_ms": 30000}), 40*time.Second)
	sinceFail := time.Since(failedAt)
	if out.err != nil || len(out.tasks) != 1 {
		t.Fatalf("claim: got %+v, %v", out.tasks, out.err)
	}
	if sinceFail < 450*time.Millisecond || out.elapsed > 5*time.Second {
		t.Fatalf("the retry was claimed %s after the failure (claim waited %s), want at retry_at, 500ms after it", sinceFail, out.elapsed)
	}
	task2 := out.tasks[0]
	if task2.RunID != run.RunID || task2.Attempt != 1 {
		t.Fatalf("claim of the step retry: got %+v, want run %s still at attempt 1", task2, run.RunID)
	}
	b = e.begin(t, run.RunID, "charge", lease(task2.LeaseID, "retry_policy", policy))
	if !b.ShouldExecute || b.Step.Attempt != 2 || b.Step.Status != "running" {
		t.Fatalf("begin after retry: got %+v, want should_execute at attempt 2", b)
	}
}

func TestStepFailureWithoutRetry(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run, task := e.startClaimed(t, "no-retry", map[string]any{"task_queue": "no-retry",
		"retry_policy": map[string]any{"non_retryable_error_types": []string{"RunFatal"}}})

	stillRunning := func(t *testing.T, leaseID string) {
		t.Helper()
		got := e.get(t, run.RunID)
		if got.Status != "running" || got.LeaseExpiresAt == nil {
			t.Fatalf("run: got %s lease %v, want still running under the lease", got.Status, got.LeaseExpiresAt)
		}
		e.workerCall(t, run.RunID, "heartbeat", lease(leaseID)).wantStatus(t, http.StatusOK)
	}
	noRetry := func(t *testing.T, f failStepView, attempt int) {
		t.Helper()
		if f.RetryScheduled || f.RetryAt != nil || f.Step.Status != "failed" || f.Step.Attempt != attempt || f.Step.RetryAt != nil {
			t.Fatalf("fail: got %+v, want no retry and the step failed at attempt %d", f, attempt)
		}
	}

	t.Run("non_retryable", func(t *testing.T) {
		e.begin(t, run.RunID, "a", lease(task.LeaseID))
		f := e.failStep(t, run.RunID, task.LeaseID, "a", map[string]any{"message": "bad input", "non_retryable": true})
		noRetry(t, f, 1)
		if f.Step.Error == nil || !f.Step.Error.NonRetryable {
			t.Fatalf("step error: got %+v", f.Step.Error)
		}
		stillRunning(t, task.LeaseID)
	})
	t.Run("type listed by the step's policy", func(t *testing.T) {
		e.begin(t, run.RunID, "b", lease(task.LeaseID, "retry_policy", map[string]any{"non_retryable_error_types": []string{"Fatal"}}))
		noRetry(t, e.failStep(t, run.RunID, task.LeaseID, "b", map[string]any{"message": "no", "type": "Fatal"}), 1)
		stillRunning(t, task.LeaseID)
	})
	t.Run("type listed by the run's policy", func(t *testing.T) {
		e.begin(t, run.RunID, "c", lease(task.LeaseID))
		noRetry(t, e.failStep(t, run.RunID, task.LeaseID, "c", map[string]any{"message": "no", "type": "RunFatal"}), 1)
		stillRunning(t, task.LeaseID)
	})

	// Attempts exhausted: the second and last attempt fails for good.
	policy := map[string]any{"max_attempts": 2, "initial_interval_ms": 1}
	e.begin(t, run.RunID, "d", lease(task.LeaseID, "retry_policy", policy))
	if f := e.failStep(t, run.RunID, task.LeaseID, "d", map[string]any{"message": "flaky"}); !f.RetryScheduled {
		t.Fatalf("first failure of d: got %+v, want a retry", f)
	}
	task2 := e.claimOne(t, "no-retry", 5*time.Second)
	if b := e.begin(t, run.RunID, "d", lease(task2.LeaseID, "retry_policy", policy)); !b.ShouldExecute || b.Step.Attempt != 2 {
		t.Fatalf("begin d again: got %+v, want attempt 2", b)
	}
	t.Run("attempts exhausted", func(t *testing.T) {
		noRetry(t, e.failStep(t, run.RunID, task2.LeaseID, "d", map[string]any{"message": "flaky"}), 2)
		stillRunning(t, task2.LeaseID)
	})
	// The workflow handles the failures and completes under its lease.
	if done := e.runCall(t, run.RunID, "complete", lease(task2.LeaseID, "output", "handled")); done.Status != "completed" || done.Attempt != 1 {
		t.Fatalf("complete: got %s attempt %d", done.Status, done.Attempt)
	}
}

// TestSleepWhoseWakeUpHasCome: a sleep call for a step still running whose
// wake-up time has come (as after a claim by a replica of an older version,
// which did not record sleep steps completed) resolves it: the step is
// completed, the answer says resolved, and the lease goes on. A sleep step
// begun without a wake-up time gets the first sleep call's.
func TestSleepWhoseWakeUpHasCome(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run, task := e.startClaimed(t, "sleeper", map[string]any{"task_queue": "due"})
	if b := e.begin(t, run.RunID, "nap", lease(task.LeaseID, "kind", "sleep")); !b.ShouldExecute || b.Step.Status != "running" {
		t.Fatalf("begin of a sleep step: got %+v, want it running", b)
	}
	if _, err := e.pool.Exec(context.Background(),
		`UPDATE workflow_steps SET wake_up_at = now() - interval '1 second' WHERE run_id = $1 AND name = 'nap'`, run.RunID); err != nil {
		t.Fatal(err)
	}
	var slept struct {
		Status   string `json:"status"`
		Resolved bool   `json:"resolved"`
	}
	e.workerCall(t, run.RunID, "sleep", lease(task.LeaseID, "step", "nap", "duration_ms", 3600000)).
		wantStatus(t, http.StatusOK).decode(t, &slept)
	if !slept.Resolved || slept.Status != "running" {
		t.Fatalf("sleep whose wake-up has come: got %+v, want resolved and the run still running", slept)
	}
	if steps := e.steps(t, run.RunID); len(steps) != 1 || steps[0].Status != "completed" {
		t.Fatalf("steps: got %+v, want the sleep completed", steps)
	}
	e.workerCall(t, run.RunID, "heartbeat", lease(task.LeaseID)).wantStatus(t, http.StatusOK)

	// Begun without a wake-up time, a sleep step takes the first call's.
	e.begin(t, run.RunID, "nap2", lease(task.LeaseID, "kind", "sleep"))
	first := e.runCall(t, run.RunID, "sleep", lease(task.LeaseID, "step", "nap2", "duration_ms", 3600000))
	steps := e.steps(t, run.RunID)
	if first.Status != "sleeping" || len(steps) != 2 || steps[1].WakeUpAt == nil || !steps[1].WakeUpAt.Equal(first.AvailableAt) ||
		steps[1].Status != "running" {
		t.Fatalf("sleep of a begun step: run %s until %v, steps %+v; want sleeping until the step's wake-up", first.Status, first.AvailableAt, steps)
	}
}

func TestDurableSleep(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withLongWait())
	run, task := e.startClaimed(t, "sleeper", map[string]any{"task_queue": "sleep"})

	sleptAt := time.Now()
	slept := e.runCall(t, run.RunID, "sleep", lease(task.LeaseID, "step", "nap", "duration_ms", 600))
	if slept.Status != "sleeping" || slept.LeaseExpiresAt != nil {
		t.Fatalf("sleep: got %s lease %v, want sleeping without a lease", slept.Status, slept.LeaseExpiresAt)
	}
	steps := e.steps(t, run.RunID)
	if len(steps) != 1 || steps[0].Name != "nap" || steps[0].Kind != "sleep" || steps[0].WakeUpAt == nil || !steps[0].WakeUpAt.Equal(slept.AvailableAt) {
		t.Fatalf("steps after sleep: got %+v, want the sleep step waking at %s", steps, slept.AvailableAt)
	}
	if d := steps[0].WakeUpAt.Sub(steps[0].CreatedAt); d != 600*time.Millisecond {
		t.Fatalf("the sleep wakes %s after it began, want 600ms", d)
	}
	if steps[0].Status != "running" {
		t.Fatalf("the sleep step while the run sleeps: %s, want running until the claim after its wake-up", steps[0].Status)
	}
	e.workerCall(t, run.RunID, "heartbeat", lease(task.LeaseID)).wantProblem(t, http.StatusConflict, "lease_lost", "")

	out := receiveClaim(t, e.claimAsync("sleep", map[string]any{"wait_ms": 30000}), 40*time.Second)
	sinceSleep := time.Since(sleptAt)
	if out.err != nil || len(out.tasks) != 1 || out.tasks[0].RunID != run.RunID {
		t.Fatalf("claim: got %+v, %v", out.tasks, out.err)
	}
	if sinceSleep < 550*time.Millisecond || out.elapsed > 5*time.Second {
		t.Fatalf("the sleeping run was claimed %s after the sleep (claim waited %s), want at its wake-up, 600ms after", sinceSleep, out.elapsed)
	}
	task2 := out.tasks[0]
	if task2.Attempt != 1 {
		t.Fatalf("claim after a sleep: attempt %d, want 1 (the same attempt)", task2.Attempt)
	}
	if fmt.Sprint(historyNames(task2.Steps)) != "[nap:completed]" {
		t.Fatalf("history of the claim after the wake-up: %v, want the sleep step completed", historyNames(task2.Steps))
	}
	if steps := e.steps(t, run.RunID); len(steps) != 1 || steps[0].Status != "completed" || steps[0].FinishedAt == nil {
		t.Fatalf("steps after the claim that followed the wake-up: %+v, want the sleep completed", steps)
	}
	b := e.begin(t, run.RunID, "nap", lease(task2.LeaseID, "kind", "sleep"))
	if b.ShouldExecute || b.Step.Kind != "sleep" || b.Step.Status != "completed" {
		t.Fatalf("begin of the sleep after the wake-up: got %+v, want should_execute false", b)
	}

	// Until a time already past: claimable at once.
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano)
	if s := e.runCall(t, run.RunID, "sleep", lease(task2.LeaseID, "step", "nap2", "until", past)); s.Status != "sleeping" {
		t.Fatalf("sleep until the past: got %s", s.Status)
	}
	task3 := e.claimOne(t, "sleep", 0)
	if task3.RunID != run.RunID || task3.Attempt != 1 {
		t.Fatalf("claim after a sleep until the past: got %+v", task3)
	}

	// Exactly one of duration_ms and until; a refused sleep changes nothing.
	before := e.snapshot(t, run.RunID)
	for name, body := range map[string]map[string]any{
		"both":     lease(task3.LeaseID, "step", "nap3", "duration_ms", 10, "until", past),
		"neither":  lease(task3.LeaseID, "step", "nap3"),
		"negative": lease(task3.LeaseID, "step", "nap3", "duration_ms", -1),
	} {
		t.Run(name, func(t *testing.T) {
			e.workerCall(t, run.RunID, "sleep", body).wantProblem(t, http.StatusBadRequest, "invalid_argument", "duration_ms")
		})
	}
	e.workerCall(t, run.RunID, "sleep", lease(task3.LeaseID, "duration_ms", 10)).
		wantProblem(t, http.StatusBadRequest, "invalid_argument", "step")
	if after := e.snapshot(t, run.RunID); after != before {
		t.Fatalf("refused sleeps changed the run:\nbefore %s\nafter  %s", before, after)
	}
}

func TestWorkflowFailRetriesWithBackoff(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const initial, coef, maxInterval = 100, 2.0, 150
	run := e.start(t, "flaky", map[string]any{"task_queue": "wf-fail", "retry_policy": map[string]any{
		"max_attempts": 3, "initial_interval_ms": initial, "backoff_coefficient": coef, "max_interval_ms": maxInterval,
	}})
	for n := 1; n <= 2; n++ {
		task := e.claimOne(t, "wf-fail", 5*time.Second)
		if task.RunID != run.RunID || task.Attempt != n {
			t.Fatalf("claim %d: got %+v, want attempt %d", n, task, n)
		}
		lo := e.dbNow(t)
		failed := e.runCall(t, run.RunID, "fail", lease(task.LeaseID, "error", map[string]any{"message": fmt.Sprintf("boom %d", n), "type": "Boom"}))
		hi := e.dbNow(t)
		delay := time.Duration(math.Min(initial*math.Pow(coef, float64(n-1)), maxInterval)) * time.Millisecond
		ev := runError(t, failed)
		if failed.Status != "pending" || failed.Attempt != n || failed.FinishedAt != nil || failed.LeaseExpiresAt != nil ||
			ev == nil || ev.Message != fmt.Sprintf("boom %d", n) {
			t.Fatalf("fail %d: got status %s attempt %d finished %v lease %v error %s, want pending with the error",
				n, failed.Status, failed.Attempt, failed.FinishedAt, failed.LeaseExpiresAt, failed.Error)
		}
		if failed.AvailableAt.Before(lo.Add(delay)) || failed.AvailableAt.After(hi.Add(delay)) {
			t.Fatalf("fail %d: available_at %s, want now + %s (between %s and %s)", n, failed.AvailableAt, delay, lo.Add(delay), hi.Add(delay))
		}
		e.workerCall(t, run.RunID, "heartbeat", lease(task.LeaseID)).wantProblem(t, http.StatusConflict, "lease_lost", "")
	}

	task := e.claimOne(t, "wf-fail", 5*time.Second)
	if task.Attempt != 3 {
		t.Fatalf("claim 3: attempt %d, want 3", task.Attempt)
	}
	failed := e.runCall(t, run.RunID, "fail", lease(task.LeaseID, "error", map[string]any{"message": "boom 3"}))
	ev := runError(t, failed)
	if failed.Status != "failed" || failed.Attempt != 3 || failed.FinishedAt == nil || ev == nil || ev.Message != "boom 3" {
		t.Fatalf("fail on the last attempt: got status %s attempt %d finished %v error %s, want failed", failed.Status, failed.Attempt, failed.FinishedAt, failed.Error)
	}
	if got := e.get(t, run.RunID); got.Status != "failed" || got.FinishedAt == nil {
		t.Fatalf("GET: got %s", got.Status)
	}
	if tasks := e.claimTasks(t, "wf-fail", map[string]any{"wait_ms": 0}); len(tasks) != 0 {
		t.Fatalf("a failed run was claimed: %+v", tasks)
	}
}

func TestWorkflowFailWithoutRetry(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		name   string
		policy map[string]any
		err    map[string]any
	}{
		{"non_retryable", nil, map[string]any{"message": "bad", "non_retryable": true}},
		{"listed type", map[string]any{"non_retryable_error_types": []string{"Fatal"}}, map[string]any{"message": "bad", "type": "Fatal"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			extra := map[string]any{"task_queue": "wf-final"}
			if tc.policy != nil {
				extra["retry_policy"] = tc.policy
			}
			run, task := e.startClaimed(t, "final", extra)
			failed := e.runCall(t, run.RunID, "fail", lease(task.LeaseID, "error", tc.err))
			if ev := runError(t, failed); failed.Status != "failed" || failed.Attempt != 1 || failed.FinishedAt == nil || ev == nil || ev.Message != "bad" {
				t.Fatalf("fail: got status %s attempt %d error %s, want failed at once", failed.Status, failed.Attempt, failed.Error)
			}
		})
	}
}

// jsonString is a JSON string value of exactly n bytes.
func jsonString(n int) []byte {
	b := bytes.Repeat([]byte("a"), n)
	b[0], b[n-1] = '"', '"'
	return b
}

// leaseBodyWith is {"lease_id": leaseID, member: raw} with raw sent as is.
func leaseBodyWith(leaseID, member string, raw []byte) []byte {
	b := []byte(`{"lease_id":"` + leaseID + `","` + member + `":`)
	b = append(b, raw...)
	return append(b, '}')
}

// stepRows reads a run's step attempts straight from the database (name,
// attempt, status, whether output is set), so that large payloads need not
// travel through the API to be checked.
func (e *env) stepRows(t testing.TB, runID string) []string {
	t.Helper()
	rows, err := e.pool.Query(context.Background(),
		`SELECT name || '#' || attempt || ':' || status || ':' || (output IS NOT NULL) FROM workflow_steps WHERE run_id = $1 ORDER BY seq`, runID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestWorkerCallPayloadLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const limit = domain.DefaultPayloadMaxBytes
	if limit != 2097152 {
		t.Fatalf("the default payload limit is %d, want 2097152", limit)
	}
	atLimit, overLimit := jsonString(limit), jsonString(limit+1)

	// Each payload on a run (and queue) of its own, in parallel: moving
	// megabytes is most of this test's time.
	t.Run("step input", func(t *testing.T) {
		t.Parallel()
		run, task := e.startClaimed(t, "big", map[string]any{"task_queue": "big-step-input"})
		p := e.workerCall(t, run.RunID, "steps/in/begin", leaseBodyWith(task.LeaseID, "input", overLimit)).
			wantProblem(t, http.StatusRequestEntityTooLarge, "payload_too_large", "input")
		if !strings.Contains(p.Detail, strconv.Itoa(limit+1)) || !strings.Contains(p.Detail, strconv.Itoa(limit)) {
			t.Errorf("detail %q does not give the size and the limit", p.Detail)
		}
		if got := e.stepRows(t, run.RunID); len(got) != 0 {
			t.Fatalf("a refused begin recorded steps %v", got)
		}
		var b beginView
		e.workerCall(t, run.RunID, "steps/in/begin", leaseBodyWith(task.LeaseID, "input", atLimit)).wantStatus(t, http.StatusOK).decode(t, &b)
		if !b.ShouldExecute || len(b.Step.Input) != limit {
			t.Fatalf("begin at the limit: should_execute %v, input of %d bytes", b.ShouldExecute, len(b.Step.Input))
		}
	})
	t.Run("step output", func(t *testing.T) {
		t.Parallel()
		run, task := e.startClaimed(t, "big", map[string]any{"task_queue": "big-step-output"})
		e.begin(t, run.RunID, "out", lease(task.LeaseID))
		e.workerCall(t, run.RunID, "steps/out/complete", leaseBodyWith(task.LeaseID, "output", overLimit)).
			wantProblem(t, http.StatusRequestEntityTooLarge, "payload_too_large", "output")
		if got, want := e.stepRows(t, run.RunID), []string{"out#1:running:false"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("after a refused step complete: got steps %v, want %v", got, want)
		}
		var st stepView
		e.workerCall(t, run.RunID, "steps/out/complete", leaseBodyWith(task.LeaseID, "output", atLimit)).wantStatus(t, http.StatusOK).decode(t, &st)
		if st.Status != "completed" || len(st.Output) != limit {
			t.Fatalf("step complete at the limit: got %s with %d bytes", st.Status, len(st.Output))
		}
	})
	t.Run("run output", func(t *testing.T) {
		t.Parallel()
		// One byte over is refused, the run stays running under its lease,
		// and a later complete with a small output succeeds.
		run, task := e.startClaimed(t, "big", map[string]any{"task_queue": "big-run-output"})
		before := e.get(t, run.RunID)
		e.workerCall(t, run.RunID, "complete", leaseBodyWith(task.LeaseID, "output", overLimit)).
			wantProblem(t, http.StatusRequestEntityTooLarge, "payload_too_large", "output")
		if after := e.get(t, run.RunID); !reflect.DeepEqual(after, before) || after.Status != "running" {
			t.Fatalf("a refused complete changed the run:\nbefore %+v\nafter  %+v", before, after)
		}
		e.workerCall(t, run.RunID, "heartbeat", lease(task.LeaseID)).wantStatus(t, http.StatusOK)
		if done := e.runCall(t, run.RunID, "complete", lease(task.LeaseID, "output", "small")); done.Status != "completed" {
			t.Fatalf("complete with a small output after a refused one: got %s", done.Status)
		}

		// Exactly at the limit is accepted.
		run2, task2 := e.startClaimed(t, "big", map[string]any{"task_queue": "big-run-output"})
		var done runView
		e.workerCall(t, run2.RunID, "complete", leaseBodyWith(task2.LeaseID, "output", atLimit)).wantStatus(t, http.StatusOK).decode(t, &done)
		if done.Status != "completed" || len(done.Output) != limit {
			t.Fatalf("complete at the limit: got %s with %d bytes", done.Status, len(done.Output))
		}
	})
}

func TestGetRunWaitIsWokenByCompletion(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withLongWait())
	run, task := e.startClaimed(t, "awaited", map[string]any{"task_queue": "awaited"})
	reads := e.watchGets(t, run.RunID)
	type outcome struct {
		r       *resp
		elapsed time.Duration
		err     error
	}
	ch := make(chan outcome, 1)
	go func() {
		start := time.Now()
		r, err := e.try(http.MethodGet, runPath(run.RunID)+"?wait_ms=30000", nil)
		ch <- outcome{r, time.Since(start), err}
	}()
	select {
	case <-reads: // the server read the run and now waits
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting GET did not read the run within 5s")
	}
	e.runCall(t, run.RunID, "complete", lease(task.LeaseID, "output", 1))
	var out outcome
	select {
	case out = <-ch:
	case <-time.After(40 * time.Second):
		t.Fatal("the waiting GET did not answer within 40s")
	}
	if out.err != nil {
		t.Fatal(out.err)
	}
	var got runView
	out.r.wantStatus(t, http.StatusOK).decode(t, &got)
	if got.Status != "completed" {
		t.Fatalf("waiting GET: got %s, want completed", got.Status)
	}
	if out.elapsed > 5*time.Second {
		t.Fatalf("the waiting GET answered after %s, want soon after the completion (wait_ms 30000)", out.elapsed)
	}
}

// metricValue finds a sample line of series (its name and labels as the
// text format writes them) in a Prometheus text exposition.
func metricValue(text, series string) (float64, bool) {
	for line := range strings.SplitSeq(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

func TestMetricsAfterActivity(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withoutMaintainer())
	parked := e.parkClaim(t, "metrics", map[string]any{"wait_ms": 4000, "max_tasks": 3})
	var batch struct {
		Workflows []struct {
			RunID         string `json:"run_id"`
			Status        string `json:"status"`
			AlreadyExists bool   `json:"already_exists"`
		} `json:"workflows"`
	}
	e.do(t, http.MethodPost, ns+"/workflows/batch", map[string]any{"workflows": []map[string]any{
		{"workflow_type": "m", "task_queue": "metrics"},
		{"workflow_type": "m", "task_queue": "metrics"},
		{"workflow_type": "m", "task_queue": "metrics", "retry_policy": map[string]any{"initial_interval_ms": 60000}},
	}}).wantStatus(t, http.StatusOK).decode(t, &batch)
	out := receiveClaim(t, parked, 10*time.Second)
	if out.err != nil {
		t.Fatal(out.err)
	}
	tasks := out.tasks
	if len(tasks) < 3 {
		tasks = append(tasks, e.claimTasks(t, "metrics", map[string]any{"wait_ms": 0, "max_tasks": 3})...)
	}
	if len(tasks) != 3 {
		t.Fatalf("claimed %d runs, want 3", len(tasks))
	}
	byID := map[string]taskView{}
	for _, tk := range tasks {
		byID[tk.RunID] = tk
	}
	ids := []string{batch.Workflows[0].RunID, batch.Workflows[1].RunID, batch.Workflows[2].RunID}
	e.runCall(t, ids[0], "complete", lease(byID[ids[0]].LeaseID, "output", 1))
	e.runCall(t, ids[1], "fail", lease(byID[ids[1]].LeaseID, "error", map[string]any{"message": "x", "non_retryable": true}))
	// The third worker dies: its lease is made to expire, and the rescuer
	// schedules a retry.
	if _, err := e.pool.Exec(context.Background(),
		`UPDATE workflow_runs SET lease_expires_at = now() - interval '1 second' WHERE run_id = $1`, ids[2]); err != nil {
		t.Fatal(err)
	}
	e.maintainer.Tick(context.Background())

	r := e.do(t, http.MethodGet, "/metrics", nil).wantStatus(t, http.StatusOK)
	text := string(r.body)
	for _, name := range []string{
		"kagzi_claims_total", "kagzi_claimed_runs_total", "kagzi_claim_duration_seconds", "kagzi_parked_claims",
		"kagzi_notifications_total", "kagzi_listener_reconnects_total", "kagzi_runs_started_total",
		"kagzi_runs_completed_total", "kagzi_runs_failed_total", "kagzi_runs_rescued_total", "kagzi_queue_runs",
	} {
		if !strings.Contains(text, "\n# TYPE "+name+" ") {
			t.Errorf("/metrics has no %s", name)
		}
	}
	for series, want := range map[string]float64{
		"kagzi_claimed_runs_total":                                                    3,
		"kagzi_runs_started_total":                                                    3,
		"kagzi_runs_completed_total":                                                  1,
		`kagzi_runs_failed_total{outcome="failed"}`:                                   1,
		`kagzi_runs_rescued_total{outcome="retry"}`:                                   1,
		`kagzi_runs_rescued_total{outcome="failed"}`:                                  0,
		`kagzi_queue_runs{namespace="default",status="pending",task_queue="metrics"}`: 1,
		"kagzi_parked_claims":                                                         0,
		"kagzi_listener_reconnects_total":                                             0,
	} {
		if got, ok := metricValue(text, series); !ok || got != want {
			t.Errorf("%s: got %v (found %v), want %v", series, got, ok, want)
		}
	}
	for _, series := range []string{"kagzi_claims_total", "kagzi_claim_duration_seconds_count", "kagzi_notifications_total"} {
		if got, ok := metricValue(text, series); !ok || got < 1 {
			t.Errorf("%s: got %v (found %v), want at least 1", series, got, ok)
		}
	}
}

// wantCutShort fails t unless the run's only attempt of step "work" is
// failed, finished, with a run_ended error whose message says how.
func wantCutShort(t testing.TB, st stepView, attempt int, how string) {
	t.Helper()
	if st.Name != "work" || st.Attempt != attempt || st.Status != "failed" || st.FinishedAt == nil || st.Error == nil ||
		st.Error.Type == nil || *st.Error.Type != "run_ended" || !strings.Contains(st.Error.Message, how) {
		t.Fatalf("step: got %+v (error %+v), want work#%d failed and finished, error type run_ended saying %q", st, st.Error, attempt, how)
	}
}

// Completing, failing or cancelling a run closes the step attempts it
// leaves running; a retried run begins a new attempt of such a step.
func TestRunEndClosesRunningSteps(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, c := range []struct {
		name, how string
		end       func(runID, leaseID string)
	}{
		{"complete", "completed", func(runID, leaseID string) {
			e.runCall(t, runID, "complete", lease(leaseID, "output", 1))
		}},
		{"fail", "failed", func(runID, leaseID string) {
			e.runCall(t, runID, "fail", lease(leaseID, "error", map[string]any{"message": "no", "non_retryable": true}))
		}},
		{"cancel", "cancelled", func(runID, _ string) {
			e.do(t, http.MethodPost, runPath(runID)+"/cancel", nil).wantStatus(t, http.StatusOK)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			run, task := e.startClaimed(t, "ends", map[string]any{"task_queue": "ends-" + c.name})
			e.begin(t, run.RunID, "work", lease(task.LeaseID))
			c.end(run.RunID, task.LeaseID)
			steps := e.steps(t, run.RunID)
			if len(steps) != 1 {
				t.Fatalf("steps: got %d, want 1", len(steps))
			}
			wantCutShort(t, steps[0], 1, c.how)
		})
	}

	t.Run("fail with a retry", func(t *testing.T) {
		run, task := e.startClaimed(t, "ends", map[string]any{"task_queue": "ends-retry",
			"retry_policy": map[string]any{"initial_interval_ms": 1}})
		e.begin(t, run.RunID, "work", lease(task.LeaseID))
		if r := e.runCall(t, run.RunID, "fail", lease(task.LeaseID, "error", map[string]any{"message": "again"})); r.Status != "pending" {
			t.Fatalf("fail: got %s, want pending", r.Status)
		}
		task2 := e.claimOne(t, "ends-retry", 5*time.Second)
		if task2.Attempt != 2 {
			t.Fatalf("claim after the retry: got attempt %d, want 2", task2.Attempt)
		}
		b := e.begin(t, run.RunID, "work", lease(task2.LeaseID))
		if !b.ShouldExecute || b.Step.Attempt != 2 || b.Step.Status != "running" {
			t.Fatalf("begin in the new attempt: got %+v, want should_execute and a new attempt 2", b)
		}
		wantCutShort(t, e.steps(t, run.RunID)[0], 1, "attempt failed")
	})
}

// A step attempt left running by an earlier attempt of the run (as a
// server before the fix left them) is never taken over by a later one.
func TestStaleStepAttemptIsNotReused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run, task := e.startClaimed(t, "stale", map[string]any{"task_queue": "stale",
		"retry_policy": map[string]any{"initial_interval_ms": 1}})
	e.begin(t, run.RunID, "work", lease(task.LeaseID))
	e.runCall(t, run.RunID, "fail", lease(task.LeaseID, "error", map[string]any{"message": "again"}))
	task2 := e.claimOne(t, "stale", 5*time.Second)
	if _, err := e.pool.Exec(context.Background(), `UPDATE workflow_steps
		SET status = 'running', error = NULL, finished_at = NULL WHERE run_id = $1`, run.RunID); err != nil {
		t.Fatal(err)
	}
	// complete without begin closes the stale attempt and records a new one.
	if st := e.completeStep(t, run.RunID, task2.LeaseID, "work", 7); st.Attempt != 2 || st.Status != "completed" {
		t.Fatalf("complete: got %+v, want attempt 2 completed", st)
	}
	wantCutShort(t, e.steps(t, run.RunID)[0], 1, "attempt it began in ended")
	b := e.begin(t, run.RunID, "work", lease(task2.LeaseID))
	if b.ShouldExecute || b.Step.Attempt != 2 || b.Step.Status != "completed" {
		t.Fatalf("begin: got %+v, want the completed attempt 2 for replay", b)
	}
}

// begin of a step that failed for good in this attempt of the run answers
// should_execute false, a null output and the failed Step with its error.
func TestBeginOfStepFailedForGood(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run, task := e.startClaimed(t, "fatal", map[string]any{"task_queue": "fatal"})
	e.begin(t, run.RunID, "work", lease(task.LeaseID))
	e.failStep(t, run.RunID, task.LeaseID, "work", map[string]any{"message": "broken", "non_retryable": true})
	b := e.begin(t, run.RunID, "work", lease(task.LeaseID))
	if b.ShouldExecute || b.Step.Status != "failed" || b.Step.Attempt != 1 || b.Step.Error == nil || b.Step.Error.Message != "broken" {
		t.Fatalf("begin: got %+v, want should_execute false and attempt 1 failed with its error", b)
	}
	wantJSON(t, "begin output", b.Output, `null`)
}
