package domain

import (
	"encoding/json"
	"time"
)

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
