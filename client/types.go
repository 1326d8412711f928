package client

import (
	"encoding/json"
	"fmt"
	"time"
)

// Status is where a workflow run is in its life.
type Status string

// The statuses of a run. Pending, sleeping and running are live; completed,
// failed and cancelled are terminal and never change again.
const (
	StatusPending   Status = "pending"
	StatusSleeping  Status = "sleeping"
	StatusRunning   Status = "running"
	StatusCompleted Status = "completed"
	StatusFailed    Status = "failed"
	StatusCancelled Status = "cancelled"
)

// Terminal reports whether s is a final status.
func (s Status) Terminal() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusCancelled
}

// Run is a workflow run. Optional fields the server leaves null are the
// zero value: "" for strings, the zero time.Time for times.
type Run struct {
	RunID        string `json:"run_id"`
	Namespace    string `json:"namespace"`
	TaskQueue    string `json:"task_queue"`
	WorkflowType string `json:"workflow_type"`
	ExternalID   string `json:"external_id"`
	Version      string `json:"version"`
	Status       Status `json:"status"`
	// Input and Output are the run's JSON payloads. Only Get and Wait
	// return them; Start and List leave them nil.
	Input  json.RawMessage `json:"input"`
	Output json.RawMessage `json:"output"`
	// Error is the error of the last failed attempt, or nil.
	Error *ErrorInfo `json:"error"`
	// Attempt is 0 before the first claim, 1 from it, one more for each
	// claim that follows a failed attempt.
	Attempt        int         `json:"attempt"`
	RetryPolicy    RetryPolicy `json:"retry_policy"`
	WorkerID       string      `json:"worker_id"`
	LeaseExpiresAt time.Time   `json:"lease_expires_at"`
	// AvailableAt is zero for a run parked in a wait without a timeout.
	AvailableAt time.Time `json:"available_at"`
	// WaitingFor names the signals a run parked in a wait waits for.
	WaitingFor []string `json:"waiting_for"`
	// ParentRunID is the run whose child step started this one, or "".
	ParentRunID string `json:"parent_run_id"`
	// ScheduleID is the schedule that started the run (fired or
	// triggered), or "".
	ScheduleID string    `json:"schedule_id"`
	CreatedAt  time.Time `json:"created_at"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
}

// Result decodes a completed run's output into out (a pointer, or nil to
// only check the outcome). For a run that failed or was cancelled it
// returns a *RunError (a cancelled run's matches ErrCancelled), and for a
// run that is not finished, an error saying so.
func (r *Run) Result(out any) error {
	switch r.Status {
	case StatusCompleted:
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(r.Output, out); err != nil {
			return fmt.Errorf("kagzi: decode the output of run %s: %w", r.RunID, err)
		}
		return nil
	case StatusFailed, StatusCancelled:
		return &RunError{RunID: r.RunID, Status: r.Status, Info: r.Error}
	}
	return fmt.Errorf("kagzi: run %s is %s, not finished", r.RunID, r.Status)
}

// RetryPolicy says how often and how soon a failed attempt of a run or a
// step is tried again. In a request, zero fields take the server's
// defaults (5 attempts, 1s initial interval, coefficient 2, 5 min cap) or,
// for a step, its run's policy.
type RetryPolicy struct {
	// MaxAttempts bounds the attempts, the first included.
	MaxAttempts int
	// InitialInterval is the delay after the first failed attempt; the
	// n-th waits InitialInterval * BackoffCoefficient^(n-1), at most
	// MaxInterval. The server counts whole milliseconds (at least 1).
	InitialInterval    time.Duration
	BackoffCoefficient float64
	MaxInterval        time.Duration
	// NonRetryableErrorTypes lists error types (see ErrorType) that are
	// never retried.
	NonRetryableErrorTypes []string
}

type retryPolicyJSON struct {
	MaxAttempts            int      `json:"max_attempts,omitempty"`
	InitialIntervalMS      int64    `json:"initial_interval_ms,omitempty"`
	BackoffCoefficient     float64  `json:"backoff_coefficient,omitempty"`
	MaxIntervalMS          int64    `json:"max_interval_ms,omitempty"`
	NonRetryableErrorTypes []string `json:"non_retryable_error_types,omitempty"`
}

// millis rounds d up to whole milliseconds, so that a positive duration
// never becomes 0 (which would mean "the default").
func millis(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// MarshalJSON writes the policy as the API spells it, leaving out zero
// fields so that the server fills them in.
func (p RetryPolicy) MarshalJSON() ([]byte, error) {
	return json.Marshal(retryPolicyJSON{
		MaxAttempts:            p.MaxAttempts,
		InitialIntervalMS:      millis(p.InitialInterval),
		BackoffCoefficient:     p.BackoffCoefficient,
		MaxIntervalMS:          millis(p.MaxInterval),
		NonRetryableErrorTypes: p.NonRetryableErrorTypes,
	})
}

// UnmarshalJSON reads the policy as the API spells it.
func (p *RetryPolicy) UnmarshalJSON(b []byte) error {
	var j retryPolicyJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*p = RetryPolicy{
		MaxAttempts:            j.MaxAttempts,
		InitialInterval:        time.Duration(j.InitialIntervalMS) * time.Millisecond,
		BackoffCoefficient:     j.BackoffCoefficient,
		MaxInterval:            time.Duration(j.MaxIntervalMS) * time.Millisecond,
		NonRetryableErrorTypes: j.NonRetryableErrorTypes,
	}
	return nil
}

// StartRequest asks for a new run.
type StartRequest struct {
	// WorkflowType is required.
	WorkflowType string
	// TaskQueue defaults to "default".
	TaskQueue string
	// Input is encoded to JSON; a json.RawMessage is sent as it is.
	Input any
	// ExternalID, when set, makes the start idempotent: while a run with
	// it is not finished, starting again returns that run. Such starts
	// are retried on transient failures; starts without one are not.
	ExternalID string
	Version    string
	// RetryPolicy, when set, replaces the server's default policy.
	RetryPolicy *RetryPolicy
	// StartAt or StartDelay (at most one) makes the run claimable later.
	StartAt    time.Time
	StartDelay time.Duration
}

type startRequestJSON struct {
	WorkflowType string          `json:"workflow_type"`
	TaskQueue    string          `json:"task_queue,omitempty"`
	Input        json.RawMessage `json:"input,omitempty"`
	ExternalID   *string         `json:"external_id,omitempty"`
	Version      *string         `json:"version,omitempty"`
	RetryPolicy  *RetryPolicy    `json:"retry_policy,omitempty"`
	StartAt      *time.Time      `json:"start_at,omitempty"`
	StartDelayMS *int64          `json:"start_delay_ms,omitempty"`
}

func (r StartRequest) wire() (startRequestJSON, error) {
	j := startRequestJSON{WorkflowType: r.WorkflowType, TaskQueue: r.TaskQueue, RetryPolicy: r.RetryPolicy}
	input, err := encodePayload(r.Input)
	if err != nil {
		return j, fmt.Errorf("kagzi: encode the input of %s: %w", r.WorkflowType, err)
	}
	j.Input = input
	if r.ExternalID != "" {
		j.ExternalID = &r.ExternalID
	}
	if r.Version != "" {
		j.Version = &r.Version
	}
	if !r.StartAt.IsZero() {
		t := r.StartAt.UTC()
		j.StartAt = &t
	}
	if r.StartDelay > 0 {
		ms := millis(r.StartDelay)
		j.StartDelayMS = &ms
	}
	return j, nil
}

// encodePayload encodes v as a JSON payload; a json.RawMessage (or []byte
// holding JSON) is passed through after a validity check.
func encodePayload(v any) (json.RawMessage, error) {
	switch p := v.(type) {
	case json.RawMessage:
		if len(p) == 0 {
			return nil, nil
		}
		if !json.Valid(p) {
			return nil, fmt.Errorf("json.RawMessage is not valid JSON")
		}
		return p, nil
	case nil:
		return nil, nil
	}
	return json.Marshal(v)
}

// StartResult is the outcome of Start.
type StartResult struct {
	// Run is the new run, or the unfinished run that already had the
	// request's ExternalID. It has no Input or Output.
	Run Run
	// AlreadyExists is true when no run was created because of that.
	AlreadyExists bool
}

// BatchResult is the outcome of one item of StartBatch.
type BatchResult struct {
	RunID         string `json:"run_id"`
	Status        Status `json:"status"`
	AlreadyExists bool   `json:"already_exists"`
}

// StepKind says what a step is.
type StepKind string

// Step kinds.
const (
	StepFunction StepKind = "function"
	StepSleep    StepKind = "sleep"
)

// StepStatus is the state of one attempt of a step.
type StepStatus string

// Step attempt statuses.
const (
	StepRunning   StepStatus = "running"
	StepCompleted StepStatus = "completed"
	StepFailed    StepStatus = "failed"
)

// StepAttempt is one attempt of a named step of a run, as Steps lists
// them.
type StepAttempt struct {
	RunID      string          `json:"run_id"`
	Name       string          `json:"name"`
	Kind       StepKind        `json:"kind"`
	Attempt    int             `json:"attempt"`
	Status     StepStatus      `json:"status"`
	Input      json.RawMessage `json:"input"`
	Output     json.RawMessage `json:"output"`
	Error      *ErrorInfo      `json:"error"`
	RetryAt    time.Time       `json:"retry_at"`
	WakeUpAt   time.Time       `json:"wake_up_at"`
	CreatedAt  time.Time       `json:"created_at"`
	FinishedAt time.Time       `json:"finished_at"`
}

// ListOptions selects the runs of a list. Zero fields do not filter.
type ListOptions struct {
	// Statuses keeps runs in any of these statuses.
	Statuses     []Status
	TaskQueue    string
	WorkflowType string
	ExternalID   string
	// PageSize is the number of runs fetched per request (server default
	// 50, at most 500).
	PageSize int
}

// RunPage is one page of a list of runs. The runs have no Input or Output.
type RunPage struct {
	Runs []Run `json:"workflows"`
	// NextCursor fetches the next page; "" on the last page.
	NextCursor string `json:"next_cursor"`
}

// ServerInfo is what GET /v1/info says about the server.
type ServerInfo struct {
	Version    string `json:"version"`
	APIVersion string `json:"api_version"`
	// Auth is "off" or "keys".
	Auth   string `json:"auth"`
	Limits struct {
		MaxPayloadBytes     int   `json:"max_payload_bytes"`
		WarnPayloadBytes    int   `json:"warn_payload_bytes"`
		MaxBatchSize        int   `json:"max_batch_size"`
		MaxBatchBytes       int64 `json:"max_batch_bytes"`
		MaxWaitMS           int64 `json:"max_wait_ms"`
		LeaseDurationMS     int64 `json:"lease_duration_ms"`
		HeartbeatIntervalMS int64 `json:"heartbeat_interval_ms"`
	} `json:"limits"`
}
