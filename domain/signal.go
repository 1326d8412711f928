package domain

import (
	"encoding/json"
	"strings"
	"time"
)

// SignalStatus is where a signal is in its run's inbox.
type SignalStatus string

// Signal statuses.
const (
	SignalBuffered  SignalStatus = "buffered"
	SignalDelivered SignalStatus = "delivered"
	SignalDiscarded SignalStatus = "discarded"
)

// ReservedSignalPrefix starts the names of the signals only the server
// sends (a child's end: "kagzi.child/{step}").
const ReservedSignalPrefix = "kagzi."

// Signal limits.
const (
	DefaultMaxBufferedSignals = 1000
	DefaultMaxSignalsPerRun   = 10000
	// MaxWaitSignals bounds the names one wait step waits for.
	MaxWaitSignals = 16
)

// Signal is a named JSON message to one run, kept in its inbox.
type Signal struct {
	SignalID  string          `json:"signal_id"`
	RunID     string          `json:"run_id"`
	Name      string          `json:"name"`
	Seq       int64           `json:"seq"`
	Status    SignalStatus    `json:"status"`
	Step      *string         `json:"step"`
	Input     json.RawMessage `json:"input,omitempty"`
	CreatedAt time.Time       `json:"created_at"`
}

// SignalTarget is how a send addresses its run: by RunID or by the
// ExternalID of the live run holding it (exactly one is set).
type SignalTarget struct {
	RunID      string
	ExternalID string
	// WithStart marks a signal-with-start, addressed by ExternalID (RunID
	// is the run it started or found).
	WithStart bool
}

// Key is the target as an idempotency key's record keeps it.
func (t SignalTarget) Key() string {
	if t.WithStart {
		return "signal-with-start:" + t.ExternalID
	}
	if t.RunID != "" {
		return "run:" + t.RunID
	}
	return "external_id:" + t.ExternalID
}

// SendSignal is one signal to send.
type SendSignal struct {
	Target SignalTarget
	Name   string
	Input  json.RawMessage
	// IdempotencyKey, when set, makes a retry answer the first send.
	IdempotencyKey string
}

// SignalLimits bound a run's inbox.
type SignalLimits struct {
	MaxBuffered int // buffered signals per run
	MaxPerRun   int // signals a run may ever receive
}

// ValidateSignalName checks a signal name a client sends: a name, and not
// reserved.
func ValidateSignalName(field, name string) error {
	if err := ValidateName(field, name); err != nil {
		return err
	}
	if strings.HasPrefix(name, ReservedSignalPrefix) {
		return Invalid(field, "must not start with %q: names starting so are reserved", ReservedSignalPrefix)
	}
	return nil
}

// SignalFilter selects signals of a run's inbox.
type SignalFilter struct {
	Status SignalStatus // empty: any
	Name   string       // empty: any
	Page   Page
}

// WaitRequest is a worker's wait step.
type WaitRequest struct {
	Step    string
	Signals []string
	// Deadline is when the wait times out, computed from timeout_ms or
	// until by the caller; nil: never. Only the first call for a step
	// fixes it.
	Timeout *time.Duration
	Until   *time.Time
}

// WaitOutput is a resolved wait step's output.
type WaitOutput struct {
	Signal   *WaitSignal `json:"signal"`
	TimedOut bool        `json:"timed_out"`
}

// WaitSignal is the signal a wait step consumed.
type WaitSignal struct {
	Name     string          `json:"name"`
	Input    json.RawMessage `json:"input"`
	Seq      int64           `json:"seq"`
	SignalID string          `json:"signal_id"`
}

// WaitResult is the answer to a wait: the resolved step, or when the
// parked run wakes (nil: only a signal wakes it).
type WaitResult struct {
	Resolved bool
	Step     Step
	WakeAt   *time.Time
	// Output, when set, is the answer's output instead of the step's.
	Output json.RawMessage
}

// SignalWithStartResult is the outcome of a signal-with-start.
type SignalWithStartResult struct {
	Run       Run
	Signal    Signal
	Started   bool
	Duplicate bool
}

// ChildSignalPrefix starts the name of the signal a child's end sends its
// parent: "kagzi.child/{step}".
const ChildSignalPrefix = ReservedSignalPrefix + "child/"

// Parent close policies: what becomes of a live child when its parent ends.
const (
	ParentCloseCancel  = "cancel"
	ParentCloseAbandon = "abandon"
)

// Child limits.
const (
	DefaultMaxLiveChildren = 1000
	DefaultMaxChildDepth   = 16
)

// ChildLimits bound the children of a run: how many may be live at once,
// and how deep a chain of parents may go (a run started by no parent is
// at depth 0, its child at 1).
type ChildLimits struct {
	MaxLive  int
	MaxDepth int
}

// WithDefaults is l with the defaults where unset.
func (l ChildLimits) WithDefaults() ChildLimits {
	if l.MaxLive <= 0 {
		l.MaxLive = DefaultMaxLiveChildren
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxChildDepth
	}
	return l
}

// ChildRequest is a worker's child step: the child run to start once.
type ChildRequest struct {
	Step              string
	Run               NewRun
	ParentClosePolicy string
	Await             bool
	Timeout           *time.Duration
	// Limits bound the parent's children; only a call that would create
	// a new child is held to them.
	Limits ChildLimits
}
