package api_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kagzi/kagzi/api"
	"github.com/kagzi/kagzi/domain"
)

// jsonStringText returns a JSON string literal exactly n bytes long (n >= 2).
func jsonStringText(n int) string {
	return `"` + strings.Repeat("a", n-2) + `"`
}

// startBody is a start request whose input is the JSON text input, as sent.
func startBody(workflowType, input string) string {
	return `{"workflow_type":"` + workflowType + `","input":` + input + `}`
}

func TestStartWorkflowDefaults(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.do(t, http.MethodPost, ns+"/workflows", map[string]any{"workflow_type": "hello"}).wantStatus(t, http.StatusCreated)
	var run runView
	r.decode(t, &run)

	if got, want := r.header.Get("Location"), runPath(run.RunID); got != want {
		t.Errorf("Location: got %q, want %q", got, want)
	}
	if run.AlreadyExists == nil || *run.AlreadyExists {
		t.Errorf("already_exists: got %v, want false", run.AlreadyExists)
	}
	if run.RunID[14] != '7' {
		t.Errorf("run_id %s is not a UUIDv7", run.RunID)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"namespace", run.Namespace, "default"},
		{"task_queue", run.TaskQueue, "default"},
		{"workflow_type", run.WorkflowType, "hello"},
		{"status", run.Status, "pending"},
		{"attempt", run.Attempt, 0},
		{"external_id", run.ExternalID, (*string)(nil)},
		{"version", run.Version, (*string)(nil)},
		{"worker_id", run.WorkerID, (*string)(nil)},
		{"lease_expires_at", run.LeaseExpiresAt, (*time.Time)(nil)},
		{"started_at", run.StartedAt, (*time.Time)(nil)},
		{"finished_at", run.FinishedAt, (*time.Time)(nil)},
		{"error", string(run.Error), "null"},
		{"input (absent from the start response)", run.Input, json.RawMessage(nil)},
		{"retry_policy", fmt.Sprintf("%+v", run.RetryPolicy), fmt.Sprintf("%+v", retryPolicy{
			MaxAttempts: 5, InitialIntervalMS: 1000, BackoffCoefficient: 2, MaxIntervalMS: 300000,
			NonRetryableErrorTypes: []string{},
		})},
		{"available_at", run.AvailableAt, run.CreatedAt}, // claimable at once
	}
	for _, c := range checks {
		if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	if d := time.Since(run.CreatedAt); d < -time.Minute || d > time.Minute {
		t.Errorf("created_at %s is not now", run.CreatedAt)
	}
	if run.CreatedAt.Location() != time.UTC {
		t.Errorf("created_at %s is not in UTC", run.CreatedAt)
	}

	// The Location names the run, which now carries its (null) payloads.
	var got runView
	e.do(t, http.MethodGet, r.header.Get("Location"), nil).wantStatus(t, http.StatusOK).decode(t, &got)
	if got.RunID != run.RunID || string(got.Input) != "null" || string(got.Output) != "null" || got.AlreadyExists != nil {
		t.Errorf("GET Location: got run %s input %s output %s already_exists %v; want run %s, null payloads, no already_exists",
			got.RunID, got.Input, got.Output, got.AlreadyExists, run.RunID)
	}
}

func TestStartWorkflowFields(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const input = `{"order":[1,2,3],"note":"ünïcode"}`
	body := `{"workflow_type":"ship-order","task_queue":"emails.v2","input":` + input + `,` +
		`"external_id":"order-1","version":"v1.2","retry_policy":{"max_attempts":3,"non_retryable_error_types":["Fatal"]}}`
	var run runView
	e.do(t, http.MethodPost, ns+"/workflows", body).wantStatus(t, http.StatusCreated).decode(t, &run)
	got := e.get(t, run.RunID)
	if got.TaskQueue != "emails.v2" || got.WorkflowType != "ship-order" {
		t.Errorf("queue and type: got %q %q, want emails.v2 ship-order", got.TaskQueue, got.WorkflowType)
	}
	if got.ExternalID == nil || *got.ExternalID != "order-1" {
		t.Errorf("external_id: got %v, want order-1", got.ExternalID)
	}
	if got.Version == nil || *got.Version != "v1.2" {
		t.Errorf("version: got %v, want v1.2", got.Version)
	}
	if string(got.Input) != input {
		t.Errorf("input: got %s, want %s", got.Input, input)
	}
	want := retryPolicy{MaxAttempts: 3, InitialIntervalMS: 1000, BackoffCoefficient: 2, MaxIntervalMS: 300000,
		NonRetryableErrorTypes: []string{"Fatal"}}
	if fmt.Sprintf("%+v", got.RetryPolicy) != fmt.Sprintf("%+v", want) {
		t.Errorf("retry_policy: got %+v, want %+v (omitted members take the defaults)", got.RetryPolicy, want)
	}
}

func TestStartWorkflowSchedule(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	delayed := e.start(t, "later", map[string]any{"start_delay_ms": 60000})
	if got, want := delayed.AvailableAt.Sub(delayed.CreatedAt), time.Minute; got != want {
		t.Errorf("start_delay_ms 60000: available_at - created_at: got %s, want %s", got, want)
	}

	at := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
	scheduled := e.start(t, "later", map[string]any{"start_at": at.Format(time.RFC3339Nano)})
	if !scheduled.AvailableAt.Equal(at) {
		t.Errorf("start_at: available_at got %s, want %s", scheduled.AvailableAt, at)
	}
	if !scheduled.AvailableAt.After(scheduled.CreatedAt) {
		t.Errorf("start_at: available_at %s is not after created_at %s", scheduled.AvailableAt, scheduled.CreatedAt)
	}

	e.do(t, http.MethodPost, ns+"/workflows", map[string]any{
		"workflow_type": "later", "start_at": at.Format(time.RFC3339Nano), "start_delay_ms": 1000,
	}).wantProblem(t, http.StatusBadRequest, "invalid_argument", "start_at")
	e.do(t, http.MethodPost, ns+"/workflows", map[string]any{"workflow_type": "later", "start_delay_ms": -1}).
		wantProblem(t, http.StatusBadRequest, "invalid_argument", "start_delay_ms")
	if got, want := e.countRuns(t), 2; got != want {
		t.Errorf("runs: got %d, want %d (refused starts create nothing)", got, want)
	}
}

func TestStartWorkflowIdempotentUnderConcurrency(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const n = 20
	body := map[string]any{"workflow_type": "charge", "external_id": "payment-42"}
	type result struct {
		r   *resp
		err error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	ready := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-ready
			r, err := e.try(http.MethodPost, ns+"/workflows", body)
			results[i] = result{r, err}
		}()
	}
	close(ready)
	wg.Wait()

	created, existed := 0, 0
	runIDs := map[string]int{}
	for _, res := range results {
		if res.err != nil {
			t.Fatal(res.err)
		}
		var run runView
		res.r.decode(t, &run)
		runIDs[run.RunID]++
		switch {
		case res.r.status == http.StatusCreated && !*run.AlreadyExists:
			created++
		case res.r.status == http.StatusOK && *run.AlreadyExists:
			existed++
		default:
			t.Errorf("got status %d with already_exists %v", res.r.status, *run.AlreadyExists)
		}
	}
	if created != 1 || existed != n-1 {
		t.Errorf("got %d created (201) and %d already existing (200), want 1 and %d", created, existed, n-1)
	}
	if len(runIDs) != 1 {
		t.Errorf("got %d distinct run IDs, want 1: %v", len(runIDs), runIDs)
	}
	if got := e.countRuns(t); got != 1 {
		t.Errorf("runs in the database: got %d, want 1", got)
	}

	// Once the run is terminal, its external ID starts a new run.
	var first string
	for id := range runIDs {
		first = id
	}
	e.do(t, http.MethodPost, runPath(first)+"/cancel", nil).wantStatus(t, http.StatusOK)
	r := e.do(t, http.MethodPost, ns+"/workflows", body).wantStatus(t, http.StatusCreated)
	var again runView
	r.decode(t, &again)
	if again.RunID == first || *again.AlreadyExists {
		t.Errorf("start after cancel: got run %s (already_exists %v), want a new run", again.RunID, *again.AlreadyExists)
	}
	// And the same ID in another namespace is another run.
	r = e.do(t, http.MethodPost, "/v1/namespaces/other/workflows", body).wantStatus(t, http.StatusCreated)
	var other runView
	r.decode(t, &other)
	if other.RunID == again.RunID || other.Namespace != "other" {
		t.Errorf("start in namespace other: got run %s in %s, want a new run there", other.RunID, other.Namespace)
	}
}

func TestStartInputAtLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	input := jsonStringText(domain.DefaultPayloadMaxBytes)
	if len(input) != 2097152 {
		t.Fatalf("input is %d bytes, want 2097152", len(input))
	}
	var run runView
	e.do(t, http.MethodPost, ns+"/workflows", startBody("big", input)).wantStatus(t, http.StatusCreated).decode(t, &run)
	got := e.get(t, run.RunID)
	if !bytes.Equal(got.Input, []byte(input)) {
		t.Errorf("stored input: got %d bytes, want the %d bytes sent, byte for byte", len(got.Input), len(input))
	}
	warnings := e.logs.find(t, "large payload", map[string]any{"run_id": run.RunID, "field": "input", "size_bytes": 2097152})
	if len(warnings) != 1 {
		t.Errorf("got %d large-payload warnings for run %s, want 1; log:\n%s", len(warnings), run.RunID, e.logs)
	} else if warnings[0]["level"] != "WARN" {
		t.Errorf("large-payload record level: got %v, want WARN", warnings[0]["level"])
	}
}

func TestStartInputOverLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := e.do(t, http.MethodPost, ns+"/workflows", startBody("big", jsonStringText(domain.DefaultPayloadMaxBytes+1))).
		wantProblem(t, http.StatusRequestEntityTooLarge, "payload_too_large", "input")
	if !strings.Contains(p.Detail, "2097153") || !strings.Contains(p.Detail, "2097152") {
		t.Errorf("detail %q does not give the size and the limit", p.Detail)
	}
	if got := e.countRuns(t); got != 0 {
		t.Errorf("runs in the database: got %d, want 0", got)
	}
	if page := e.list(t, nil); len(page.Workflows) != 0 {
		t.Errorf("list: got %d runs, want none", len(page.Workflows))
	}
	if w := e.logs.find(t, "large payload", nil); len(w) != 0 {
		t.Errorf("a refused payload was logged as accepted: %v", w)
	}
}

func TestStartInputWarningThreshold(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var at, over runView
	e.do(t, http.MethodPost, ns+"/workflows", startBody("mid", jsonStringText(domain.DefaultPayloadWarnBytes))).
		wantStatus(t, http.StatusCreated).decode(t, &at)
	e.do(t, http.MethodPost, ns+"/workflows", startBody("mid", jsonStringText(domain.DefaultPayloadWarnBytes+1))).
		wantStatus(t, http.StatusCreated).decode(t, &over)
	if w := e.logs.find(t, "large payload", map[string]any{"run_id": at.RunID}); len(w) != 0 {
		t.Errorf("an input of exactly the warning threshold (1048576 bytes) was logged: %v", w)
	}
	w := e.logs.find(t, "large payload", map[string]any{"run_id": over.RunID, "field": "input", "size_bytes": 1048577})
	if len(w) != 1 {
		t.Errorf("got %d warnings for an input of 1048577 bytes, want 1; log:\n%s", len(w), e.logs)
	}
}

func TestBatchAllOrNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	item := func(typ, input string) string { return startBody(typ, input) }
	items := func(list ...string) string { return `{"workflows":[` + strings.Join(list, ",") + `]}` }

	t.Run("item over the payload limit", func(t *testing.T) {
		body := items(item("a", "1"), item("b", "2"), item("c", "3"),
			item("d", jsonStringText(domain.DefaultPayloadMaxBytes+1)), item("e", "5"))
		e.do(t, http.MethodPost, ns+"/workflows/batch", body).
			wantProblem(t, http.StatusRequestEntityTooLarge, "payload_too_large", "workflows[3].input")
	})
	t.Run("item with a bad name", func(t *testing.T) {
		body := items(item("a", "1"), item("b", "2"), `{"workflow_type":""}`, item("d", "4"), item("e", "5"))
		e.do(t, http.MethodPost, ns+"/workflows/batch", body).
			wantProblem(t, http.StatusBadRequest, "invalid_argument", "workflows[2].workflow_type")
	})
	t.Run("item with a bad nested value", func(t *testing.T) {
		body := items(item("a", "1"), `{"workflow_type":"b","retry_policy":{"max_attempts":0}}`)
		e.do(t, http.MethodPost, ns+"/workflows/batch", body).
			wantProblem(t, http.StatusBadRequest, "invalid_argument", "workflows[1].retry_policy.max_attempts")
	})
	if got := e.countRuns(t); got != 0 {
		t.Errorf("runs in the database after refused batches: got %d, want 0", got)
	}
}

// countingReader yields a JSON start request that never ends (a string
// input of n bytes in all) and counts the bytes read from it.
type countingReader struct {
	read atomic.Int64
	n    int64
}

const countingHead = `{"workflow_type":"flood","input":"`

func (c *countingReader) Read(p []byte) (int, error) {
	off := c.read.Load()
	if off >= c.n {
		return 0, io.EOF
	}
	k := min(int64(len(p)), c.n-off)
	for i := range k {
		if j := off + i; j < int64(len(countingHead)) {
			p[i] = countingHead[j]
		} else {
			p[i] = 'a'
		}
	}
	c.read.Add(k)
	return int(k), nil
}

func TestStartBodyOverCapIsNotBuffered(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const size = 40 << 20
	for _, declared := range []bool{true, false} {
		body := &countingReader{n: size}
		opts := []reqOption{}
		if declared {
			opts = append(opts, withContentLength(size))
		}
		start := time.Now()
		r := e.do(t, http.MethodPost, ns+"/workflows", body, opts...)
		consumed, elapsed := body.read.Load(), time.Since(start)
		p := r.wantProblem(t, http.StatusRequestEntityTooLarge, "payload_too_large", "")
		// The server reads one payload plus 64 KiB; the rest of what was
		// consumed sat in socket buffers when the answer came.
		if consumed > 16<<20 {
			t.Errorf("Content-Length declared %v: %d bytes of the 40 MiB body were consumed before the answer; want far fewer", declared, consumed)
		}
		if elapsed > 10*time.Second {
			t.Errorf("Content-Length declared %v: the 413 took %s", declared, elapsed)
		}
		t.Logf("Content-Length declared %v: 413 after %s, %d bytes consumed: %s", declared, elapsed, consumed, p.Detail)
	}
	if got := e.countRuns(t); got != 0 {
		t.Errorf("runs in the database: got %d, want 0", got)
	}
}

func TestBatchBodyOverCap(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withLimits(func(l *api.Limits) { l.MaxBatchBytes = 3 << 20 }))
	// Two items each under the payload limit, together over the body cap.
	item := startBody("a", jsonStringText(1_900_000))
	body := `{"workflows":[` + item + `,` + item + `]}`
	e.do(t, http.MethodPost, ns+"/workflows/batch", body).
		wantProblem(t, http.StatusRequestEntityTooLarge, "payload_too_large", "")
	if got := e.countRuns(t); got != 0 {
		t.Errorf("runs in the database: got %d, want 0", got)
	}
}

type batchResult struct {
	RunID         string `json:"run_id"`
	Status        string `json:"status"`
	AlreadyExists bool   `json:"already_exists"`
}

type batchResponse struct {
	Workflows []batchResult `json:"workflows"`
}

func TestBatchStart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	live := e.start(t, "pay", map[string]any{"external_id": "live"})
	done := e.start(t, "pay", map[string]any{"external_id": "done"})
	e.do(t, http.MethodPost, runPath(done.RunID)+"/cancel", nil).wantStatus(t, http.StatusOK)
	at := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)

	body := map[string]any{"workflows": []map[string]any{
		{"workflow_type": "t0", "external_id": "dup", "input": map[string]any{"i": 0}},
		{"workflow_type": "t1", "external_id": "live"},
		{"workflow_type": "t2", "external_id": "dup"},
		{"workflow_type": "t3", "external_id": "done", "task_queue": "q3"},
		{"workflow_type": "t4", "start_delay_ms": 60000},
		{"workflow_type": "t5", "start_at": at.Format(time.RFC3339Nano), "input": jsonStringText(domain.DefaultPayloadWarnBytes + 1)},
	}}
	var res batchResponse
	e.do(t, http.MethodPost, ns+"/workflows/batch", body).wantStatus(t, http.StatusOK).decode(t, &res)
	if len(res.Workflows) != 6 {
		t.Fatalf("got %d results, want 6", len(res.Workflows))
	}
	r := res.Workflows
	wantExists := []bool{false, true, true, false, false, false}
	for i, w := range wantExists {
		if r[i].AlreadyExists != w || r[i].Status != "pending" {
			t.Errorf("result %d: got already_exists %v status %s, want %v pending", i, r[i].AlreadyExists, r[i].Status, w)
		}
	}
	if r[1].RunID != live.RunID {
		t.Errorf("result 1: got run %s, want the live run %s", r[1].RunID, live.RunID)
	}
	if r[2].RunID != r[0].RunID {
		t.Errorf("result 2: got run %s, want item 0's run %s (same external_id in one batch)", r[2].RunID, r[0].RunID)
	}
	if r[3].RunID == done.RunID {
		t.Errorf("result 3: the cancelled run's external_id was reused rather than a new run started")
	}
	// Results are in request order: each created run is the item's.
	for _, i := range []int{0, 3, 4, 5} {
		if got := e.get(t, r[i].RunID); got.WorkflowType != fmt.Sprintf("t%d", i) {
			t.Errorf("result %d: run %s has workflow_type %s, want t%d", i, r[i].RunID, got.WorkflowType, i)
		}
	}
	if got := e.get(t, r[0].RunID); string(got.Input) != `{"i":0}` {
		t.Errorf("item 0 input: got %s, want {\"i\":0}", got.Input)
	}
	if got := e.get(t, r[3].RunID); got.TaskQueue != "q3" {
		t.Errorf("item 3 task_queue: got %s, want q3", got.TaskQueue)
	}
	if got := e.get(t, r[4].RunID); got.AvailableAt.Sub(got.CreatedAt) != time.Minute {
		t.Errorf("item 4: available_at - created_at: got %s, want 1m", got.AvailableAt.Sub(got.CreatedAt))
	}
	if got := e.get(t, r[5].RunID); !got.AvailableAt.Equal(at) {
		t.Errorf("item 5: available_at got %s, want %s", got.AvailableAt, at)
	}
	if w := e.logs.find(t, "large payload", map[string]any{"run_id": r[5].RunID, "field": "workflows[5].input"}); len(w) != 1 {
		t.Errorf("got %d large-payload warnings for item 5, want 1; log:\n%s", len(w), e.logs)
	}
	// Two runs before, four created by the batch.
	if got := e.countRuns(t); got != 6 {
		t.Errorf("runs in the database: got %d, want 6", got)
	}
}

func TestBatchSize(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	items := func(n int) map[string]any {
		list := make([]map[string]any, n)
		for i := range list {
			list[i] = map[string]any{"workflow_type": "bulk"}
		}
		return map[string]any{"workflows": list}
	}
	for _, body := range []any{items(0), items(e.limits.MaxBatch + 1), `{}`, `{"workflows":null}`} {
		e.do(t, http.MethodPost, ns+"/workflows/batch", body).wantProblem(t, http.StatusBadRequest, "invalid_argument", "workflows")
	}
	if got := e.countRuns(t); got != 0 {
		t.Fatalf("runs after refused batches: got %d, want 0", got)
	}
	var res batchResponse
	e.do(t, http.MethodPost, ns+"/workflows/batch", items(e.limits.MaxBatch)).wantStatus(t, http.StatusOK).decode(t, &res)
	if got := len(res.Workflows); got != e.limits.MaxBatch {
		t.Errorf("results of a full batch: got %d, want %d", got, e.limits.MaxBatch)
	}
	if got := e.countRuns(t); got != e.limits.MaxBatch {
		t.Errorf("runs after a full batch: got %d, want %d", got, e.limits.MaxBatch)
	}
}

func TestGetWorkflowErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run := e.start(t, "x", nil)
	cases := []struct {
		path        string
		status      int
		code, field string
	}{
		{runPath("0190a5d0-ac96-774b-bcce-b302099a8057"), 404, "not_found", ""},
		{runPath("not-a-uuid"), 400, "invalid_argument", "run_id"},
		{"/v1/namespaces/other/workflows/" + run.RunID, 404, "not_found", ""},
		{"/v1/namespaces/other/workflows/" + run.RunID + "?wait_ms=4000", 404, "not_found", ""},
		{runPath(run.RunID) + "?wait_ms=abc", 400, "invalid_argument", "wait_ms"},
		{runPath(run.RunID) + "?wait_ms=-1", 400, "invalid_argument", "wait_ms"},
		{runPath(run.RunID) + "?wait=10", 400, "invalid_argument", "wait"},
	}
	for _, c := range cases {
		start := time.Now()
		e.do(t, http.MethodGet, c.path, nil).wantProblem(t, c.status, c.code, c.field)
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("GET %s took %s; an error answers at once, whatever wait_ms says", c.path, d)
		}
	}
}

func TestGetWorkflowWaitWakesOnCancel(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run := e.start(t, "slow", nil)
	reads := e.watchGets(t, run.RunID)

	type result struct {
		r       *resp
		err     error
		elapsed time.Duration
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		r, err := e.try(http.MethodGet, runPath(run.RunID)+"?wait_ms=4000", nil)
		done <- result{r, err, time.Since(start)}
	}()
	// The handler watches the run, then reads it: once it has read it
	// pending, it waits, and the cancel below must wake it.
	select {
	case got := <-reads:
		if got.Status != domain.RunPending {
			t.Fatalf("first read: got status %s, want pending", got.Status)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the long-poll never read the run")
	}
	e.do(t, http.MethodPost, runPath(run.RunID)+"/cancel", nil).wantStatus(t, http.StatusOK)

	var res result
	select {
	case res = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the long-poll did not answer within 10s")
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	var got runView
	res.r.wantStatus(t, http.StatusOK).decode(t, &got)
	if got.Status != "cancelled" || got.FinishedAt == nil {
		t.Errorf("long-poll answer: got status %s finished_at %v, want cancelled with finished_at", got.Status, got.FinishedAt)
	}
	if res.elapsed >= 3*time.Second {
		t.Errorf("the long-poll answered after %s; want well before its 4s wait", res.elapsed)
	}
}

func TestGetWorkflowWaitBounds(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withLimits(func(l *api.Limits) { l.MaxWait = 300 * time.Millisecond }))
	pending := e.start(t, "idle", nil)
	done := e.start(t, "idle", nil)
	e.do(t, http.MethodPost, runPath(done.RunID)+"/cancel", nil).wantStatus(t, http.StatusOK)

	cases := []struct {
		name     string
		path     string
		status   string
		min, max time.Duration
	}{
		// Upper bounds only guard against hangs: each is well under the
		// wait the request asks for.
		{"terminal run answers at once", runPath(done.RunID) + "?wait_ms=4000", "cancelled", 0, 3 * time.Second},
		{"wait ends", runPath(pending.RunID) + "?wait_ms=100", "pending", 100 * time.Millisecond, 3 * time.Second},
		{"wait is capped at the max wait", runPath(pending.RunID) + "?wait_ms=60000", "pending", 300 * time.Millisecond, 3 * time.Second},
		{"no wait", runPath(pending.RunID) + "?wait_ms=0", "pending", 0, 3 * time.Second},
	}
	for _, c := range cases {
		start := time.Now()
		var got runView
		e.do(t, http.MethodGet, c.path, nil).wantStatus(t, http.StatusOK).decode(t, &got)
		elapsed := time.Since(start)
		if got.Status != c.status {
			t.Errorf("%s: status got %s, want %s", c.name, got.Status, c.status)
		}
		if elapsed < c.min || elapsed > c.max {
			t.Errorf("%s: answered after %s, want between %s and %s", c.name, elapsed, c.min, c.max)
		}
	}
}

func ids(runs []runView) []string {
	out := make([]string, len(runs))
	for i, r := range runs {
		out[i] = r.RunID
	}
	return out
}

func TestListWorkflows(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.start(t, "A", map[string]any{"task_queue": "q1", "external_id": "e1", "input": map[string]any{"secret": 1}})
	b := e.start(t, "B", map[string]any{"task_queue": "q2"})
	c := e.start(t, "A", map[string]any{"task_queue": "q2"})
	d := e.start(t, "D", nil)
	e.do(t, http.MethodPost, runPath(b.RunID)+"/cancel", nil).wantStatus(t, http.StatusOK)
	e.setStatus(t, c.RunID, "completed")
	other := httpPost(t, e, "/v1/namespaces/other/workflows", map[string]any{"workflow_type": "A"})

	all := e.list(t, nil)
	if got, want := ids(all.Workflows), []string{d.RunID, c.RunID, b.RunID, a.RunID}; !slices.Equal(got, want) {
		t.Errorf("list: got %v, want newest first %v (and nothing of namespace other, %s)", got, want, other)
	}
	if all.NextCursor != nil {
		t.Errorf("next_cursor of the only page: got %q, want null", *all.NextCursor)
	}
	for _, r := range all.Workflows {
		if r.Input != nil || r.Output != nil {
			t.Errorf("list item %s carries input or output", r.RunID)
		}
	}
	for i := 1; i < len(all.Workflows); i++ {
		if all.Workflows[i].CreatedAt.After(all.Workflows[i-1].CreatedAt) {
			t.Errorf("list item %d was created after item %d", i, i-1)
		}
	}

	filters := []struct {
		query url.Values
		want  []string
	}{
		{url.Values{"status": {"cancelled"}}, []string{b.RunID}},
		{url.Values{"status": {"pending,completed"}}, []string{d.RunID, c.RunID, a.RunID}},
		{url.Values{"status": {"completed, cancelled"}}, []string{c.RunID, b.RunID}},
		{url.Values{"status": {"pending,pending"}}, []string{d.RunID, a.RunID}},
		{url.Values{"status": {"failed"}}, []string{}},
		{url.Values{"task_queue": {"q2"}}, []string{c.RunID, b.RunID}},
		{url.Values{"workflow_type": {"A"}}, []string{c.RunID, a.RunID}},
		{url.Values{"external_id": {"e1"}}, []string{a.RunID}},
		{url.Values{"external_id": {"nope"}}, []string{}},
		{url.Values{"workflow_type": {"A"}, "status": {"pending"}, "task_queue": {"q1"}}, []string{a.RunID}},
	}
	for _, f := range filters {
		if got := ids(e.list(t, f.query).Workflows); !slices.Equal(got, f.want) {
			t.Errorf("list ?%s: got %v, want %v", f.query.Encode(), got, f.want)
		}
	}

	// Several statuses, a page at a time, come newest first across them.
	var paged []string
	for q := (url.Values{"status": {"cancelled,pending,completed"}, "limit": {"1"}}); ; {
		page := e.list(t, q)
		paged = append(paged, ids(page.Workflows)...)
		if page.NextCursor == nil {
			break
		}
		q.Set("cursor", *page.NextCursor)
	}
	if want := []string{d.RunID, c.RunID, b.RunID, a.RunID}; !slices.Equal(paged, want) {
		t.Errorf("status=cancelled,pending,completed one by one: got %v, want %v", paged, want)
	}

	bad := []struct{ query, field string }{
		{"status=bogus", "status"},
		{"status=pending,,running", "status"},
		{"task_queue=bad%20name!", "task_queue"},
		{"workflow_type=a%00b", "workflow_type"},
		{"limit=0", "limit"},
		{"limit=501", "limit"},
		{"limit=ten", "limit"},
		{"cursor=!!!", "cursor"},
		{"cursor=" + base64.RawURLEncoding.EncodeToString([]byte("not-a-uuid")), "cursor"},
		{"sort=asc", "sort"},
	}
	for _, q := range bad {
		e.do(t, http.MethodGet, ns+"/workflows?"+q.query, nil).wantProblem(t, http.StatusBadRequest, "invalid_argument", q.field)
	}
	if got := len(e.list(t, url.Values{"limit": {"500"}}).Workflows); got != 4 {
		t.Errorf("limit=500: got %d runs, want 4", got)
	}
}

// httpPost starts a run through any path and returns its ID.
func httpPost(t *testing.T, e *env, path string, body any) string {
	t.Helper()
	var run runView
	e.do(t, http.MethodPost, path, body).wantStatus(t, http.StatusCreated).decode(t, &run)
	return run.RunID
}

func TestListWorkflowsPaginationWhileStarting(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var before []string
	for i := range 25 {
		before = append(before, e.start(t, fmt.Sprintf("w%d", i), nil).RunID)
	}

	page := e.list(t, url.Values{"limit": {"7"}})
	// From now on runs are started while the pages are read: by a
	// goroutine, and once between any two page reads. The goroutine stops
	// between requests, never in the middle of one.
	stop := make(chan struct{})
	var (
		mu      sync.Mutex
		started []string
		errs    []error
		wg      sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			r, err := e.try(http.MethodPost, ns+"/workflows", map[string]any{"workflow_type": "late"})
			var run runView
			if err == nil {
				err = json.Unmarshal(r.body, &run)
			}
			mu.Lock()
			if err != nil {
				errs = append(errs, err)
			} else {
				started = append(started, run.RunID)
			}
			mu.Unlock()
		}
	}()

	seen := map[string]int{}
	pages := 1
	var later []string // runs on pages after the first
	for _, id := range ids(page.Workflows) {
		seen[id]++
	}
	for page.NextCursor != nil {
		late := e.start(t, "late", nil).RunID
		mu.Lock()
		started = append(started, late)
		mu.Unlock()
		page = e.list(t, url.Values{"limit": {"7"}, "cursor": {*page.NextCursor}})
		pages++
		for _, id := range ids(page.Workflows) {
			seen[id]++
			later = append(later, id)
		}
		if pages > 10 {
			t.Fatal("more than 10 pages for 25 runs")
		}
	}
	close(stop)
	wg.Wait()
	for _, err := range errs {
		t.Errorf("concurrent start: %v", err)
	}

	if pages != 4 {
		t.Errorf("pages: got %d, want 4 (25 runs, 7 a page)", pages)
	}
	for _, id := range before {
		if seen[id] != 1 {
			t.Errorf("run %s, there before page 1, was seen %d times, want once", id, seen[id])
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("run %s was seen %d times", id, n)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(started) < pages-1 {
		t.Errorf("only %d runs were started while paginating", len(started))
	}
	for _, id := range later {
		if slices.Contains(started, id) {
			t.Errorf("run %s, started after page 1 was read, appeared on a later page", id)
		}
	}
}

func TestCancelWorkflow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run := e.start(t, "x", nil)

	var first, second runView
	e.do(t, http.MethodPost, runPath(run.RunID)+"/cancel", nil).wantStatus(t, http.StatusOK).decode(t, &first)
	if first.Status != "cancelled" || first.FinishedAt == nil || string(first.Input) != "null" {
		t.Errorf("cancel: got status %s finished_at %v input %s, want cancelled, finished, with its input",
			first.Status, first.FinishedAt, first.Input)
	}
	e.do(t, http.MethodPost, runPath(run.RunID)+"/cancel", nil).wantStatus(t, http.StatusOK).decode(t, &second)
	if second.Status != "cancelled" || second.FinishedAt == nil || !second.FinishedAt.Equal(*first.FinishedAt) {
		t.Errorf("cancel again: got status %s finished_at %v, want cancelled at %v as before", second.Status, second.FinishedAt, first.FinishedAt)
	}
	if got := e.get(t, run.RunID); got.Status != "cancelled" {
		t.Errorf("GET after cancel: status %s, want cancelled", got.Status)
	}

	sleeping := e.start(t, "x", nil)
	e.setStatus(t, sleeping.RunID, "sleeping")
	var got runView
	e.do(t, http.MethodPost, runPath(sleeping.RunID)+"/cancel", `{}`).wantStatus(t, http.StatusOK).decode(t, &got)
	if got.Status != "cancelled" {
		t.Errorf("cancel a sleeping run with body {}: got %s, want cancelled", got.Status)
	}

	for _, status := range []string{"completed", "failed"} {
		r := e.start(t, "x", nil)
		e.setStatus(t, r.RunID, status)
		e.do(t, http.MethodPost, runPath(r.RunID)+"/cancel", nil).wantProblem(t, http.StatusConflict, "conflict", "")
		if got := e.get(t, r.RunID); got.Status != status {
			t.Errorf("a refused cancel changed a %s run to %s", status, got.Status)
		}
	}

	live := e.start(t, "x", nil)
	e.do(t, http.MethodPost, runPath(live.RunID)+"/cancel", `{"reason":"x"}`).wantProblem(t, http.StatusBadRequest, "invalid_argument", "reason")
	e.do(t, http.MethodPost, runPath(live.RunID)+"/cancel", `please`, withContentType("text/plain")).
		wantProblem(t, http.StatusUnsupportedMediaType, "unsupported_media_type", "")
	e.do(t, http.MethodPost, runPath(live.RunID)+"/cancel", `{"`+strings.Repeat("a", 2000)+`":1}`).
		wantProblem(t, http.StatusRequestEntityTooLarge, "payload_too_large", "")
	e.do(t, http.MethodPost, "/v1/namespaces/other/workflows/"+live.RunID+"/cancel", nil).wantProblem(t, http.StatusNotFound, "not_found", "")
	e.do(t, http.MethodPost, runPath("0190a5d0-ac96-774b-bcce-b302099a8057")+"/cancel", nil).wantProblem(t, http.StatusNotFound, "not_found", "")
	e.do(t, http.MethodPost, runPath("123")+"/cancel", nil).wantProblem(t, http.StatusBadRequest, "invalid_argument", "run_id")
	if got := e.get(t, live.RunID); got.Status != "pending" {
		t.Errorf("refused cancels changed the run to %s", got.Status)
	}
}

func TestCancelRunningWorkflow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run := e.start(t, "x", nil)
	var claimed struct {
		Tasks []struct {
			RunID   string `json:"run_id"`
			LeaseID string `json:"lease_id"`
		} `json:"tasks"`
	}
	e.do(t, http.MethodPost, ns+"/task-queues/default/claim", map[string]any{"wait_ms": 0}).
		wantStatus(t, http.StatusOK).decode(t, &claimed)
	if len(claimed.Tasks) != 1 || claimed.Tasks[0].RunID != run.RunID {
		t.Fatalf("claim: got %+v, want run %s", claimed.Tasks, run.RunID)
	}
	if got := e.get(t, run.RunID); got.Status != "running" {
		t.Fatalf("claimed run is %s, want running", got.Status)
	}
	var got runView
	e.do(t, http.MethodPost, runPath(run.RunID)+"/cancel", nil).wantStatus(t, http.StatusOK).decode(t, &got)
	if got.Status != "cancelled" || got.LeaseExpiresAt != nil {
		t.Errorf("cancel a running run: got status %s lease_expires_at %v, want cancelled with no lease", got.Status, got.LeaseExpiresAt)
	}
	// The worker learns of it from its next call.
	e.do(t, http.MethodPost, runPath(run.RunID)+"/heartbeat", map[string]any{"lease_id": claimed.Tasks[0].LeaseID}).
		wantProblem(t, http.StatusConflict, "cancelled", "")
}

func TestListSteps(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	empty := e.start(t, "x", nil)
	r := e.do(t, http.MethodGet, runPath(empty.RunID)+"/steps", nil).wantStatus(t, http.StatusOK)
	if got := string(bytes.TrimSpace(r.body)); got != `{"steps":[],"next_cursor":null}` {
		t.Errorf("steps of a run with none: got %s, want {\"steps\":[],\"next_cursor\":null}", got)
	}
	e.do(t, http.MethodGet, runPath("0190a5d0-ac96-774b-bcce-b302099a8057")+"/steps", nil).wantProblem(t, http.StatusNotFound, "not_found", "")
	e.do(t, http.MethodGet, "/v1/namespaces/other/workflows/"+empty.RunID+"/steps", nil).wantProblem(t, http.StatusNotFound, "not_found", "")
	e.do(t, http.MethodGet, runPath("zzz")+"/steps", nil).wantProblem(t, http.StatusBadRequest, "invalid_argument", "run_id")

	// Every attempt, in the order they began (not by name).
	run := e.start(t, "x", nil)
	_, err := e.pool.Exec(context.Background(), `
INSERT INTO workflow_steps (run_id, name, attempt, kind, status, input, output, error, retry_at, finished_at) VALUES
	($1, 'fetch', 1, 'function', 'failed', '{"url":"u"}', NULL, '{"message":"boom","type":"IO","non_retryable":false,"details":null}', now(), now())`,
		run.RunID)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.pool.Exec(context.Background(), `
INSERT INTO workflow_steps (run_id, name, attempt, kind, status, input, output, wake_up_at, finished_at) VALUES
	($1, 'fetch', 2, 'function', 'completed', '{"url":"u"}', '[1, 2]', NULL, now())`, run.RunID)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.pool.Exec(context.Background(), `
INSERT INTO workflow_steps (run_id, name, attempt, kind, status, wake_up_at) VALUES
	($1, 'a-nap', 1, 'sleep', 'running', now() + interval '1 hour')`, run.RunID)
	if err != nil {
		t.Fatal(err)
	}
	var steps struct {
		Steps []struct {
			Name    string          `json:"name"`
			Kind    string          `json:"kind"`
			Attempt int             `json:"attempt"`
			Status  string          `json:"status"`
			Output  json.RawMessage `json:"output"`
			Error   json.RawMessage `json:"error"`
			RunID   string          `json:"run_id"`
		} `json:"steps"`
	}
	e.do(t, http.MethodGet, runPath(run.RunID)+"/steps", nil).wantStatus(t, http.StatusOK).decode(t, &steps)
	var got []string
	for _, s := range steps.Steps {
		got = append(got, fmt.Sprintf("%s/%d/%s/%s", s.Name, s.Attempt, s.Kind, s.Status))
		if s.RunID != run.RunID {
			t.Errorf("step %s: run_id %s, want %s", s.Name, s.RunID, run.RunID)
		}
	}
	want := []string{"fetch/1/function/failed", "fetch/2/function/completed", "a-nap/1/sleep/running"}
	if !slices.Equal(got, want) {
		t.Errorf("steps: got %v, want %v", got, want)
	}
	if len(steps.Steps) == 3 {
		var out []int
		if err := json.Unmarshal(steps.Steps[1].Output, &out); err != nil || !slices.Equal(out, []int{1, 2}) {
			t.Errorf("output of fetch/2: got %s, want [1,2]", steps.Steps[1].Output)
		}
		if !strings.Contains(string(steps.Steps[0].Error), `"boom"`) {
			t.Errorf("error of fetch/1: got %s, want the message boom", steps.Steps[0].Error)
		}
	}
}

func TestErrorCodes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	start := ns + "/workflows"
	cases := []struct {
		name         string
		method, path string
		body         any
		opts         []reqOption
		status       int
		code, field  string
	}{
		{"malformed JSON", "POST", start, `{"workflow_type":`, nil, 400, "invalid_argument", ""},
		{"JSON syntax error", "POST", start, `{"workflow_type" "x"}`, nil, 400, "invalid_argument", ""},
		{"two JSON values", "POST", start, `{"workflow_type":"x"} {}`, nil, 400, "invalid_argument", ""},
		{"not an object", "POST", start, `["x"]`, nil, 400, "invalid_argument", ""},
		{"null body", "POST", start, `null`, nil, 400, "invalid_argument", ""},
		{"empty body", "POST", start, ``, nil, 400, "invalid_argument", "workflow_type"},
		{"unknown field", "POST", start, `{"workflow_type":"x","workflow_typo":"y"}`, nil, 400, "invalid_argument", "workflow_typo"},
		{"wrong type", "POST", start, `{"workflow_type":5}`, nil, 400, "invalid_argument", "workflow_type"},
		{"wrong nested type", "POST", start, `{"workflow_type":"x","retry_policy":{"max_attempts":"3"}}`, nil, 400, "invalid_argument", "retry_policy.max_attempts"},
		{"bad nested value", "POST", start, `{"workflow_type":"x","retry_policy":{"backoff_coefficient":0.5}}`, nil, 400, "invalid_argument", "retry_policy.backoff_coefficient"},
		{"empty workflow_type", "POST", start, `{"workflow_type":""}`, nil, 400, "invalid_argument", "workflow_type"},
		{"control character in workflow_type", "POST", start, `{"workflow_type":"a\u0007b"}`, nil, 400, "invalid_argument", "workflow_type"},
		{"workflow_type over 256 bytes", "POST", start, map[string]any{"workflow_type": strings.Repeat("é", 129)}, nil, 400, "invalid_argument", "workflow_type"},
		{"bad task_queue", "POST", start, `{"workflow_type":"x","task_queue":"bad name!"}`, nil, 400, "invalid_argument", "task_queue"},
		{"empty external_id", "POST", start, `{"workflow_type":"x","external_id":""}`, nil, 400, "invalid_argument", "external_id"},
		{"NUL in version", "POST", start, `{"workflow_type":"x","version":"1\u00002"}`, nil, 400, "invalid_argument", "version"},
		{"bad namespace", "POST", "/v1/namespaces/bad%20name%21/workflows", `{"workflow_type":"x"}`, nil, 400, "invalid_argument", "namespace"},
		{"bad namespace on a list", "GET", "/v1/namespaces/-dash/workflows", nil, nil, 400, "invalid_argument", "namespace"},
		{"namespace over 63 characters", "GET", "/v1/namespaces/" + strings.Repeat("n", 64) + "/workflows", nil, nil, 400, "invalid_argument", "namespace"},
		{"unknown run", "GET", runPath("0190a5d0-ac96-774b-bcce-b302099a8057"), nil, nil, 404, "not_found", ""},
		{"unknown route", "GET", "/v1/nope", nil, nil, 404, "not_found", ""},
		{"unknown route under a namespace", "GET", ns + "/nope", nil, nil, 404, "not_found", ""},
		{"unknown route off the API", "GET", "/", nil, nil, 404, "not_found", ""},
		{"wrong verb on workflows", "DELETE", start, nil, nil, 405, "method_not_allowed", ""},
		{"wrong verb on a run", "PUT", runPath("0190a5d0-ac96-774b-bcce-b302099a8057"), `{}`, nil, 405, "method_not_allowed", ""},
		{"wrong verb on cancel", "GET", runPath("0190a5d0-ac96-774b-bcce-b302099a8057") + "/cancel", nil, nil, 405, "method_not_allowed", ""},
		{"wrong verb on healthz", "POST", "/healthz", nil, nil, 405, "method_not_allowed", ""},
		{"text/plain body", "POST", start, `{"workflow_type":"x"}`, []reqOption{withContentType("text/plain")}, 415, "unsupported_media_type", ""},
		{"no content type", "POST", start, `{"workflow_type":"x"}`, []reqOption{withContentType("")}, 415, "unsupported_media_type", ""},
		{"XML", "POST", start + "/batch", `<workflows/>`, []reqOption{withContentType("application/xml")}, 415, "unsupported_media_type", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e.do(t, c.method, c.path, c.body, c.opts...).wantProblem(t, c.status, c.code, c.field)
		})
	}
	t.Run("JSON with a charset is JSON", func(t *testing.T) {
		t.Parallel()
		e.do(t, "POST", start, `{"workflow_type":"x"}`, withContentType("application/json; charset=utf-8")).
			wantStatus(t, http.StatusCreated)
	})
	t.Run("a bad timestamp names its field", func(t *testing.T) {
		t.Parallel()
		r := e.do(t, "POST", start, `{"workflow_type":"x","start_at":"tomorrow"}`)
		r.wantStatus(t, http.StatusBadRequest)
		r.wantProblem(t, http.StatusBadRequest, "invalid_argument", "start_at")
	})
	t.Run("405 says what is allowed", func(t *testing.T) {
		t.Parallel()
		r := e.do(t, "DELETE", start, nil)
		r.wantProblem(t, http.StatusMethodNotAllowed, "method_not_allowed", "")
		allow := strings.Split(strings.ReplaceAll(r.header.Get("Allow"), " ", ""), ",")
		slices.Sort(allow)
		if want := []string{"GET", "POST"}; !slices.Equal(allow, want) {
			t.Errorf("Allow: got %v, want %v", allow, want)
		}
	})
}

// noLeak fails t when a 5xx problem's detail tells anything of the cause.
func noLeak(t *testing.T, p problem) {
	t.Helper()
	for _, s := range []string{"SELECT", "INSERT", "workflow_runs", "relation", "pool", "dial", "127.0.0.1", "postgres", "sql", "SQLSTATE"} {
		if strings.Contains(strings.ToLower(p.Detail), strings.ToLower(s)) {
			t.Errorf("detail %q leaks %q", p.Detail, s)
		}
	}
}

func TestUnavailableWhenDatabaseIsDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withUnreachableDatabase())
	start := time.Now()
	noLeak(t, e.do(t, "POST", ns+"/workflows", `{"workflow_type":"x"}`).wantProblem(t, http.StatusServiceUnavailable, "unavailable", ""))
	noLeak(t, e.do(t, "GET", runPath("0190a5d0-ac96-774b-bcce-b302099a8057"), nil).wantProblem(t, http.StatusServiceUnavailable, "unavailable", ""))
	noLeak(t, e.do(t, "GET", ns+"/workflows", nil).wantProblem(t, http.StatusServiceUnavailable, "unavailable", ""))
	noLeak(t, e.do(t, "POST", ns+"/workflows/batch", `{"workflows":[{"workflow_type":"x"}]}`).wantProblem(t, http.StatusServiceUnavailable, "unavailable", ""))
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the 503s took %s", d)
	}
	var ready struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}
	e.do(t, "GET", "/readyz", nil).wantStatus(t, http.StatusServiceUnavailable).decode(t, &ready)
	if ready.Status != "unavailable" || ready.Checks["database"] == "ok" || ready.Checks["listener"] != "ok" {
		t.Errorf("readyz: got %+v, want unavailable with the database failing and the listener ok", ready)
	}
	// Liveness does not depend on the database.
	e.do(t, "GET", "/healthz", nil).wantStatus(t, http.StatusOK)
}

func TestUnavailableWhenPoolIsClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withClosedStorePool())
	r := e.do(t, "POST", ns+"/workflows", `{"workflow_type":"x"}`)
	noLeak(t, r.wantProblem(t, http.StatusServiceUnavailable, "unavailable", ""))
}

func TestInternalErrorHidesItsCause(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withErrorLogs(), withoutMaintainer())
	run := e.start(t, "x", nil)
	// A schema that drifted under the server: a fault no client input
	// explains, and no error code but internal fits.
	if _, err := e.pool.Exec(context.Background(), `ALTER TABLE workflow_runs RENAME TO workflow_runs_moved`); err != nil {
		t.Fatal(err)
	}
	p := e.do(t, "GET", runPath(run.RunID), nil).wantProblem(t, http.StatusInternalServerError, "internal", "")
	noLeak(t, p)
	if p.Detail != "internal error" {
		t.Errorf("detail: got %q, want %q", p.Detail, "internal error")
	}
	logged := e.logs.find(t, "request failed", map[string]any{"level": "ERROR", "method": "GET"})
	if len(logged) != 1 || !strings.Contains(fmt.Sprint(logged[0]["error"]), "workflow_runs") {
		t.Errorf("the cause was not logged for the operator: %v", logged)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var health map[string]string
	e.do(t, "GET", "/healthz", nil).wantStatus(t, http.StatusOK).decode(t, &health)
	if health["status"] != "ok" {
		t.Errorf("healthz: got %v, want status ok", health)
	}
	var ready struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}
	e.do(t, "GET", "/readyz", nil).wantStatus(t, http.StatusOK).decode(t, &ready)
	want := map[string]string{"database": "ok", "schema": "ok", "listener": "ok"}
	if ready.Status != "ok" || fmt.Sprint(ready.Checks) != fmt.Sprint(want) {
		t.Errorf("readyz: got %+v, want status ok with checks %v", ready, want)
	}
}

func TestInfoReportsLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withLimits(func(l *api.Limits) {
		l.MaxBatch = 7
		l.MaxBatchBytes = 5 << 20
		l.MaxWait = 1234 * time.Millisecond
		l.LeaseDuration = 4321 * time.Millisecond
		l.HeartbeatInterval = 987 * time.Millisecond
	}))
	var info struct {
		Version    string           `json:"version"`
		APIVersion string           `json:"api_version"`
		Limits     map[string]int64 `json:"limits"`
	}
	e.do(t, "GET", "/v1/info", nil).wantStatus(t, http.StatusOK).decode(t, &info)
	want := map[string]int64{
		"max_payload_bytes": 2097152, "warn_payload_bytes": 1048576, "max_batch_size": 7,
		"max_batch_bytes": 5 << 20, "max_wait_ms": 1234, "lease_duration_ms": 4321, "heartbeat_interval_ms": 987,
		"max_history_bytes": 4 << 20, "max_buffered_signals": 1000, "max_signals_per_run": 10000,
		"max_live_children": 1000, "max_child_depth": 16,
	}
	if info.Version != testVersion || info.APIVersion != "v1" || fmt.Sprint(info.Limits) != fmt.Sprint(want) {
		t.Errorf("info: got %+v, want version %s, api_version v1, limits %v", info, testVersion, want)
	}
	// The reported batch limit is the enforced one.
	items := make([]map[string]any, 8)
	for i := range items {
		items[i] = map[string]any{"workflow_type": "x"}
	}
	e.do(t, "POST", ns+"/workflows/batch", map[string]any{"workflows": items}).wantProblem(t, http.StatusBadRequest, "invalid_argument", "workflows")
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(t, "x", nil)
	r := e.do(t, "GET", "/metrics", nil).wantStatus(t, http.StatusOK)
	if !strings.Contains(string(r.body), "\nkagzi_runs_started_total 1\n") {
		t.Errorf("metrics do not count the started run:\n%s", r.body)
	}
}
