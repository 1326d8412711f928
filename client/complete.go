package client

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/kagzi/kagzi/internal/batch"
)

// A worker reports the runs it completes together: completions that happen
// while an earlier report is in flight go in one request to
// POST .../workflows/batch/complete, each still fenced by its own lease.
// One run completes with one request when the worker is quiet.
const (
	completeBatch    = 200
	completeBytes    = 4 << 20
	completeInflight = 2
)

type completion struct {
	ex     *execution
	output json.RawMessage
}

type completionItem struct {
	RunID   string          `json:"run_id"`
	LeaseID string          `json:"lease_id"`
	Output  json.RawMessage `json:"output"`
}

type completionResult struct {
	RunID     string   `json:"run_id"`
	Completed bool     `json:"completed"`
	Error     *problem `json:"error"`
}

func newCompleter(w *Worker) *batch.Batcher[completion, error] {
	return batch.New(completeBatch, completeBytes, completeInflight,
		func(c completion) int { return len(c.output) }, w.completeRuns)
}

// completeRuns reports a batch of completions in one request and returns
// each run's error: the request's when it failed as a whole.
func (w *Worker) completeRuns(cs []completion) []error {
	errs := make([]error, len(cs))
	items := make([]completionItem, len(cs))
	for i, c := range cs {
		items[i] = completionItem{RunID: c.ex.task.RunID, LeaseID: c.ex.task.LeaseID, Output: c.output}
	}
	var res struct {
		Runs []completionResult `json:"runs"`
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := request{method: http.MethodPost, path: w.c.nsPath + "/workflows/batch/complete",
		body: map[string]any{"runs": items}, idempotent: true}
	_, err := w.c.do(ctx, r, &res)
	for i := range errs {
		switch {
		case err != nil:
			errs[i] = err
		case i >= len(res.Runs):
			errs[i] = &Error{Code: CodeInternal, Status: http.StatusOK, Detail: "the server answered fewer results than runs"}
		case !res.Runs[i].Completed && res.Runs[i].Error != nil:
			p := res.Runs[i].Error
			errs[i] = &Error{Code: p.Code, Status: p.Status, Title: p.Title, Detail: p.Detail, Field: p.Field}
		}
	}
	return errs
}
