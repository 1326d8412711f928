package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// execution is one execution of a claimed run, under its lease: from the
// claim until the workflow function returns, the run is suspended, or the
// lease is lost.
type execution struct {
	w        *Worker
	task     task
	workerID string // the registration that claimed the run
	began    time.Time
	ctx      context.Context
	cancel   context.CancelCauseFunc

	mu sync.Mutex
	// stopped is set once the execution may report nothing more: the run
	// was suspended (ErrSuspended), released (ErrReleased), cancelled or
	// its lease lost (the server's *Error).
	stopped error
	sleeps  int
	// leaseEnds is when the run's lease ends by the local clock, as the
	// claim or the latest heartbeat said.
	leaseEnds time.Time

	// reporting is set once the workflow function returned and the
	// execution reports its outcome: the answer to that call, not a
	// heartbeat, says whether the run was still held.
	reporting atomic.Bool
	// checking is set while a run heartbeat of the execution is in
	// flight.
	checking atomic.Bool
}

// leaseMargin is how long before its lease ends, by the local clock, an
// execution stops starting step functions: a step begun that late would
// run after the run may have gone to another worker.
const leaseMargin = 500 * time.Millisecond

// extendLease records a new end of the run's lease, by the local clock.
func (ex *execution) extendLease(ends time.Time) {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	if ends.After(ex.leaseEnds) {
		ex.leaseEnds = ends
	}
}

// checkLease stops the execution, and returns why, when the run's lease
// ends within leaseMargin: a worker that was paused (a stop-the-world
// pause, a suspended VM) must not run a step for a run it no longer holds.
func (ex *execution) checkLease() error {
	ex.mu.Lock()
	left := time.Until(ex.leaseEnds)
	ex.mu.Unlock()
	if left >= leaseMargin {
		return ex.err()
	}
	if ex.err() == nil {
		ex.log(slog.LevelWarn, "the run's lease ends before its step could run; stopping the workflow", "lease_left", left.Round(time.Millisecond))
	}
	return ex.stop(&Error{Code: CodeLeaseLost, Status: http.StatusConflict, Title: http.StatusText(http.StatusConflict),
		Detail: fmt.Sprintf("the run's lease ends in %s by the worker's clock (heartbeats did not extend it): the step does not run", left.Round(time.Millisecond))})
}

// err returns why the execution stopped, or nil while it runs.
func (ex *execution) err() error {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	return ex.stopped
}

// stop ends the execution with cause, once, and cancels the workflow's
// context with it. It returns the cause that stopped the execution.
func (ex *execution) stop(cause error) error {
	ex.mu.Lock()
	if ex.stopped == nil {
		ex.stopped = cause
	}
	cause = ex.stopped
	ex.mu.Unlock()
	ex.cancel(cause)
	return cause
}

// suspend stops the execution because the run's lease ended by design (a
// sleep, a scheduled step retry).
func (ex *execution) suspend() error { return ex.stop(ErrSuspended) }

// abandon stops the execution because the run is no longer the worker's
// to report on.
func (ex *execution) abandon(cause error) {
	if ex.err() == nil {
		ex.log(slog.LevelInfo, "stopping the workflow", "cause", cause)
	}
	ex.stop(cause)
}

// log logs about the run.
func (ex *execution) log(level slog.Level, msg string, args ...any) {
	args = append(args, "run_id", ex.task.RunID, "workflow_type", ex.task.WorkflowType)
	ex.w.logger.Log(ex.ctx, level, msg, args...)
}

// leaseEnded reports whether err says the run is not held by the lease
// any more: lost, cancelled, or gone.
func leaseEnded(err error) bool {
	return errors.Is(err, ErrLeaseLost) || errors.Is(err, ErrCancelled) || errors.Is(err, ErrNotFound)
}

// call makes one of the run's lease-fenced calls, at the run's path
// followed by path. Fencing makes them safe to retry. An answer that says
// the lease ended stops the execution.
func (ex *execution) call(body, out any, path ...string) error {
	return ex.callCtx(ex.ctx, body, out, nil, path...)
}

// callCtx is call under ctx, which must be ex.ctx or derive from it, that
// fills clock (when not nil) from the answer.
func (ex *execution) callCtx(ctx context.Context, body, out any, clock *answerClock, path ...string) error {
	if err := ex.err(); err != nil {
		return err
	}
	r := request{method: http.MethodPost, path: ex.w.c.runPath(ex.task.RunID, path...), body: body, idempotent: true, clock: clock}
	_, err := ex.w.c.do(ctx, r, out)
	if err == nil {
		return nil
	}
	if cause := ex.err(); cause != nil {
		return cause // stopped meanwhile: this error is a consequence
	}
	if leaseEnded(err) {
		ex.abandon(err)
	}
	return err
}

type leaseBody struct {
	LeaseID string `json:"lease_id"`
}

type beginBody struct {
	LeaseID     string       `json:"lease_id"`
	Kind        StepKind     `json:"kind"`
	RetryPolicy *RetryPolicy `json:"retry_policy,omitempty"`
}

type beginResult struct {
	ShouldExecute bool            `json:"should_execute"`
	Step          StepAttempt     `json:"step"`
	Output        json.RawMessage `json:"output"`
}

type outputBody struct {
	LeaseID string          `json:"lease_id"`
	Output  json.RawMessage `json:"output"`
}

type errorBody struct {
	LeaseID string     `json:"lease_id"`
	Error   *ErrorInfo `json:"error"`
}

type sleepBody struct {
	LeaseID    string     `json:"lease_id"`
	Step       string     `json:"step"`
	DurationMS *int64     `json:"duration_ms,omitempty"`
	Until      *time.Time `json:"until,omitempty"`
}

func (ex *execution) begin(name string, kind StepKind, retry *RetryPolicy) (beginResult, error) {
	var res beginResult
	err := ex.call(beginBody{LeaseID: ex.task.LeaseID, Kind: kind, RetryPolicy: retry}, &res, "steps", name, "begin")
	return res, err
}

func (ex *execution) completeStep(name string, output json.RawMessage) error {
	return ex.call(outputBody{LeaseID: ex.task.LeaseID, Output: output}, nil, "steps", name, "complete")
}

// failStep records a failed step attempt and reports whether a retry was
// scheduled, which ends the lease.
func (ex *execution) failStep(name string, info *ErrorInfo) (bool, error) {
	var res struct {
		RetryScheduled bool `json:"retry_scheduled"`
	}
	err := ex.call(errorBody{LeaseID: ex.task.LeaseID, Error: info}, &res, "steps", name, "fail")
	return res.RetryScheduled, err
}

// execute runs the workflow function and reports its outcome, unless the
// execution stopped on the way.
func (ex *execution) execute(fn workflowFunc) {
	var out json.RawMessage
	var err error
	if fn == nil {
		// The claim names the registered types, so this is a server bug.
		err = errors.New("kagzi: the worker has no workflow of type " + ex.task.WorkflowType)
	} else {
		out, err = callWorkflow(&WorkflowContext{Context: ex.ctx, ex: ex}, fn)
	}
	if cause := ex.err(); cause != nil {
		ex.log(slog.LevelDebug, "execution stopped", "cause", cause)
		return
	}
	ex.reporting.Store(true)
	if err == nil {
		err = ex.reportComplete(out)
		if err == nil {
			ex.w.completed.Add(1)
			return
		}
		if !errors.Is(err, ErrPayloadTooLarge) || ex.err() != nil {
			ex.log(slog.LevelWarn, "could not complete the run", "error", err)
			return
		}
		// The run stays running; the output would be as large on a
		// retry, so the run fails for good.
		err = NonRetryable(ErrorType(err, "payload_too_large"))
	}
	if ferr := ex.report(errorBody{LeaseID: ex.task.LeaseID, Error: errorInfo(err)}, "fail"); ferr != nil {
		ex.log(slog.LevelWarn, "could not fail the run", "error", ferr, "run_error", err)
		return
	}
	ex.w.failed.Add(1)
}

// report makes the call that ends the run (complete or fail). It keeps
// trying while the server is unreachable or unavailable, because until
// it goes through the run stays held by this worker, whose heartbeats
// extend its lease; it gives up when the execution stops (the lease ended,
// or the worker released the run).
func (ex *execution) report(body any, path string) error {
	for failures := 1; ; failures++ {
		err := ex.call(body, nil, path)
		var apiErr *Error
		if err == nil || ex.err() != nil || (errors.As(err, &apiErr) && apiErr.Status != http.StatusServiceUnavailable) {
			return err
		}
		ex.log(slog.LevelWarn, "could not report the run; trying again", "call", path, "error", err)
		if sleepCtx(ex.ctx, backoff(time.Second, 30*time.Second, failures)) != nil {
			return err
		}
	}
}

// reportComplete completes the run through the worker's batched
// completions, trying again like report while the server is unreachable or
// unavailable. A run the lease no longer holds stops the execution.
func (ex *execution) reportComplete(out json.RawMessage) error {
	if len(out) == 0 {
		out = json.RawMessage("null")
	}
	for failures := 1; ; failures++ {
		if err := ex.err(); err != nil {
			return err
		}
		err := ex.w.completer.Do(completion{ex: ex, output: out})
		var apiErr *Error
		if err == nil || ex.err() != nil || (errors.As(err, &apiErr) && apiErr.Status != http.StatusServiceUnavailable) {
			if leaseEnded(err) {
				ex.abandon(err)
			}
			return err
		}
		ex.log(slog.LevelWarn, "could not report the run; trying again", "call", "complete", "error", err)
		if sleepCtx(ex.ctx, backoff(time.Second, 30*time.Second, failures)) != nil {
			return err
		}
	}
}

// callWorkflow calls fn, turning a panic into an error.
func callWorkflow(ctx *WorkflowContext, fn workflowFunc) (out json.RawMessage, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = panicError(p)
		}
	}()
	return fn(ctx, ctx.ex.task.Input)
}
