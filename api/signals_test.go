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

	"github.com/kagzi/kagzi/api"
)

type signalView struct {
	SignalID  string          `json:"signal_id"`
	RunID     string          `json:"run_id"`
	Name      string          `json:"name"`
	Seq       int64           `json:"seq"`
	Status    string          `json:"status"`
	Step      *string         `json:"step"`
	Input     json.RawMessage `json:"input"`
	Duplicate bool            `json:"duplicate"`
}

type waitView struct {
	Resolved bool      `json:"resolved"`
	Step     *stepView `json:"step"`
	Output   struct {
		Signal *struct {
			Name     string          `json:"name"`
			Input    json.RawMessage `json:"input"`
			Seq      int64           `json:"seq"`
			SignalID string          `json:"signal_id"`
		} `json:"signal"`
		TimedOut bool `json:"timed_out"`
	} `json:"output"`
	WakeAt *time.Time `json:"wake_at"`
}

type runWaitView struct {
	Status      string     `json:"status"`
	AvailableAt *time.Time `json:"available_at"`
	WaitingFor  []string   `json:"waiting_for"`
}

func (e *env) signal(t testing.TB, runID, name string, input any, status int, opts ...reqOption) signalView {
	t.Helper()
	var sg signalView
	e.do(t, http.MethodPost, runPath(runID)+"/signals/"+name, map[string]any{"input": input}, opts...).
		wantStatus(t, status).decode(t, &sg)
	return sg
}

func (e *env) wait(t testing.TB, runID, leaseID, step string, extra ...any) waitView {
	t.Helper()
	body := lease(leaseID, append([]any{"signals", []string{"go"}}, extra...)...)
	var w waitView
	e.workerCall(t, runID, "steps/"+step+"/wait", body).wantStatus(t, http.StatusOK).decode(t, &w)
	return w
}

func (e *env) signalRows(t testing.TB) int {
	t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM signals`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (e *env) runWait(t testing.TB, runID string) runWaitView {
	t.Helper()
	var v runWaitView
	e.do(t, http.MethodGet, runPath(runID), nil).wantStatus(t, http.StatusOK).decode(t, &v)
	return v
}

// A signal sent before the wait is kept, and the wait takes it at once.
func TestSignalBeforeWaitIsTaken(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run, task := e.startClaimed(t, "w", nil)
	sg := e.signal(t, run.RunID, "go", map[string]any{"a": "\u0000x"}, http.StatusAccepted)
	if sg.Status != "buffered" || sg.Seq != 1 || sg.Step != nil {
		t.Fatalf("sent %+v, want buffered seq 1", sg)
	}
	w := e.wait(t, run.RunID, task.LeaseID, "approval")
	if !w.Resolved || w.Output.Signal == nil || w.Output.Signal.SignalID != sg.SignalID || w.Output.TimedOut {
		t.Fatalf("wait = %+v, want resolved with %s", w, sg.SignalID)
	}
	var in map[string]string
	if err := json.Unmarshal(w.Output.Signal.Input, &in); err != nil || in["a"] != "\u0000x" {
		t.Fatalf("input = %s, want the sent one (%v)", w.Output.Signal.Input, err)
	}
	// A replay answers the recorded outcome; the lease goes on.
	again := e.wait(t, run.RunID, task.LeaseID, "approval")
	if !again.Resolved || again.Output.Signal == nil || again.Output.Signal.SignalID != sg.SignalID {
		t.Fatalf("replayed wait = %+v", again)
	}
	var page struct {
		Signals []signalView `json:"signals"`
	}
	e.do(t, http.MethodGet, runPath(run.RunID)+"/signals?status=delivered", nil).wantStatus(t, http.StatusOK).decode(t, &page)
	if len(page.Signals) != 1 || page.Signals[0].Step == nil || *page.Signals[0].Step != "approval" {
		t.Fatalf("inbox = %+v, want the signal delivered to approval", page.Signals)
	}
	e.do(t, http.MethodGet, runPath(run.RunID)+"/signals?status=buffered", nil).wantStatus(t, http.StatusOK).decode(t, &page)
	if len(page.Signals) != 0 {
		t.Fatalf("buffered = %+v, want none", page.Signals)
	}
	e.do(t, http.MethodGet, runPath(run.RunID)+"/signals?status=x", nil).wantProblem(t, http.StatusBadRequest, "invalid_argument", "status")
}

// A wait with nothing buffered parks the run, holding no lease and with no
// deadline; a send delivers to the step and makes the run claimable.
func TestWaitParksAndSignalWakes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run, task := e.startClaimed(t, "w", nil)
	w := e.wait(t, run.RunID, task.LeaseID, "approval")
	if w.Resolved || w.WakeAt != nil {
		t.Fatalf("wait = %+v, want parked with no deadline", w)
	}
	v := e.runWait(t, run.RunID)
	if v.Status != "sleeping" || v.AvailableAt != nil || len(v.WaitingFor) != 1 || v.WaitingFor[0] != "go" {
		t.Fatalf("parked run = %+v", v)
	}
	e.do(t, http.MethodPost, runPath(run.RunID)+"/heartbeat", lease(task.LeaseID)).wantProblem(t, http.StatusConflict, "lease_lost", "")

	claim := e.parkClaim(t, run.TaskQueue, map[string]any{"wait_ms": 5000})
	sg := e.signal(t, run.RunID, "go", 7, http.StatusAccepted)
	if sg.Status != "delivered" || sg.Step == nil || *sg.Step != "approval" {
		t.Fatalf("sent %+v, want delivered to approval", sg)
	}
	out := <-claim
	if out.err != nil || len(out.tasks) != 1 {
		t.Fatalf("claim after the signal: %+v", out)
	}
	task = out.tasks[0]
	var found bool
	for _, st := range task.Steps {
		found = found || st.Name == "approval" && st.Kind == "wait" && st.Status == "completed"
	}
	if !found {
		t.Fatalf("history %+v lacks the resolved wait", task.Steps)
	}
	if v := e.runWait(t, run.RunID); v.WaitingFor != nil || v.Status != "running" {
		t.Fatalf("claimed run = %+v", v)
	}
	w = e.wait(t, run.RunID, task.LeaseID, "approval")
	if !w.Resolved || w.Output.Signal == nil || string(w.Output.Signal.Input) != "7" {
		t.Fatalf("replayed wait = %+v", w)
	}
}

// A wait's deadline wakes the run, and the replayed wait resolves as
// timed out; a signal that comes after the deadline but before the
// replay wins.
func TestWaitTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run, task := e.startClaimed(t, "w", nil)
	w := e.wait(t, run.RunID, task.LeaseID, "t1", "timeout_ms", 50)
	if w.Resolved || w.WakeAt == nil {
		t.Fatalf("wait = %+v, want parked until a deadline", w)
	}
	task = e.claimOne(t, run.TaskQueue, 5*time.Second)
	w = e.wait(t, run.RunID, task.LeaseID, "t1", "timeout_ms", 60000) // a replay never moves the deadline
	if !w.Resolved || !w.Output.TimedOut || w.Output.Signal != nil {
		t.Fatalf("wait after the deadline = %+v, want timed out", w)
	}

	w = e.wait(t, run.RunID, task.LeaseID, "t2", "timeout_ms", 50)
	if w.Resolved {
		t.Fatalf("second wait resolved at once: %+v", w)
	}
	waitFor(t, 5*time.Second, "the deadline", func() bool { return e.dbNow(t).After(*w.WakeAt) })
	sg := e.signal(t, run.RunID, "go", "late", http.StatusAccepted)
	if sg.Status != "delivered" {
		t.Fatalf("late signal = %+v, want delivered", sg)
	}
	task = e.claimOne(t, run.TaskQueue, 5*time.Second)
	w = e.wait(t, run.RunID, task.LeaseID, "t2", "timeout_ms", 50)
	if !w.Resolved || w.Output.TimedOut || w.Output.Signal == nil || w.Output.Signal.SignalID != sg.SignalID {
		t.Fatalf("wait = %+v, want the late signal", w)
	}
}

// A duplicate Idempotency-Key answers the first send, also after the run
// finished; the same key with another request is refused.
func TestSignalIdempotencyKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run, task := e.startClaimed(t, "w", map[string]any{"external_id": "order-1"})
	key := withHeader("Idempotency-Key", "k-1")
	first := e.signal(t, run.RunID, "go", map[string]any{"a": 1, "b": []any{1, 2}}, http.StatusAccepted, key)
	dup := e.signal(t, run.RunID, "go", json.RawMessage(`{"b":[1,2.0],"a":1}`), http.StatusOK, key)
	if !dup.Duplicate || dup.SignalID != first.SignalID || first.Duplicate {
		t.Fatalf("duplicate = %+v, first = %+v", dup, first)
	}
	e.do(t, http.MethodPost, runPath(run.RunID)+"/signals/go", map[string]any{"input": 2}, key).
		wantProblem(t, http.StatusConflict, "idempotency_key_reused", "")
	e.do(t, http.MethodPost, runPath(run.RunID)+"/signals/other", map[string]any{"input": map[string]any{"a": 1, "b": []any{1, 2}}}, key).
		wantProblem(t, http.StatusConflict, "idempotency_key_reused", "")
	// The same key addressed by external_id is another request.
	e.do(t, http.MethodPost, ns+"/workflows/by-external-id/order-1/signals/go", map[string]any{"input": map[string]any{"a": 1, "b": []any{1, 2}}}, key).
		wantProblem(t, http.StatusConflict, "idempotency_key_reused", "")
	byExt := e.signal(t, run.RunID, "go", 1, http.StatusAccepted) // no key: a new signal
	if byExt.Seq != 2 {
		t.Fatalf("second signal seq %d, want 2", byExt.Seq)
	}
	ek := withHeader("Idempotency-Key", "k-2")
	var viaExt signalView
	e.do(t, http.MethodPost, ns+"/workflows/by-external-id/order-1/signals/go", map[string]any{"input": 3}, ek).
		wantStatus(t, http.StatusAccepted).decode(t, &viaExt)
	if viaExt.RunID != run.RunID || viaExt.Seq != 3 {
		t.Fatalf("by external_id = %+v", viaExt)
	}

	e.runCall(t, run.RunID, "complete", lease(task.LeaseID, "output", 1))
	n := e.signalRows(t)
	after := e.signal(t, run.RunID, "go", map[string]any{"a": 1, "b": []any{1, 2}}, http.StatusOK, key)
	if !after.Duplicate || after.SignalID != first.SignalID {
		t.Fatalf("duplicate after the end = %+v", after)
	}
	// The external_id has no live run now, but its key still replays.
	var again signalView
	e.do(t, http.MethodPost, ns+"/workflows/by-external-id/order-1/signals/go", map[string]any{"input": 3}, ek).
		wantStatus(t, http.StatusOK).decode(t, &again)
	if !again.Duplicate || again.SignalID != viaExt.SignalID {
		t.Fatalf("by external_id after the end = %+v", again)
	}
	e.do(t, http.MethodPost, runPath(run.RunID)+"/signals/go", map[string]any{"input": 1}).
		wantProblem(t, http.StatusConflict, "run_finished", "")
	if got := e.signalRows(t); got != n {
		t.Fatalf("signals after refused and duplicate sends: %d, want %d", got, n)
	}
}

// Refused sends (400, 404, 409, 413, 429) write nothing.
func TestRefusedSignalsWriteNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withLimits(func(l *api.Limits) {
		l.Signals.MaxBuffered = 2
		l.Signals.MaxPerRun = 3
		l.Payload.MaxBytes = 1024
	}))
	run, task := e.startClaimed(t, "w", nil)
	e.signal(t, run.RunID, "go", 1, http.StatusAccepted)
	e.signal(t, run.RunID, "go", 2, http.StatusAccepted)
	before := e.checksum(t)
	r := e.do(t, http.MethodPost, runPath(run.RunID)+"/signals/go", map[string]any{"input": 3})
	r.wantProblem(t, http.StatusTooManyRequests, "resource_exhausted", "")
	if r.header.Get("Retry-After") == "" {
		t.Fatal("a full inbox answers no Retry-After")
	}
	e.do(t, http.MethodPost, runPath(run.RunID)+"/signals/go", map[string]any{"input": string(make([]byte, 2048))}).
		wantProblem(t, http.StatusRequestEntityTooLarge, "payload_too_large", "input")
	e.do(t, http.MethodPost, runPath("01900000-0000-7000-8000-000000000001")+"/signals/go", map[string]any{"input": 1}).
		wantProblem(t, http.StatusNotFound, "not_found", "")
	e.do(t, http.MethodPost, ns+"/workflows/by-external-id/nobody/signals/go", map[string]any{"input": 1}).
		wantProblem(t, http.StatusNotFound, "not_found", "")
	e.do(t, http.MethodPost, runPath(run.RunID)+"/signals/kagzi.child%2Fx", map[string]any{"input": 1}).
		wantProblem(t, http.StatusBadRequest, "invalid_argument", "name")
	e.do(t, http.MethodPost, runPath(run.RunID)+"/signals/go", map[string]any{"input": 1}, withHeader("Idempotency-Key", strings.Repeat("k", 257))).
		wantProblem(t, http.StatusBadRequest, "invalid_argument", "Idempotency-Key")
	if after := e.checksum(t); after != before {
		t.Fatal("a refused send changed the database")
	}
	// One consumed, the inbox has room; the third signal is the run's last.
	if w := e.wait(t, run.RunID, task.LeaseID, "a"); !w.Resolved {
		t.Fatalf("wait = %+v", w)
	}
	e.signal(t, run.RunID, "go", 3, http.StatusAccepted)
	r = e.do(t, http.MethodPost, runPath(run.RunID)+"/signals/go", map[string]any{"input": 4})
	r.wantProblem(t, http.StatusTooManyRequests, "resource_exhausted", "")
	e.runCall(t, run.RunID, "fail", lease(task.LeaseID, "error", map[string]any{"message": "m", "non_retryable": true}))
	before = e.checksum(t)
	e.do(t, http.MethodPost, runPath(run.RunID)+"/signals/go", map[string]any{"input": 1}).
		wantProblem(t, http.StatusConflict, "run_finished", "")
	if after := e.checksum(t); after != before {
		t.Fatal("a send to a finished run changed the database")
	}
}

// Concurrent sends and waits on many runs: no run is left parked while a
// signal it waits for is buffered (a lost wake-up).
func TestConcurrentSendWaitLosesNoWakeUp(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const n = 300
	queue := "race"
	for i := 0; i < n; i += 100 {
		items := make([]map[string]any, 100)
		for j := range items {
			items[j] = map[string]any{"workflow_type": "w", "task_queue": queue}
		}
		e.do(t, http.MethodPost, ns+"/workflows/batch", map[string]any{"workflows": items}).wantStatus(t, http.StatusOK)
	}
	var tasks []taskView
	for len(tasks) < n {
		tasks = append(tasks, e.claimTasks(t, queue, map[string]any{"max_tasks": 100, "wait_ms": 1000})...)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for _, task := range tasks {
		wg.Add(2)
		go func() {
			defer wg.Done()
			r, err := e.try(http.MethodPost, runPath(task.RunID)+"/signals/go", map[string]any{"input": 1})
			if err == nil && r.status != http.StatusAccepted {
				err = fmt.Errorf("send: %s", r.short())
			}
			errs <- err
		}()
		go func() {
			defer wg.Done()
			r, err := e.try(http.MethodPost, runPath(task.RunID)+"/steps/w/wait", lease(task.LeaseID, "signals", []string{"go"}))
			if err == nil && r.status != http.StatusOK {
				err = fmt.Errorf("wait: %s", r.short())
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var lost, parked, delivered int
	err := e.pool.QueryRow(context.Background(), `
		SELECT
			(SELECT count(*) FROM workflow_runs r WHERE r.status = 'sleeping' AND r.waiting_for IS NOT NULL
				AND EXISTS (SELECT 1 FROM signals s WHERE s.run_id = r.run_id AND s.status = 'buffered' AND s.name = ANY(r.waiting_for))),
			(SELECT count(*) FROM workflow_runs WHERE status = 'sleeping'),
			(SELECT count(*) FROM signals WHERE status = 'delivered')`).Scan(&lost, &parked, &delivered)
	if err != nil {
		t.Fatal(err)
	}
	if lost != 0 || parked != 0 || delivered != n {
		t.Fatalf("%d runs asleep with a matching signal buffered, %d asleep, %d delivered of %d", lost, parked, delivered, n)
	}
}

// Signals of one name are consumed in the order they were accepted, under
// concurrent senders.
func TestSignalFIFOUnderConcurrentSenders(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run, task := e.startClaimed(t, "w", nil)
	const senders, each = 4, 25
	var wg sync.WaitGroup
	seqs := make([][]int64, senders)
	errs := make(chan error, senders)
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				r, err := e.try(http.MethodPost, runPath(run.RunID)+"/signals/go", map[string]any{"input": []int{s, i}})
				if err != nil || r.status != http.StatusAccepted {
					errs <- fmt.Errorf("send %d/%d: %v %v", s, i, err, r)
					return
				}
				var sg signalView
				if err := json.Unmarshal(r.body, &sg); err != nil {
					errs <- err
					return
				}
				seqs[s] = append(seqs[s], sg.Seq)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	next := make([]int, senders)
	var last int64
	for k := 0; k < senders*each; k++ {
		w := e.wait(t, run.RunID, task.LeaseID, fmt.Sprintf("w%d", k))
		if !w.Resolved || w.Output.Signal == nil {
			t.Fatalf("wait %d = %+v", k, w)
		}
		var si [2]int
		if err := json.Unmarshal(w.Output.Signal.Input, &si); err != nil {
			t.Fatal(err)
		}
		if si[1] != next[si[0]] || w.Output.Signal.Seq <= last {
			t.Fatalf("wait %d got sender %d's #%d (seq %d), want #%d after seq %d", k, si[0], si[1], w.Output.Signal.Seq, next[si[0]], last)
		}
		next[si[0]]++
		last = w.Output.Signal.Seq
	}
}

type signalWithStartView struct {
	Run       runView    `json:"run"`
	Signal    signalView `json:"signal"`
	Started   bool       `json:"started"`
	Duplicate bool       `json:"duplicate"`
}

// 100 concurrent signal-with-start calls start one run, which receives
// all 100 signals.
func TestSignalWithStartStartsOneRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const n = 100
	var wg sync.WaitGroup
	results := make(chan signalWithStartView, n)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := e.try(http.MethodPost, ns+"/workflows/signal-with-start", map[string]any{
				"workflow_type": "w", "external_id": "cart-1", "signal": map[string]any{"name": "add", "input": i}})
			if err != nil {
				errs <- err
				return
			}
			var v signalWithStartView
			if err := json.Unmarshal(r.body, &v); err != nil || (r.status != http.StatusCreated) != (r.status == http.StatusOK && !v.Started) {
				errs <- fmt.Errorf("answer %s (%v)", r.short(), err)
				return
			}
			results <- v
		}()
	}
	wg.Wait()
	close(results)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	started, runs := 0, map[string]bool{}
	for v := range results {
		runs[v.Run.RunID] = true
		if v.Started {
			started++
		}
		if v.Signal.RunID != v.Run.RunID {
			t.Fatalf("signal %+v is not to run %s", v.Signal, v.Run.RunID)
		}
	}
	if started != 1 || len(runs) != 1 || e.countRuns(t) != 1 || e.signalRows(t) != n {
		t.Fatalf("%d started, %d runs answered, %d runs, %d signals; want 1, 1, 1, %d", started, len(runs), e.countRuns(t), e.signalRows(t), n)
	}
}

// A retried signal-with-start with the same key answers the first call,
// and starts nothing even after that run finished.
func TestSignalWithStartIdempotencyKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := map[string]any{"workflow_type": "w", "external_id": "order-9", "input": 1,
		"signal": map[string]any{"name": "pay", "input": map[string]any{"x": 1}}}
	key := withHeader("Idempotency-Key", "sws-1")
	var first, dup signalWithStartView
	e.do(t, http.MethodPost, ns+"/workflows/signal-with-start", body, key).wantStatus(t, http.StatusCreated).decode(t, &first)
	e.do(t, http.MethodPost, ns+"/workflows/signal-with-start", body, key).wantStatus(t, http.StatusOK).decode(t, &dup)
	if !first.Started || first.Duplicate || dup.Started || !dup.Duplicate || dup.Signal.SignalID != first.Signal.SignalID {
		t.Fatalf("first %+v, retry %+v", first, dup)
	}
	task := e.claimOne(t, "default", 5*time.Second)
	e.runCall(t, task.RunID, "complete", lease(task.LeaseID, "output", 1))
	e.do(t, http.MethodPost, ns+"/workflows/signal-with-start", body, key).wantStatus(t, http.StatusOK).decode(t, &dup)
	if dup.Started || !dup.Duplicate || dup.Run.RunID != first.Run.RunID || dup.Run.Status != "completed" {
		t.Fatalf("retry after the end = %+v", dup)
	}
	if got := e.countRuns(t); got != 1 {
		t.Fatalf("%d runs, want 1", got)
	}
	body["signal"] = map[string]any{"name": "pay", "input": 2}
	e.do(t, http.MethodPost, ns+"/workflows/signal-with-start", body, key).wantProblem(t, http.StatusConflict, "idempotency_key_reused", "")
	// Without a key, a new run starts once the first has ended.
	var next signalWithStartView
	e.do(t, http.MethodPost, ns+"/workflows/signal-with-start", body).wantStatus(t, http.StatusCreated).decode(t, &next)
	if !next.Started || next.Run.RunID == first.Run.RunID {
		t.Fatalf("after the end = %+v", next)
	}
	e.do(t, http.MethodPost, ns+"/workflows/signal-with-start", map[string]any{"workflow_type": "w", "signal": map[string]any{"name": "a"}}).
		wantProblem(t, http.StatusBadRequest, "invalid_argument", "external_id")
	e.do(t, http.MethodPost, ns+"/workflows/signal-with-start", map[string]any{"workflow_type": "w", "external_id": "z"}).
		wantProblem(t, http.StatusBadRequest, "invalid_argument", "signal")
}

// Completing or cancelling a run discards its unconsumed signals; a failed
// run keeps them, for a retry to consume.
func TestRunEndDiscardsInbox(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	statusOf := func(runID string) string {
		var page struct {
			Signals []signalView `json:"signals"`
		}
		e.do(t, http.MethodGet, runPath(runID)+"/signals", nil).wantStatus(t, http.StatusOK).decode(t, &page)
		if len(page.Signals) != 1 {
			t.Fatalf("inbox of %s = %+v", runID, page.Signals)
		}
		return page.Signals[0].Status
	}
	done, task := e.startClaimed(t, "w", nil)
	e.signal(t, done.RunID, "go", 1, http.StatusAccepted)
	e.runCall(t, done.RunID, "complete", lease(task.LeaseID, "output", 1))
	if got := statusOf(done.RunID); got != "discarded" {
		t.Errorf("completed run's signal is %s, want discarded", got)
	}
	failed, task := e.startClaimed(t, "w", nil)
	e.signal(t, failed.RunID, "go", 1, http.StatusAccepted)
	e.runCall(t, failed.RunID, "fail", lease(task.LeaseID, "error", map[string]any{"message": "m", "non_retryable": true}))
	if got := statusOf(failed.RunID); got != "buffered" {
		t.Errorf("failed run's signal is %s, want buffered", got)
	}
	cancelled := e.start(t, "w", nil)
	e.signal(t, cancelled.RunID, "go", 1, http.StatusAccepted)
	e.do(t, http.MethodPost, runPath(cancelled.RunID)+"/cancel", nil).wantStatus(t, http.StatusOK)
	if got := statusOf(cancelled.RunID); got != "discarded" {
		t.Errorf("cancelled run's signal is %s, want discarded", got)
	}
}

// Two wait calls of one run on two replicas (a worker retrying on another
// replica, under the same lease) consume a buffered signal once.
func TestSignalConsumedOnceAcrossReplicas(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	second := httptest.NewServer(e.replica(t).API)
	t.Cleanup(second.Close)
	for i := range 20 {
		run, task := e.startClaimed(t, "w", map[string]any{"task_queue": fmt.Sprintf("once-%d", i)})
		e.signal(t, run.RunID, "go", i, http.StatusAccepted)
		body, _ := json.Marshal(lease(task.LeaseID, "signals", []string{"go"}))
		var wg sync.WaitGroup
		for k, base := range []string{e.srv.URL, second.URL} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := http.Post(base+runPath(run.RunID)+fmt.Sprintf("/steps/w%d/wait", k), "application/json", bytes.NewReader(body))
				if err == nil {
					res.Body.Close()
				}
			}()
		}
		wg.Wait()
		var delivered, resolved int
		if err := e.pool.QueryRow(context.Background(), `SELECT
			(SELECT count(*) FROM signals WHERE run_id = $1 AND status = 'delivered'),
			(SELECT count(*) FROM workflow_steps WHERE run_id = $1 AND kind = 'wait' AND status = 'completed')`,
			run.RunID).Scan(&delivered, &resolved); err != nil {
			t.Fatal(err)
		}
		if delivered != 1 || resolved != 1 {
			t.Fatalf("run %d: %d signals delivered, %d waits resolved; want 1 and 1", i, delivered, resolved)
		}
	}
}
