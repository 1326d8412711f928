package domain

import (
	"encoding/json"
	"slices"
	"strings"
	"time"
)

// Claim bounds.
const (
	MaxClaimTasks      = 100
	DefaultClaimWaitMS = 30000
)

// ClaimRequest is a worker's long-poll for work on one queue.
type ClaimRequest struct {
	Namespace string
	TaskQueue string
	// WorkerID, when set, names the registered worker claiming.
	WorkerID string
	// WorkflowTypes limits the claim to these types; empty means any.
	WorkflowTypes []string
	MaxTasks      int
	Wait          time.Duration
}

// TypeSet is a canonical key for the request's workflow types: claims with
// the same key can be served by one statement.
func (r ClaimRequest) TypeSet() string {
	if len(r.WorkflowTypes) == 0 {
		return ""
	}
	types := slices.Clone(r.WorkflowTypes)
	slices.Sort(types)
	return strings.Join(slices.Compact(types), "\x00")
}

// Task is a run handed to a worker under a lease.
type Task struct {
	RunID          string          `json:"run_id"`
	Namespace      string          `json:"namespace"`
	TaskQueue      string          `json:"task_queue"`
	WorkflowType   string          `json:"workflow_type"`
	Version        *string         `json:"version"`
	Input          json.RawMessage `json:"input"`
	Attempt        int             `json:"attempt"`
	LeaseID        string          `json:"lease_id"`
	LeaseExpiresAt time.Time       `json:"lease_expires_at"`
	// Steps is the run's memoized history: the latest attempt of each
	// step that completed, or failed for good in this attempt of the run,
	// in the order they began. It is nil, and StepsTruncated set, when the
	// history did not fit in the claim answer.
	Steps          []Step `json:"steps"`
	StepsTruncated bool   `json:"steps_truncated"`
	// StepAttempts gives, for each step with attempts but not in Steps
	// (a retry due, an attempt cut short), its latest attempt's number, so
	// that a worker that skips begin knows which attempt it runs. Empty
	// when Steps is nil.
	StepAttempts map[string]int `json:"step_attempts"`
	// Fresh says that this is the run's first claim, so that it has no
	// history to load.
	Fresh bool `json:"-"`
}

// SlotTask is a claimed task and the index of the waiting slot it was
// claimed for.
type SlotTask struct {
	Slot int
	Task Task
}

// ClaimResult is what one claim statement got for a batch of slots.
type ClaimResult struct {
	Tasks []SlotTask
	// Limited is set when the queue's settings (paused, concurrency
	// limits) held the claim back.
	Limited bool
	// Refused holds, by worker ID, why workers named by slots may not
	// claim (draining, offline, gone); their slots got nothing.
	Refused map[string]error
}

// Lease names a run and the lease it is held under.
type Lease struct {
	RunID   string
	LeaseID string
}

// LeaseExpiredError is the error a run gets when its lease ran out without
// a heartbeat.
func LeaseExpiredError() *ErrorInfo {
	t := "lease_expired"
	return &ErrorInfo{Message: "the worker's lease expired without a heartbeat", Type: &t}
}

// QueueDepth counts the runs of a queue in one status.
type QueueDepth struct {
	Namespace string
	TaskQueue string
	Status    RunStatus
	Count     int64
}

// RunCompletion is one run of a batch completion: the run, the lease it is
// held under, and its output.
type RunCompletion struct {
	RunID   string          `json:"run_id"`
	LeaseID string          `json:"lease_id"`
	Output  json.RawMessage `json:"output"`
}

// Handoff lets the transaction that makes a run claimable claim it, in the
// same transaction, for a claim parked on this replica (see the
// distributor's Offer).
type Handoff interface {
	// Offer reserves a parked claim that would take a run of workflowType
	// on the queue now, if there is one.
	Offer(namespace, queue, workflowType string) (HandoffSlot, bool)
}

// HandoffSlot is a parked claim reserved by Offer. Once the transaction
// has ended, exactly one of Deliver (the run was claimed for it and the
// claim committed) and Cancel (it was not) must be called.
type HandoffSlot interface {
	// WorkerID is the worker the claim names, or "" for none.
	WorkerID() string
	Deliver(Task)
	Cancel()
}
