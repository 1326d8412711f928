package kagzi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/kagzi/kagzi"
	"github.com/kagzi/kagzi/api"
	"github.com/kagzi/kagzi/domain"
)

// post sends body as JSON to the server and decodes the answer into out,
// failing the test unless the status is want.
func (s *liveServer) post(t *testing.T, path string, body any, want int, out any) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(s.base+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil || resp.StatusCode != want {
		t.Fatalf("POST %s: status %d (want %d), body %s, %v", path, resp.StatusCode, want, raw, err)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatal(err)
		}
	}
}

// parkClaim parks an HTTP claim on queue q and returns its answer's channel
// once the queue is known to have nothing for it: the moment a start can
// hand it a run.
func (s *liveServer) parkClaim(t *testing.T) <-chan []domain.Task {
	t.Helper()
	ch := make(chan []domain.Task, 1)
	go func() {
		var answer struct {
			Tasks []domain.Task `json:"tasks"`
		}
		b, _ := json.Marshal(map[string]any{"max_tasks": 10, "wait_ms": 20000})
		resp, err := http.Post(s.base+"/v1/namespaces/default/task-queues/q/claim", "application/json", bytes.NewReader(b))
		if err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&answer)
			resp.Body.Close()
		}
		ch <- answer.Tasks
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if slot, ok := s.Distributor.Offer("default", "q", "wf"); ok {
			slot.Cancel()
			return ch
		}
		if time.Now().After(deadline) {
			t.Fatal("the claim did not park")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func receiveTasks(t *testing.T, ch <-chan []domain.Task) []domain.Task {
	t.Helper()
	select {
	case tasks := <-ch:
		return tasks
	case <-time.After(10 * time.Second):
		t.Fatal("the parked claim was not answered")
		return nil
	}
}

// counter reads a counter of the server's registry.
func counter(t *testing.T, srv *kagzi.Server, name string) float64 {
	t.Helper()
	families, err := srv.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestStartAndSignalHandRunsToParkedClaim: on the assembled server, a run
// started while a worker's claim is parked, and the same run woken from a
// wait by a signal, each reach that claim in the transaction that made
// them claimable: no claim statement, the run running under the lease the
// claim answers, and the woken run's history carries the signal.
func TestStartAndSignalHandRunsToParkedClaim(t *testing.T) {
	t.Parallel()
	s := startLive(t, api.Timeouts{}, 5*time.Second)
	const runs = "/v1/namespaces/default/workflows/"

	claimed := s.parkClaim(t)
	statements := counter(t, s.Server, "kagzi_claim_statements_total")
	var started struct {
		RunID  string           `json:"run_id"`
		Status domain.RunStatus `json:"status"`
	}
	s.post(t, runs, map[string]any{"workflow_type": "wf", "task_queue": "q", "input": 7}, http.StatusCreated, &started)
	if started.Status != domain.RunRunning {
		t.Errorf("start answered status %s, want running: a parked claim took it", started.Status)
	}
	tasks := receiveTasks(t, claimed)
	if len(tasks) != 1 || tasks[0].RunID != started.RunID || string(tasks[0].Input) != "7" || tasks[0].Attempt != 1 {
		t.Fatalf("claim answered %+v, want run %s with its input", tasks, started.RunID)
	}
	if got := counter(t, s.Server, "kagzi_claim_statements_total"); got != statements {
		t.Errorf("claim statements during the start: %v, want none", got-statements)
	}

	// The workflow waits for a signal: the run parks, and the worker claims again.
	var wait struct {
		Resolved bool `json:"resolved"`
	}
	s.post(t, runs+started.RunID+"/steps/approval/wait",
		map[string]any{"lease_id": tasks[0].LeaseID, "signals": []string{"go"}}, http.StatusOK, &wait)
	if wait.Resolved {
		t.Fatal("the wait resolved with no signal sent")
	}
	claimed = s.parkClaim(t)
	statements = counter(t, s.Server, "kagzi_claim_statements_total")
	s.post(t, runs+started.RunID+"/signals/go", map[string]any{"input": "yes"}, http.StatusAccepted, nil)
	tasks = receiveTasks(t, claimed)
	if len(tasks) != 1 || tasks[0].RunID != started.RunID {
		t.Fatalf("claim answered %+v, want run %s woken by the signal", tasks, started.RunID)
	}
	if got := counter(t, s.Server, "kagzi_claim_statements_total"); got != statements {
		t.Errorf("claim statements during the send: %v, want none", got-statements)
	}
	if got := counter(t, s.Server, "kagzi_handoffs_total"); got != 2 {
		t.Errorf("kagzi_handoffs_total: %v, want 2", got)
	}
	steps := tasks[0].Steps
	if len(steps) != 1 || steps[0].Name != "approval" || steps[0].Status != domain.StepCompleted {
		t.Fatalf("history of the woken run: %+v, want the wait step completed", steps)
	}
	var out domain.WaitOutput
	if err := json.Unmarshal(steps[0].Output, &out); err != nil || out.Signal == nil || string(out.Signal.Input) != `"yes"` {
		t.Fatalf("wait step output %s (%v), want the signal", steps[0].Output, err)
	}
	// The lease handed out holds: the worker completes the run with it.
	s.post(t, runs+started.RunID+"/complete", map[string]any{"lease_id": tasks[0].LeaseID, "output": 1}, http.StatusOK, nil)
}
