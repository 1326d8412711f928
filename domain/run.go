package domain

import (
	"encoding/json"
	"strings"
	"time"
)

// RunStatus is where a workflow run is in its life.
type RunStatus string

// The statuses of a run. Pending, sleeping and running are live; the rest
// are terminal and never change again.
const (
	RunPending   RunStatus = "pending"
	RunSleeping  RunStatus = "sleeping"
	RunRunning   RunStatus = "running"
	RunCompleted RunStatus = "completed"
	RunFailed    RunStatus = "failed"
	RunCancelled RunStatus = "cancelled"
)

// RunStatuses lists every run status.
var RunStatuses = []RunStatus{RunPending, RunSleeping, RunRunning, RunCompleted, RunFailed, RunCancelled}

// Terminal reports whether s is a final status.
func (s RunStatus) Terminal() bool {
	return s == RunCompleted || s == RunFailed || s == RunCancelled
}

// Valid reports whether s is a known status.
func (s RunStatus) Valid() bool {
	for _, v := range RunStatuses {
		if s == v {
			return true
		}
	}
	return false
}

// Run is a workflow run. Input and Output are left out (nil) where a view
// omits them, such as lists.
type Run struct {
	RunID          string          `json:"run_id"`
	Namespace      string          `json:"namespace"`
	TaskQueue      string          `json:"task_queue"`
	WorkflowType   string          `json:"workflow_type"`
	ExternalID     *string         `json:"external_id"`
	Version        *string         `json:"version"`
	Status         RunStatus       `json:"status"`
	Input          json.RawMessage `json:"input,omitempty"`
	Output         json.RawMessage `json:"output,omitempty"`
	Error          *ErrorInfo      `json:"error"`
	Attempt        int             `json:"attempt"`
	RetryPolicy    RetryPolicy     `json:"retry_policy"`
	WorkerID       *string         `json:"worker_id"`
	LeaseExpiresAt *time.Time      `json:"lease_expires_at"`
	AvailableAt    *time.Time      `json:"available_at"`
	WaitingFor     []string        `json:"waiting_for"`
	ParentRunID    *string         `json:"parent_run_id"`
	ScheduleID     *string         `json:"schedule_id"`
	CreatedAt      time.Time       `json:"created_at"`
	StartedAt      *time.Time      `json:"started_at"`
	FinishedAt     *time.Time      `json:"finished_at"`
}

// ErrorInfo is the error a failed step or run reports.
type ErrorInfo struct {
	Message      string          `json:"message"`
	Type         *string         `json:"type"`
	NonRetryable bool            `json:"non_retryable"`
	Details      json.RawMessage `json:"details"`
}

// MaxErrorMessageBytes bounds ErrorInfo.Message.
const MaxErrorMessageBytes = 64 << 10

// Validate checks e as a request gives it; details count as a payload.
func (e *ErrorInfo) Validate(field string, limits PayloadLimits) error {
	if e == nil {
		return Invalid(field, "is required")
	}
	if e.Message == "" {
		return Invalid(field+".message", "must not be empty")
	}
	if err := ValidateText(field+".message", e.Message, MaxErrorMessageBytes); err != nil {
		return err
	}
	if e.Type != nil {
		if *e.Type == "" {
			return Invalid(field+".type", "must not be empty")
		}
		if err := ValidateText(field+".type", *e.Type, MaxNameBytes); err != nil {
			return err
		}
	}
	_, err := limits.Check(field+".details", e.Details)
	return err
}

// StartRequest is a request to start a workflow run, as the client sends it.
type StartRequest struct {
	WorkflowType string            `json:"workflow_type"`
	TaskQueue    string            `json:"task_queue"`
	Input        json.RawMessage   `json:"input"`
	ExternalID   *string           `json:"external_id"`
	Version      *string           `json:"version"`
	RetryPolicy  *RetryPolicyInput `json:"retry_policy"`
	StartAt      *Timestamp        `json:"start_at"`
	StartDelayMS *int64            `json:"start_delay_ms"`
}

// MaxVersionBytes bounds a run's version string.
const MaxVersionBytes = 256

// MaxStartDelay bounds how far ahead a run may be scheduled.
const MaxStartDelay = 10 * 365 * 24 * time.Hour

// NewRun is a validated start request with its defaults filled in.
type NewRun struct {
	TaskQueue    string
	WorkflowType string
	Input        json.RawMessage
	ExternalID   *string
	Version      *string
	RetryPolicy  RetryPolicy
	// StartAt, when set, is when the run becomes claimable; otherwise it is
	// claimable StartDelay after the database's now().
	StartAt    *time.Time
	StartDelay time.Duration
	// LargeInput is set when Input is over the payload warning threshold.
	LargeInput bool
}

// Validate checks r and returns the run to create. Errors name the field at
// fault as the request spells it.
func (r StartRequest) Validate(limits PayloadLimits) (NewRun, error) {
	n := NewRun{
		TaskQueue:    r.TaskQueue,
		WorkflowType: r.WorkflowType,
		Input:        r.Input,
		ExternalID:   r.ExternalID,
		Version:      r.Version,
	}
	if err := ValidateName("workflow_type", r.WorkflowType); err != nil {
		return n, err
	}
	if n.TaskQueue == "" {
		n.TaskQueue = DefaultName
	}
	if err := ValidateIdent("task_queue", n.TaskQueue); err != nil {
		return n, err
	}
	if r.ExternalID != nil {
		if err := ValidateName("external_id", *r.ExternalID); err != nil {
			return n, err
		}
		if strings.HasPrefix(*r.ExternalID, ScheduleExternalIDPrefix) {
			return n, Invalid("external_id", "must not start with %q: such IDs are reserved for the runs schedules start", ScheduleExternalIDPrefix)
		}
	}
	if r.Version != nil {
		if err := validateVersion("version", *r.Version); err != nil {
			return n, err
		}
	}
	p, err := r.RetryPolicy.Resolve("retry_policy", DefaultRetryPolicy())
	if err != nil {
		return n, err
	}
	n.RetryPolicy = p
	if r.StartAt != nil && r.StartDelayMS != nil {
		return n, Invalid("start_at", "give at most one of start_at and start_delay_ms")
	}
	if r.StartAt != nil {
		at, err := r.StartAt.Time("start_at")
		if err != nil {
			return n, err
		}
		n.StartAt = &at
	}
	if r.StartDelayMS != nil {
		if n.StartDelay, err = DurationMS("start_delay_ms", *r.StartDelayMS, MaxStartDelay); err != nil {
			return n, err
		}
	}
	if len(n.Input) == 0 {
		n.Input = json.RawMessage("null")
	}
	n.LargeInput, err = limits.Check("input", n.Input)
	return n, err
}

// RunFilter selects runs of a namespace for a list.
type RunFilter struct {
	Namespace    string
	Statuses     []RunStatus
	TaskQueue    string
	WorkflowType string
	ExternalID   string
	ScheduleID   string
	Page         Page
}

// Page is one page of a keyset-paginated list: at most Limit items after
// the cursor, which is the last key of the previous page ("" for the first).
type Page struct {
	Limit int
	After string
}

// Pagination defaults.
const (
	DefaultPageLimit = 50
	MaxPageLimit     = 500
)

// StartResult is the outcome of one item of a batch start.
type StartResult struct {
	RunID         string    `json:"run_id"`
	Status        RunStatus `json:"status"`
	AlreadyExists bool      `json:"already_exists"`
}
