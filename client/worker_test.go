package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kagzi/kagzi/api"
	"github.com/kagzi/kagzi/client"
	"github.com/kagzi/kagzi/internal/testserver"
)

// fastStepRetry retries a step after a millisecond.
var fastStepRetry = client.WithStepRetry(client.RetryPolicy{InitialInterval: time.Millisecond, BackoffCoefficient: 1})

// TestWorker runs the tests below against one server.
func TestWorker(t *testing.T) {
	t.Parallel()
	runTests(t, []namedTest{
		{"ReplaysCompletedSteps", testWorkerReplaysCompletedSteps},
		{"Sleep", testSleep},
		{"StepRetries", testStepRetries},
		{"WorkflowErrors", testWorkflowErrors},
		{"PanicFailsRun", testPanicFailsRun},
		{"CancelCancelsWorkflowContext", testCancelCancelsWorkflowContext},
		{"ConflictOnCallStopsWorkflow", testConflictOnCallStopsWorkflow},
		{"StopReleasesRunsWithoutBurningAttempts", testStopReleasesRunsWithoutBurningAttempts},
		{"StopLetsRunningWorkflowsFinish", testStopLetsRunningWorkflowsFinish},
		{"ServerDrainStopsWorker", testServerDrainStopsWorker},
		{"RespectsMaxConcurrent", testWorkerRespectsMaxConcurrent},
		{"HeartbeatKeepsLeases", testHeartbeatKeepsLeases},
		{"RegistersAgainWhenOffline", testRegistersAgainWhenOffline},
		{"OutputTooLarge", testOutputTooLarge},
		{"FailedCompletionIsRescued", testFailedCompletionIsRescued},
		{"HeartbeatToServerWithoutRunIDs", testHeartbeatToServerWithoutRunIDs},
		{"HeartbeatCadenceWithSlowAnswer", testHeartbeatCadenceWithSlowAnswer},
		{"HeartbeatCadenceWithSlowRunHeartbeat", testHeartbeatCadenceWithSlowRunHeartbeat},
		{"NoWarningForRunHeartbeatEndedByCompletion", testNoWarningForRunHeartbeatEndedByCompletion},
		{"FrozenWorkerRunsNoStepPastItsLease", testFrozenWorkerRunsNoStepPastItsLease},
	}, testserver.WithLimits(func(l *api.Limits) {
		l.LeaseDuration = testLease
		l.Payload.MaxBytes, l.Payload.WarnBytes = 64<<10, 32<<10 // quick to exceed
	}))
}

// testLease is the lease of TestWorker's server: short, so that a worker
// that did not heartbeat would lose its runs within the test, and ten
// heartbeat intervals long, so that a loaded machine (-race, every
// package at once) does not lose a healthy worker's runs.
const testLease = 4 * time.Second

// A multi-step workflow completes; every step function runs exactly once
// to completion although the workflow is replayed after a step retry and
// after a sleep, and the run's attempt stays 1.
func testWorkerReplaysCompletedSteps(t *testing.T, e *env) {
	var bodies, aRuns, bRuns, cRuns atomic.Int32
	e.startWorker(t, func(w *client.Worker) {
		client.Register(w, "replay", func(ctx *client.WorkflowContext, in string) (string, error) {
			bodies.Add(1)
			a, err := client.Step(ctx, "a", func(context.Context) (string, error) {
				aRuns.Add(1)
				return "A:" + in, nil
			})
			if err != nil {
				return "", err
			}
			b, err := client.Step(ctx, "b", func(sctx context.Context) (int, error) {
				bRuns.Add(1)
				info, ok := client.StepInfoFrom(sctx)
				if !ok || info.Name != "b" || info.RunID != ctx.RunID() {
					return 0, client.NonRetryable(fmt.Errorf("step info = %+v, %v", info, ok))
				}
				if info.Attempt == 1 {
					return 0, errors.New("transient")
				}
				return info.Attempt, nil
			}, fastStepRetry)
			if err != nil {
				return "", err
			}
			if err := client.Sleep(ctx, 50*time.Millisecond); err != nil {
				return "", err
			}
			c, err := client.Step(ctx, "c", func(context.Context) (time.Time, error) {
				cRuns.Add(1)
				return time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC), nil
			})
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("%s %d %s attempt %d", a, b, c.Format(time.RFC3339Nano), ctx.Attempt()), nil
		})
	})
	id := e.start(t, client.StartRequest{WorkflowType: "replay", Input: "x"})
	run := e.wait(t, id)
	var out string
	if err := run.Result(&out); err != nil {
		t.Fatalf("Result: %v", err)
	}
	if want := "A:x 2 2030-01-02T03:04:05.000000006Z attempt 1"; out != want {
		t.Errorf("output = %q, want %q", out, want)
	}
	if run.Attempt != 1 {
		t.Errorf("attempt = %d, want 1", run.Attempt)
	}
	if got := [4]int32{bodies.Load(), aRuns.Load(), bRuns.Load(), cRuns.Load()}; got != [4]int32{3, 1, 2, 1} {
		t.Errorf("workflow, a, b, c ran %v times, want [3 1 2 1]", got)
	}
	want := []string{"a:1:completed", "b:1:failed", "b:2:completed", "sleep-1:1:completed", "c:1:completed"}
	if got := e.steps(t, id); !slices.Equal(got, want) {
		t.Errorf("steps = %v, want %v", got, want)
	}
	// The suspended executions reported nothing on the run. (The answer to
	// the worker's complete may reach it after Wait's.)
	e.rec.waitFor(t, 0, 10*time.Second, "the answer to complete", func(c call) bool {
		return !c.started && completes(c, id)
	})
	if n, f := e.rec.runCalls(id, "/complete"), e.rec.runCalls(id, "/fail"); n != 1 || f != 0 {
		t.Errorf("the worker completed the run %d times and failed it %d times, want 1 and 0", n, f)
	}
}

// A durable sleep lets go of the run: it is sleeping until its wake-up,
// and then continues past the sleep.
func testSleep(t *testing.T, e *env) {
	var after atomic.Int32
	e.startWorker(t, func(w *client.Worker) {
		client.Register(w, "nap", func(ctx *client.WorkflowContext, d time.Duration) (string, error) {
			// The wake-up time comes from a step, so that it is the same
			// on every replay.
			wake, err := client.Step(ctx, "wake-time", func(context.Context) (time.Time, error) {
				return time.Now().Add(d), nil
			})
			if err != nil {
				return "", err
			}
			if err := client.SleepUntil(ctx, wake, client.WithSleepName("nap")); err != nil {
				return "", err
			}
			if err := client.Sleep(ctx, 0); err != nil { // no sleep at all
				return "", err
			}
			after.Add(1)
			return "rested", nil
		})
	})
	mark := e.rec.mark()
	// Long enough that a loaded machine reads the run before it wakes.
	id := e.start(t, client.StartRequest{WorkflowType: "nap", Input: 3 * time.Second})
	e.rec.waitFor(t, mark, 10*time.Second, "the sleep", func(c call) bool {
		return !c.started && c.status == http.StatusOK && strings.HasSuffix(c.path, id+"/sleep")
	})
	run := e.get(t, id)
	if run.Status != client.StatusSleeping || after.Load() != 0 {
		t.Errorf("after the sleep began: status %s, %d executions past it; want sleeping, 0", run.Status, after.Load())
	}
	run = e.wait(t, id)
	if run.Status != client.StatusCompleted || after.Load() != 1 {
		t.Fatalf("run %s, %d executions past the sleep; want completed, 1", run.Status, after.Load())
	}
	steps, err := e.c.Steps(context.Background(), id)
	if err != nil || len(steps) != 2 {
		t.Fatalf("Steps = %+v, %v", steps, err)
	}
	var wake time.Time
	if err := json.Unmarshal(steps[0].Output, &wake); err != nil {
		t.Fatalf("wake-time output %s: %v", steps[0].Output, err)
	}
	if s := steps[1]; s.Name != "nap" || s.Kind != client.StepSleep || s.WakeUpAt.Sub(wake).Abs() > time.Microsecond {
		t.Errorf("sleep step = %+v, want nap waking at %s", s, wake)
	}
	if run.FinishedAt.Before(wake) {
		t.Errorf("the run finished at %s, before its wake-up at %s", run.FinishedAt, wake)
	}
}

// A step that fails twice succeeds on its third attempt; a step that runs
// out of attempts, or fails with a non-retryable error, returns its error
// to the workflow, which compensates.
func testStepRetries(t *testing.T, e *env) {
	var attempts []int
	var mu sync.Mutex
	var compensated atomic.Int32
	e.startWorker(t, func(w *client.Worker) {
		client.Register(w, "flaky", func(ctx *client.WorkflowContext, failures int) (int, error) {
			return client.Step(ctx, "call", func(sctx context.Context) (int, error) {
				info, _ := client.StepInfoFrom(sctx)
				mu.Lock()
				attempts = append(attempts, info.Attempt)
				mu.Unlock()
				if info.Attempt <= failures {
					return 0, fmt.Errorf("attempt %d failed", info.Attempt)
				}
				return info.Attempt, nil
			}, client.WithStepRetry(client.RetryPolicy{MaxAttempts: 3, InitialInterval: time.Millisecond}))
		})
		client.Register(w, "compensating", func(ctx *client.WorkflowContext, nonRetryable bool) (string, error) {
			_, err := client.Step(ctx, "charge", func(context.Context) (int, error) {
				err := errors.New("card declined")
				if nonRetryable {
					return 0, client.NonRetryable(client.ErrorType(err, "card_declined"))
				}
				return 0, err
			}, client.WithStepRetry(client.RetryPolicy{MaxAttempts: 2, InitialInterval: time.Millisecond}))
			if errors.Is(err, client.ErrSuspended) {
				return "", err
			}
			if err == nil {
				return "charged", nil
			}
			if _, cerr := client.Step(ctx, "refund", func(context.Context) (bool, error) {
				compensated.Add(1)
				return true, nil
			}); cerr != nil {
				return "", cerr
			}
			return "", err
		})
	})
	run := e.wait(t, e.start(t, client.StartRequest{WorkflowType: "flaky", Input: 2}))
	var out int
	if err := run.Result(&out); err != nil || out != 3 {
		t.Errorf("flaky run: %d, %v; want 3", out, err)
	}
	if !slices.Equal(attempts, []int{1, 2, 3}) {
		t.Errorf("step attempts = %v, want [1 2 3]", attempts)
	}
	if got, want := e.steps(t, run.RunID), []string{"call:1:failed", "call:2:failed", "call:3:completed"}; !slices.Equal(got, want) {
		t.Errorf("steps = %v, want %v", got, want)
	}
	steps, _ := e.c.Steps(context.Background(), run.RunID)
	if steps[0].Error == nil || steps[0].Error.Message != "attempt 1 failed" || steps[0].RetryAt.IsZero() {
		t.Errorf("first attempt = %+v, want its error and retry time", steps[0])
	}

	for _, nonRetryable := range []bool{false, true} {
		id := e.start(t, client.StartRequest{WorkflowType: "compensating", Input: nonRetryable,
			RetryPolicy: &client.RetryPolicy{MaxAttempts: 1}})
		run := e.wait(t, id)
		want := []string{"charge:1:failed", "charge:2:failed", "refund:1:completed"}
		if nonRetryable {
			want = []string{"charge:1:failed", "refund:1:completed"}
		}
		if got := e.steps(t, id); !slices.Equal(got, want) {
			t.Errorf("non-retryable %v: steps = %v, want %v", nonRetryable, got, want)
		}
		if run.Status != client.StatusFailed || run.Error == nil || run.Error.Message != `step "charge": card declined` {
			t.Errorf("non-retryable %v: run = %s %+v, want failed with the step's error", nonRetryable, run.Status, run.Error)
		}
		if nonRetryable && (!run.Error.NonRetryable || run.Error.Type != "card_declined") {
			t.Errorf("run error = %+v, want the step's type, non-retryable", run.Error)
		}
	}
	if compensated.Load() != 2 {
		t.Errorf("compensated %d times, want 2", compensated.Load())
	}
}

// A returned error fails the attempt: retried by the run's policy unless
// it is non-retryable or of a type the policy lists.
func testWorkflowErrors(t *testing.T, e *env) {
	var calls atomic.Int32
	e.startWorker(t, func(w *client.Worker) {
		client.Register(w, "fails", func(ctx *client.WorkflowContext, kind string) (string, error) {
			calls.Add(1)
			err := fmt.Errorf("%s failure on attempt %d", kind, ctx.Attempt())
			switch kind {
			case "non-retryable":
				return "", client.NonRetryable(client.ErrorDetails(err, map[string]int{"code": 7}))
			case "typed":
				return "", client.ErrorType(err, "bad_input")
			}
			return "", err
		})
		client.Register(w, "typed-input", func(ctx *client.WorkflowContext, in struct{ N int }) (int, error) {
			return in.N, nil
		})
	})
	retry := &client.RetryPolicy{MaxAttempts: 2, InitialInterval: time.Millisecond, NonRetryableErrorTypes: []string{"bad_input"}}
	cases := []struct {
		kind     string
		attempts int
		errType  string
	}{
		{"plain", 2, ""},
		{"non-retryable", 1, ""},
		{"typed", 1, "bad_input"},
	}
	for _, tc := range cases {
		run := e.wait(t, e.start(t, client.StartRequest{WorkflowType: "fails", Input: tc.kind, RetryPolicy: retry}))
		want := fmt.Sprintf("%s failure on attempt %d", tc.kind, tc.attempts)
		if run.Status != client.StatusFailed || run.Attempt != tc.attempts || run.Error == nil || run.Error.Message != want || run.Error.Type != tc.errType {
			t.Errorf("%s: run %s attempt %d error %+v; want failed on attempt %d with %q", tc.kind, run.Status, run.Attempt, run.Error, tc.attempts, want)
		}
		if tc.kind == "non-retryable" && (!run.Error.NonRetryable || string(run.Error.Details) != `{"code":7}`) {
			t.Errorf("non-retryable error = %+v, want non_retryable with details", run.Error)
		}
		var runErr *client.RunError
		if err := run.Result(nil); !errors.As(err, &runErr) || runErr.Info.Message != want {
			t.Errorf("Result = %v, want a *RunError with the message", err)
		}
	}
	if calls.Load() != 4 {
		t.Errorf("the workflow ran %d times, want 4", calls.Load())
	}
	run := e.wait(t, e.start(t, client.StartRequest{WorkflowType: "typed-input", Input: "not an object"}))
	if run.Status != client.StatusFailed || run.Attempt != 1 || run.Error.Type != "invalid_input" || !run.Error.NonRetryable {
		t.Errorf("run with a bad input = %s attempt %d %+v, want failed at once as invalid_input", run.Status, run.Attempt, run.Error)
	}
}

// A panic in workflow code fails the run with the panic's message; the
// worker goes on serving. A panic in a step function fails the step.
func testPanicFailsRun(t *testing.T, e *env) {
	e.startWorker(t, func(w *client.Worker) {
		client.Register(w, "panics", func(ctx *client.WorkflowContext, where string) (string, error) {
			if where == "workflow" {
				var m map[string]int
				m["boom"]++ // assignment to entry in nil map
			}
			return client.Step(ctx, "step", func(context.Context) (string, error) {
				panic("step exploded")
			}, client.WithStepRetry(client.RetryPolicy{MaxAttempts: 1}))
		})
		client.Register(w, "fine", func(ctx *client.WorkflowContext, _ any) (string, error) { return "ok", nil })
	})
	once := &client.RetryPolicy{MaxAttempts: 1}
	run := e.wait(t, e.start(t, client.StartRequest{WorkflowType: "panics", Input: "workflow", RetryPolicy: once}))
	if run.Status != client.StatusFailed || run.Error == nil || run.Error.Message != "panic: assignment to entry in nil map" || run.Error.Type != "panic" {
		t.Errorf("run = %s %+v, want failed with the panic's message", run.Status, run.Error)
	}
	if !strings.Contains(string(run.Error.Details), "worker_test.go") {
		t.Errorf("details = %s, want the stack", run.Error.Details)
	}
	run = e.wait(t, e.start(t, client.StartRequest{WorkflowType: "panics", Input: "step", RetryPolicy: once}))
	if run.Status != client.StatusFailed || run.Error == nil || run.Error.Message != `step "step": panic: step exploded` {
		t.Errorf("run = %s %+v, want failed with the step's panic", run.Status, run.Error)
	}
	run = e.wait(t, e.start(t, client.StartRequest{WorkflowType: "fine"}))
	if run.Status != client.StatusCompleted {
		t.Errorf("a run after the panics = %s, want completed", run.Status)
	}
}

// blocker is a workflow whose step waits for its context to end (or for
// release to close), and reports the context's cause.
type blocker struct {
	started chan string // run IDs, as their step starts
	causes  chan error
	release chan struct{}
}

func newBlocker() *blocker {
	return &blocker{started: make(chan string, 16), causes: make(chan error, 16), release: make(chan struct{})}
}

func (b *blocker) workflow(ctx *client.WorkflowContext, _ any) (string, error) {
	return client.Step(ctx, "block", func(sctx context.Context) (string, error) {
		b.started <- ctx.RunID()
		select {
		case <-sctx.Done():
			b.causes <- context.Cause(sctx)
			return "", sctx.Err()
		case <-b.release:
			return "released", nil
		}
	})
}

func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// Cancelling a running run cancels its workflow's context at once (the
// worker learns it from its heartbeat), and the worker moves on without
// reporting anything on the run.
func testCancelCancelsWorkflowContext(t *testing.T, e *env) {
	b := newBlocker()
	e.startWorker(t, func(w *client.Worker) {
		client.Register(w, "block", b.workflow)
		client.Register(w, "fine", func(ctx *client.WorkflowContext, _ any) (string, error) { return "ok", nil })
	}, client.WithMaxConcurrent(1))
	id := e.start(t, client.StartRequest{WorkflowType: "block"})
	receive(t, b.started, "the step to start")
	if _, err := e.c.Cancel(context.Background(), id); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if cause := receive(t, b.causes, "the workflow's context to end"); !errors.Is(cause, client.ErrCancelled) {
		t.Errorf("cause = %v, want ErrCancelled", cause)
	}
	// With one slot, the next run is claimed once the cancelled one is
	// done with.
	if run := e.wait(t, e.start(t, client.StartRequest{WorkflowType: "fine"})); run.Status != client.StatusCompleted {
		t.Errorf("next run = %s, want completed", run.Status)
	}
	for _, suffix := range []string{"/complete", "/fail", "/steps/block/fail", "/steps/block/complete"} {
		if n := e.rec.runCalls(id, suffix); n != 0 {
			t.Errorf("the worker sent %s %d times for the cancelled run", suffix, n)
		}
	}
	if run := e.get(t, id); run.Status != client.StatusCancelled || run.Error != nil {
		t.Errorf("run = %s %+v, want cancelled without an error", run.Status, run.Error)
	}
}

// A call that answers cancelled (here a step's complete) cancels the
// workflow's context too, and the next step does not run.
func testConflictOnCallStopsWorkflow(t *testing.T, e *env) {
	cancelled := make(chan error, 1)
	var secondRan atomic.Bool
	e.startWorker(t, func(w *client.Worker) {
		client.Register(w, "self-cancel", func(ctx *client.WorkflowContext, _ any) (string, error) {
			// Cancel the run from inside (as a user elsewhere would).
			if _, err := client.Step(ctx, "cancel", func(sctx context.Context) (bool, error) {
				_, err := e.c.Cancel(sctx, ctx.RunID())
				return true, err
			}); err != nil {
				cancelled <- err
				return "", err
			}
			_, err := client.Step(ctx, "second", func(context.Context) (bool, error) {
				secondRan.Store(true)
				return true, nil
			})
			cancelled <- errors.Join(err, context.Cause(ctx))
			return "", err
		})
	})
	id := e.start(t, client.StartRequest{WorkflowType: "self-cancel"})
	err := receive(t, cancelled, "the workflow to see the cancellation")
	if !errors.Is(err, client.ErrCancelled) || secondRan.Load() {
		t.Errorf("err = %v, second step ran %v; want ErrCancelled from the call and as the cause, the step not run", err, secondRan.Load())
	}
	if run := e.get(t, id); run.Status != client.StatusCancelled {
		t.Errorf("run = %s, want cancelled", run.Status)
	}
}

// Stopping a worker releases the runs that did not finish within the
// grace period: their contexts are cancelled with ErrReleased, they go
// back to pending without using an attempt, and another worker finishes
// them.
func testStopReleasesRunsWithoutBurningAttempts(t *testing.T, e *env) {
	b := newBlocker()
	w1 := e.startWorker(t, func(w *client.Worker) { client.Register(w, "block", b.workflow) },
		client.WithGracePeriod(50*time.Millisecond))
	id := e.start(t, client.StartRequest{WorkflowType: "block"})
	receive(t, b.started, "the step to start")
	w1.Stop()
	if err := w1.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if cause := receive(t, b.causes, "the workflow's context to end"); !errors.Is(cause, client.ErrReleased) {
		t.Errorf("cause = %v, want ErrReleased", cause)
	}
	run := e.get(t, id)
	if run.Status != client.StatusPending || run.Attempt != 1 || run.Error != nil {
		t.Errorf("released run = %s attempt %d error %+v, want pending, attempt 1, no error", run.Status, run.Attempt, run.Error)
	}
	var worker struct{ Status string }
	e.raw(t, http.MethodGet, "/v1/namespaces/"+e.ns+"/workers/"+w1.ID(), nil, &worker)
	if worker.Status != "offline" {
		t.Errorf("stopped worker is %q, want offline", worker.Status)
	}
	for _, suffix := range []string{"/complete", "/fail", "/steps/block/fail"} {
		if n := e.rec.runCalls(id, suffix); n != 0 {
			t.Errorf("the stopping worker sent %s %d times", suffix, n)
		}
	}

	close(b.release)
	e.startWorker(t, func(w *client.Worker) { client.Register(w, "block", b.workflow) })
	run = e.wait(t, id)
	if run.Status != client.StatusCompleted || run.Attempt != 1 {
		t.Errorf("run = %s attempt %d, want completed on attempt 1", run.Status, run.Attempt)
	}
	steps, _ := e.c.Steps(context.Background(), id)
	if got, want := e.steps(t, id), []string{"block:1:failed", "block:2:completed"}; !slices.Equal(got, want) || steps[0].Error == nil || steps[0].Error.Type != "released" {
		t.Errorf("steps = %v (first error %+v), want %v, the first released", got, steps[0].Error, want)
	}
}

// A stopping worker stops claiming at once and lets running workflows
// finish within the grace period.
func testStopLetsRunningWorkflowsFinish(t *testing.T, e *env) {
	b := newBlocker()
	var claims atomic.Int32
	w1 := e.startWorker(t, func(w *client.Worker) {
		client.Register(w, "block", func(ctx *client.WorkflowContext, in any) (string, error) {
			claims.Add(1)
			return b.workflow(ctx, in)
		})
	}, client.WithGracePeriod(time.Minute))
	id := e.start(t, client.StartRequest{WorkflowType: "block"})
	receive(t, b.started, "the step to start")
	w1.Stop()
	// Once the parked claim has ended, no run can reach the worker.
	e.rec.waitIdle(t, "/claim")
	later := e.start(t, client.StartRequest{WorkflowType: "block"})
	close(b.release)
	if err := w1.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if run := e.get(t, id); run.Status != client.StatusCompleted {
		t.Errorf("running run = %s, want completed", run.Status)
	}
	var worker struct {
		Status         string `json:"status"`
		TotalCompleted int64  `json:"total_completed"`
	}
	e.raw(t, http.MethodGet, "/v1/namespaces/"+e.ns+"/workers/"+w1.ID(), nil, &worker)
	if worker.Status != "offline" || worker.TotalCompleted != 1 {
		t.Errorf("stopped worker = %+v, want offline with 1 run completed", worker)
	}
	// (The server may claim the later run for the claim that was just
	// abandoned, and put it back: its status may be in flux.)
	if run := e.get(t, later); run.Status == client.StatusCompleted || claims.Load() != 1 {
		t.Errorf("run started after Stop = %s, workflow ran %d times; want not completed, 1", run.Status, claims.Load())
	}
}

// A worker the server drains stops claiming and returns from Run.
func testServerDrainStopsWorker(t *testing.T, e *env) {
	w := e.startWorker(t, func(w *client.Worker) {
		client.Register(w, "noop", func(*client.WorkflowContext, any) (any, error) { return nil, nil })
	})
	if status := e.raw(t, http.MethodPost, "/v1/namespaces/"+e.ns+"/workers/"+w.ID()+"/drain", nil, nil); status != http.StatusOK {
		t.Fatalf("drain: %d", status)
	}
	if err := w.wait(t, 10*time.Second); err != nil {
		t.Errorf("Run: %v", err)
	}
}

// The worker claims at most as many runs as it has free slots, and runs
// no more than max_concurrent at once.
func testWorkerRespectsMaxConcurrent(t *testing.T, e *env) {
	var running, peak atomic.Int32
	proceed := make(chan struct{})
	started := make(chan struct{}, 10)
	w := e.startWorker(t, func(w *client.Worker) {
		client.Register(w, "slot", func(ctx *client.WorkflowContext, _ any) (int32, error) {
			n := running.Add(1)
			defer running.Add(-1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			started <- struct{}{}
			<-proceed
			return n, nil
		})
	}, client.WithMaxConcurrent(2))
	var ids []string
	for range 5 {
		ids = append(ids, e.start(t, client.StartRequest{WorkflowType: "slot"}))
	}
	// Two run at once; each that ends makes room for one more.
	receive(t, started, "a run to start")
	receive(t, started, "a second run to start")
	for range 3 {
		proceed <- struct{}{}
		receive(t, started, "a run to start")
	}
	proceed <- struct{}{}
	proceed <- struct{}{}
	for _, id := range ids {
		if run := e.wait(t, id); run.Status != client.StatusCompleted {
			t.Errorf("run %s = %s, want completed", id, run.Status)
		}
	}
	if peak.Load() != 2 {
		t.Errorf("peak concurrency = %d, want 2", peak.Load())
	}

	// The heartbeat that follows the completions reports them.
	for _, id := range ids {
		e.rec.waitFor(t, 0, 10*time.Second, "the answer to complete", func(c call) bool {
			return !c.started && completes(c, id)
		})
	}
	mark := e.rec.mark()
	e.rec.waitFor(t, mark, 10*time.Second, "a heartbeat", func(c call) bool {
		return c.started && strings.HasSuffix(c.path, w.ID()+"/heartbeat")
	})
	e.rec.waitFor(t, mark, 10*time.Second, "its answer", func(c call) bool {
		return !c.started && strings.HasSuffix(c.path, w.ID()+"/heartbeat")
	})
	var worker struct {
		ActiveCount    int   `json:"active_count"`
		MaxConcurrent  int   `json:"max_concurrent"`
		TotalCompleted int64 `json:"total_completed"`
		TotalFailed    int64 `json:"total_failed"`
	}
	e.raw(t, http.MethodGet, "/v1/namespaces/"+e.ns+"/workers/"+w.ID(), nil, &worker)
	if worker.ActiveCount != 0 || worker.MaxConcurrent != 2 || worker.TotalCompleted != 5 || worker.TotalFailed != 0 {
		t.Errorf("worker = %+v, want 0 active of 2, 5 completed, 0 failed", worker)
	}
	for _, c := range e.rec.answered(func(c call) bool { return strings.HasSuffix(c.path, "/claim") }) {
		var body struct {
			MaxTasks int `json:"max_tasks"`
		}
		if err := json.Unmarshal(c.body, &body); err != nil || body.MaxTasks < 1 || body.MaxTasks > 2 {
			t.Errorf("claim body %s: max_tasks must be the free slots (1 or 2)", c.body)
		}
	}
}

// The worker's heartbeats extend the leases of its runs: a step that takes
// longer than a lease does not lose the run to the rescuer.
func testHeartbeatKeepsLeases(t *testing.T, e *env) {
	e.startWorker(t, func(w *client.Worker) {
		client.Register(w, "slow", func(ctx *client.WorkflowContext, _ any) (string, error) {
			return client.Step(ctx, "slow", func(sctx context.Context) (string, error) {
				select {
				case <-time.After(testLease + time.Second): // the work under test is time passing
					return "done", nil
				case <-sctx.Done():
					return "", context.Cause(sctx)
				}
			})
		})
	})
	run := e.wait(t, e.start(t, client.StartRequest{WorkflowType: "slow"}))
	if run.Status != client.StatusCompleted || run.Attempt != 1 {
		t.Errorf("run = %s attempt %d %+v, want completed on attempt 1", run.Status, run.Attempt, run.Error)
	}
}

// A worker the server took offline (as it does a worker silent for three
// heartbeat intervals) registers again and goes on: its running workflow
// finishes under its lease, and new runs reach it.
func testRegistersAgainWhenOffline(t *testing.T, e *env) {
	b := newBlocker()
	w := e.startWorker(t, func(w *client.Worker) { client.Register(w, "block", b.workflow) })
	first := e.start(t, client.StartRequest{WorkflowType: "block"})
	receive(t, b.started, "the step to start")
	old := w.ID()
	mark := e.rec.mark()
	if _, err := e.srv.Pool.Exec(context.Background(), `UPDATE workers SET status = 'offline' WHERE worker_id = $1`, old); err != nil {
		t.Fatal(err)
	}
	e.rec.waitFor(t, mark, 10*time.Second, "a heartbeat under a new registration", func(c call) bool {
		return c.started && strings.HasSuffix(c.path, "/heartbeat") && strings.Contains(c.path, "/workers/") && !strings.Contains(c.path, old)
	})
	close(b.release)
	for _, id := range []string{first, e.start(t, client.StartRequest{WorkflowType: "block"})} {
		if run := e.wait(t, id); run.Status != client.StatusCompleted || run.Attempt != 1 {
			t.Errorf("run = %s attempt %d, want completed on attempt 1", run.Status, run.Attempt)
		}
	}
}

// An output over the server's payload limit fails the step or the run for
// good: it would be as large on a retry.
func testOutputTooLarge(t *testing.T, e *env) {
	big := strings.Repeat("x", e.srv.Limits.Payload.MaxBytes)
	e.startWorker(t, func(w *client.Worker) {
		client.Register(w, "big", func(ctx *client.WorkflowContext, where string) (string, error) {
			if where == "run" {
				return big, nil
			}
			return client.Step(ctx, "big", func(context.Context) (string, error) { return big, nil })
		})
	})
	for _, where := range []string{"run", "step"} {
		run := e.wait(t, e.start(t, client.StartRequest{WorkflowType: "big", Input: where}))
		if run.Status != client.StatusFailed || run.Attempt != 1 || run.Error == nil || run.Error.Type != "payload_too_large" ||
			!run.Error.NonRetryable || !strings.Contains(run.Error.Message, "output") {
			t.Errorf("%s output too large: run = %s attempt %d %+v, want failed at once as payload_too_large", where, run.Status, run.Attempt, run.Error)
		}
	}
	if got, want := e.steps(t, e.list(t, "big")[0]), []string{"big:1:failed"}; !slices.Equal(got, want) {
		t.Errorf("steps = %v, want %v", got, want)
	}
}
