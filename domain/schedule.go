package domain

import (
	"bytes"
	"encoding/json"
	"path"
	"reflect"
	"strings"
	"time"
)

// Schedule starts a run of a workflow at each fire time of a cron
// expression, read in a time zone. Input is left out (nil) where a view
// omits it, such as lists. NextFireAt is nil while the schedule is disabled
// or when its cron has no fire time left.
type Schedule struct {
	ScheduleID   string          `json:"schedule_id"`
	Namespace    string          `json:"namespace"`
	TaskQueue    string          `json:"task_queue"`
	WorkflowType string          `json:"workflow_type"`
	Cron         string          `json:"cron"`
	Timezone     string          `json:"timezone"`
	Input        json.RawMessage `json:"input,omitempty"`
	RetryPolicy  RetryPolicy     `json:"retry_policy"`
	Version      *string         `json:"version"`
	Enabled      bool            `json:"enabled"`
	MaxCatchup   int             `json:"max_catchup"`
	NextFireAt   *time.Time      `json:"next_fire_at"`
	LastFiredAt  *time.Time      `json:"last_fired_at"`
	CreatedAt    time.Time       `json:"created_at"`
	UpdatedAt    time.Time       `json:"updated_at"`
}

// Schedule bounds and defaults.
const (
	// DefaultTimezone is the time zone of a schedule that names none.
	DefaultTimezone = "UTC"
	// DefaultMaxCatchup starts, after downtime, only the latest missed fire
	// time.
	DefaultMaxCatchup = 1
	// MaxCatchup bounds max_catchup, and so the runs one schedule starts in
	// one pass of the scheduler.
	MaxCatchup = 1000
	// MaxCronBytes bounds a cron expression.
	MaxCronBytes = 256
)

// ScheduleExternalIDPrefix starts the external ID of every run a schedule
// starts; clients may not start runs with it, so that no one can take a
// schedule's fire time.
const ScheduleExternalIDPrefix = "schedule:"

// ScheduleRunExternalID is the external ID of the run a schedule starts
// for a fire time: one per schedule and fire time, so that a fire time is
// never started twice while its run is live.
func ScheduleRunExternalID(scheduleID string, fireTime time.Time) string {
	return ScheduleExternalIDPrefix + scheduleID + ":" + fireTime.UTC().Format(time.RFC3339)
}

// ScheduleRequest is a request to create a schedule, as the client sends
// it.
type ScheduleRequest struct {
	WorkflowType string            `json:"workflow_type"`
	TaskQueue    string            `json:"task_queue"`
	Cron         string            `json:"cron"`
	Timezone     string            `json:"timezone"`
	Input        json.RawMessage   `json:"input"`
	RetryPolicy  *RetryPolicyInput `json:"retry_policy"`
	Version      *string           `json:"version"`
	Enabled      *bool             `json:"enabled"`
	MaxCatchup   *int              `json:"max_catchup"`
}

// NewSchedule is a validated create request with its defaults filled in.
// Its cron is checked for form only: its grammar belongs to the cron
// dialect (package schedule), which storage applies when it computes the
// first fire time.
type NewSchedule struct {
	TaskQueue    string
	WorkflowType string
	Cron         string
	Timezone     string
	Input        json.RawMessage
	RetryPolicy  RetryPolicy
	Version      *string
	Enabled      bool
	MaxCatchup   int
	// LargeInput is set when Input is over the payload warning threshold.
	LargeInput bool
}

// Validate checks r and returns the schedule to create. Errors name the
// field at fault as the request spells it.
func (r ScheduleRequest) Validate(limits PayloadLimits) (NewSchedule, error) {
	n := NewSchedule{
		TaskQueue:    r.TaskQueue,
		WorkflowType: r.WorkflowType,
		Cron:         r.Cron,
		Timezone:     r.Timezone,
		Input:        r.Input,
		Version:      r.Version,
		Enabled:      true,
		MaxCatchup:   DefaultMaxCatchup,
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
	if err := ValidateCronForm("cron", r.Cron); err != nil {
		return n, err
	}
	if n.Timezone == "" {
		n.Timezone = DefaultTimezone
	}
	if _, err := LoadTimezone("timezone", n.Timezone); err != nil {
		return n, err
	}
	p, err := r.RetryPolicy.Resolve("retry_policy", DefaultRetryPolicy())
	if err != nil {
		return n, err
	}
	n.RetryPolicy = p
	if r.Version != nil {
		if err := validateVersion("version", *r.Version); err != nil {
			return n, err
		}
	}
	if r.Enabled != nil {
		n.Enabled = *r.Enabled
	}
	if r.MaxCatchup != nil {
		if err := validateMaxCatchup("max_catchup", *r.MaxCatchup); err != nil {
			return n, err
		}
		n.MaxCatchup = *r.MaxCatchup
	}
	if len(n.Input) == 0 {
		n.Input = json.RawMessage("null")
	}
	n.LargeInput, err = limits.Check("input", n.Input)
	return n, err
}

// Optional is a member of a PATCH body: Set when the member is present,
// Null when it is present as JSON null. It tells "leave as is" (absent)
// from "clear" (null), which a pointer cannot.
type Optional[T any] struct {
	Set   bool
	Null  bool
	Value T
}

// UnmarshalJSON records that the member is present and decodes it,
// rejecting unknown fields in objects as the request body does.
func (o *Optional[T]) UnmarshalJSON(b []byte) error {
	o.Set = true
	if bytes.Equal(b, []byte("null")) {
		o.Null = true
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(&o.Value)
}

// JSONValueType is the type Optional decodes its value into, for the
// API's check of a body's member names.
func (*Optional[T]) JSONValueType() reflect.Type { return reflect.TypeFor[T]() }

// SchedulePatch is a request to change a schedule: every member is
// optional, and only those present change. Input may be set to any JSON
// value, null included; version null clears it; retry_policy null resets
// it to the default policy, and an object changes the fields it names.
// The other members may not be null.
type SchedulePatch struct {
	WorkflowType Optional[string]           `json:"workflow_type"`
	TaskQueue    Optional[string]           `json:"task_queue"`
	Cron         Optional[string]           `json:"cron"`
	Timezone     Optional[string]           `json:"timezone"`
	Input        json.RawMessage            `json:"input"`
	RetryPolicy  Optional[RetryPolicyInput] `json:"retry_policy"`
	Version      Optional[string]           `json:"version"`
	Enabled      Optional[bool]             `json:"enabled"`
	MaxCatchup   Optional[int]              `json:"max_catchup"`
	// LargeInput is set by Validate when Input is over the payload warning
	// threshold.
	LargeInput bool `json:"-"`
}

// Validate checks every member present in p on its own, and notes whether
// the input is large.
func (p *SchedulePatch) Validate(limits PayloadLimits) error {
	for _, m := range []struct {
		field string
		null  bool
	}{
		{"workflow_type", p.WorkflowType.Null}, {"task_queue", p.TaskQueue.Null}, {"cron", p.Cron.Null},
		{"timezone", p.Timezone.Null}, {"enabled", p.Enabled.Null}, {"max_catchup", p.MaxCatchup.Null},
	} {
		if m.null {
			return Invalid(m.field, "must not be null")
		}
	}
	if p.WorkflowType.Set {
		if err := ValidateName("workflow_type", p.WorkflowType.Value); err != nil {
			return err
		}
	}
	if p.TaskQueue.Set {
		if err := ValidateIdent("task_queue", p.TaskQueue.Value); err != nil {
			return err
		}
	}
	if p.Cron.Set {
		if err := ValidateCronForm("cron", p.Cron.Value); err != nil {
			return err
		}
	}
	if p.Timezone.Set {
		if _, err := LoadTimezone("timezone", p.Timezone.Value); err != nil {
			return err
		}
	}
	if p.RetryPolicy.Set && !p.RetryPolicy.Null {
		// Checked against the defaults here; applied to the schedule's own
		// policy by Apply. Each field's bounds do not depend on the base.
		if _, err := p.RetryPolicy.Value.Resolve("retry_policy", DefaultRetryPolicy()); err != nil {
			return err
		}
	}
	if p.Version.Set && !p.Version.Null {
		if err := validateVersion("version", p.Version.Value); err != nil {
			return err
		}
	}
	if p.MaxCatchup.Set {
		if err := validateMaxCatchup("max_catchup", p.MaxCatchup.Value); err != nil {
			return err
		}
	}
	if p.Input != nil {
		large, err := limits.Check("input", p.Input)
		if err != nil {
			return err
		}
		p.LargeInput = large
	}
	return nil
}

// Empty reports whether p changes nothing.
func (p *SchedulePatch) Empty() bool {
	return !p.WorkflowType.Set && !p.TaskQueue.Set && !p.Cron.Set && !p.Timezone.Set &&
		p.Input == nil && !p.RetryPolicy.Set && !p.Version.Set && !p.Enabled.Set && !p.MaxCatchup.Set
}

// Apply changes s as p says, and reports whether its timing changed (cron,
// time zone or enabled), in which case its next fire time must be
// computed again. p must have been validated.
func (p *SchedulePatch) Apply(s *Schedule) (timingChanged bool, err error) {
	if p.WorkflowType.Set {
		s.WorkflowType = p.WorkflowType.Value
	}
	if p.TaskQueue.Set {
		s.TaskQueue = p.TaskQueue.Value
	}
	if p.Cron.Set && p.Cron.Value != s.Cron {
		s.Cron, timingChanged = p.Cron.Value, true
	}
	if p.Timezone.Set && p.Timezone.Value != s.Timezone {
		s.Timezone, timingChanged = p.Timezone.Value, true
	}
	if p.Enabled.Set && p.Enabled.Value != s.Enabled {
		s.Enabled, timingChanged = p.Enabled.Value, true
	}
	if p.Input != nil {
		s.Input = p.Input
	}
	if p.RetryPolicy.Set {
		if p.RetryPolicy.Null {
			s.RetryPolicy = DefaultRetryPolicy()
		} else if s.RetryPolicy, err = p.RetryPolicy.Value.Resolve("retry_policy", s.RetryPolicy); err != nil {
			return false, err
		}
	}
	if p.Version.Set {
		if p.Version.Null {
			s.Version = nil
		} else {
			v := p.Version.Value
			s.Version = &v
		}
	}
	if p.MaxCatchup.Set {
		s.MaxCatchup = p.MaxCatchup.Value
	}
	return timingChanged, nil
}

// ValidateCronForm checks what can be checked of a cron expression without
// its grammar: present, bounded, one line of printable text.
func ValidateCronForm(field, expr string) error {
	switch {
	case strings.TrimSpace(expr) == "":
		return Invalid(field, "is required")
	case len(expr) > MaxCronBytes:
		return Invalid(field, "is %d bytes; the limit is %d", len(expr), MaxCronBytes)
	case strings.ContainsFunc(expr, isControl):
		return Invalid(field, "must not contain control characters")
	}
	return nil
}

// LoadTimezone returns the IANA time zone named tz, spelled canonically.
// "Local" is refused: it would mean whatever zone each server replica
// happens to run in; so are other spellings of a zone's file path
// ("./UTC", "America//New_York", "UTC/"), which time.LoadLocation accepts.
func LoadTimezone(field, tz string) (*time.Location, error) {
	if tz == "" || tz == "Local" || len(tz) > MaxNameBytes || strings.ContainsFunc(tz, isControl) || path.Clean(tz) != tz {
		return nil, Invalid(field, "must be an IANA time zone such as UTC or Europe/Paris, not %q", tz)
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, Invalid(field, "must be an IANA time zone such as UTC or Europe/Paris, not %q", tz)
	}
	return loc, nil
}

func validateVersion(field, v string) error {
	return ValidateText(field, v, MaxVersionBytes)
}

func validateMaxCatchup(field string, n int) error {
	if n < 1 || n > MaxCatchup {
		return Invalid(field, "must be between 1 and %d", MaxCatchup)
	}
	return nil
}

// ScheduleFiring is what one pass over due schedules did.
type ScheduleFiring struct {
	// Schedules is the number of due schedules handled.
	Schedules int
	// Started is the number of runs started.
	Started int
	// AlreadyLive counts fire times whose external ID a live run already
	// held, so that nothing was started for them.
	AlreadyLive int
	// Broken counts schedules whose stored cron or time zone no longer
	// parses; they stop firing (next_fire_at null) until they are changed.
	Broken int
}
