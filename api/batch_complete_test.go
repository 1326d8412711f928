package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/kagzi/kagzi/api"
)

// Tests of POST .../workflows/batch/complete.

const batchCompletePath = ns + "/workflows/batch/complete"

// unknownRun is a well-formed run ID that no test creates.
const unknownRun = "0190a000-0000-7000-8000-00000000dead"

// wrongLease is a well-formed lease ID that no claim hands out.
const wrongLease = "0190a000-0000-7000-8000-0000000000ee"

// completion is one item of a batch completion request.
type completion struct {
	RunID   string          `json:"run_id"`
	LeaseID string          `json:"lease_id"`
	Output  json.RawMessage `json:"output,omitempty"`
}

// completionResult is one result of a batch completion. Error is the raw
// member, so that a test can tell null from a problem.
type completionResult struct {
	RunID     string          `json:"run_id"`
	Completed bool            `json:"completed"`
	Error     json.RawMessage `json:"error"`
}

// problem decodes the result's error, failing t when it is null.
func (r completionResult) problem(t testing.TB) problem {
	t.Helper()
	var p problem
	if len(r.Error) == 0 || string(r.Error) == "null" {
		t.Fatalf("result for run %s: error is null, want a problem", r.RunID)
	}
	if err := json.Unmarshal(r.Error, &p); err != nil {
		t.Fatalf("result for run %s: error %s: %v", r.RunID, r.Error, err)
	}
	return p
}

// completeBatch sends items in one batch completion, wants 200 and one
// result per item for its run, in request order, and returns the results.
func (e *env) completeBatch(t testing.TB, items []completion) []completionResult {
	t.Helper()
	var res struct {
		Runs []completionResult `json:"runs"`
	}
	e.do(t, http.MethodPost, batchCompletePath, map[string]any{"runs": items}).
		wantStatus(t, http.StatusOK).decode(t, &res)
	if len(res.Runs) != len(items) {
		t.Fatalf("batch completion of %d runs: got %d results", len(items), len(res.Runs))
	}
	for i, r := range res.Runs {
		if r.RunID != items[i].RunID {
			t.Fatalf("result %d: got run %s, want %s (results in request order)", i, r.RunID, items[i].RunID)
		}
	}
	return res.Runs
}

// wantCompleted fails t unless result i says its run was completed.
func wantCompleted(t testing.TB, i int, r completionResult) {
	t.Helper()
	if !r.Completed || string(r.Error) != "null" {
		t.Errorf("result %d (run %s): got completed %v error %s, want completed true error null", i, r.RunID, r.Completed, r.Error)
	}
}

// wantRefused fails t unless result i says its run was not completed, for
// the problem with code and status.
func wantRefused(t testing.TB, i int, r completionResult, status int, code string) {
	t.Helper()
	if r.Completed {
		t.Errorf("result %d (run %s): got completed true, want false with %s", i, r.RunID, code)
		return
	}
	if p := r.problem(t); p.Code != code || p.Status != status || p.Detail == "" {
		t.Errorf("result %d (run %s): got problem %+v, want code %s status %d with a detail", i, r.RunID, p, code, status)
	}
}

// claimN starts n runs on queue with batch starts and claims them all,
// returning the tasks in start order.
func (e *env) claimN(t testing.TB, queue string, n int) []taskView {
	t.Helper()
	starts := make([]map[string]any, n)
	for i := range starts {
		starts[i] = map[string]any{"workflow_type": "bc", "task_queue": queue}
	}
	var runIDs []string
	for chunk := range slices.Chunk(starts, e.limits.MaxBatch) {
		var started struct {
			Workflows []struct {
				RunID string `json:"run_id"`
			} `json:"workflows"`
		}
		e.do(t, http.MethodPost, ns+"/workflows/batch", map[string]any{"workflows": chunk}).
			wantStatus(t, http.StatusOK).decode(t, &started)
		for _, w := range started.Workflows {
			runIDs = append(runIDs, w.RunID)
		}
	}
	var tasks []taskView
	for len(tasks) < n {
		got := e.claimTasks(t, queue, map[string]any{"max_tasks": 100, "wait_ms": 0})
		if len(got) == 0 {
			t.Fatalf("claimed %d of %d runs on %s, then none", len(tasks), n, queue)
		}
		tasks = append(tasks, got...)
	}
	byID := make(map[string]taskView, n)
	for _, tk := range tasks {
		byID[tk.RunID] = tk
	}
	ordered := make([]taskView, n)
	for i, id := range runIDs {
		tk, ok := byID[id]
		if !ok {
			t.Fatalf("run %s was started but not claimed", id)
		}
		ordered[i] = tk
	}
	return ordered
}

// runStates reads the status and output of every run of queue from the
// database, so that many runs or large outputs need not travel through the
// API to be checked.
func (e *env) runStates(t testing.TB, queue string) map[string]runState {
	t.Helper()
	rows, err := e.pool.Query(context.Background(),
		`SELECT run_id::text, status, coalesce(output::text, '') FROM workflow_runs WHERE task_queue = $1`, queue)
	if err != nil {
		t.Fatalf("read runs of %s: %v", queue, err)
	}
	defer rows.Close()
	states := map[string]runState{}
	for rows.Next() {
		var id string
		var s runState
		if err := rows.Scan(&id, &s.status, &s.output); err != nil {
			t.Fatalf("read runs of %s: %v", queue, err)
		}
		states[id] = s
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read runs of %s: %v", queue, err)
	}
	return states
}

type runState struct {
	status string
	output string // as stored; "" for none
}

func outputOf(i int) json.RawMessage { return json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)) }

func TestBatchCompleteRuns(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tasks := e.claimN(t, "bc-many", 5)
	// In an order other than the claim's, so that results in request
	// order cannot pass by accident.
	slices.Reverse(tasks)
	items := make([]completion, len(tasks))
	for i, tk := range tasks {
		items[i] = completion{RunID: tk.RunID, LeaseID: tk.LeaseID, Output: outputOf(i)}
	}
	// One item leaves its output out: the run completes with null.
	items[4].Output = nil

	for i, r := range e.completeBatch(t, items) {
		wantCompleted(t, i, r)
	}
	for i, it := range items {
		run := e.get(t, it.RunID)
		if run.Status != "completed" || run.FinishedAt == nil || run.LeaseExpiresAt != nil {
			t.Errorf("run %d after the batch: got status %s finished_at %v lease_expires_at %v, want completed, set, null",
				i, run.Status, run.FinishedAt, run.LeaseExpiresAt)
		}
		want := "null"
		if it.Output != nil {
			want = string(it.Output)
		}
		wantJSON(t, fmt.Sprintf("run %d output", i), run.Output, want)
	}
	wantMetric(t, e, "kagzi_runs_completed_total", 5)
}

func TestBatchCompleteMixedOutcomes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tasks := e.claimN(t, "bc-mixed", 4)
	good, lost, cancelled, good2 := tasks[0], tasks[1], tasks[2], tasks[3]
	e.do(t, http.MethodPost, runPath(cancelled.RunID)+"/cancel", nil).wantStatus(t, http.StatusOK)
	lostBefore := e.snapshot(t, lost.RunID)
	cancelledBefore := e.snapshot(t, cancelled.RunID)

	items := []completion{
		{RunID: good.RunID, LeaseID: good.LeaseID, Output: outputOf(0)},
		{RunID: lost.RunID, LeaseID: wrongLease, Output: outputOf(1)},
		{RunID: cancelled.RunID, LeaseID: cancelled.LeaseID, Output: outputOf(2)},
		{RunID: unknownRun, LeaseID: good.LeaseID, Output: outputOf(3)},
		{RunID: good2.RunID, LeaseID: good2.LeaseID, Output: outputOf(4)},
	}
	res := e.completeBatch(t, items)
	wantCompleted(t, 0, res[0])
	wantRefused(t, 1, res[1], http.StatusConflict, "lease_lost")
	wantRefused(t, 2, res[2], http.StatusConflict, "cancelled")
	wantRefused(t, 3, res[3], http.StatusNotFound, "not_found")
	wantCompleted(t, 4, res[4])

	for _, i := range []int{0, 4} {
		run := e.get(t, items[i].RunID)
		if run.Status != "completed" {
			t.Errorf("run of item %d: got %s, want completed", i, run.Status)
		}
		wantJSON(t, fmt.Sprintf("run of item %d output", i), run.Output, string(items[i].Output))
	}
	// The refused runs are as they were: still running under their lease,
	// still cancelled.
	if got := e.snapshot(t, lost.RunID); got != lostBefore {
		t.Errorf("the run with a wrong lease changed:\nbefore %s\nafter  %s", lostBefore, got)
	}
	if got := e.snapshot(t, cancelled.RunID); got != cancelledBefore {
		t.Errorf("the cancelled run changed:\nbefore %s\nafter  %s", cancelledBefore, got)
	}
	// Its own lease still completes the run whose result was lease_lost.
	if run := e.runCall(t, lost.RunID, "complete", lease(lost.LeaseID, "output", 1)); run.Status != "completed" {
		t.Errorf("the lease_lost run completed under its own lease: got %s, want completed", run.Status)
	}
	// Two in the batch, one alone.
	wantMetric(t, e, "kagzi_runs_completed_total", 3)
}

func TestBatchCompleteItemCount(t *testing.T) {
	t.Parallel()
	const maxBatch = 5
	e := newEnv(t, withLimits(func(l *api.Limits) { l.MaxBatch = maxBatch }))
	tasks := e.claimN(t, "bc-count", maxBatch+1)
	items := make([]completion, len(tasks))
	for i, tk := range tasks {
		items[i] = completion{RunID: tk.RunID, LeaseID: tk.LeaseID, Output: outputOf(i)}
	}

	for _, tc := range []struct {
		name string
		body any
	}{
		{"no items", map[string]any{"runs": []completion{}}},
		{"runs null", `{"runs": null}`},
		{"no runs member", `{}`},
		{"MaxBatch+1 items", map[string]any{"runs": items}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.do(t, http.MethodPost, batchCompletePath, tc.body).wantProblem(t, http.StatusBadRequest, "invalid_argument", "runs")
		})
	}
	for id, s := range e.runStates(t, "bc-count") {
		if s.status != "running" {
			t.Fatalf("run %s after refused batches: got %s, want running", id, s.status)
		}
	}

	// MaxBatch items are one batch.
	for i, r := range e.completeBatch(t, items[:maxBatch]) {
		wantCompleted(t, i, r)
	}
}

func TestBatchCompleteMalformedItem(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tasks := e.claimN(t, "bc-malformed", 3)
	items := func() []completion {
		items := make([]completion, len(tasks))
		for i, tk := range tasks {
			items[i] = completion{RunID: tk.RunID, LeaseID: tk.LeaseID, Output: outputOf(i)}
		}
		return items
	}
	badRunID := items()
	badRunID[1].RunID = "not-a-uuid"
	badLeaseID := items()
	badLeaseID[2].LeaseID = "0190a000-0000-7000-8000"
	noLeaseID := items()
	noLeaseID[0].LeaseID = ""
	for _, tc := range []struct {
		name  string
		items []completion
		field string
	}{
		{"malformed run_id", badRunID, "runs[1].run_id"},
		{"malformed lease_id", badLeaseID, "runs[2].lease_id"},
		{"missing lease_id", noLeaseID, "runs[0].lease_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.do(t, http.MethodPost, batchCompletePath, map[string]any{"runs": tc.items}).
				wantProblem(t, http.StatusBadRequest, "invalid_argument", tc.field)
		})
	}
	e.do(t, http.MethodPost, batchCompletePath, `{"runs": [{"run_id": "`+tasks[0].RunID+`", "lease_id": "`+tasks[0].LeaseID+`", "outptu": 1}]}`).
		wantProblem(t, http.StatusBadRequest, "invalid_argument", "runs[0].outptu")

	// Nothing was completed, not even the items before the bad one.
	for _, tk := range tasks {
		if run := e.get(t, tk.RunID); run.Status != "running" || string(run.Output) != "null" {
			t.Errorf("run %s after refused batches: got %s output %s, want running with no output", tk.RunID, run.Status, run.Output)
		}
	}
}

func TestBatchCompletePayloadLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const limit = 2097152
	if e.limits.Payload.MaxBytes != limit {
		t.Fatalf("the test server's payload limit is %d, want the production %d", e.limits.Payload.MaxBytes, limit)
	}
	tasks := e.claimN(t, "bc-payload", 3)
	items := make([]completion, len(tasks))
	for i, tk := range tasks {
		items[i] = completion{RunID: tk.RunID, LeaseID: tk.LeaseID, Output: outputOf(i)}
	}

	items[2].Output = jsonString(limit + 1)
	e.do(t, http.MethodPost, batchCompletePath, map[string]any{"runs": items}).
		wantProblem(t, http.StatusRequestEntityTooLarge, "payload_too_large", "runs[2].output")
	for id, s := range e.runStates(t, "bc-payload") {
		if s.status != "running" || s.output != "" {
			t.Fatalf("run %s after the refused batch: got %s with output of %d bytes, want running with none", id, s.status, len(s.output))
		}
	}

	items[2].Output = jsonString(limit)
	for i, r := range e.completeBatch(t, items) {
		wantCompleted(t, i, r)
	}
	states := e.runStates(t, "bc-payload")
	for i, it := range items {
		s := states[it.RunID]
		if s.status != "completed" || len(s.output) != len(it.Output) {
			t.Errorf("run %d: got %s with output of %d bytes, want completed with %d", i, s.status, len(s.output), len(it.Output))
		}
	}
	// Over the warning threshold: logged with its run, field and size.
	if got := e.logs.find(t, "large payload", map[string]any{
		"run_id": items[2].RunID, "field": "runs[2].output", "size_bytes": limit,
	}); len(got) != 1 {
		t.Errorf("large payload warnings for runs[2].output: got %d, want 1", len(got))
	}
}

func TestBatchCompleteOverStoreChunk(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// 453 runs: more than two of the store's chunks of 200. Three items,
	// one in each chunk, carry a wrong lease, so that a result reported at
	// the wrong index across chunks shows.
	const n = 453
	wrong := []int{5, 230, 452}
	tasks := e.claimN(t, "bc-chunks", n)
	slices.Reverse(tasks)
	items := make([]completion, n)
	for i, tk := range tasks {
		items[i] = completion{RunID: tk.RunID, LeaseID: tk.LeaseID, Output: outputOf(i)}
		if slices.Contains(wrong, i) {
			items[i].LeaseID = wrongLease
		}
	}
	res := e.completeBatch(t, items)
	states := e.runStates(t, "bc-chunks")
	completed := 0
	for i, it := range items {
		s := states[it.RunID]
		if slices.Contains(wrong, i) {
			wantRefused(t, i, res[i], http.StatusConflict, "lease_lost")
			if s.status != "running" {
				t.Errorf("run %d (wrong lease): got %s, want running", i, s.status)
			}
			continue
		}
		wantCompleted(t, i, res[i])
		if s.status == "completed" {
			completed++
		}
		wantJSON(t, fmt.Sprintf("run %d output", i), json.RawMessage(s.output), string(it.Output))
	}
	if want := n - len(wrong); completed != want {
		t.Errorf("runs completed by one batch of %d: got %d, want %d", n, completed, want)
	}
}

func TestBatchCompleteSameRunTwice(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	task := e.claimN(t, "bc-twice", 1)[0]
	items := []completion{
		{RunID: task.RunID, LeaseID: task.LeaseID, Output: json.RawMessage(`"first"`)},
		{RunID: task.RunID, LeaseID: task.LeaseID, Output: json.RawMessage(`"second"`)},
	}
	res := e.completeBatch(t, items)
	var winner int
	switch {
	case res[0].Completed && !res[1].Completed:
		winner = 0
	case res[1].Completed && !res[0].Completed:
		winner = 1
	default:
		t.Fatalf("the same run twice in a batch: got completed %v and %v, want exactly one", res[0].Completed, res[1].Completed)
	}
	wantCompleted(t, winner, res[winner])
	wantRefused(t, 1-winner, res[1-winner], http.StatusConflict, "lease_lost")
	run := e.get(t, task.RunID)
	if run.Status != "completed" {
		t.Fatalf("run: got %s, want completed", run.Status)
	}
	wantJSON(t, "run output", run.Output, string(items[winner].Output))
	wantMetric(t, e, "kagzi_runs_completed_total", 1)
}

// wantMetric fails t unless series has value want on /metrics.
func wantMetric(t testing.TB, e *env, series string, want float64) {
	t.Helper()
	r := e.do(t, http.MethodGet, "/metrics", nil).wantStatus(t, http.StatusOK)
	if got, ok := metricValue(string(r.body), series); !ok || got != want {
		t.Errorf("%s: got %v (found %v), want %v", series, got, ok, want)
	}
}

// A completion retried after it committed (the worker lost the answer)
// succeeds again when it is the same: same lease, same output; a retry
// with another output or another lease is still refused.
func TestCompletionRetryAfterCommit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run, task := e.startClaimed(t, "retried", map[string]any{"task_queue": "retried"})
	body := lease(task.LeaseID, "output", map[string]any{"done": 1})
	first := e.runCall(t, run.RunID, "complete", body)
	again := e.runCall(t, run.RunID, "complete", body)
	if again.Status != "completed" || !again.FinishedAt.Equal(*first.FinishedAt) {
		t.Fatalf("retried complete: got %s finished %v, want the run completed at %v", again.Status, again.FinishedAt, first.FinishedAt)
	}
	wantJSON(t, "run output after the retry", again.Output, `{"done":1}`)
	e.workerCall(t, run.RunID, "complete", lease(task.LeaseID, "output", map[string]any{"done": 2})).
		wantProblem(t, http.StatusConflict, "lease_lost", "")
	e.workerCall(t, run.RunID, "complete", lease(wrongLease, "output", map[string]any{"done": 1})).
		wantProblem(t, http.StatusConflict, "lease_lost", "")
	wantJSON(t, "run output", e.get(t, run.RunID).Output, `{"done":1}`)

	// The same for each item of a batch.
	tasks := e.claimN(t, "bc-retried", 4)
	items := make([]completion, len(tasks))
	for i, tk := range tasks {
		items[i] = completion{RunID: tk.RunID, LeaseID: tk.LeaseID, Output: outputOf(i)}
	}
	for i, r := range e.completeBatch(t, items[:3]) {
		wantCompleted(t, i, r)
	}
	retry := slices.Clone(items)
	retry[1].Output = outputOf(100)
	retry[2].LeaseID = wrongLease
	res := e.completeBatch(t, retry)
	wantCompleted(t, 0, res[0])
	wantRefused(t, 1, res[1], http.StatusConflict, "lease_lost")
	wantRefused(t, 2, res[2], http.StatusConflict, "lease_lost")
	wantCompleted(t, 3, res[3])
	states := e.runStates(t, "bc-retried")
	for i, tk := range tasks {
		if s := states[tk.RunID]; s.status != "completed" || s.output != string(outputOf(i)) {
			t.Errorf("run %d: got %s with %s, want completed with %s", i, s.status, s.output, outputOf(i))
		}
	}
}

// Completions group-committed across requests and namespaces are isolated:
// outputs the database would refuse (invalid UTF-8 in a string), sent in
// one namespace beside good completions in another, are refused with 400
// one by one, and every good completion commits.
func TestPoisonedCompletionsFailAlone(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	good := e.claimN(t, "poison-good", 90)
	bad := e.claimN(t, "poison-bad", 30)
	if _, err := e.pool.Exec(context.Background(),
		`UPDATE workflow_runs SET namespace = 'other' WHERE task_queue = 'poison-bad'`); err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		i      int
		bad    bool
		status int
		code   string
		err    error
	}
	start := make(chan struct{})
	outcomes := make(chan outcome, len(good)+len(bad))
	send := func(i int, isBad bool, path string, body []byte) {
		<-start
		r, err := e.try(http.MethodPost, path, body)
		o := outcome{i: i, bad: isBad, err: err}
		if err == nil {
			var p problem
			_ = json.Unmarshal(r.body, &p)
			o.status, o.code = r.status, p.Code
		}
		outcomes <- o
	}
	for i, tk := range good {
		go send(i, false, runPath(tk.RunID)+"/complete", leaseBodyWith(tk.LeaseID, "output", outputOf(i)))
	}
	for i, tk := range bad {
		go send(i, true, "/v1/namespaces/other/workflows/"+tk.RunID+"/complete",
			leaseBodyWith(tk.LeaseID, "output", []byte("{\"s\":\"bad \xfe\"}")))
	}
	close(start)
	for range len(good) + len(bad) {
		o := <-outcomes
		switch {
		case o.err != nil:
			t.Errorf("completion %d (bad %v): %v", o.i, o.bad, o.err)
		case o.bad && (o.status != http.StatusBadRequest || o.code != "invalid_argument"):
			t.Errorf("poisoned completion %d: got %d %s, want 400 invalid_argument", o.i, o.status, o.code)
		case !o.bad && o.status != http.StatusOK:
			t.Errorf("good completion %d: got %d %s, want 200", o.i, o.status, o.code)
		}
	}
	states := e.runStates(t, "poison-good")
	for i, tk := range good {
		if s := states[tk.RunID]; s.status != "completed" || s.output != string(outputOf(i)) {
			t.Errorf("good run %d: got %s with %q, want completed with %s", i, s.status, s.output, outputOf(i))
		}
	}
	for i, tk := range e.runStates(t, "poison-bad") {
		if tk.status != "running" {
			t.Errorf("poisoned run %s: got %s, want still running", i, tk.status)
		}
	}
}
