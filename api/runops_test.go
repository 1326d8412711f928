package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

func retryPath(runID string) string { return runPath(runID) + "/retry" }

// retryRun retries a run and wants 200.
func (e *env) retryRun(t testing.TB, runID string) runView {
	t.Helper()
	var run runView
	e.do(t, http.MethodPost, retryPath(runID), nil).wantStatus(t, http.StatusOK).decode(t, &run)
	return run
}

// A retried run resumes after its memoized steps, runs again the step that
// failed for good, and its retry policy bounds the attempts from the retry.
func TestRetryRunResumesAndGrantsAttempts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run, task := e.startClaimed(t, "order", map[string]any{"task_queue": "retry-resume",
		"retry_policy": map[string]any{"max_attempts": 2, "initial_interval_ms": 1}})
	e.begin(t, run.RunID, "charge", lease(task.LeaseID))
	e.completeStep(t, run.RunID, task.LeaseID, "charge", "charged")
	e.begin(t, run.RunID, "ship", lease(task.LeaseID))
	e.failStep(t, run.RunID, task.LeaseID, "ship", map[string]any{"message": "no truck", "non_retryable": true})
	failed := e.runCall(t, run.RunID, "fail", lease(task.LeaseID, "error", map[string]any{"message": "no truck", "non_retryable": true}))
	if failed.Status != "failed" {
		t.Fatalf("after a non-retryable failure: status %s, want failed", failed.Status)
	}

	before := e.dbNow(t)
	retried := e.retryRun(t, run.RunID)
	if retried.Status != "pending" || runError(t, retried) != nil || retried.FinishedAt != nil ||
		string(retried.Output) != "null" || retried.Attempt != 1 || retried.AvailableAt.After(e.dbNow(t)) ||
		retried.AvailableAt.Before(before) {
		t.Fatalf("retried run: %+v; want pending, available now, error, output and finished_at cleared, attempt 1", retried)
	}

	// Attempt 2: the completed step is memoized, the failed one runs again.
	task = e.claimOne(t, "retry-resume", 5*time.Second)
	if task.Attempt != 2 {
		t.Fatalf("claim after retry: attempt %d, want 2", task.Attempt)
	}
	if b := e.begin(t, run.RunID, "charge", lease(task.LeaseID)); b.ShouldExecute {
		t.Errorf("begin of the completed step: should_execute true, want it memoized")
	}
	if b := e.begin(t, run.RunID, "ship", lease(task.LeaseID)); !b.ShouldExecute {
		t.Errorf("begin of the step that failed for good: should_execute false, want it to run again")
	}
	// max_attempts 2 counts from the retry: attempt 2 is the first of them,
	// so its failure is retried.
	again := e.runCall(t, run.RunID, "fail", lease(task.LeaseID, "error", map[string]any{"message": "flat tyre"}))
	if again.Status != "pending" {
		t.Fatalf("first failure after the retry: status %s, want pending (a retry scheduled)", again.Status)
	}
	task = e.claimOne(t, "retry-resume", 5*time.Second)
	if task.Attempt != 3 {
		t.Fatalf("next claim: attempt %d, want 3", task.Attempt)
	}
	last := e.runCall(t, run.RunID, "fail", lease(task.LeaseID, "error", map[string]any{"message": "flat tyre"}))
	if last.Status != "failed" {
		t.Fatalf("second failure after the retry: status %s, want failed", last.Status)
	}
}

// A cancelled run can be retried too; the rescuer counts attempts from
// the retry as well.
func TestRetryCancelledRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withoutMaintainer())
	run, _ := e.startClaimed(t, "order", map[string]any{"task_queue": "retry-cancelled",
		"retry_policy": map[string]any{"max_attempts": 2, "initial_interval_ms": 1}})
	e.do(t, http.MethodPost, runPath(run.RunID)+"/cancel", nil).wantStatus(t, http.StatusOK)
	retried := e.retryRun(t, run.RunID)
	if retried.Status != "pending" || retried.FinishedAt != nil || retried.Attempt != 1 {
		t.Fatalf("retried cancelled run: %+v", retried)
	}
	task := e.claimOne(t, "retry-cancelled", 5*time.Second)
	if task.Attempt != 2 {
		t.Fatalf("claim after the retry: attempt %d, want 2", task.Attempt)
	}
	// Its lease expires: the first attempt since the retry, so the
	// rescuer schedules another.
	if _, err := e.pool.Exec(context.Background(),
		`UPDATE workflow_runs SET lease_expires_at = now() - interval '1 second' WHERE run_id = $1`, run.RunID); err != nil {
		t.Fatal(err)
	}
	if retriedN, failedN, err := e.store.RescueExpired(context.Background(), 10); err != nil || retriedN != 1 || failedN != 0 {
		t.Fatalf("RescueExpired: retried %d, failed %d, %v; want 1 retried", retriedN, failedN, err)
	}
	if got := e.get(t, run.RunID); got.Status != "pending" {
		t.Fatalf("after the rescue: status %s, want pending", got.Status)
	}
}

func TestRetryRunRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pending := e.start(t, "order", map[string]any{"task_queue": "retry-refusals"})
	completed := e.start(t, "order", map[string]any{"task_queue": "retry-refusals"})
	e.setStatus(t, completed.RunID, "completed")

	for _, id := range []string{pending.RunID, completed.RunID} {
		snap := e.snapshot(t, id)
		p := e.do(t, http.MethodPost, retryPath(id), nil).wantProblem(t, http.StatusConflict, "conflict", "")
		if !strings.Contains(p.Detail, "only failed or cancelled") {
			t.Errorf("detail %q does not say which runs can be retried", p.Detail)
		}
		if e.snapshot(t, id) != snap {
			t.Errorf("a refused retry changed run %s", id)
		}
	}
	e.do(t, http.MethodPost, retryPath("0190c2a6-7a1c-7000-8000-000000000000"), nil).
		wantProblem(t, http.StatusNotFound, "not_found", "")
	e.do(t, http.MethodPost, ns+"/workflows/not-a-uuid/retry", nil).
		wantProblem(t, http.StatusBadRequest, "invalid_argument", "run_id")
	e.do(t, http.MethodPost, "/v1/namespaces/bad%20ns/workflows/"+pending.RunID+"/retry", nil).
		wantProblem(t, http.StatusBadRequest, "invalid_argument", "namespace")
	e.do(t, http.MethodPost, retryPath(pending.RunID), map[string]any{"force": true}).
		wantStatus(t, http.StatusBadRequest)
	e.do(t, http.MethodGet, retryPath(pending.RunID), nil).wantStatus(t, http.StatusMethodNotAllowed)

	// Another live run holds the external ID: 409 naming it, nothing changes.
	old := e.start(t, "order", map[string]any{"task_queue": "retry-refusals", "external_id": "order-7"})
	e.do(t, http.MethodPost, runPath(old.RunID)+"/cancel", nil).wantStatus(t, http.StatusOK)
	holder := e.start(t, "order", map[string]any{"task_queue": "retry-refusals", "external_id": "order-7"})
	snap := e.snapshot(t, old.RunID)
	p := e.do(t, http.MethodPost, retryPath(old.RunID), nil).wantProblem(t, http.StatusConflict, "conflict", "")
	if !strings.Contains(p.Detail, holder.RunID) {
		t.Errorf("detail %q does not name the live run %s", p.Detail, holder.RunID)
	}
	if e.snapshot(t, old.RunID) != snap {
		t.Errorf("a refused retry changed the run")
	}
	// Once the holder has finished, the retry goes through.
	e.do(t, http.MethodPost, runPath(holder.RunID)+"/cancel", nil).wantStatus(t, http.StatusOK)
	if got := e.retryRun(t, old.RunID); got.Status != "pending" {
		t.Fatalf("retry after the holder finished: status %s", got.Status)
	}
}

// runOfSchedule is a run with the schedule that started it.
type runOfSchedule struct {
	RunID      string  `json:"run_id"`
	ExternalID *string `json:"external_id"`
	ScheduleID *string `json:"schedule_id"`
	Status     string  `json:"status"`
}

func TestTriggerSchedule(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withoutMaintainer())
	sc := e.createSchedule(t, map[string]any{"workflow_type": "report", "cron": "@daily",
		"task_queue": "trigger", "input": map[string]any{"day": 1}, "enabled": false})

	r := e.do(t, http.MethodPost, schedulePath(sc.ScheduleID)+"/trigger", nil).wantStatus(t, http.StatusCreated)
	var run runOfSchedule
	r.decode(t, &run)
	if want := "schedule:" + sc.ScheduleID + ":manual:" + run.RunID; run.ExternalID == nil || *run.ExternalID != want {
		t.Errorf("external_id %v, want %s", run.ExternalID, want)
	}
	if run.ScheduleID == nil || *run.ScheduleID != sc.ScheduleID || run.Status != "pending" {
		t.Errorf("triggered run: %+v; want pending with schedule_id %s", run, sc.ScheduleID)
	}
	if got, want := r.header.Get("Location"), runPath(run.RunID); got != want {
		t.Errorf("Location %q, want %q", got, want)
	}
	full := e.get(t, run.RunID)
	wantJSON(t, "triggered run's input", full.Input, `{"day": 1}`)
	var after scheduleView
	e.do(t, http.MethodGet, schedulePath(sc.ScheduleID), nil).wantStatus(t, http.StatusOK).decode(t, &after)
	if after.NextFireAt != nil || after.LastFiredAt != nil {
		t.Errorf("a trigger moved the schedule: next %v, last %v", after.NextFireAt, after.LastFiredAt)
	}

	// A fired run carries its schedule too, and the filter lists both.
	e.do(t, http.MethodPatch, schedulePath(sc.ScheduleID), map[string]any{"enabled": true}).wantStatus(t, http.StatusOK)
	if _, err := e.pool.Exec(context.Background(),
		`UPDATE schedules SET next_fire_at = now() - interval '1 hour' WHERE schedule_id = $1`, sc.ScheduleID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.FireDueSchedules(context.Background(), 10); err != nil {
		t.Fatal(err)
	}
	other := e.start(t, "report", map[string]any{"task_queue": "trigger"})
	var page struct {
		Workflows []runOfSchedule `json:"workflows"`
	}
	e.do(t, http.MethodGet, ns+"/workflows?schedule_id="+sc.ScheduleID, nil).wantStatus(t, http.StatusOK).decode(t, &page)
	if len(page.Workflows) != 2 {
		t.Fatalf("runs of the schedule: %+v, want the fired and the triggered one", page.Workflows)
	}
	for _, w := range page.Workflows {
		if w.RunID == other.RunID || w.ScheduleID == nil || *w.ScheduleID != sc.ScheduleID {
			t.Errorf("listed run %+v is not of the schedule", w)
		}
	}

	n := e.countRuns(t)
	e.do(t, http.MethodPost, schedulePath("0190c2a6-7a1c-7000-8000-000000000000")+"/trigger", nil).
		wantProblem(t, http.StatusNotFound, "not_found", "")
	e.do(t, http.MethodPost, schedulesPath()+"/nope/trigger", nil).
		wantProblem(t, http.StatusBadRequest, "invalid_argument", "schedule_id")
	e.do(t, http.MethodPost, schedulePath(sc.ScheduleID)+"/trigger", map[string]any{"input": 1}).
		wantStatus(t, http.StatusBadRequest)
	e.do(t, http.MethodPost, "/v1/namespaces/other/schedules/"+sc.ScheduleID+"/trigger", nil).
		wantProblem(t, http.StatusNotFound, "not_found", "")
	e.do(t, http.MethodGet, ns+"/workflows?schedule_id=nope", nil).
		wantProblem(t, http.StatusBadRequest, "invalid_argument", "schedule_id")
	if got := e.countRuns(t); got != n {
		t.Errorf("refused triggers started runs: %d, want %d", got, n)
	}
}

type statsView struct {
	Buckets []struct {
		Start     time.Time `json:"start"`
		Started   int64     `json:"started"`
		Completed int64     `json:"completed"`
		Failed    int64     `json:"failed"`
		Cancelled int64     `json:"cancelled"`
		P50       *int64    `json:"p50_duration_ms"`
		P95       *int64    `json:"p95_duration_ms"`
	} `json:"buckets"`
	Now struct {
		Pending  int64 `json:"pending"`
		Running  int64 `json:"running"`
		Sleeping int64 `json:"sleeping"`
	} `json:"now"`
}

func TestStats(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	done, task := e.startClaimed(t, "billing", map[string]any{"task_queue": "stats"})
	e.runCall(t, done.RunID, "complete", lease(task.LeaseID, "output", 1))
	cancelled := e.start(t, "billing", map[string]any{"task_queue": "stats"})
	e.do(t, http.MethodPost, runPath(cancelled.RunID)+"/cancel", nil).wantStatus(t, http.StatusOK)
	e.start(t, "billing", map[string]any{"task_queue": "stats"})
	e.start(t, "mail", map[string]any{"task_queue": "stats-other"})
	// An old finished run, outside a one-hour window.
	old := e.start(t, "billing", map[string]any{"task_queue": "stats"})
	if _, err := e.pool.Exec(context.Background(), `UPDATE workflow_runs SET status = 'failed',
		created_at = now() - interval '2 hours', started_at = now() - interval '2 hours',
		finished_at = now() - interval '2 hours' WHERE run_id = $1`, old.RunID); err != nil {
		t.Fatal(err)
	}

	var st statsView
	e.do(t, http.MethodGet, ns+"/stats?window_ms=3600000&bucket_ms=60000", nil).wantStatus(t, http.StatusOK).decode(t, &st)
	if len(st.Buckets) != 60 {
		t.Fatalf("buckets: %d, want 60", len(st.Buckets))
	}
	var started, completed, failed, cancelledN int64
	for i, b := range st.Buckets {
		started, completed, failed, cancelledN = started+b.Started, completed+b.Completed, failed+b.Failed, cancelledN+b.Cancelled
		if b.Start.UnixMilli()%60000 != 0 || (i > 0 && b.Start.Sub(st.Buckets[i-1].Start) != time.Minute) {
			t.Errorf("bucket %d starts at %v: not aligned to the minute after the previous", i, b.Start)
		}
	}
	if started != 4 || completed != 1 || failed != 0 || cancelledN != 1 {
		t.Errorf("totals: started %d completed %d failed %d cancelled %d; want 4, 1, 0, 1", started, completed, failed, cancelledN)
	}
	last := st.Buckets[len(st.Buckets)-1]
	if last.Start.After(e.dbNow(t)) || last.P50 == nil || *last.P50 < 0 {
		t.Errorf("last bucket %+v: want it to hold now and the completed run's duration", last)
	}
	if st.Now.Pending != 2 || st.Now.Running != 0 {
		t.Errorf("now: %+v, want 2 pending", st.Now)
	}

	e.do(t, http.MethodGet, ns+"/stats?window_ms=10800000&bucket_ms=3600000&task_queue=stats&workflow_type=billing", nil).
		wantStatus(t, http.StatusOK).decode(t, &st)
	started, failed = 0, 0
	for _, b := range st.Buckets {
		started, failed = started+b.Started, failed+b.Failed
	}
	if len(st.Buckets) != 3 || started != 4 || failed != 1 || st.Now.Pending != 1 {
		t.Errorf("filtered over three hours: %d buckets, started %d, failed %d, now %+v; want 3, 4, 1, 1 pending",
			len(st.Buckets), started, failed, st.Now)
	}

	for _, tc := range []struct{ query, field string }{
		{"window_ms=0", "window_ms"},
		{"window_ms=604800001", "window_ms"},
		{"window_ms=99999999999999999999999", "window_ms"},
		{"window_ms=-5", "window_ms"},
		{"window_ms=1e3", "window_ms"},
		{"bucket_ms=0", "bucket_ms"},
		{"window_ms=60000&bucket_ms=120000", "bucket_ms"},
		{"window_ms=604800000&bucket_ms=60000", "bucket_ms"},
		{"window_ms=3600000&bucket_ms=9223372036854775807", "bucket_ms"},
		{"task_queue=bad%20queue", "task_queue"},
		{"workflow_type=%01", "workflow_type"},
		{"windowms=1", "windowms"},
	} {
		e.do(t, http.MethodGet, ns+"/stats?"+tc.query, nil).wantProblem(t, http.StatusBadRequest, "invalid_argument", tc.field)
	}
	e.do(t, http.MethodGet, "/v1/namespaces/-bad/stats", nil).wantProblem(t, http.StatusBadRequest, "invalid_argument", "namespace")
}

type typeView struct {
	Name          string     `json:"name"`
	Pending       int64      `json:"pending"`
	Running       int64      `json:"running"`
	Sleeping      int64      `json:"sleeping"`
	LastStartedAt *time.Time `json:"last_started_at"`
}

func TestWorkflowTypesAndNamespaces(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(t, "alpha", nil)
	e.start(t, "alpha", nil)
	beta := e.start(t, "beta", nil)
	e.setStatus(t, beta.RunID, "completed")
	e.startClaimed(t, "gamma", map[string]any{"task_queue": "types-gamma"})
	e.do(t, http.MethodPost, "/v1/namespaces/zeta/workflows", map[string]any{"workflow_type": "z"}).wantStatus(t, http.StatusCreated)
	e.do(t, http.MethodPost, "/v1/namespaces/mid/schedules", map[string]any{"workflow_type": "z", "cron": "@daily"}).
		wantStatus(t, http.StatusCreated)

	var page struct {
		WorkflowTypes []typeView `json:"workflow_types"`
		NextCursor    *string    `json:"next_cursor"`
	}
	e.do(t, http.MethodGet, ns+"/workflow-types?limit=2", nil).wantStatus(t, http.StatusOK).decode(t, &page)
	if len(page.WorkflowTypes) != 2 || page.WorkflowTypes[0].Name != "alpha" || page.WorkflowTypes[0].Pending != 2 ||
		page.WorkflowTypes[1].Name != "beta" || page.WorkflowTypes[1].Pending != 0 ||
		page.WorkflowTypes[1].LastStartedAt == nil || page.NextCursor == nil {
		t.Fatalf("first page of types: %+v", page)
	}
	e.do(t, http.MethodGet, ns+"/workflow-types?limit=2&cursor="+*page.NextCursor, nil).wantStatus(t, http.StatusOK).decode(t, &page)
	if len(page.WorkflowTypes) != 1 || page.WorkflowTypes[0].Name != "gamma" || page.WorkflowTypes[0].Running != 1 || page.NextCursor != nil {
		t.Fatalf("second page of types: %+v", page)
	}

	var nss struct {
		Namespaces []struct {
			Name    string `json:"name"`
			Pending int64  `json:"pending"`
			Running int64  `json:"running"`
		} `json:"namespaces"`
		NextCursor *string `json:"next_cursor"`
	}
	e.do(t, http.MethodGet, "/v1/namespaces?limit=2", nil).wantStatus(t, http.StatusOK).decode(t, &nss)
	if len(nss.Namespaces) != 2 || nss.Namespaces[0].Name != "default" || nss.Namespaces[0].Pending != 2 ||
		nss.Namespaces[0].Running != 1 || nss.Namespaces[1].Name != "mid" || nss.NextCursor == nil {
		t.Fatalf("first page of namespaces: %+v", nss)
	}
	e.do(t, http.MethodGet, "/v1/namespaces?cursor="+*nss.NextCursor, nil).wantStatus(t, http.StatusOK).decode(t, &nss)
	if len(nss.Namespaces) != 1 || nss.Namespaces[0].Name != "zeta" || nss.Namespaces[0].Pending != 1 || nss.NextCursor != nil {
		t.Fatalf("second page of namespaces: %+v", nss)
	}

	for _, path := range []string{ns + "/workflow-types", "/v1/namespaces"} {
		e.do(t, http.MethodGet, path+"?limit=0", nil).wantProblem(t, http.StatusBadRequest, "invalid_argument", "limit")
		e.do(t, http.MethodGet, path+"?limit=501", nil).wantProblem(t, http.StatusBadRequest, "invalid_argument", "limit")
		e.do(t, http.MethodGet, path+"?cursor=!!!", nil).wantProblem(t, http.StatusBadRequest, "invalid_argument", "cursor")
		e.do(t, http.MethodGet, path+"?cursor=AQID", nil).wantProblem(t, http.StatusBadRequest, "invalid_argument", "cursor")
		e.do(t, http.MethodGet, path+"?status=pending", nil).wantProblem(t, http.StatusBadRequest, "invalid_argument", "status")
		e.do(t, http.MethodPost, path, nil).wantStatus(t, http.StatusMethodNotAllowed)
	}
	e.do(t, http.MethodGet, "/v1/namespaces/bad%20ns/workflow-types", nil).wantProblem(t, http.StatusBadRequest, "invalid_argument", "namespace")
}

// Retries racing for one run: exactly one wins, the others are conflicts.
func TestConcurrentRetries(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run := e.start(t, "order", map[string]any{"task_queue": "retry-race"})
	e.do(t, http.MethodPost, runPath(run.RunID)+"/cancel", nil).wantStatus(t, http.StatusOK)
	const n = 8
	codes := make(chan int, n)
	for range n {
		go func() {
			r, err := e.try(http.MethodPost, retryPath(run.RunID), nil)
			if err != nil {
				codes <- 0
				return
			}
			codes <- r.status
		}()
	}
	counts := map[int]int{}
	for range n {
		select {
		case c := <-codes:
			counts[c]++
		case <-time.After(10 * time.Second):
			t.Fatal("a retry did not answer within 10s")
		}
	}
	if counts[http.StatusOK] != 1 || counts[http.StatusConflict] != n-1 {
		t.Fatalf("answers %v; want one 200 and %d 409", counts, n-1)
	}
	if got := e.get(t, run.RunID); got.Status != "pending" || got.Attempt != 0 {
		t.Fatalf("after the race: %+v", got)
	}
}

// A step that used up its attempts before a retry gets its policy's
// attempts again after it, as the run does.
func TestRetryRunGrantsStepAttempts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run, task := e.startClaimed(t, "order", map[string]any{"task_queue": "retry-step",
		"retry_policy": map[string]any{"max_attempts": 2, "initial_interval_ms": 1}})
	flaky := map[string]any{"message": "flaky"}
	e.begin(t, run.RunID, "ship", lease(task.LeaseID))
	if f := e.failStep(t, run.RunID, task.LeaseID, "ship", flaky); !f.RetryScheduled {
		t.Fatalf("first failure of the step: no retry scheduled")
	}
	task = e.claimOne(t, "retry-step", 5*time.Second)
	e.begin(t, run.RunID, "ship", lease(task.LeaseID))
	if f := e.failStep(t, run.RunID, task.LeaseID, "ship", flaky); f.RetryScheduled {
		t.Fatalf("second failure of the step: a retry scheduled beyond max_attempts 2")
	}
	e.runCall(t, run.RunID, "fail", lease(task.LeaseID, "error", map[string]any{"message": "ship failed", "non_retryable": true}))

	e.retryRun(t, run.RunID)
	task = e.claimOne(t, "retry-step", 5*time.Second)
	if b := e.begin(t, run.RunID, "ship", lease(task.LeaseID)); !b.ShouldExecute {
		t.Fatalf("begin after the retry: should_execute false")
	}
	if f := e.failStep(t, run.RunID, task.LeaseID, "ship", flaky); !f.RetryScheduled {
		t.Fatalf("first failure of the step after the retry: no retry scheduled, want max_attempts counted from the retry")
	}
}
