package domain

import (
	"encoding/json"
	"time"
)

// DefaultMaxHistoryBytes is the default bound on the histories of one
// claim answer together.
const DefaultMaxHistoryBytes = 4 << 20

// StepKind says what a step is.
type StepKind string

// Step kinds.
const (
	StepFunction StepKind = "function"
	StepSleep    StepKind = "sleep"
	StepWait     StepKind = "wait"
	StepChild    StepKind = "child"
)

// StepStatus is the state of one attempt of a step.
type StepStatus string

// Step attempt statuses.
const (
	StepRunning   StepStatus = "running"
	StepCompleted StepStatus = "completed"
	StepFailed    StepStatus = "failed"
)

// Step is one attempt of a named step of a run.
type Step struct {
	RunID      string          `json:"run_id"`
	Name       string          `json:"name"`
	Kind       StepKind        `json:"kind"`
	Attempt    int             `json:"attempt"`
	Status     StepStatus      `json:"status"`
	Input      json.RawMessage `json:"input"`
	Output     json.RawMessage `json:"output"`
	Error      *ErrorInfo      `json:"error"`
	RetryAt    *time.Time      `json:"retry_at"`
	WakeUpAt   *time.Time      `json:"wake_up_at"`
	StartedAt  time.Time       `json:"started_at"`
	CreatedAt  time.Time       `json:"created_at"`
	FinishedAt *time.Time      `json:"finished_at"`
}

// BeginStep is a worker's request to begin a step attempt.
type BeginStep struct {
	Name        string
	Kind        StepKind
	Input       json.RawMessage
	RetryPolicy *RetryPolicyInput
}

// SleepRequest is a worker's request to put its run to sleep: until Until
// when set, otherwise for Duration.
type SleepRequest struct {
	Step     string
	Duration time.Duration
	Until    *time.Time
}

// StepOutcome says how a reported step attempt ended.
type StepOutcome string

// Step outcomes.
const (
	StepOutcomeComplete StepOutcome = "complete"
	StepOutcomeFail     StepOutcome = "fail"
)

// StepReport is a worker's report of a step's outcome: its output, or its
// error. When the step has no running attempt (the worker skipped begin),
// the report records the attempt and its outcome at once, with Input,
// RetryPolicy and StartedAt as begin would have had them.
type StepReport struct {
	RunID       string
	LeaseID     string
	Name        string
	Outcome     StepOutcome
	Output      json.RawMessage
	Error       *ErrorInfo
	Input       json.RawMessage
	RetryPolicy *RetryPolicyInput
	StartedAt   *time.Time
}

// StepResult is what a step report did. AlreadyCompleted says that the
// step had already completed, or failed for good in this attempt of its
// run: nothing was written, and Step is the recorded attempt. Err, when
// set, says why nothing was recorded (lease lost, cancelled, ...).
type StepResult struct {
	Step             Step
	AlreadyCompleted bool
	RetryScheduled   bool
	Err              error
}
