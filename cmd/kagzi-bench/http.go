package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Protocols the load tool's workers speak.
const (
	protocolSDK = "sdk" // Go SDK workers
	// protocolHTTP: plain HTTP workers that claim up to 100 runs, record
	// step i of all of them in one steps/batch request, and complete them
	// in one batch/complete request: the contract's cost, without the SDK.
	protocolHTTP = "http"
	// protocolHTTPBegin: plain HTTP workers that begin and complete each
	// step of each run with requests of their own, as before histories.
	protocolHTTPBegin = "http-begin"
)

// stepCounter counts the requests that record steps (begin, complete,
// fail, steps/batch) and the step reports they carry.
type stepCounter struct {
	next              http.RoundTripper
	requests, reports atomic.Int64
}

func (s *stepCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	switch p := r.URL.Path; {
	case strings.HasSuffix(p, "/steps/batch"):
		s.requests.Add(1)
		if r.Body != nil {
			b, err := io.ReadAll(r.Body)
			r.Body.Close()
			if err != nil {
				return nil, err
			}
			s.reports.Add(int64(bytes.Count(b, []byte(`"outcome"`))))
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
	case strings.Contains(p, "/steps/") && (strings.HasSuffix(p, "/begin") || strings.HasSuffix(p, "/complete") ||
		strings.HasSuffix(p, "/fail")):
		s.requests.Add(1)
		if !strings.HasSuffix(p, "/begin") {
			s.reports.Add(1)
		}
	}
	return s.next.RoundTrip(r)
}

func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 1000
	return t
}

// httpWorker is a worker speaking the HTTP contract with no SDK.
type httpWorker struct {
	o        options
	hc       *http.Client
	base     string // .../v1/namespaces/{ns}
	begin    bool   // begin and complete each step apart
	maxTasks int
	// pickup records a run's pickup, on its first attempt.
	pickup    func(time.Duration)
	completed *atomic.Int64
}

type httpTask struct {
	RunID   string          `json:"run_id"`
	LeaseID string          `json:"lease_id"`
	Attempt int             `json:"attempt"`
	Input   json.RawMessage `json:"input"`
	Steps   []struct {
		Name string `json:"name"`
	} `json:"steps"`
}

// post sends body as JSON to path under the namespace and decodes a 200
// answer into out.
func (w *httpWorker) post(ctx context.Context, path string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.base+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if w.o.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+w.o.apiKey)
	}
	resp, err := w.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("POST %s: %s: %s", path, resp.Status, msg)
	}
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// run claims and executes runs until ctx ends.
func (w *httpWorker) run(ctx context.Context) error {
	for ctx.Err() == nil {
		var claimed struct {
			Tasks []httpTask `json:"tasks"`
		}
		err := w.post(ctx, "/task-queues/"+w.o.queue+"/claim",
			map[string]any{"workflow_types": []string{"bench"}, "max_tasks": w.maxTasks, "wait_ms": 5000}, &claimed)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		now := time.Now().UnixNano()
		for _, t := range claimed.Tasks {
			var in input
			if json.Unmarshal(t.Input, &in) == nil && t.Attempt == 1 {
				w.pickup(time.Duration(now - in.StartedNS))
			}
		}
		if err := w.execute(ctx, claimed.Tasks); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	return nil
}

// execute runs the steps of tasks and completes them.
func (w *httpWorker) execute(ctx context.Context, tasks []httpTask) error {
	if len(tasks) == 0 {
		return nil
	}
	for i := range w.o.steps {
		name := fmt.Sprintf("step-%d", i)
		if w.begin {
			if err := w.beginAndComplete(ctx, tasks, name, i); err != nil {
				return err
			}
			continue
		}
		var items []map[string]any
		for _, t := range tasks {
			if !t.memoized(name) {
				items = append(items, map[string]any{"run_id": t.RunID, "lease_id": t.LeaseID, "step": name,
					"outcome": "complete", "output": i})
			}
		}
		if len(items) > 0 {
			if err := w.post(ctx, "/steps/batch", map[string]any{"steps": items}, nil); err != nil {
				return err
			}
		}
	}
	runs := make([]map[string]any, len(tasks))
	for i, t := range tasks {
		runs[i] = map[string]any{"run_id": t.RunID, "lease_id": t.LeaseID, "output": 0}
	}
	var res struct {
		Runs []struct {
			Completed bool `json:"completed"`
		} `json:"runs"`
	}
	if err := w.post(ctx, "/workflows/batch/complete", map[string]any{"runs": runs}, &res); err != nil {
		return err
	}
	for _, r := range res.Runs {
		if r.Completed {
			w.completed.Add(1)
		}
	}
	return nil
}

func (t httpTask) memoized(name string) bool {
	for _, st := range t.Steps {
		if st.Name == name {
			return true
		}
	}
	return false
}

// beginAndComplete runs step name of each task with a begin and a
// complete of its own, the tasks concurrently, as one SDK execution per
// run did before histories.
func (w *httpWorker) beginAndComplete(ctx context.Context, tasks []httpTask, name string, output int) error {
	var wg sync.WaitGroup
	errs := make([]error, len(tasks))
	for i, t := range tasks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := "/workflows/" + t.RunID + "/steps/" + name
			var b struct {
				ShouldExecute bool `json:"should_execute"`
			}
			if errs[i] = w.post(ctx, path+"/begin", map[string]any{"lease_id": t.LeaseID}, &b); errs[i] != nil || !b.ShouldExecute {
				return
			}
			errs[i] = w.post(ctx, path+"/complete", map[string]any{"lease_id": t.LeaseID, "output": output}, nil)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
