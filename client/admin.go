package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"time"
)

// This file holds the calls for people and tools that look after a
// namespace (the kagzi command line): task queues, workers and schedules.
// Values the server leaves null are nil pointers.

// TaskQueue is a task queue in use, with its depth and settings.
type TaskQueue struct {
	Name      string `json:"name"`
	Pending   int64  `json:"pending"`
	Available int64  `json:"available"`
	Running   int64  `json:"running"`
	Sleeping  int64  `json:"sleeping"`
	// OldestAvailableAt is the oldest available_at of its pending runs.
	OldestAvailableAt  *time.Time     `json:"oldest_available_at"`
	Paused             bool           `json:"paused"`
	MaxConcurrent      *int           `json:"max_concurrent"`
	WorkflowTypeLimits map[string]int `json:"workflow_type_limits"`
	WorkersOnline      int64          `json:"workers_online"`
}

// TaskQueuePage is one page of task queues.
type TaskQueuePage struct {
	TaskQueues []TaskQueue `json:"task_queues"`
	NextCursor *string     `json:"next_cursor"`
}

// TaskQueuesPage returns one page of the namespace's task queues, by name;
// cursor is "" for the first page. pageSize 0 takes the server's default.
func (c *Client) TaskQueuesPage(ctx context.Context, pageSize int, cursor string) (*TaskQueuePage, error) {
	var page TaskQueuePage
	r := request{method: http.MethodGet, path: c.nsPath + "/task-queues", query: pageQuery(pageSize, cursor), idempotent: true}
	if _, err := c.do(ctx, r, &page); err != nil {
		return nil, err
	}
	return &page, nil
}

// SetTaskQueuePaused pauses a task queue (it hands out nothing; waiting
// claims keep waiting) or resumes it, and returns it.
func (c *Client) SetTaskQueuePaused(ctx context.Context, queue string, paused bool) (*TaskQueue, error) {
	var q TaskQueue
	body := struct {
		Paused bool `json:"paused"`
	}{paused}
	r := request{method: http.MethodPatch, path: c.nsPath + "/task-queues/" + url.PathEscape(queue), body: body, idempotent: true}
	if _, err := c.do(ctx, r, &q); err != nil {
		return nil, err
	}
	return &q, nil
}

// WorkerInfo is a registered worker as the server reports it.
type WorkerInfo struct {
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
	Status          string            `json:"status"` // online, draining or offline
	Labels          map[string]string `json:"labels"`
	RegisteredAt    time.Time         `json:"registered_at"`
	LastHeartbeatAt time.Time         `json:"last_heartbeat_at"`
}

// WorkerPage is one page of workers.
type WorkerPage struct {
	Workers    []WorkerInfo `json:"workers"`
	NextCursor *string      `json:"next_cursor"`
}

// WorkersPage returns one page of the namespace's workers, filtered by
// task queue and status when they are not "".
func (c *Client) WorkersPage(ctx context.Context, taskQueue, status string, pageSize int, cursor string) (*WorkerPage, error) {
	q := pageQuery(pageSize, cursor)
	if taskQueue != "" {
		q.Set("task_queue", taskQueue)
	}
	if status != "" {
		q.Set("status", status)
	}
	var page WorkerPage
	r := request{method: http.MethodGet, path: c.nsPath + "/workers", query: q, idempotent: true}
	if _, err := c.do(ctx, r, &page); err != nil {
		return nil, err
	}
	return &page, nil
}

// DrainWorker tells a worker to take no new work (its heartbeats then say
// should_drain) and returns it.
func (c *Client) DrainWorker(ctx context.Context, workerID string) (*WorkerInfo, error) {
	var w WorkerInfo
	r := request{method: http.MethodPost, path: c.nsPath + "/workers/" + url.PathEscape(workerID) + "/drain", body: struct{}{}, idempotent: true}
	if _, err := c.do(ctx, r, &w); err != nil {
		return nil, err
	}
	return &w, nil
}

// Schedule starts a run of a workflow at each fire time of a cron
// expression.
type Schedule struct {
	ScheduleID    string          `json:"schedule_id"`
	Namespace     string          `json:"namespace"`
	TaskQueue     string          `json:"task_queue"`
	WorkflowType  string          `json:"workflow_type"`
	Cron          string          `json:"cron"`
	Timezone      string          `json:"timezone"`
	Input         json.RawMessage `json:"input,omitempty"` // lists leave it out
	RetryPolicy   RetryPolicy     `json:"retry_policy"`
	Version       *string         `json:"version"`
	Enabled       bool            `json:"enabled"`
	MaxCatchup    int             `json:"max_catchup"`
	NextFireAt    *time.Time      `json:"next_fire_at"`
	NextFireTimes []time.Time     `json:"next_fire_times"`
	LastFiredAt   *time.Time      `json:"last_fired_at"`
	CreatedAt     time.Time       `json:"created_at"`
	UpdatedAt     time.Time       `json:"updated_at"`
}

// ScheduleRequest creates a schedule. Zero fields take the server's
// defaults (queue "default", time zone UTC, enabled, max_catchup 1).
type ScheduleRequest struct {
	WorkflowType string          `json:"workflow_type"`
	Cron         string          `json:"cron"`
	TaskQueue    string          `json:"task_queue,omitempty"`
	Timezone     string          `json:"timezone,omitempty"`
	Input        json.RawMessage `json:"input,omitempty"`
	RetryPolicy  *RetryPolicy    `json:"retry_policy,omitempty"`
	Version      string          `json:"version,omitempty"`
	// Disabled creates the schedule disabled.
	Disabled   bool `json:"-"`
	MaxCatchup int  `json:"max_catchup,omitempty"`
}

// SchedulePage is one page of schedules.
type SchedulePage struct {
	Schedules  []Schedule `json:"schedules"`
	NextCursor *string    `json:"next_cursor"`
}

// SchedulesPage returns one page of the namespace's schedules, newest
// first.
func (c *Client) SchedulesPage(ctx context.Context, pageSize int, cursor string) (*SchedulePage, error) {
	var page SchedulePage
	r := request{method: http.MethodGet, path: c.nsPath + "/schedules", query: pageQuery(pageSize, cursor), idempotent: true}
	if _, err := c.do(ctx, r, &page); err != nil {
		return nil, err
	}
	return &page, nil
}

// CreateSchedule creates a schedule and returns it. A bad cron or time
// zone is ErrInvalidArgument naming the field.
func (c *Client) CreateSchedule(ctx context.Context, req ScheduleRequest) (*Schedule, error) {
	body := struct {
		ScheduleRequest
		Enabled *bool `json:"enabled,omitempty"`
	}{ScheduleRequest: req}
	if req.Disabled {
		body.Enabled = new(bool)
	}
	var s Schedule
	r := request{method: http.MethodPost, path: c.nsPath + "/schedules", body: body}
	if _, err := c.do(ctx, r, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// SetScheduleEnabled enables or disables a schedule and returns it; a
// disabled schedule has no next fire time.
func (c *Client) SetScheduleEnabled(ctx context.Context, scheduleID string, enabled bool) (*Schedule, error) {
	body := struct {
		Enabled bool `json:"enabled"`
	}{enabled}
	var s Schedule
	r := request{method: http.MethodPatch, path: c.nsPath + "/schedules/" + url.PathEscape(scheduleID), body: body, idempotent: true}
	if _, err := c.do(ctx, r, &s); err != nil {
		return nil, err
	}
	return &s, nil
}
