package domain

import "time"

// ManualScheduleRunExternalID is the external ID of a run a schedule was
// triggered to start by hand: unique per run, so a trigger never collides
// with a fire time or with another trigger.
func ManualScheduleRunExternalID(scheduleID, runID string) string {
	return "schedule:" + scheduleID + ":manual:" + runID
}

// Bounds of a stats request.
const (
	MaxStatsWindow  = 7 * 24 * time.Hour
	MaxStatsBuckets = 1000
)

// StatsRequest is a stats request as the query gives it, in milliseconds.
type StatsRequest struct {
	WindowMS     int64
	BucketMS     int64
	TaskQueue    string
	WorkflowType string
}

// StatsFilter is a validated stats request.
type StatsFilter struct {
	Namespace    string
	TaskQueue    string
	WorkflowType string
	Window       time.Duration
	Bucket       time.Duration
}

// Buckets is the number of buckets the window is cut into (the last one
// may be partial).
func (f StatsFilter) Buckets() int64 {
	return (int64(f.Window) + int64(f.Bucket) - 1) / int64(f.Bucket)
}

// Validate checks r: the window is 1 ms to MaxStatsWindow, a bucket at
// least 1 ms and at most the window, and there are at most
// MaxStatsBuckets buckets. Errors name the query parameter at fault.
func (r StatsRequest) Validate(namespace string) (StatsFilter, error) {
	f := StatsFilter{Namespace: namespace, TaskQueue: r.TaskQueue, WorkflowType: r.WorkflowType}
	if r.WindowMS < 1 || r.WindowMS > MaxStatsWindow.Milliseconds() {
		return f, Invalid("window_ms", "must be between 1 and %d", MaxStatsWindow.Milliseconds())
	}
	if r.BucketMS < 1 || r.BucketMS > r.WindowMS {
		return f, Invalid("bucket_ms", "must be between 1 and window_ms (%d)", r.WindowMS)
	}
	f.Window, f.Bucket = time.Duration(r.WindowMS)*time.Millisecond, time.Duration(r.BucketMS)*time.Millisecond
	if n := f.Buckets(); n > MaxStatsBuckets {
		return f, Invalid("bucket_ms", "makes %d buckets of window_ms; at most %d are allowed", n, MaxStatsBuckets)
	}
	if f.TaskQueue != "" {
		if err := ValidateIdent("task_queue", f.TaskQueue); err != nil {
			return f, err
		}
	}
	if f.WorkflowType != "" {
		if err := ValidateName("workflow_type", f.WorkflowType); err != nil {
			return f, err
		}
	}
	return f, nil
}

// StatsBucket counts the runs of one bucket: started (created) in it, and
// finished in it by how they ended, with the percentiles of the finished
// runs' durations from started_at to finished_at (nil when none ran).
type StatsBucket struct {
	Start         time.Time `json:"start"`
	Started       int64     `json:"started"`
	Completed     int64     `json:"completed"`
	Failed        int64     `json:"failed"`
	Cancelled     int64     `json:"cancelled"`
	P50DurationMS *int64    `json:"p50_duration_ms"`
	P95DurationMS *int64    `json:"p95_duration_ms"`
}

// LiveCounts counts live runs by status.
type LiveCounts struct {
	Pending  int64 `json:"pending"`
	Running  int64 `json:"running"`
	Sleeping int64 `json:"sleeping"`
}

// Stats is the answer to a stats request: its buckets, oldest first, and
// the live runs now.
type Stats struct {
	Buckets []StatsBucket `json:"buckets"`
	Now     LiveCounts    `json:"now"`
}

// WorkflowTypeSummary is one workflow type of a namespace: its live runs
// and when its latest run was started.
type WorkflowTypeSummary struct {
	Name string `json:"name"`
	LiveCounts
	LastStartedAt *time.Time `json:"last_started_at"`
}

// NamespaceSummary is one namespace in use and its live runs.
type NamespaceSummary struct {
	Name string `json:"name"`
	LiveCounts
}
