package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kagzi/kagzi/api"
)

// Tests of the step protocol: the history a task carries, steps recorded
// without begin, recorded once, and reported in batches.

func stepsBatchPath() string { return ns + "/steps/batch" }

type stepReportResult struct {
	RunID            string     `json:"run_id"`
	Step             *stepView  `json:"step"`
	AlreadyCompleted bool       `json:"already_completed"`
	RetryScheduled   bool       `json:"retry_scheduled"`
	RetryAt          *time.Time `json:"retry_at"`
	Error            *problem   `json:"error"`
}

// reportSteps sends a batch of step reports and wants 200.
func (e *env) reportSteps(t testing.TB, items ...map[string]any) []stepReportResult {
	t.Helper()
	var res struct {
		Steps []stepReportResult `json:"steps"`
	}
	e.do(t, http.MethodPost, stepsBatchPath(), map[string]any{"steps": items}).
		wantStatus(t, http.StatusOK).decode(t, &res)
	if len(res.Steps) != len(items) {
		t.Fatalf("batch: got %d results, want %d", len(res.Steps), len(items))
	}
	return res.Steps
}

// sleepRun puts a run to sleep for step name, for d, and wants 200.
func (e *env) sleepRun(t testing.TB, runID, leaseID, name string, d time.Duration) (runView, bool) {
	t.Helper()
	var res struct {
		runView
		Resolved bool `json:"resolved"`
	}
	e.workerCall(t, runID, "sleep", lease(leaseID, "step", name, "duration_ms", d.Milliseconds())).
		wantStatus(t, http.StatusOK).decode(t, &res)
	return res.runView, res.Resolved
}

func historyNames(steps []stepView) []string {
	names := make([]string, len(steps))
	for i, st := range steps {
		names[i] = st.Name + ":" + st.Status
	}
	return names
}

// A claimed task carries the run's memoized history: the latest attempt of
// each step that completed or failed for good in this attempt, and the
// resolved sleeps, in order; a running step is not in it, and a run's
// first claim has an empty history, never null.
func TestClaimCarriesTheRunsHistory(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run, task := e.startClaimed(t, "history", map[string]any{"task_queue": "history"})
	if task.Steps == nil || len(task.Steps) != 0 || task.StepsTruncated {
		t.Fatalf("first claim: got steps %v truncated %v, want [] and false", task.Steps, task.StepsTruncated)
	}
	started := time.Now().Add(-time.Minute).UTC().Truncate(time.Millisecond)
	var a stepView
	e.workerCall(t, run.RunID, "steps/a/complete", lease(task.LeaseID, "output", map[string]any{"n": 1},
		"input", "in", "started_at", started.Format(time.RFC3339Nano))).wantStatus(t, http.StatusOK).decode(t, &a)
	if a.Attempt != 1 || a.Status != "completed" || a.AlreadyCompleted || !a.StartedAt.Equal(started) {
		t.Fatalf("complete without begin: got %+v, want attempt 1 completed, started at %v", a, started)
	}
	wantJSON(t, "input", a.Input, `"in"`)
	e.begin(t, run.RunID, "fetch", lease(task.LeaseID)) // running: not history
	f := e.failStep(t, run.RunID, task.LeaseID, "b", map[string]any{"message": "no", "non_retryable": true})
	if f.Step.Status != "failed" || f.RetryScheduled || f.AlreadyCompleted {
		t.Fatalf("fail without begin: got %+v, want failed for good", f)
	}
	if r, resolved := e.sleepRun(t, run.RunID, task.LeaseID, "nap", time.Millisecond); r.Status != "sleeping" || resolved {
		t.Fatalf("sleep: got %s resolved %v, want sleeping, not resolved", r.Status, resolved)
	}

	task2 := e.claimOne(t, "history", 5*time.Second)
	if task2.StepsTruncated || fmt.Sprint(historyNames(task2.Steps)) != "[a:completed b:failed nap:completed]" {
		t.Fatalf("second claim: got %v (truncated %v), want a, b and nap", historyNames(task2.Steps), task2.StepsTruncated)
	}
	wantJSON(t, "history output", task2.Steps[0].Output, `{"n":1}`)
	if task2.Steps[1].Error == nil || task2.Steps[1].Error.Message != "no" {
		t.Fatalf("history: got %+v, want b's error", task2.Steps[1])
	}

	// A sleep already done answers resolved, and the lease goes on.
	r, resolved := e.sleepRun(t, run.RunID, task2.LeaseID, "nap", time.Hour)
	if !resolved || r.Status != "running" {
		t.Fatalf("sleep again: got %s resolved %v, want running and resolved", r.Status, resolved)
	}
	e.workerCall(t, run.RunID, "heartbeat", lease(task2.LeaseID)).wantStatus(t, http.StatusOK)
}

// A task whose history does not fit in max_history_bytes has steps null
// and steps_truncated; its worker can still begin each step.
func TestClaimTruncatesAHistoryOverTheLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withLimits(func(l *api.Limits) { l.MaxHistoryBytes = 4000 }))
	big, bigTask := e.startClaimed(t, "big", map[string]any{"task_queue": "trunc"})
	small, smallTask := e.startClaimed(t, "small", map[string]any{"task_queue": "trunc"})
	e.completeStep(t, small.RunID, smallTask.LeaseID, "s", 1)
	e.completeStep(t, big.RunID, bigTask.LeaseID, "s", strings.Repeat("x", 5000))
	e.sleepRun(t, small.RunID, smallTask.LeaseID, "nap", time.Millisecond)
	e.sleepRun(t, big.RunID, bigTask.LeaseID, "nap", time.Millisecond)

	var tasks []taskView
	deadline := time.Now().Add(5 * time.Second)
	for len(tasks) < 2 && time.Now().Before(deadline) {
		tasks = append(tasks, e.claimTasks(t, "trunc", map[string]any{"max_tasks": 2, "wait_ms": 1000})...)
	}
	if len(tasks) != 2 {
		t.Fatalf("claims: got %d tasks, want 2", len(tasks))
	}
	for _, task := range tasks {
		switch task.RunID {
		case big.RunID:
			if task.Steps != nil || !task.StepsTruncated {
				t.Errorf("big history: got steps %v truncated %v, want null and true", historyNames(task.Steps), task.StepsTruncated)
			}
			if b := e.begin(t, big.RunID, "s", lease(task.LeaseID)); b.ShouldExecute || b.Step.Status != "completed" {
				t.Errorf("begin after truncation: got %+v, want the memoized step", b)
			}
		case small.RunID:
			if task.StepsTruncated || fmt.Sprint(historyNames(task.Steps)) != "[s:completed nap:completed]" {
				t.Errorf("small history: got %v truncated %v, want s and nap", historyNames(task.Steps), task.StepsTruncated)
			}
		}
	}
}

// A step completed twice is recorded once: the second complete, or a
// fail, answers the recorded attempt with already_completed, and begin
// replays it.
func TestStepCompletedTwiceIsRecordedOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run, task := e.startClaimed(t, "once", map[string]any{"task_queue": "once"})
	if st := e.completeStep(t, run.RunID, task.LeaseID, "s", "first"); st.AlreadyCompleted || st.Attempt != 1 {
		t.Fatalf("first complete: got %+v, want attempt 1, not already completed", st)
	}
	st := e.completeStep(t, run.RunID, task.LeaseID, "s", "second")
	if !st.AlreadyCompleted || st.Attempt != 1 || st.Status != "completed" {
		t.Fatalf("second complete: got %+v, want the recorded attempt, already completed", st)
	}
	wantJSON(t, "recorded output", st.Output, `"first"`)
	f := e.failStep(t, run.RunID, task.LeaseID, "s", map[string]any{"message": "late"})
	if !f.AlreadyCompleted || f.Step.Status != "completed" || f.RetryScheduled || f.RetryAt != nil {
		t.Fatalf("fail after complete: got %+v, want the completed attempt, already completed", f)
	}
	if b := e.begin(t, run.RunID, "s", lease(task.LeaseID)); b.ShouldExecute {
		t.Fatalf("begin: got %+v, want a replay", b)
	}
	wantJSON(t, "replayed output", e.begin(t, run.RunID, "s", lease(task.LeaseID)).Output, `"first"`)
	if steps := e.steps(t, run.RunID); len(steps) != 1 {
		t.Fatalf("steps: got %d attempts, want 1", len(steps))
	}
	// A sleep step named like a function step is a conflict.
	e.workerCall(t, run.RunID, "sleep", lease(task.LeaseID, "step", "s", "duration_ms", 1)).
		wantProblem(t, http.StatusConflict, "conflict", "")
}

// fail without begin records the attempt and its failure, and schedules a
// retry by the policy it carries; the last attempt fails for good, and a
// fail after that answers the recorded failure.
func TestFailStepWithoutBegin(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run, task := e.startClaimed(t, "flaky", map[string]any{"task_queue": "flaky"})
	policy := map[string]any{"max_attempts": 2, "initial_interval_ms": 1}
	var f failStepView
	e.workerCall(t, run.RunID, "steps/s/fail", lease(task.LeaseID, "error", map[string]any{"message": "one"},
		"retry_policy", policy)).wantStatus(t, http.StatusOK).decode(t, &f)
	if !f.RetryScheduled || f.RetryAt == nil || f.Step.Attempt != 1 || f.AlreadyCompleted {
		t.Fatalf("first fail: got %+v, want attempt 1 with a retry", f)
	}
	if got := e.get(t, run.RunID).Status; got != "pending" {
		t.Fatalf("run after a step retry: got %s, want pending", got)
	}
	task2 := e.claimOne(t, "flaky", 5*time.Second)
	if len(task2.Steps) != 0 || task2.StepsTruncated || task2.StepAttempts["s"] != 1 {
		t.Fatalf("history: got %v, attempts %v; want none (a retried step is not memoized), s at attempt 1",
			historyNames(task2.Steps), task2.StepAttempts)
	}
	e.workerCall(t, run.RunID, "steps/s/fail", lease(task2.LeaseID, "error", map[string]any{"message": "two"},
		"retry_policy", policy)).wantStatus(t, http.StatusOK).decode(t, &f)
	if f.RetryScheduled || f.Step.Attempt != 2 || f.Step.Status != "failed" || f.AlreadyCompleted {
		t.Fatalf("second fail: got %+v, want attempt 2 failed for good", f)
	}
	f = e.failStep(t, run.RunID, task2.LeaseID, "s", map[string]any{"message": "three"})
	if !f.AlreadyCompleted || f.Step.Attempt != 2 || f.Step.Error == nil || f.Step.Error.Message != "two" {
		t.Fatalf("third fail: got %+v, want the recorded failure", f)
	}
}

// Two workers around a lost lease: the step the first recorded is in the
// second's history, and the second's complete of it answers the recorded
// output; the first, its lease gone, changes nothing.
func TestStepAcrossALostLeaseIsRecordedOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withoutMaintainer())
	run, taskA := e.startClaimed(t, "lost", map[string]any{"task_queue": "lost",
		"retry_policy": map[string]any{"initial_interval_ms": 1}})
	e.completeStep(t, run.RunID, taskA.LeaseID, "s", "from A")
	if _, err := e.pool.Exec(context.Background(),
		`UPDATE workflow_runs SET lease_expires_at = now() - interval '1 second' WHERE run_id = $1`, run.RunID); err != nil {
		t.Fatal(err)
	}
	e.maintainer.Tick(context.Background())
	taskB := e.claimOne(t, "lost", 5*time.Second)
	if taskB.Attempt != 2 || fmt.Sprint(historyNames(taskB.Steps)) != "[s:completed]" {
		t.Fatalf("claim after the lost lease: got attempt %d, history %v; want 2 and s", taskB.Attempt, historyNames(taskB.Steps))
	}
	st := e.completeStep(t, run.RunID, taskB.LeaseID, "s", "from B")
	if !st.AlreadyCompleted {
		t.Fatalf("B's complete: got %+v, want already completed", st)
	}
	wantJSON(t, "output", st.Output, `"from A"`)
	e.workerCall(t, run.RunID, "steps/t/complete", lease(taskA.LeaseID, "output", 1)).
		wantProblem(t, http.StatusConflict, "lease_lost", "")
	if steps := e.steps(t, run.RunID); len(steps) != 1 {
		t.Fatalf("steps: got %d attempts, want 1", len(steps))
	}
}

// A batch of step reports of many runs: each item under its own lease,
// results in request order, refusals that depend on a run's state per
// item.
func TestReportStepsInABatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r1, t1 := e.startClaimed(t, "batch", map[string]any{"task_queue": "sb1"})
	r2, t2 := e.startClaimed(t, "batch", map[string]any{"task_queue": "sb2"})
	r3, t3 := e.startClaimed(t, "batch", map[string]any{"task_queue": "sb3"})
	e.do(t, http.MethodPost, runPath(r3.RunID)+"/cancel", map[string]any{}).wantStatus(t, http.StatusOK)
	unknown := "0190e1f4-7d2a-7c3b-8d4e-5f6a7b8c9d0e"
	res := e.reportSteps(t,
		map[string]any{"run_id": r1.RunID, "lease_id": t1.LeaseID, "step": "a", "outcome": "complete", "output": 1},
		map[string]any{"run_id": r2.RunID, "lease_id": t2.LeaseID, "step": "b", "outcome": "fail",
			"error": map[string]any{"message": "bad", "non_retryable": true}},
		map[string]any{"run_id": r1.RunID, "lease_id": t1.LeaseID, "step": "a", "outcome": "complete", "output": 2},
		map[string]any{"run_id": r1.RunID, "lease_id": t2.LeaseID, "step": "c", "outcome": "complete"},
		map[string]any{"run_id": r3.RunID, "lease_id": t3.LeaseID, "step": "c", "outcome": "complete"},
		map[string]any{"run_id": unknown, "lease_id": t1.LeaseID, "step": "c", "outcome": "complete"},
		map[string]any{"run_id": r1.RunID, "lease_id": t2.LeaseID, "step": "e", "outcome": "complete", "output": "wrong lease"},
		map[string]any{"run_id": r1.RunID, "lease_id": t1.LeaseID, "step": "e", "outcome": "complete", "output": "right"},
		map[string]any{"run_id": r1.RunID, "lease_id": t1.LeaseID, "step": "e", "outcome": "complete", "output": "again"},
		map[string]any{"run_id": r2.RunID, "lease_id": t2.LeaseID, "step": "d", "outcome": "fail",
			"error": map[string]any{"message": "again"}, "retry_policy": map[string]any{"initial_interval_ms": 60000}},
	)
	want := []struct {
		run, status, code string
		already, retry    bool
	}{
		{r1.RunID, "completed", "", false, false},
		{r2.RunID, "failed", "", false, false},
		{r1.RunID, "completed", "", true, false},
		{r1.RunID, "", "lease_lost", false, false},
		{r3.RunID, "", "cancelled", false, false},
		{unknown, "", "not_found", false, false},
		{r1.RunID, "", "lease_lost", false, false},
		{r1.RunID, "completed", "", false, false},
		{r1.RunID, "completed", "", true, false},
		{r2.RunID, "failed", "", false, true},
	}
	for i, w := range want {
		g := res[i]
		switch {
		case g.RunID != w.run:
			t.Errorf("item %d: got run %s, want %s", i, g.RunID, w.run)
		case w.code != "" && (g.Error == nil || g.Error.Code != w.code || g.Step != nil):
			t.Errorf("item %d: got %+v, want error %s", i, g, w.code)
		case w.code == "" && (g.Error != nil || g.Step == nil || g.Step.Status != w.status ||
			g.AlreadyCompleted != w.already || g.RetryScheduled != w.retry || (g.RetryAt != nil) != w.retry):
			t.Errorf("item %d: got %+v (step %+v), want %s, already %v, retry %v", i, g, g.Step, w.status, w.already, w.retry)
		}
	}
	wantJSON(t, "recorded output", res[2].Step.Output, `1`)
	wantJSON(t, "recorded output of e", res[8].Step.Output, `"right"`)
	if got := e.get(t, r2.RunID).Status; got != "pending" {
		t.Errorf("run 2 after a step retry: got %s, want pending", got)
	}
}

// A malformed or oversize item refuses the whole batch, naming it, and
// nothing is recorded.
func TestReportStepsRefusesAMalformedBatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withLimits(func(l *api.Limits) { l.MaxBatch = 1000 }))
	run, task := e.startClaimed(t, "hostile", map[string]any{"task_queue": "hostile"})
	good := func(step string) string {
		return fmt.Sprintf(`{"run_id":%q,"lease_id":%q,"step":%q,"outcome":"complete","output":1}`, run.RunID, task.LeaseID, step)
	}
	body := func(items ...string) []byte { return []byte(`{"steps":[` + strings.Join(items, ",") + `]}`) }
	item := func(rest string) string {
		return fmt.Sprintf(`{"run_id":%q,"lease_id":%q,"step":"x",%s}`, run.RunID, task.LeaseID, rest)
	}
	cases := []struct {
		name   string
		body   []byte
		status int
		code   string
		field  string
	}{
		{"bad UTF-8 in an output", body(good("a"), item(`"outcome":"complete","output":"`+"\xff\xfe"+`"`)), 400, "invalid_argument", "steps[1].output"},
		{"NUL in an error message", body(good("a"), item(`"outcome":"fail","error":{"message":"a\u0000b"}`)), 400, "invalid_argument", "steps[1].error.message"},
		{"bad outcome", body(good("a"), item(`"outcome":"done"`)), 400, "invalid_argument", "steps[1].outcome"},
		{"fail without an error", body(good("a"), item(`"outcome":"fail"`)), 400, "invalid_argument", "steps[1].error"},
		{"error with complete", body(good("a"), item(`"outcome":"complete","error":{"message":"m"}`)), 400, "invalid_argument", "steps[1].error"},
		{"bad step name", body(good("a"), fmt.Sprintf(`{"run_id":%q,"lease_id":%q,"step":"a\u0001","outcome":"complete"}`, run.RunID, task.LeaseID)), 400, "invalid_argument", "steps[1].step"},
		{"bad lease", body(good("a"), fmt.Sprintf(`{"run_id":%q,"lease_id":"nope","step":"x","outcome":"complete"}`, run.RunID)), 400, "invalid_argument", "steps[1].lease_id"},
		{"bad started_at", body(good("a"), item(`"outcome":"complete","started_at":"yesterday"`)), 400, "invalid_argument", "steps[1].started_at"},
		{"bad retry policy", body(good("a"), item(`"outcome":"fail","error":{"message":"m"},"retry_policy":{"max_attempts":0}`)), 400, "invalid_argument", "steps[1].retry_policy.max_attempts"},
		{"oversize output", body(good("a"), item(`"outcome":"complete","output":"`+strings.Repeat("x", 2<<20)+`"`)), 413, "payload_too_large", "steps[1].output"},
		{"unknown field", body(good("a"), item(`"outcome":"complete","outptu":1`)), 400, "invalid_argument", ""},
		{"no items", body(), 400, "invalid_argument", "steps"},
		{"1001 items", body(func() []string {
			items := make([]string, 1001)
			for i := range items {
				items[i] = good(fmt.Sprint("s", i))
			}
			return items
		}()...), 400, "invalid_argument", "steps"},
	}
	for _, c := range cases {
		r := e.do(t, http.MethodPost, stepsBatchPath(), json.RawMessage(c.body))
		if c.field != "" {
			r.wantProblem(t, c.status, c.code, c.field)
			continue
		}
		var p problem
		r.wantStatus(t, c.status).decode(t, &p)
		if p.Code != c.code || !strings.Contains(p.Field, "outptu") {
			t.Errorf("%s: got %+v, want %s naming outptu", c.name, p, c.code)
		}
	}
	if steps := e.steps(t, run.RunID); len(steps) != 0 {
		t.Fatalf("steps after refused batches: got %d, want none", len(steps))
	}
}
