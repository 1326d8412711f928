package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kagzi/kagzi/api"
)

// workerView is a worker as the API shows it, every member decoded;
// HeartbeatIntervalMS is only in the answer to a registration.
type workerView struct {
	WorkerID            string            `json:"worker_id"`
	Namespace           string            `json:"namespace"`
	TaskQueue           string            `json:"task_queue"`
	WorkflowTypes       []string          `json:"workflow_types"`
	Hostname            *string           `json:"hostname"`
	PID                 *int              `json:"pid"`
	Version             *string           `json:"version"`
	MaxConcurrent       int               `json:"max_concurrent"`
	ActiveCount         int               `json:"active_count"`
	TotalCompleted      int64             `json:"total_completed"`
	TotalFailed         int64             `json:"total_failed"`
	Status              string            `json:"status"`
	Labels              map[string]string `json:"labels"`
	RegisteredAt        time.Time         `json:"registered_at"`
	LastHeartbeatAt     time.Time         `json:"last_heartbeat_at"`
	HeartbeatIntervalMS *int64            `json:"heartbeat_interval_ms"`
}

type workerPage struct {
	Workers    []workerView `json:"workers"`
	NextCursor *string      `json:"next_cursor"`
}

type workerBeat struct {
	Status         string     `json:"status"`
	ShouldDrain    bool       `json:"should_drain"`
	LeaseExpiresAt *time.Time `json:"lease_expires_at"`
	Lost           []string   `json:"lost"`
	Cancelled      []string   `json:"cancelled"`
}

func workerPath(id string) string { return ns + "/workers/" + id }

// register registers a worker on queue with the extra members, wants 201
// and returns it.
func (e *env) register(t testing.TB, queue string, extra map[string]any) workerView {
	t.Helper()
	body := map[string]any{"task_queue": queue}
	for k, v := range extra {
		body[k] = v
	}
	var w workerView
	r := e.do(t, http.MethodPost, ns+"/workers", body).wantStatus(t, http.StatusCreated)
	r.decode(t, &w)
	if got, want := r.header.Get("Location"), workerPath(w.WorkerID); got != want {
		t.Fatalf("Location: got %q, want %q", got, want)
	}
	return w
}

func (e *env) getWorker(t testing.TB, id string) workerView {
	t.Helper()
	var w workerView
	e.do(t, http.MethodGet, workerPath(id), nil).wantStatus(t, http.StatusOK).decode(t, &w)
	return w
}

func (e *env) listWorkers(t testing.TB, q url.Values) workerPage {
	t.Helper()
	path := ns + "/workers"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var p workerPage
	e.do(t, http.MethodGet, path, nil).wantStatus(t, http.StatusOK).decode(t, &p)
	return p
}

// beat sends a worker heartbeat and wants 200.
func (e *env) beat(t testing.TB, id string, body map[string]any) workerBeat {
	t.Helper()
	var b workerBeat
	e.do(t, http.MethodPost, workerPath(id)+"/heartbeat", body).wantStatus(t, http.StatusOK).decode(t, &b)
	return b
}

func workerIDs(ws []workerView) []string {
	ids := make([]string, len(ws))
	for i, w := range ws {
		ids[i] = w.WorkerID
	}
	return ids
}

const unknownWorker = "0190a000-0000-7000-8000-00000000beef"

func TestRegisterWorker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.register(t, "wq", map[string]any{
		"workflow_types": []string{"a", "b"}, "hostname": "host-1", "pid": 4242, "version": "1.2.3",
		"labels": map[string]string{"zone": "eu-1"},
	})
	if w.HeartbeatIntervalMS == nil || *w.HeartbeatIntervalMS != e.limits.HeartbeatInterval.Milliseconds() {
		t.Fatalf("heartbeat_interval_ms: got %v, want %d", w.HeartbeatIntervalMS, e.limits.HeartbeatInterval.Milliseconds())
	}
	if w.Namespace != "default" || w.TaskQueue != "wq" || !reflect.DeepEqual(w.WorkflowTypes, []string{"a", "b"}) ||
		w.Hostname == nil || *w.Hostname != "host-1" || w.PID == nil || *w.PID != 4242 || w.Version == nil || *w.Version != "1.2.3" ||
		w.MaxConcurrent != 10 || w.ActiveCount != 0 || w.TotalCompleted != 0 || w.TotalFailed != 0 || w.Status != "online" ||
		!reflect.DeepEqual(w.Labels, map[string]string{"zone": "eu-1"}) {
		t.Fatalf("registered worker: got %+v", w)
	}
	got := e.getWorker(t, w.WorkerID)
	w.HeartbeatIntervalMS = nil
	if !reflect.DeepEqual(got, w) {
		t.Fatalf("GET: got %+v, want %+v", got, w)
	}

	minimal := e.register(t, "wq", nil)
	if minimal.MaxConcurrent != 10 || minimal.Status != "online" || minimal.WorkflowTypes == nil || len(minimal.WorkflowTypes) != 0 ||
		minimal.Labels == nil || len(minimal.Labels) != 0 || minimal.Hostname != nil || minimal.PID != nil || minimal.Version != nil {
		t.Fatalf("minimal registration: got %+v, want the defaults", minimal)
	}
	if c := e.register(t, "wq", map[string]any{"max_concurrent": 3}); c.MaxConcurrent != 3 {
		t.Fatalf("max_concurrent: got %d, want 3", c.MaxConcurrent)
	}
}

func TestRegisterWorkerValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		name  string
		body  any
		field string
	}{
		{"missing task_queue", map[string]any{"hostname": "h"}, "task_queue"},
		{"bad task_queue", map[string]any{"task_queue": "no spaces"}, "task_queue"},
		{"max_concurrent 0", map[string]any{"task_queue": "q", "max_concurrent": 0}, "max_concurrent"},
		{"max_concurrent negative", map[string]any{"task_queue": "q", "max_concurrent": -1}, "max_concurrent"},
		{"max_concurrent not an integer", `{"task_queue": "q", "max_concurrent": 1.5}`, "max_concurrent"},
		{"empty label key", map[string]any{"task_queue": "q", "labels": map[string]string{"": "v"}}, "labels"},
		{"label value too long", map[string]any{"task_queue": "q", "labels": map[string]string{"k": strings.Repeat("v", 257)}}, "labels"},
		{"label not a string", `{"task_queue": "q", "labels": {"k": 1}}`, `labels["k"]`},
		{"empty workflow type", map[string]any{"task_queue": "q", "workflow_types": []string{"a", ""}}, "workflow_types[1]"},
		{"unknown field", map[string]any{"task_queue": "q", "queue": "q"}, "queue"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.do(t, http.MethodPost, ns+"/workers", tc.body).wantProblem(t, http.StatusBadRequest, "invalid_argument", tc.field)
		})
	}
	if p := e.listWorkers(t, nil); len(p.Workers) != 0 {
		t.Fatalf("refused registrations created %d workers", len(p.Workers))
	}
}

func TestUnknownAndMalformedWorker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		method, call string
		body         any
	}{
		{http.MethodGet, "", nil},
		{http.MethodDelete, "", nil},
		{http.MethodPost, "/heartbeat", map[string]any{}},
		{http.MethodPost, "/drain", nil},
	} {
		t.Run(tc.method+tc.call, func(t *testing.T) {
			e.do(t, tc.method, workerPath(unknownWorker)+tc.call, tc.body).wantProblem(t, http.StatusNotFound, "not_found", "")
			e.do(t, tc.method, workerPath("worker-1")+tc.call, tc.body).wantProblem(t, http.StatusBadRequest, "invalid_argument", "worker_id")
		})
	}
}

func TestListWorkers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var all []string // newest first
	for _, q := range []string{"q1", "q2", "q1", "q2", "q1"} {
		all = append([]string{e.register(t, q, nil).WorkerID}, all...)
	}
	// all[0] is the newest, on q1.
	e.do(t, http.MethodPost, workerPath(all[0])+"/drain", nil).wantStatus(t, http.StatusOK)

	if got := workerIDs(e.listWorkers(t, nil).Workers); !reflect.DeepEqual(got, all) {
		t.Fatalf("list: got %v, want %v (newest first)", got, all)
	}
	if got := workerIDs(e.listWorkers(t, url.Values{"task_queue": {"q1"}}).Workers); !reflect.DeepEqual(got, []string{all[0], all[2], all[4]}) {
		t.Fatalf("task_queue=q1: got %v", got)
	}
	if got := workerIDs(e.listWorkers(t, url.Values{"status": {"draining"}}).Workers); !reflect.DeepEqual(got, []string{all[0]}) {
		t.Fatalf("status=draining: got %v", got)
	}
	if got := workerIDs(e.listWorkers(t, url.Values{"task_queue": {"q1"}, "status": {"online"}}).Workers); !reflect.DeepEqual(got, []string{all[2], all[4]}) {
		t.Fatalf("task_queue=q1&status=online: got %v", got)
	}
	if got := e.listWorkers(t, url.Values{"task_queue": {"q3"}}); len(got.Workers) != 0 || got.NextCursor != nil {
		t.Fatalf("task_queue=q3: got %+v, want an empty last page", got)
	}

	var paged []string
	q := url.Values{"limit": {"2"}}
	for pages := 1; ; pages++ {
		p := e.listWorkers(t, q)
		paged = append(paged, workerIDs(p.Workers)...)
		if p.NextCursor == nil {
			if pages != 3 {
				t.Fatalf("5 workers by 2 came in %d pages, want 3", pages)
			}
			break
		}
		if len(p.Workers) != 2 || pages > 3 {
			t.Fatalf("page %d: %d workers, cursor %q", pages, len(p.Workers), *p.NextCursor)
		}
		q.Set("cursor", *p.NextCursor)
	}
	if !reflect.DeepEqual(paged, all) {
		t.Fatalf("pages: got %v, want %v", paged, all)
	}

	for _, tc := range []struct{ query, field string }{
		{"status=asleep", "status"},
		{"task_queue=no%20spaces", "task_queue"},
		{"limit=0", "limit"},
		{"limit=501", "limit"},
		{"cursor=nope", "cursor"},
		{"queue=q1", "queue"},
	} {
		e.do(t, http.MethodGet, ns+"/workers?"+tc.query, nil).wantProblem(t, http.StatusBadRequest, "invalid_argument", tc.field)
	}
}

func TestWorkerHeartbeat(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.register(t, "hb", nil)
	other := e.register(t, "hb", nil)

	// Counters.
	b := e.beat(t, w.WorkerID, map[string]any{"active_count": 2, "completed_delta": 3, "failed_delta": 1})
	if b.Status != "online" || b.ShouldDrain || b.LeaseExpiresAt != nil {
		t.Fatalf("heartbeat of a worker holding nothing: got %+v", b)
	}
	e.beat(t, w.WorkerID, map[string]any{"active_count": 1, "completed_delta": 4})
	var empty workerBeat // no body: active_count 0 and no deltas
	e.do(t, http.MethodPost, workerPath(w.WorkerID)+"/heartbeat", nil).wantStatus(t, http.StatusOK).decode(t, &empty)
	e.beat(t, w.WorkerID, map[string]any{"active_count": 1})
	got := e.getWorker(t, w.WorkerID)
	if got.ActiveCount != 1 || got.TotalCompleted != 7 || got.TotalFailed != 1 || !got.LastHeartbeatAt.After(w.LastHeartbeatAt) {
		t.Fatalf("after heartbeats: got active %d completed %d failed %d last heartbeat %s (registered %s), want 1, 7, 1, later",
			got.ActiveCount, got.TotalCompleted, got.TotalFailed, got.LastHeartbeatAt, w.LastHeartbeatAt)
	}
	for name, body := range map[string]map[string]any{
		"active_count":    {"active_count": -1},
		"completed_delta": {"completed_delta": -1},
		"failed_delta":    {"failed_delta": -1},
	} {
		e.do(t, http.MethodPost, workerPath(w.WorkerID)+"/heartbeat", body).wantProblem(t, http.StatusBadRequest, "invalid_argument", name)
	}

	// Leases: only the runs this worker holds are extended.
	held := e.start(t, "hb", map[string]any{"task_queue": "hb"})
	heldTask := e.claimTasks(t, "hb", map[string]any{"worker_id": w.WorkerID, "wait_ms": 0})
	notHeld := e.start(t, "hb", map[string]any{"task_queue": "hb"})
	otherTask := e.claimTasks(t, "hb", map[string]any{"worker_id": other.WorkerID, "wait_ms": 0})
	if len(heldTask) != 1 || heldTask[0].RunID != held.RunID || len(otherTask) != 1 || otherTask[0].RunID != notHeld.RunID {
		t.Fatalf("claims: got %+v and %+v", heldTask, otherTask)
	}
	if run := e.get(t, held.RunID); run.WorkerID == nil || *run.WorkerID != w.WorkerID {
		t.Fatalf("run claimed by the worker: worker_id %v, want %s", run.WorkerID, w.WorkerID)
	}
	b = e.beat(t, w.WorkerID, map[string]any{"active_count": 1})
	if b.LeaseExpiresAt == nil || !b.LeaseExpiresAt.After(heldTask[0].LeaseExpiresAt) {
		t.Fatalf("heartbeat: lease_expires_at %v, want later than the claim's %s", b.LeaseExpiresAt, heldTask[0].LeaseExpiresAt)
	}
	if run := e.get(t, held.RunID); run.LeaseExpiresAt == nil || !run.LeaseExpiresAt.Equal(*b.LeaseExpiresAt) {
		t.Fatalf("held run: lease %v, want %s", run.LeaseExpiresAt, b.LeaseExpiresAt)
	}
	if run := e.get(t, notHeld.RunID); run.LeaseExpiresAt == nil || !run.LeaseExpiresAt.Equal(otherTask[0].LeaseExpiresAt) {
		t.Fatalf("another worker's run: lease %v, want unchanged %s", run.LeaseExpiresAt, otherTask[0].LeaseExpiresAt)
	}
}

// A heartbeat that lists its runs extends only those it holds, and says of
// every other listed run whether it was lost or cancelled.
func TestWorkerHeartbeatRunIDs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withoutMaintainer()) // which would rescue the expired run
	w := e.register(t, "hr", nil)
	other := e.register(t, "hr", nil)
	claim := func(worker string) taskView {
		t.Helper()
		e.start(t, "hr", map[string]any{"task_queue": "hr"})
		tasks := e.claimTasks(t, "hr", map[string]any{"worker_id": worker, "wait_ms": 0})
		if len(tasks) != 1 {
			t.Fatalf("claim: got %+v", tasks)
		}
		return tasks[0]
	}
	held, unlisted, completed, cancelled, expired := claim(w.WorkerID), claim(w.WorkerID), claim(w.WorkerID), claim(w.WorkerID), claim(w.WorkerID)
	others := claim(other.WorkerID)
	e.runCall(t, completed.RunID, "complete", lease(completed.LeaseID, "output", 1))
	e.do(t, http.MethodPost, runPath(cancelled.RunID)+"/cancel", nil).wantStatus(t, http.StatusOK)
	if _, err := e.pool.Exec(context.Background(), `UPDATE workflow_runs SET lease_expires_at = now() - interval '1 second' WHERE run_id = $1`, expired.RunID); err != nil {
		t.Fatal(err)
	}
	lease := func(id string) *time.Time { return e.get(t, id).LeaseExpiresAt }
	unlistedLease, othersLease, expiredLease := lease(unlisted.RunID), lease(others.RunID), lease(expired.RunID)

	e.waitDBPast(t, held.LeaseExpiresAt.Add(-e.limits.LeaseDuration)) // so that an extension moves the lease
	b := e.beat(t, w.WorkerID, map[string]any{"active_count": 6, "run_ids": []string{
		held.RunID, held.RunID, completed.RunID, cancelled.RunID, expired.RunID, others.RunID, unknownWorker,
	}})
	wantLost := []string{completed.RunID, expired.RunID, others.RunID, unknownWorker}
	slices.Sort(wantLost)
	slices.Sort(b.Lost)
	if b.Status != "online" || !slices.Equal(b.Lost, wantLost) || !slices.Equal(b.Cancelled, []string{cancelled.RunID}) {
		t.Fatalf("heartbeat: got %+v, want lost %v and cancelled [%s]", b, wantLost, cancelled.RunID)
	}
	if b.LeaseExpiresAt == nil || !b.LeaseExpiresAt.After(held.LeaseExpiresAt) {
		t.Fatalf("heartbeat: lease_expires_at %v, want later than the claim's %s", b.LeaseExpiresAt, held.LeaseExpiresAt)
	}
	if got := lease(held.RunID); got == nil || !got.Equal(*b.LeaseExpiresAt) {
		t.Fatalf("listed run: lease %v, want %s", got, b.LeaseExpiresAt)
	}
	for name, tc := range map[string]struct {
		id   string
		want *time.Time
	}{"unlisted": {unlisted.RunID, unlistedLease}, "another worker's": {others.RunID, othersLease}, "expired": {expired.RunID, expiredLease}} {
		if got := lease(tc.id); got == nil || !got.Equal(*tc.want) {
			t.Errorf("%s run: lease %v, want unchanged %s", name, got, tc.want)
		}
	}
	if run := e.get(t, completed.RunID); run.Status != "completed" {
		t.Errorf("completed run: %s", run.Status)
	}

	// An empty list extends nothing.
	before := lease(held.RunID)
	b = e.beat(t, w.WorkerID, map[string]any{"run_ids": []string{}})
	if b.LeaseExpiresAt != nil || len(b.Lost) != 0 || len(b.Cancelled) != 0 || b.Lost == nil || b.Cancelled == nil {
		t.Fatalf("heartbeat listing nothing: got %+v, want no lease and empty lists", b)
	}
	if got := lease(held.RunID); !got.Equal(*before) {
		t.Fatalf("heartbeat listing nothing moved a lease: %s, was %s", got, before)
	}

	// Refused lists change nothing.
	seen := e.getWorker(t, w.WorkerID)
	for name, tc := range map[string]struct {
		body  string
		field string
	}{
		"null":      {`{"active_count": 1, "run_ids": null}`, "run_ids"},
		"not a run": {`{"run_ids": ["` + held.RunID + `", "r-1"]}`, "run_ids[1]"},
		"not ids":   {`{"run_ids": [1]}`, "run_ids[0]"},
		"an object": {`{"run_ids": {}}`, "run_ids"},
	} {
		t.Run(name, func(t *testing.T) {
			e.do(t, http.MethodPost, workerPath(w.WorkerID)+"/heartbeat", json.RawMessage(tc.body)).
				wantProblem(t, http.StatusBadRequest, "invalid_argument", tc.field)
		})
	}
	if got := e.getWorker(t, w.WorkerID); got.ActiveCount != seen.ActiveCount || !got.LastHeartbeatAt.Equal(seen.LastHeartbeatAt) {
		t.Fatalf("a refused heartbeat changed the worker: %+v, was %+v", got, seen)
	}
	if got := lease(held.RunID); !got.Equal(*before) {
		t.Fatalf("a refused heartbeat moved a lease: %s, was %s", got, before)
	}
}

func TestClaimWithWorkerID(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run := e.start(t, "cw", map[string]any{"task_queue": "cw"})
	elsewhere := e.register(t, "other", nil)
	for name, tc := range map[string]struct {
		workerID string
		status   int
		code     string
		field    string
	}{
		"unknown":          {unknownWorker, http.StatusNotFound, "not_found", ""},
		"of another queue": {elsewhere.WorkerID, http.StatusNotFound, "not_found", ""},
		"malformed":        {"w-1", http.StatusBadRequest, "invalid_argument", "worker_id"},
	} {
		t.Run(name, func(t *testing.T) {
			e.do(t, http.MethodPost, claimPath("cw"), map[string]any{"worker_id": tc.workerID, "wait_ms": 0}).
				wantProblem(t, tc.status, tc.code, tc.field)
		})
	}
	if got := e.get(t, run.RunID); got.Status != "pending" {
		t.Fatalf("refused claims took the run: %s", got.Status)
	}

	w := e.register(t, "cw", nil)
	tasks := e.claimTasks(t, "cw", map[string]any{"worker_id": w.WorkerID, "wait_ms": 0})
	if len(tasks) != 1 || tasks[0].RunID != run.RunID {
		t.Fatalf("claim by a registered worker: got %+v", tasks)
	}
	if got := e.get(t, run.RunID); got.WorkerID == nil || *got.WorkerID != w.WorkerID {
		t.Fatalf("worker_id of the claimed run: got %v, want %s", got.WorkerID, w.WorkerID)
	}
}

func TestDrainWorker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.register(t, "drain", nil)
	e.start(t, "drain", map[string]any{"task_queue": "drain"})
	held := e.claimTasks(t, "drain", map[string]any{"worker_id": w.WorkerID, "wait_ms": 0})
	run := e.start(t, "drain", map[string]any{"task_queue": "drain"})

	var drained workerView
	e.do(t, http.MethodPost, workerPath(w.WorkerID)+"/drain", nil).wantStatus(t, http.StatusOK).decode(t, &drained)
	if drained.Status != "draining" || drained.WorkerID != w.WorkerID {
		t.Fatalf("drain: got %+v", drained)
	}
	// Draining again is harmless; an empty object is an acceptable body.
	e.do(t, http.MethodPost, workerPath(w.WorkerID)+"/drain", map[string]any{}).wantStatus(t, http.StatusOK)
	e.do(t, http.MethodPost, workerPath(w.WorkerID)+"/drain", map[string]any{"now": true}).
		wantProblem(t, http.StatusBadRequest, "invalid_argument", "now")

	b := e.beat(t, w.WorkerID, map[string]any{"active_count": 1})
	if b.Status != "draining" || !b.ShouldDrain {
		t.Fatalf("heartbeat of a draining worker: got %+v, want draining and should_drain", b)
	}
	// It keeps the runs it holds: their leases are still extended.
	if b.LeaseExpiresAt == nil || !b.LeaseExpiresAt.After(held[0].LeaseExpiresAt) {
		t.Fatalf("heartbeat of a draining worker: lease_expires_at %v, want extended", b.LeaseExpiresAt)
	}
	if got := e.getWorker(t, w.WorkerID); got.Status != "draining" {
		t.Fatalf("GET: status %s, want draining", got.Status)
	}
	e.do(t, http.MethodPost, claimPath("drain"), map[string]any{"worker_id": w.WorkerID, "wait_ms": 0}).
		wantProblem(t, http.StatusConflict, "worker_draining", "")
	if got := e.get(t, run.RunID); got.Status != "pending" {
		t.Fatalf("a draining worker's claim took a run: %s", got.Status)
	}
}

func TestDeregisterWorker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.register(t, "dereg", nil)
	a := e.start(t, "dereg", map[string]any{"task_queue": "dereg"})
	b := e.start(t, "dereg", map[string]any{"task_queue": "dereg"})
	tasks := e.claimTasks(t, "dereg", map[string]any{"worker_id": w.WorkerID, "max_tasks": 2, "wait_ms": 0})
	if got := runIDs(tasks); !reflect.DeepEqual(got, []string{a.RunID, b.RunID}) {
		t.Fatalf("claim: got %v", got)
	}
	e.begin(t, a.RunID, "work", lease(tasks[0].LeaseID))

	var gone workerView
	e.do(t, http.MethodDelete, workerPath(w.WorkerID), nil).wantStatus(t, http.StatusOK).decode(t, &gone)
	if gone.Status != "offline" || gone.ActiveCount != 0 {
		t.Fatalf("DELETE: got %+v, want offline", gone)
	}
	// At once: no wait, no maintainer pass.
	for i, id := range []string{a.RunID, b.RunID} {
		got := e.get(t, id)
		if got.Status != "pending" || got.LeaseExpiresAt != nil || got.WorkerID != nil || got.Attempt != 1 {
			t.Fatalf("run %d after its worker left: got %s lease %v worker %v attempt %d, want pending, no lease, no worker, attempt 1",
				i, got.Status, got.LeaseExpiresAt, got.WorkerID, got.Attempt)
		}
		e.workerCall(t, id, "heartbeat", lease(tasks[i].LeaseID)).wantProblem(t, http.StatusConflict, "lease_lost", "")
	}
	if st := e.steps(t, a.RunID); len(st) != 1 || st[0].Status != "failed" {
		t.Fatalf("the step running when the worker left: got %+v, want failed", st)
	}
	// The attempt was not consumed: the next claim continues it.
	next := e.claimTasks(t, "dereg", map[string]any{"max_tasks": 2, "wait_ms": 0})
	if len(next) != 2 || next[0].Attempt != 1 || next[1].Attempt != 1 {
		t.Fatalf("claim after the worker left: got %+v, want both runs at attempt 1", next)
	}
	if b := e.begin(t, a.RunID, "work", lease(next[0].LeaseID)); !b.ShouldExecute || b.Step.Attempt != 2 {
		t.Fatalf("begin after the release: got %+v, want a new attempt of the step", b)
	}

	e.do(t, http.MethodPost, workerPath(w.WorkerID)+"/heartbeat", map[string]any{"active_count": 0}).
		wantProblem(t, http.StatusConflict, "worker_offline", "")
	e.do(t, http.MethodPost, claimPath("dereg"), map[string]any{"worker_id": w.WorkerID, "wait_ms": 0}).
		wantProblem(t, http.StatusConflict, "worker_offline", "")
	e.do(t, http.MethodPost, workerPath(w.WorkerID)+"/drain", nil).wantProblem(t, http.StatusConflict, "worker_offline", "")
	if got := e.getWorker(t, w.WorkerID); got.Status != "offline" {
		t.Fatalf("GET: status %s, want offline", got.Status)
	}
	// Deregistering again is harmless.
	e.do(t, http.MethodDelete, workerPath(w.WorkerID), nil).wantStatus(t, http.StatusOK)
	if p := e.listWorkers(t, url.Values{"status": {"offline"}}); !reflect.DeepEqual(workerIDs(p.Workers), []string{w.WorkerID}) {
		t.Fatalf("status=offline: got %v", workerIDs(p.Workers))
	}
}

func TestSilentWorkerGoesOffline(t *testing.T) {
	t.Parallel()
	const interval = time.Second
	e := newEnv(t, withoutMaintainer(), withLimits(func(l *api.Limits) { l.HeartbeatInterval = interval }))
	silent := e.register(t, "silent", nil)
	if silent.HeartbeatIntervalMS == nil || *silent.HeartbeatIntervalMS != interval.Milliseconds() {
		t.Fatalf("heartbeat_interval_ms: got %v, want %d", silent.HeartbeatIntervalMS, interval.Milliseconds())
	}
	e.maintainer.Tick(context.Background())
	if got := e.getWorker(t, silent.WorkerID); got.Status != "online" {
		t.Fatalf("a worker registered just now: status %s after a maintainer pass, want online", got.Status)
	}

	e.waitDBPast(t, silent.LastHeartbeatAt.Add(3*interval))
	beating := e.register(t, "silent", nil)
	e.maintainer.Tick(context.Background())
	if got := e.getWorker(t, silent.WorkerID); got.Status != "offline" {
		t.Fatalf("a worker silent for 3 heartbeat intervals: status %s, want offline", got.Status)
	}
	if got := e.getWorker(t, beating.WorkerID); got.Status != "online" {
		t.Fatalf("a worker that just registered: status %s, want online", got.Status)
	}
	e.do(t, http.MethodPost, workerPath(silent.WorkerID)+"/heartbeat", map[string]any{}).
		wantProblem(t, http.StatusConflict, "worker_offline", "")
}

func TestDrainedWorkerGetsNoNewWorkWhileParked(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.register(t, "parked-drain", nil)
	// The worker's claim parks first, another claim after it; then the
	// worker is drained. (Parking the other claim after the drain raced the
	// drain's answer to the first: the count of parked claims could stay
	// put while one left and one came.)
	mine := e.parkClaim(t, "parked-drain", map[string]any{"worker_id": w.WorkerID, "wait_ms": 1500})
	other := e.parkClaim(t, "parked-drain", map[string]any{"wait_ms": 3000})
	e.do(t, http.MethodPost, workerPath(w.WorkerID)+"/drain", nil).wantStatus(t, http.StatusOK)
	run := e.start(t, "parked-drain", map[string]any{"task_queue": "parked-drain"})

	// A draining worker gets no new work: the run goes to the other claim.
	out := receiveClaim(t, mine, 10*time.Second)
	var se *statusError
	switch {
	case out.err == nil && len(out.tasks) == 0:
	case errors.As(out.err, &se) && se.r.status == http.StatusConflict && strings.Contains(string(se.r.body), `"worker_draining"`):
	default:
		t.Errorf("the draining worker's parked claim: got tasks %v, error %v; want no tasks or 409 worker_draining", runIDs(out.tasks), out.err)
	}
	if got := e.get(t, run.RunID); got.WorkerID != nil && *got.WorkerID == w.WorkerID {
		t.Errorf("run %s was handed to worker %s after it was drained", run.RunID, w.WorkerID)
	}
	if out := receiveClaim(t, other, 10*time.Second); out.err != nil || len(out.tasks) != 1 || out.tasks[0].RunID != run.RunID {
		t.Fatalf("the other parked claim: got tasks %v, error %v; want run %s", runIDs(out.tasks), out.err, run.RunID)
	}
}
