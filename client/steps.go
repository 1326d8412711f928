package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kagzi/kagzi/internal/batch"
)

// A worker records the steps its runs complete with one write each, and
// reports those that end while an earlier report is in flight together,
// in one request to POST .../steps/batch, each still fenced by its own
// lease. One step is one request when the worker is quiet.
const (
	stepReportBatch    = 200
	stepReportBytes    = 4 << 20
	stepReportInflight = 2
)

// stepReport is a step's outcome, recorded without begin.
type stepReport struct {
	ex        *execution
	name      string
	output    json.RawMessage // when it completed
	err       *ErrorInfo      // when it failed
	retry     *RetryPolicy
	startedAt time.Time
}

type stepReportItem struct {
	RunID       string          `json:"run_id"`
	LeaseID     string          `json:"lease_id"`
	Step        string          `json:"step"`
	Outcome     string          `json:"outcome"`
	Output      json.RawMessage `json:"output,omitempty"`
	Error       *ErrorInfo      `json:"error,omitempty"`
	RetryPolicy *RetryPolicy    `json:"retry_policy,omitempty"`
	StartedAt   time.Time       `json:"started_at"`
}

// stepRecord is what the server recorded for a step report.
type stepRecord struct {
	Step             StepAttempt `json:"step"`
	AlreadyCompleted bool        `json:"already_completed"`
	RetryScheduled   bool        `json:"retry_scheduled"`
}

type stepReportResult struct {
	stepRecord
	Error *problem `json:"error"`
}

type stepOutcome struct {
	rec stepRecord
	err error
}

func newStepReporter(w *Worker) *batch.Batcher[stepReport, stepOutcome] {
	return batch.New(stepReportBatch, stepReportBytes, stepReportInflight,
		func(r stepReport) int { return len(r.output) + 256 }, w.reportSteps)
}

// reportSteps records a batch of step reports in one request and returns
// each one's outcome. An item the server refuses as malformed (a payload
// over its limit) refuses the whole request, naming the item: that item
// gets the error, and the others are sent again without it.
func (w *Worker) reportSteps(rs []stepReport) []stepOutcome {
	out := make([]stepOutcome, len(rs))
	pending := make([]int, len(rs)) // indexes of rs still to send
	for i := range pending {
		pending[i] = i
	}
	for len(pending) > 0 {
		items := make([]stepReportItem, len(pending))
		for k, i := range pending {
			r := rs[i]
			items[k] = stepReportItem{RunID: r.ex.task.RunID, LeaseID: r.ex.task.LeaseID, Step: r.name,
				Outcome: "complete", Output: r.output, RetryPolicy: r.retry, StartedAt: r.startedAt.UTC()}
			if r.err != nil {
				items[k].Outcome, items[k].Output, items[k].Error = "fail", nil, r.err
			}
		}
		var res struct {
			Steps []stepReportResult `json:"steps"`
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err := w.c.do(ctx, request{method: http.MethodPost, path: w.c.nsPath + "/steps/batch",
			body: map[string]any{"steps": items}, idempotent: true}, &res)
		cancel()
		if k, ok := culprit(err, len(pending)); ok && len(pending) > 1 {
			out[pending[k]].err = err
			pending = append(pending[:k:k], pending[k+1:]...)
			continue
		}
		for k, i := range pending {
			switch {
			case err != nil:
				out[i].err = err
			case k >= len(res.Steps):
				out[i].err = &Error{Code: CodeInternal, Status: http.StatusOK, Detail: "the server answered fewer results than steps"}
			case res.Steps[k].Error != nil:
				p := res.Steps[k].Error
				out[i].err = &Error{Code: p.Code, Status: p.Status, Title: p.Title, Detail: p.Detail, Field: p.Field}
			default:
				out[i].rec = res.Steps[k].stepRecord
			}
		}
		return out
	}
	return out
}

// culprit returns the item a refused batch request names in its field
// ("steps[3].output").
func culprit(err error, n int) (int, bool) {
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.Status >= 500 || !strings.HasPrefix(apiErr.Field, "steps[") {
		return 0, false
	}
	idx, _, ok := strings.Cut(strings.TrimPrefix(apiErr.Field, "steps["), "]")
	k, perr := strconv.Atoi(idx)
	return k, ok && perr == nil && k >= 0 && k < n
}

// recordStep records a step's outcome without begin, through the worker's
// batched step reports, and returns what the server recorded: the step
// this report made, or the one recorded before (AlreadyCompleted). A run
// the lease no longer holds stops the execution.
//
// A report the server could not record for now (503: a batch's item whose
// transaction kept failing, or the server unavailable) is sent again with
// backoff, as reportComplete does: recording is idempotent.
func (ex *execution) recordStep(r stepReport) (stepRecord, error) {
	r.ex = ex
	for failures := 1; ; failures++ {
		if err := ex.err(); err != nil {
			return stepRecord{}, err
		}
		res := ex.w.stepReporter.Do(r)
		if res.err == nil {
			return res.rec, nil
		}
		if cause := ex.err(); cause != nil {
			return stepRecord{}, cause
		}
		var apiErr *Error
		if !errors.As(res.err, &apiErr) || apiErr.Status != http.StatusServiceUnavailable {
			if leaseEnded(res.err) {
				ex.abandon(res.err)
			}
			return stepRecord{}, fmt.Errorf("record step %q: %w", r.name, res.err)
		}
		ex.log(slog.LevelWarn, "could not record the step; trying again", "step", r.name, "error", res.err)
		if sleepCtx(ex.ctx, backoff(time.Second, 30*time.Second, failures)) != nil {
			return stepRecord{}, fmt.Errorf("record step %q: %w", r.name, res.err)
		}
	}
}
