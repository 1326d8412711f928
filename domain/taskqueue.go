package domain

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"time"
)

// TaskQueue is a queue's state: its live runs by status, its workers and
// its settings.
type TaskQueue struct {
	Name               string         `json:"name"`
	Pending            int64          `json:"pending"`
	Available          int64          `json:"available"`
	Running            int64          `json:"running"`
	Sleeping           int64          `json:"sleeping"`
	OldestAvailableAt  *time.Time     `json:"oldest_available_at"`
	Paused             bool           `json:"paused"`
	MaxConcurrent      *int           `json:"max_concurrent"`
	WorkflowTypeLimits map[string]int `json:"workflow_type_limits"`
	WorkersOnline      int64          `json:"workers_online"`
}

// MaxConcurrencyLimit bounds a queue's and a type's concurrency limit.
const MaxConcurrencyLimit = 1_000_000

// Nullable is a JSON value that may be absent, null or set, as a PATCH
// needs: absent leaves a setting as it is, null clears it.
type Nullable[T any] struct {
	Set   bool // the field was present
	Value *T   // nil when the field was null
}

// UnmarshalJSON records that the field was present, and its value.
func (n *Nullable[T]) UnmarshalJSON(b []byte) error {
	n.Set = true
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		n.Value = nil
		return nil
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	n.Value = &v
	return nil
}

// JSONValueType is the type Nullable decodes its value into, for the
// API's check of a body's member names.
func (*Nullable[T]) JSONValueType() reflect.Type { return reflect.TypeFor[T]() }

// TaskQueuePatch changes a queue's settings; what it leaves out stays.
type TaskQueuePatch struct {
	Paused        *bool         `json:"paused"`
	MaxConcurrent Nullable[int] `json:"max_concurrent"`
	// WorkflowTypeLimits sets the limit of each type named; null removes it.
	WorkflowTypeLimits map[string]*int `json:"workflow_type_limits"`
}

// Validate checks p.
func (p TaskQueuePatch) Validate() error {
	if v := p.MaxConcurrent.Value; v != nil && (*v < 0 || *v > MaxConcurrencyLimit) {
		return Invalid("max_concurrent", "must be between 0 and %d, or null", MaxConcurrencyLimit)
	}
	for t, v := range p.WorkflowTypeLimits {
		if err := ValidateName("workflow_type_limits", t); err != nil {
			return err
		}
		if v != nil && (*v < 0 || *v > MaxConcurrencyLimit) {
			return Invalid(fmt.Sprintf("workflow_type_limits[%q]", t), "must be between 0 and %d, or null", MaxConcurrencyLimit)
		}
	}
	return nil
}

// QueueLimits are the settings that bound a queue's claims.
type QueueLimits struct {
	Paused             bool
	MaxConcurrent      *int
	WorkflowTypeLimits map[string]int
}

// Allowance is what a claim may take under the limits, given the runs
// running now (by type): at most Total runs (negative: no bound), none of
// the types in Blocked, and of each type in PerType at most its value.
type Allowance struct {
	Total   int
	Blocked []string
	PerType map[string]int
}

// Allow computes a claim's allowance from the limits and the running
// counts. A paused queue allows nothing.
func (l QueueLimits) Allow(running map[string]int) Allowance {
	a := Allowance{Total: -1, PerType: map[string]int{}}
	if l.Paused {
		a.Total = 0
		return a
	}
	if l.MaxConcurrent != nil {
		total := 0
		for _, n := range running {
			total += n
		}
		a.Total = max(*l.MaxConcurrent-total, 0)
	}
	for t, limit := range l.WorkflowTypeLimits {
		if left := limit - running[t]; left > 0 {
			a.PerType[t] = left
		} else {
			a.Blocked = append(a.Blocked, t)
		}
	}
	return a
}
