package domain

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// WorkerStatus is a worker's state.
type WorkerStatus string

// Worker statuses.
const (
	WorkerOnline   WorkerStatus = "online"
	WorkerDraining WorkerStatus = "draining"
	WorkerOffline  WorkerStatus = "offline"
)

// Valid reports whether s is a known worker status.
func (s WorkerStatus) Valid() bool {
	return s == WorkerOnline || s == WorkerDraining || s == WorkerOffline
}

// Worker is a registered worker process.
type Worker struct {
	WorkerID        string            `json:"worker_id"`
	Namespace       string            `json:"namespace"`
	TaskQueue       string            `json:"task_queue"`
	WorkflowTypes   []string          `json:"workflow_types"`
	Hostname        *string           `json:"hostname"`
	PID             *int              `json:"pid"`
	Version         *string           `json:"version"`
	MaxConcurrent   int               `json:"max_concurrent"`
	ActiveCount     int               `json:"active_count"`
	TotalCompleted  int64             `json:"total_completed"`
	TotalFailed     int64             `json:"total_failed"`
	Status          WorkerStatus      `json:"status"`
	Labels          map[string]string `json:"labels"`
	RegisteredAt    time.Time         `json:"registered_at"`
	LastHeartbeatAt time.Time         `json:"last_heartbeat_at"`
}

// Worker bounds.
const (
	DefaultWorkerMaxConcurrent = 10
	MaxWorkerConcurrent        = 10000
	MaxLabels                  = 64
	MaxLabelBytes              = 256
)

// RegisterWorker is a worker's registration as it sends it.
type RegisterWorker struct {
	TaskQueue     string            `json:"task_queue"`
	WorkflowTypes []string          `json:"workflow_types"`
	Hostname      *string           `json:"hostname"`
	PID           *int              `json:"pid"`
	Version       *string           `json:"version"`
	MaxConcurrent *int              `json:"max_concurrent"`
	Labels        map[string]string `json:"labels"`
}

// Validate checks r and returns the worker to create (without ID, namespace
// and times, which storage sets).
func (r RegisterWorker) Validate() (Worker, error) {
	w := Worker{
		TaskQueue:     r.TaskQueue,
		WorkflowTypes: r.WorkflowTypes,
		Hostname:      r.Hostname,
		PID:           r.PID,
		Version:       r.Version,
		MaxConcurrent: DefaultWorkerMaxConcurrent,
		Labels:        r.Labels,
		Status:        WorkerOnline,
	}
	if r.TaskQueue == "" {
		return w, Invalid("task_queue", "is required")
	}
	if err := ValidateIdent("task_queue", r.TaskQueue); err != nil {
		return w, err
	}
	if err := ValidateTypes("workflow_types", r.WorkflowTypes); err != nil {
		return w, err
	}
	if w.WorkflowTypes == nil {
		w.WorkflowTypes = []string{}
	}
	for _, f := range []struct {
		field string
		v     *string
	}{{"hostname", r.Hostname}, {"version", r.Version}} {
		if f.v != nil {
			if err := ValidateText(f.field, *f.v, MaxNameBytes); err != nil {
				return w, err
			}
		}
	}
	if r.PID != nil && (*r.PID < 0 || *r.PID > math.MaxInt32) {
		return w, Invalid("pid", "must be between 0 and %d", math.MaxInt32)
	}
	if r.MaxConcurrent != nil {
		if *r.MaxConcurrent < 1 || *r.MaxConcurrent > MaxWorkerConcurrent {
			return w, Invalid("max_concurrent", "must be between 1 and %d", MaxWorkerConcurrent)
		}
		w.MaxConcurrent = *r.MaxConcurrent
	}
	if len(r.Labels) > MaxLabels {
		return w, Invalid("labels", "must hold at most %d labels", MaxLabels)
	}
	for k, v := range r.Labels {
		if k == "" || len(k) > MaxLabelBytes || len(v) > MaxLabelBytes {
			return w, Invalid("labels", "keys must be 1 to %d bytes and values at most %d", MaxLabelBytes, MaxLabelBytes)
		}
		if err := ValidateName("labels", k); err != nil {
			return w, Invalid("labels", "key %q must not contain control characters", k)
		}
		if err := ValidateText(fmt.Sprintf("labels[%q]", k), v, MaxLabelBytes); err != nil {
			return w, err
		}
	}
	if w.Labels == nil {
		w.Labels = map[string]string{}
	}
	return w, nil
}

// ValidateTypes checks a list of workflow types.
func ValidateTypes(field string, types []string) error {
	for i, t := range types {
		if err := ValidateName(field+"["+itoa(i)+"]", t); err != nil {
			return err
		}
	}
	return nil
}

// WorkerHeartbeat is what a worker reports with each heartbeat.
type WorkerHeartbeat struct {
	ActiveCount    int        `json:"active_count"`
	CompletedDelta int64      `json:"completed_delta"`
	FailedDelta    int64      `json:"failed_delta"`
	RunIDs         HeldRunIDs `json:"run_ids,omitzero"`
}

// MaxHeartbeatRuns bounds the run_ids of one worker heartbeat: a worker
// executes at most MaxWorkerConcurrent runs at once.
const MaxHeartbeatRuns = MaxWorkerConcurrent

// HeldRunIDs are the runs a worker heartbeat says it is executing. A
// heartbeat without the member (an older worker) leaves Set false: every
// lease the worker holds is extended.
type HeldRunIDs struct {
	Set bool
	IDs []string // nil when the member was null
}

// MarshalJSON writes the IDs as sent; a heartbeat without the member
// leaves it out (omitzero).
func (h HeldRunIDs) MarshalJSON() ([]byte, error) { return json.Marshal(h.IDs) }

// UnmarshalJSON records that the member was sent, null included.
func (h *HeldRunIDs) UnmarshalJSON(b []byte) error {
	h.Set = true
	var items []json.RawMessage
	if err := json.Unmarshal(b, &items); err != nil {
		return Invalid("run_ids", "must be an array of run IDs")
	}
	if items == nil {
		return nil
	}
	h.IDs = make([]string, len(items))
	for i, item := range items {
		if err := json.Unmarshal(item, &h.IDs[i]); err != nil {
			return Invalid("run_ids["+itoa(i)+"]", "must be a run ID (a UUID)")
		}
	}
	return nil
}

// Validate checks h.
func (h WorkerHeartbeat) Validate() error {
	switch {
	case h.ActiveCount < 0 || h.ActiveCount > math.MaxInt32:
		return Invalid("active_count", "must be between 0 and %d", math.MaxInt32)
	case h.CompletedDelta < 0:
		return Invalid("completed_delta", "must not be negative")
	case h.FailedDelta < 0:
		return Invalid("failed_delta", "must not be negative")
	}
	return h.RunIDs.validate()
}

func (h HeldRunIDs) validate() error {
	switch {
	case !h.Set:
		return nil
	case h.IDs == nil:
		return Invalid("run_ids", "must be an array of run IDs, not null (leave it out to extend every lease the worker holds)")
	case len(h.IDs) > MaxHeartbeatRuns:
		return Invalid("run_ids", "must list at most %d runs", MaxHeartbeatRuns)
	}
	for i, id := range h.IDs {
		if !IsUUID(id) {
			return Invalid("run_ids["+itoa(i)+"]", "must be a run ID (a UUID)")
		}
	}
	return nil
}

// HeartbeatResult is the answer to a worker heartbeat.
type HeartbeatResult struct {
	Status         WorkerStatus `json:"status"`
	ShouldDrain    bool         `json:"should_drain"`
	LeaseExpiresAt *time.Time   `json:"lease_expires_at"`
	// Lost and Cancelled are the listed runs whose leases were not
	// extended: no longer held by the worker, or cancelled.
	Lost      []string `json:"lost"`
	Cancelled []string `json:"cancelled"`
}

// WorkerFilter selects workers of a namespace for a list.
type WorkerFilter struct {
	Namespace string
	TaskQueue string
	Status    WorkerStatus
	Page      Page
}
