package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// Signal is a signal in a run's inbox.
type Signal struct {
	SignalID  string          `json:"signal_id"`
	RunID     string          `json:"run_id"`
	Name      string          `json:"name"`
	Seq       int64           `json:"seq"`
	Status    string          `json:"status"` // buffered, delivered or discarded
	Step      *string         `json:"step"`
	Input     json.RawMessage `json:"input,omitempty"`
	CreatedAt time.Time       `json:"created_at"`
	// Duplicate says the send was a replay of an earlier one with the
	// same idempotency key.
	Duplicate bool `json:"duplicate"`
}

// SignalOption configures a send.
type SignalOption func(*signalConfig)

type signalConfig struct{ key string }

// WithIdempotencyKey makes a send safe to retry: the same key with the
// same target, name and input answers the first send (Duplicate true).
func WithIdempotencyKey(key string) SignalOption {
	return func(c *signalConfig) { c.key = key }
}

func (c *Client) sendSignal(ctx context.Context, path string, body any, out any, opts []SignalOption) (int, error) {
	var cfg signalConfig
	for _, o := range opts {
		o(&cfg)
	}
	r := request{method: http.MethodPost, path: path, body: body}
	if cfg.key != "" {
		r.header = http.Header{"Idempotency-Key": {cfg.key}}
		r.idempotent = true
	}
	return c.do(ctx, r, out)
}

// Signal sends the signal name with input to the run runID. It is kept in
// the run's inbox until a wait step takes it.
func (c *Client) Signal(ctx context.Context, runID, name string, input any, opts ...SignalOption) (*Signal, error) {
	var sg Signal
	_, err := c.sendSignal(ctx, c.runPath(runID, "signals", name), map[string]any{"input": input}, &sg, opts)
	if err != nil {
		return nil, err
	}
	return &sg, nil
}

// SignalByExternalID sends a signal to the live run holding externalID.
func (c *Client) SignalByExternalID(ctx context.Context, externalID, name string, input any, opts ...SignalOption) (*Signal, error) {
	var sg Signal
	path := c.nsPath + "/workflows/by-external-id/" + url.PathEscape(externalID) + "/signals/" + url.PathEscape(name)
	if _, err := c.sendSignal(ctx, path, map[string]any{"input": input}, &sg, opts); err != nil {
		return nil, err
	}
	return &sg, nil
}

// SignalWithStartResult is the run a signal-with-start started or found,
// and its signal.
type SignalWithStartResult struct {
	Run       Run    `json:"run"`
	Signal    Signal `json:"signal"`
	Started   bool   `json:"started"`
	Duplicate bool   `json:"duplicate"`
}

// SignalWithStart starts req's run (req.ExternalID is required) and sends
// it the signal, or sends the signal to the live run holding the external
// ID, atomically.
func (c *Client) SignalWithStart(ctx context.Context, req StartRequest, name string, input any, opts ...SignalOption) (*SignalWithStartResult, error) {
	if req.ExternalID == "" {
		return nil, errors.New("kagzi: signal-with-start needs an external ID")
	}
	raw, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("kagzi: encode the start request: %w", err)
	}
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		return nil, err
	}
	body["signal"] = map[string]any{"name": name, "input": input}
	var res SignalWithStartResult
	if _, err := c.sendSignal(ctx, c.nsPath+"/workflows/signal-with-start", body, &res, opts); err != nil {
		return nil, err
	}
	return &res, nil
}

// Received is what a wait step took: a signal, or nothing by its timeout.
type Received[T any] struct {
	Name     string
	Input    T
	Seq      int64
	SignalID string
	TimedOut bool
}

type waitOutput struct {
	Signal *struct {
		Name     string          `json:"name"`
		Input    json.RawMessage `json:"input"`
		Seq      int64           `json:"seq"`
		SignalID string          `json:"signal_id"`
	} `json:"signal"`
	TimedOut bool `json:"timed_out"`
}

type waitAnswer struct {
	Resolved bool            `json:"resolved"`
	Output   json.RawMessage `json:"output"`
}

// WaitForSignal is the wait step named step: it returns the oldest signal
// named in names sent to the run (also one sent before the wait), or, once
// timeout has passed (zero or less: never), TimedOut. While nothing has
// come, the run parks durably, holding no worker, and WaitForSignal
// returns ErrSuspended (return it); the run is replayed when a signal
// arrives or the timeout passes. Like a step's, its outcome is recorded
// and replayed, so the step name must be the same in every execution.
func WaitForSignal[T any](ctx *WorkflowContext, step string, names []string, timeout time.Duration) (Received[T], error) {
	body := map[string]any{"signals": names}
	if timeout > 0 {
		body["timeout_ms"] = millis(timeout)
	}
	return waitCall[T](ctx, step, "wait", body)
}

func waitCall[T any](ctx *WorkflowContext, step, call string, body map[string]any) (Received[T], error) {
	var r Received[T]
	ex := ctx.ex
	if ex.history != nil {
		if st, ok := ex.history[step]; ok && st.Status == StepCompleted && call == "wait" {
			return decodeWait[T](step, st.Output)
		}
	}
	body["lease_id"] = ex.task.LeaseID
	var ans waitAnswer
	if err := ex.call(body, &ans, "steps", step, call); err != nil {
		return r, err
	}
	if !ans.Resolved {
		return r, ex.suspend()
	}
	return decodeWait[T](step, ans.Output)
}

func decodeWait[T any](step string, raw json.RawMessage) (Received[T], error) {
	var r Received[T]
	var out waitOutput
	if err := json.Unmarshal(raw, &out); err != nil {
		return r, fmt.Errorf("wait %q: decode its output: %w", step, err)
	}
	r.TimedOut = out.TimedOut
	if out.Signal != nil {
		r.Name, r.Seq, r.SignalID = out.Signal.Name, out.Signal.Seq, out.Signal.SignalID
		if err := json.Unmarshal(out.Signal.Input, &r.Input); err != nil {
			return r, fmt.Errorf("wait %q: decode the signal's input as %T: %w", step, r.Input, err)
		}
	}
	return r, nil
}

// ChildOptions are a child run's settings.
type ChildOptions struct {
	TaskQueue   string // the parent's when empty
	ExternalID  string
	RetryPolicy *RetryPolicy
	// Abandon leaves the child running when the parent ends (by default it
	// is cancelled).
	Abandon bool
}

func childBody(workflowType string, input any, o ChildOptions) map[string]any {
	body := map[string]any{"workflow_type": workflowType, "input": input}
	if o.TaskQueue != "" {
		body["task_queue"] = o.TaskQueue
	}
	if o.ExternalID != "" {
		body["external_id"] = o.ExternalID
	}
	if o.RetryPolicy != nil {
		body["retry_policy"] = o.RetryPolicy
	}
	if o.Abandon {
		body["parent_close_policy"] = "abandon"
	}
	return body
}

// StartChild starts a child run of workflowType by the step named step,
// once whatever the replays, and returns its run ID without waiting for
// it. WaitForSignal on "kagzi.child/"+step collects its end later.
//
// The server bounds a run's live children and the depth of a chain of
// children (max_live_children, max_child_depth in /v1/info). A child past
// either is not started: the error is of type ChildLimitExceeded and
// matches [ErrLimitExceeded] (not [ErrConflict], which says a live run
// holds the child's ExternalID). It is not retried by the call; returned
// from the workflow it fails the run, which its retry policy retries
// (a live child may have ended meanwhile) unless it lists
// ChildLimitExceeded in NonRetryableErrorTypes. A replay of a child
// already started is never refused.
func StartChild(ctx *WorkflowContext, step, workflowType string, input any, o ChildOptions) (string, error) {
	body := childBody(workflowType, input, o)
	ex := ctx.ex
	body["lease_id"] = ex.task.LeaseID
	var ans waitAnswer
	if err := ex.call(body, &ans, "steps", step, "child"); err != nil {
		return "", childError(step, err)
	}
	var out struct {
		ChildRunID string `json:"child_run_id"`
	}
	if err := json.Unmarshal(ans.Output, &out); err != nil {
		return "", fmt.Errorf("child %q: %w", step, err)
	}
	if out.ChildRunID == "" { // a replay after the child ended answers its end
		var end childEnd
		_ = json.Unmarshal(ans.Output, &end)
		return end.ChildRunID, nil
	}
	return out.ChildRunID, nil
}

// childError gives a child step's refusal by the server's child limits
// the type ChildLimitExceeded, so that a retry policy can name it; other
// errors are returned as they are.
func childError(step string, err error) error {
	if errors.Is(err, ErrLimitExceeded) {
		return ErrorType(fmt.Errorf("child %q: %w", step, err), "ChildLimitExceeded")
	}
	return err
}

// childEnd is the input of a child's end signal.
type childEnd struct {
	ChildRunID string          `json:"child_run_id"`
	Status     string          `json:"status"`
	Output     json.RawMessage `json:"output"`
	Error      *ErrorInfo      `json:"error"`
}

// ExecuteChild starts a child run of workflowType by the step named step
// (once) and awaits its end, parking the parent meanwhile: it returns the
// child's output, or an error of type ChildWorkflowFailed or
// ChildWorkflowCancelled carrying the child's error. A child the server's
// limits refuse is an error of type ChildLimitExceeded, as for
// [StartChild].
func ExecuteChild[T any](ctx *WorkflowContext, step, workflowType string, input any, o ChildOptions) (T, error) {
	var zero T
	body := childBody(workflowType, input, o)
	body["await"] = true
	got, err := waitCall[childEnd](ctx, step, "child", body)
	if err != nil {
		return zero, childError(step, err)
	}
	end := got.Input
	switch end.Status {
	case "completed":
		var v T
		if err := json.Unmarshal(end.Output, &v); err != nil {
			return zero, fmt.Errorf("child %q: decode its output as %T: %w", step, v, err)
		}
		return v, nil
	case "cancelled":
		return zero, ErrorType(fmt.Errorf("child %q (run %s) was cancelled", step, end.ChildRunID), "ChildWorkflowCancelled")
	default:
		msg := "failed"
		if end.Error != nil {
			msg = end.Error.Message
		}
		return zero, ErrorType(fmt.Errorf("child %q (run %s) failed: %s", step, end.ChildRunID, msg), "ChildWorkflowFailed")
	}
}
