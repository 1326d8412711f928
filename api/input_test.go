package api_test

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/kagzi/kagzi/api"
)

// Tests of the contract's input validity, one finding each; the hostile
// suite (hostile_test.go) sends every class of bad input to every route.

// TestBodyMembersAreExactAndOnce: member names match exactly and a member
// given twice is refused, at every level of a request.
func TestBodyMembersAreExactAndOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		path, body, field string
	}{
		{ns + "/workflows", `{"WORKFLOW_TYPE":"x"}`, "WORKFLOW_TYPE"},
		{ns + "/workflows", `{"workflow_type":"x","workflow_type":"y"}`, "workflow_type"},
		{ns + "/workflows", `{"workflow_type":"x","retry_policy":{"max_attempts":1,"max_attempts":2}}`, "retry_policy.max_attempts"},
		{ns + "/workflows/batch", `{"workflows":[{"workflow_type":"x"},{"workflow_type":"x","Input":1}]}`, "workflows[1].Input"},
	} {
		e.do(t, http.MethodPost, tc.path, tc.body).wantProblem(t, http.StatusBadRequest, "invalid_argument", tc.field)
	}
	if n := e.countRuns(t); n != 0 {
		t.Fatalf("runs after refused starts: got %d, want 0", n)
	}
}

// TestInvalidUTF8IsRefusedNotReplaced: k-\xfe and k-\xff were both stored
// as k-U+FFFD, so that they collided.
func TestInvalidUTF8IsRefusedNotReplaced(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.do(t, http.MethodPost, ns+"/workflows", "{\"workflow_type\":\"x\",\"external_id\":\"k-\xfe\"}").
		wantProblem(t, http.StatusBadRequest, "invalid_argument", "external_id")
	e.do(t, http.MethodPost, ns+"/workflows", "{\"workflow_type\":\"x\",\"input\":{\"s\":\"\xff\"}}").
		wantProblem(t, http.StatusBadRequest, "invalid_argument", "input")
	e.do(t, http.MethodPost, ns+"/workflows/batch", "{\"workflows\":[{\"workflow_type\":\"x\"},{\"workflow_type\":\"x\",\"input\":\"\xc3(\"}]}").
		wantProblem(t, http.StatusBadRequest, "invalid_argument", "workflows[1].input")
	_, task := e.startClaimed(t, "x", map[string]any{"task_queue": "utf8"})
	e.workerCall(t, task.RunID, "complete", "{\"lease_id\":\""+task.LeaseID+"\",\"output\":\"\xed\xa0\x80\"}").
		wantProblem(t, http.StatusBadRequest, "invalid_argument", "output")
	if run := e.get(t, task.RunID); run.Status != "running" {
		t.Fatalf("run after a refused completion: got %s, want running", run.Status)
	}
}

// TestNULInPayloadsAndDetailsRoundTrips: \u0000 is any JSON's own, in
// inputs, outputs and error details, even though errors are stored as
// jsonb; in free text it is refused.
func TestNULInPayloadsAndDetailsRoundTrips(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const payload = `{"s":"a\u0000b","n":1e1000000,"k":{"b":1,"a":2}}`
	_, task := e.startClaimed(t, "x", map[string]any{"task_queue": "nul", "input": rawJSON(payload)})
	if string(task.Input) != payload {
		t.Fatalf("input: got %s, want %s", task.Input, payload)
	}
	// Free text refuses NUL and nothing else.
	e.workerCall(t, task.RunID, "fail", lease(task.LeaseID, "error", map[string]any{"message": "a\x00b"})).
		wantProblem(t, http.StatusBadRequest, "invalid_argument", "error.message")
	e.workerCall(t, task.RunID, "fail", lease(task.LeaseID, "error", map[string]any{"message": "m", "type": "t\x00"})).
		wantProblem(t, http.StatusBadRequest, "invalid_argument", "error.type")
	b := e.begin(t, task.RunID, "s", lease(task.LeaseID, "input", rawJSON(payload)))
	if string(b.Step.Input) != payload {
		t.Fatalf("step input: got %s, want %s", b.Step.Input, payload)
	}
	f := e.failStep(t, task.RunID, task.LeaseID, "s", map[string]any{
		"message": "line 1\n\tline 2\x01", "non_retryable": true, "details": rawJSON(payload),
	})
	if f.Step.Error == nil || string(f.Step.Error.Details) != payload || f.Step.Error.Message != "line 1\n\tline 2\x01" {
		t.Fatalf("step error: got %+v, want details %s", f.Step.Error, payload)
	}
	run := e.runCall(t, task.RunID, "fail", lease(task.LeaseID, "error", map[string]any{
		"message": "m", "non_retryable": true, "details": rawJSON(payload),
	}))
	for _, got := range []*errorView{runError(t, run), runError(t, e.get(t, task.RunID))} {
		if got == nil || string(got.Details) != payload {
			t.Fatalf("run error details: got %+v, want %s", got, payload)
		}
	}
	if st := e.steps(t, task.RunID); len(st) != 1 || string(st[0].Error.Details) != payload {
		t.Fatalf("listed step error: got %+v", st)
	}
}

// TestErrorsWrittenBeforeDetailsJSONStillRead: rows written by a server
// that stored details as jsonb are read as before.
func TestErrorsWrittenBeforeDetailsJSONStillRead(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run := e.start(t, "x", nil)
	if _, err := e.pool.Exec(context.Background(), `UPDATE workflow_runs SET status = 'failed', finished_at = now(),
		error = '{"message":"m","type":null,"non_retryable":true,"details":{"a":[1]}}' WHERE run_id = $1`, run.RunID); err != nil {
		t.Fatal(err)
	}
	got := runError(t, e.get(t, run.RunID))
	if got == nil || got.Message != "m" || !got.NonRetryable {
		t.Fatalf("error: got %+v", got)
	}
	wantJSON(t, "details", got.Details, `{"a":[1]}`)
}

// TestIntegersBeyondTheirColumn: a pid or an active count beyond integer,
// and delays that overflowed time.Duration, are refused naming the field;
// counters saturate.
func TestIntegersBeyondTheirColumn(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.do(t, http.MethodPost, ns+"/workers", `{"task_queue":"q","pid":2147483648}`).
		wantProblem(t, http.StatusBadRequest, "invalid_argument", "pid")
	w := e.register(t, "q", map[string]any{"pid": math.MaxInt32})
	e.do(t, http.MethodPost, workerPath(w.WorkerID)+"/heartbeat", `{"active_count":2147483648}`).
		wantProblem(t, http.StatusBadRequest, "invalid_argument", "active_count")
	e.do(t, http.MethodPost, workerPath(w.WorkerID)+"/heartbeat", `{"completed_delta":9223372036854775808}`).
		wantProblem(t, http.StatusBadRequest, "invalid_argument", "completed_delta")
	if _, err := e.pool.Exec(context.Background(),
		`UPDATE workers SET total_completed = 9223372036854775800, total_failed = 1 WHERE worker_id = $1`, w.WorkerID); err != nil {
		t.Fatal(err)
	}
	e.do(t, http.MethodPost, workerPath(w.WorkerID)+"/heartbeat",
		`{"completed_delta":100,"failed_delta":9223372036854775807}`).wantStatus(t, http.StatusOK)
	var got workerView
	e.do(t, http.MethodGet, workerPath(w.WorkerID), nil).wantStatus(t, http.StatusOK).decode(t, &got)
	if got.TotalCompleted != math.MaxInt64 || got.TotalFailed != math.MaxInt64 {
		t.Fatalf("totals: got %d and %d, want both %d", got.TotalCompleted, got.TotalFailed, int64(math.MaxInt64))
	}

	for _, delay := range []string{"9223372036855", "18446744073710", "315360000001", "-1", "9223372036854775808", "1.5", "1e3"} {
		e.do(t, http.MethodPost, ns+"/workflows", `{"workflow_type":"x","start_delay_ms":`+delay+`}`).
			wantProblem(t, http.StatusBadRequest, "invalid_argument", "start_delay_ms")
	}
	if n := e.countRuns(t); n != 0 {
		t.Fatalf("runs after refused starts: got %d, want 0", n)
	}
	_, task := e.startClaimed(t, "x", map[string]any{"task_queue": "ints"})
	for _, d := range []string{"9223372036855", "18446744073710", "-1"} {
		e.workerCall(t, task.RunID, "sleep", `{"lease_id":"`+task.LeaseID+`","step":"s","duration_ms":`+d+`}`).
			wantProblem(t, http.StatusBadRequest, "invalid_argument", "duration_ms")
	}
}

// TestGetRunWaitIsCappedBeforeItIsConverted: wait_ms 2^53 overflowed into
// a negative wait and answered at once; it is capped at the maximum.
func TestGetRunWaitIsCappedBeforeItIsConverted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withLimits(func(l *api.Limits) { l.MaxWait = 300 * time.Millisecond }))
	run := e.start(t, "x", nil)
	for _, ms := range []string{"9007199254740992", strconv.FormatInt(math.MaxInt64, 10)} {
		began := time.Now()
		e.do(t, http.MethodGet, runPath(run.RunID)+"?wait_ms="+ms, nil).wantStatus(t, http.StatusOK)
		if took := time.Since(began); took < 300*time.Millisecond {
			t.Fatalf("wait_ms=%s answered after %v, want the capped 300ms", ms, took)
		}
	}
	for _, ms := range []string{"-1", "9223372036854775808", "1.5"} {
		e.do(t, http.MethodGet, runPath(run.RunID)+"?wait_ms="+ms, nil).
			wantProblem(t, http.StatusBadRequest, "invalid_argument", "wait_ms")
	}
}

// TestScheduleExternalIDsAreReserved: a client could squat a schedule's
// fire time by starting a run with its external ID.
func TestScheduleExternalIDsAreReserved(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := "schedule:0190a0a0-0000-7000-8000-000000000000:2026-01-01T00:00:00Z"
	e.do(t, http.MethodPost, ns+"/workflows", map[string]any{"workflow_type": "x", "external_id": id}).
		wantProblem(t, http.StatusBadRequest, "invalid_argument", "external_id")
	e.do(t, http.MethodPost, ns+"/workflows/batch", map[string]any{"workflows": []map[string]any{
		{"workflow_type": "x"}, {"workflow_type": "x"}, {"workflow_type": "x", "external_id": "schedule:x"},
	}}).wantProblem(t, http.StatusBadRequest, "invalid_argument", "workflows[2].external_id")
	if n := e.countRuns(t); n != 0 {
		t.Fatalf("runs after refused starts: got %d, want 0", n)
	}
	e.start(t, "x", map[string]any{"external_id": "Schedule:x"}) // only the exact prefix is reserved
}

// TestStepNamesArePercentDecodedOnce: chi and the handler both decoded,
// so that x%2541 was stored as xA and 50%25 was refused.
func TestStepNamesArePercentDecodedOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, task := e.startClaimed(t, "x", map[string]any{"task_queue": "pct"})
	for _, tc := range []struct{ segment, name string }{
		{"x%2541", "x%41"}, {"a%252Fb", "a%2Fb"}, {"50%25", "50%"}, {"a%2Fb", "a/b"}, {"sp%20ace", "sp ace"}, {"%C3%A9", "é"},
	} {
		b := e.begin(t, task.RunID, tc.segment, lease(task.LeaseID))
		if b.Step.Name != tc.name {
			t.Errorf("step %s: got name %q, want %q", tc.segment, b.Step.Name, tc.name)
		}
		st := e.completeStep(t, task.RunID, task.LeaseID, tc.segment, 1)
		if st.Name != tc.name {
			t.Errorf("step %s completed: got name %q, want %q", tc.segment, st.Name, tc.name)
		}
	}
	for _, seg := range []string{"%C2%85", "a%00b", "%FF"} {
		e.workerCall(t, task.RunID, "steps/"+seg+"/begin", lease(task.LeaseID)).
			wantProblem(t, http.StatusBadRequest, "invalid_argument", "step")
	}
}

// TestTimezonesAreCanonical: time.LoadLocation accepts other spellings of
// a zone's path, which were stored as sent.
func TestTimezonesAreCanonical(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tz := range []string{"./UTC", "America//New_York", "UTC/", "Europe/./Paris", "Europe/Paris/", "/UTC"} {
		e.do(t, http.MethodPost, ns+"/schedules", map[string]any{"workflow_type": "x", "cron": "@hourly", "timezone": tz}).
			wantProblem(t, http.StatusBadRequest, "invalid_argument", "timezone")
	}
	e.do(t, http.MethodPost, ns+"/schedules", map[string]any{"workflow_type": "x", "cron": "@hourly", "timezone": "America/New_York"}).
		wantStatus(t, http.StatusCreated)
}

// TestFreeTextAndNames: labels, hostname and version refuse NUL only;
// label keys are names.
func TestFreeTextAndNames(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct{ body, field string }{
		{`{"task_queue":"q","labels":{"k":"a\u0000"}}`, `labels["k"]`},
		{`{"task_queue":"q","labels":{"k\n":"a"}}`, "labels"},
		{`{"task_queue":"q","hostname":"h\u0000"}`, "hostname"},
		{`{"task_queue":"q","version":"\u0000"}`, "version"},
		{`{"task_queue":"q","workflow_types":["a\u0085"]}`, "workflow_types[0]"},
	} {
		e.do(t, http.MethodPost, ns+"/workers", tc.body).wantProblem(t, http.StatusBadRequest, "invalid_argument", tc.field)
	}
	w := e.register(t, "q", map[string]any{"labels": map[string]string{"k": "multi\nline\x7f"}, "hostname": "h\tx", "version": "v\r1"})
	if w.Labels["k"] != "multi\nline\x7f" || *w.Hostname != "h\tx" || *w.Version != "v\r1" {
		t.Fatalf("worker: got %+v", w)
	}
}

// TestEveryRouteRefusesUnknownQueryParameters: GET .../steps, /v1/info,
// /healthz and others ignored them.
func TestEveryRouteRefusesUnknownQueryParameters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, path := range []string{"/healthz", "/readyz", "/openapi.yaml", "/v1/info",
		runPath("0190a0a0-0000-7000-8000-000000000000") + "/steps",
		workerPath("0190a0a0-0000-7000-8000-000000000000"),
		ns + "/schedules/0190a0a0-0000-7000-8000-000000000000",
	} {
		e.do(t, http.MethodGet, path+"?foo=1", nil).wantProblem(t, http.StatusBadRequest, "invalid_argument", "foo")
	}
	e.do(t, http.MethodPost, ns+"/workflows?foo=1", `{"workflow_type":"x"}`).
		wantProblem(t, http.StatusBadRequest, "invalid_argument", "foo")
	e.do(t, http.MethodDelete, ns+"/schedules/0190a0a0-0000-7000-8000-000000000000?x", nil).
		wantProblem(t, http.StatusBadRequest, "invalid_argument", "x")
	if n := e.countRuns(t); n != 0 {
		t.Fatalf("runs: got %d, want 0", n)
	}
}

// rawJSON is a JSON value sent exactly as written.
type rawJSON string

func (r rawJSON) MarshalJSON() ([]byte, error) { return []byte(r), nil }
