package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"time"
)

// ErrSuspended is what Step, Sleep and SleepUntil return when the run's
// lease has ended because the run sleeps or waits for a step's retry. The
// workflow function must return at once (returning this error is the
// simplest way); the worker records nothing more for this execution, and
// the server hands the run out again when it is due, to replay the
// function from the top. Every later SDK call of the execution returns it
// too, and the workflow's context is cancelled with it as the cause.
var ErrSuspended = errors.New("kagzi: the run is suspended until its sleep or step retry is due")

// ErrReleased is the cause with which a workflow's context is cancelled
// when its worker stops and gives the run back to the server before the
// workflow finished. The run is not failed: another worker continues it
// without a new attempt.
var ErrReleased = errors.New("kagzi: the worker released the run while stopping")

// WorkflowContext is what a workflow function runs with: a context.Context
// that is cancelled when the run's lease is lost, when the run is
// cancelled, suspended or released (context.Cause says which), and the
// facts of the run.
//
// Pass it to Step, Sleep and SleepUntil. Do not use it for I/O outside a
// step: everything outside steps must be deterministic (see the package
// documentation).
type WorkflowContext struct {
	context.Context
	ex *execution
}

// RunID returns the run's ID.
func (c *WorkflowContext) RunID() string { return c.ex.task.RunID }

// WorkflowType returns the run's workflow type.
func (c *WorkflowContext) WorkflowType() string { return c.ex.task.WorkflowType }

// Namespace returns the run's namespace.
func (c *WorkflowContext) Namespace() string { return c.ex.task.Namespace }

// TaskQueue returns the run's task queue.
func (c *WorkflowContext) TaskQueue() string { return c.ex.task.TaskQueue }

// Version returns the version the run was started with, or "".
func (c *WorkflowContext) Version() string { return c.ex.task.Version }

// Attempt returns the run's execution attempt: 1 for the first, one more
// after each failed attempt. Replays after a sleep or a step retry keep
// the attempt. It is deterministic within an attempt.
func (c *WorkflowContext) Attempt() int { return c.ex.task.Attempt }

// StepInfo describes the step attempt a step function runs as.
type StepInfo struct {
	RunID string
	Name  string
	// Attempt counts the step's attempts, from 1.
	Attempt int
}

type stepInfoKey struct{}

// StepInfoFrom returns the step attempt that ctx, the context a step
// function is given, belongs to.
func StepInfoFrom(ctx context.Context) (StepInfo, bool) {
	info, ok := ctx.Value(stepInfoKey{}).(StepInfo)
	return info, ok
}

// StepOption configures a step.
type StepOption func(*stepConfig)

type stepConfig struct {
	retry *RetryPolicy
}

// WithStepRetry sets the step's retry policy; its zero fields take the
// run's. Without it, the step retries by the run's policy.
func WithStepRetry(p RetryPolicy) StepOption {
	return func(c *stepConfig) { c.retry = &p }
}

// Step runs fn as the named step of the workflow, at most once to
// completion: when the step completed in an earlier execution of the run,
// fn is not called and its recorded output is returned (replay).
//
// fn's result is recorded as JSON, and Step returns it decoded from that
// JSON, the same on the first execution as on replays. When fn returns an
// error (or panics), the attempt is recorded as failed. If the step's
// retry policy allows another attempt, the run is suspended until it is
// due and Step returns ErrSuspended: return it. Otherwise Step returns
// fn's error, wrapped with the step's name, for the workflow to handle,
// for instance by compensating. NonRetryable and ErrorType mark errors
// that must not be retried.
//
// A step that failed for good is replayed as that failure within the
// run's attempt. Replays read the history the run's task carried, with no
// request; a new step is recorded with one write when fn returns (steps of
// the worker's runs that end together go in one request), and a step that
// was recorded meanwhile, by another execution, keeps that record: Step
// returns its outcome. When the history was too large to carry, each step
// asks the server (begin) as it comes.
//
// Names identify steps within a run, so each step must have its own,
// the same in every execution ("charge", or fmt.Sprintf("item-%d", i)
// in a loop). fn gets a context that is cancelled with the workflow's;
// StepInfoFrom tells it which attempt it is.
func Step[T any](ctx *WorkflowContext, name string, fn func(context.Context) (T, error), opts ...StepOption) (T, error) {
	var zero T
	var cfg stepConfig
	for _, o := range opts {
		o(&cfg)
	}
	ex := ctx.ex
	if ex.history != nil {
		return recordedStep(ctx, name, fn, cfg)
	}
	begun, err := ex.begin(name, StepFunction, cfg.retry)
	if err != nil {
		return zero, err
	}
	if !begun.ShouldExecute && begun.Step.Status == StepFailed && begun.Step.Error != nil {
		// A step that failed for good, replayed: its recorded error, as
		// the first execution returned it.
		return zero, fmt.Errorf("step %q: %w", name, recordedError(begun.Step.Error))
	}
	if !begun.ShouldExecute {
		var v T
		if err := json.Unmarshal(begun.Output, &v); err != nil {
			return zero, fmt.Errorf("step %q: decode its recorded output as %T: %w", name, v, err)
		}
		return v, nil
	}
	if err := ex.checkLease(); err != nil {
		return zero, err
	}
	sctx := context.WithValue(ex.ctx, stepInfoKey{}, StepInfo{RunID: ex.task.RunID, Name: name, Attempt: begun.Step.Attempt})
	v, ferr := callStep(sctx, fn)
	if cause := ex.err(); cause != nil {
		return zero, cause
	}
	if ferr == nil {
		out, err := json.Marshal(v)
		if err != nil {
			ferr = NonRetryable(ErrorType(fmt.Errorf("encode the output: %w", err), "invalid_output"))
		} else {
			rec, err := ex.completeStep(name, out)
			switch {
			case err == nil && rec.AlreadyCompleted:
				return replayed[T](name, rec.Step)
			case err == nil:
				var r T
				if err := json.Unmarshal(out, &r); err != nil {
					return zero, fmt.Errorf("step %q: decode its output as %T: %w", name, r, err)
				}
				return r, nil
			case errors.Is(err, ErrPayloadTooLarge) && ex.err() == nil:
				// The attempt stays running; a retry would produce the
				// same output, so it fails for good.
				ferr = NonRetryable(ErrorType(err, "payload_too_large"))
			default:
				return zero, err
			}
		}
	}
	retry, err := ex.failStep(name, errorInfo(ferr))
	if err != nil {
		return zero, err
	}
	if retry {
		return zero, ex.suspend()
	}
	return zero, fmt.Errorf("step %q: %w", name, ferr)
}

// recordedStep is Step for a run whose task carried its history: a step
// in it is replayed with no request, and a new step is recorded with one
// write when it ends (no begin). A step that another execution recorded
// meanwhile (a second worker around a lost lease) keeps its recorded
// outcome, which Step returns in place of fn's.
func recordedStep[T any](ctx *WorkflowContext, name string, fn func(context.Context) (T, error), cfg stepConfig) (T, error) {
	var zero T
	ex := ctx.ex
	if st, ok := ex.history[name]; ok {
		return replayed[T](name, st)
	}
	if err := ex.checkLease(); err != nil {
		return zero, err
	}
	started := time.Now()
	attempt := ex.task.StepAttempts[name] + 1
	sctx := context.WithValue(ex.ctx, stepInfoKey{}, StepInfo{RunID: ex.task.RunID, Name: name, Attempt: attempt})
	v, ferr := callStep(sctx, fn)
	if cause := ex.err(); cause != nil {
		return zero, cause
	}
	report := stepReport{name: name, retry: cfg.retry, startedAt: started}
	if ferr == nil {
		out, err := json.Marshal(v)
		if err != nil {
			ferr = NonRetryable(ErrorType(fmt.Errorf("encode the output: %w", err), "invalid_output"))
		} else {
			report.output = out
			rec, err := ex.recordStep(report)
			switch {
			case err == nil:
				return replayed[T](name, rec.Step)
			case errors.Is(err, ErrPayloadTooLarge) && ex.err() == nil:
				// A retry would produce the same output: it fails for good.
				ferr = NonRetryable(ErrorType(err, "payload_too_large"))
			default:
				return zero, err
			}
		}
	}
	report.output, report.err = nil, errorInfo(ferr)
	rec, err := ex.recordStep(report)
	switch {
	case err != nil:
		return zero, err
	case rec.AlreadyCompleted:
		return replayed[T](name, rec.Step)
	case rec.RetryScheduled:
		return zero, ex.suspend()
	}
	return zero, fmt.Errorf("step %q: %w", name, ferr)
}

// replayed returns a step's recorded outcome: its output decoded, or the
// error it failed for good with.
func replayed[T any](name string, st StepAttempt) (T, error) {
	var v T
	if st.Status == StepFailed {
		if st.Error == nil {
			return v, fmt.Errorf("step %q failed", name)
		}
		return v, fmt.Errorf("step %q: %w", name, recordedError(st.Error))
	}
	if err := json.Unmarshal(st.Output, &v); err != nil {
		return v, fmt.Errorf("step %q: decode its recorded output as %T: %w", name, v, err)
	}
	return v, nil
}

// callStep calls fn, turning a panic into an error.
func callStep[T any](ctx context.Context, fn func(context.Context) (T, error)) (v T, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = panicError(p)
		}
	}()
	return fn(ctx)
}

// panicked is the error a recovered panic becomes.
type panicked struct{ value any }

func (p *panicked) Error() string { return fmt.Sprintf("panic: %v", p.value) }

// panicError turns a recovered panic value into an error of type "panic"
// with the stack in its details.
func panicError(p any) error {
	return ErrorDetails(ErrorType(&panicked{value: p}, "panic"), map[string]string{"stack": string(debug.Stack())})
}

// SleepOption configures a sleep.
type SleepOption func(*sleepConfig)

type sleepConfig struct {
	name string
}

// WithSleepName names a sleep. Unnamed sleeps are called "sleep-1",
// "sleep-2", … in the order the workflow calls them, which is stable as
// long as the workflow is deterministic. Named sleeps are not counted:
// name a sleep that is reached on some paths only, or from a goroutine, so
// that the others keep their names.
func WithSleepName(name string) SleepOption {
	return func(c *sleepConfig) { c.name = name }
}

// Sleep suspends the run for d, durably: the worker lets go of the run,
// and the server hands it out again once d has passed, to any worker. It
// returns ErrSuspended when the run goes to sleep (return it), and nil
// when the workflow is replayed past the sleep. A d of zero or less
// returns at once.
func Sleep(ctx *WorkflowContext, d time.Duration, opts ...SleepOption) error {
	name := ctx.ex.sleepName(opts)
	if d <= 0 {
		return ctx.ex.err()
	}
	ms := millis(d)
	return ctx.ex.sleep(name, sleepBody{DurationMS: &ms})
}

// SleepUntil is Sleep until t. Compute t from the workflow's input or a
// step's result, never from time.Now outside a step.
func SleepUntil(ctx *WorkflowContext, t time.Time, opts ...SleepOption) error {
	name := ctx.ex.sleepName(opts)
	u := t.UTC()
	return ctx.ex.sleep(name, sleepBody{Until: &u})
}

func (ex *execution) sleepName(opts []SleepOption) string {
	var cfg sleepConfig
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.name != "" {
		return cfg.name // not counted, so that it shifts no other name
	}
	ex.mu.Lock()
	ex.sleeps++
	n := ex.sleeps
	ex.mu.Unlock()
	return "sleep-" + strconv.Itoa(n)
}

func (ex *execution) sleep(name string, body sleepBody) error {
	if ex.history != nil {
		// From the history: a sleep in it is over; any other is asked
		// for without begin, and one already over answers resolved.
		if st, ok := ex.history[name]; ok && st.Status == StepCompleted {
			return nil
		}
		body.LeaseID, body.Step = ex.task.LeaseID, name
		var res struct {
			Resolved bool `json:"resolved"`
		}
		if err := ex.call(body, &res, "sleep"); err != nil {
			return err
		}
		if res.Resolved {
			return nil
		}
		return ex.suspend()
	}
	begun, err := ex.begin(name, StepSleep, nil)
	if err != nil {
		return err
	}
	if !begun.ShouldExecute {
		return nil // woken up: the sleep is over
	}
	body.LeaseID, body.Step = ex.task.LeaseID, name
	var res struct {
		Resolved bool `json:"resolved"`
	}
	if err := ex.call(body, &res, "sleep"); err != nil {
		return err
	}
	if res.Resolved {
		return nil // its time had come: the run goes on under the lease
	}
	return ex.suspend()
}
