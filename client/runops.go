package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Retry makes a failed or cancelled run pending again, claimable now: it
// resumes after its completed steps, and its retry policy's max_attempts
// counts from here. Any other status, or another live run holding the
// run's external ID, is ErrConflict (the error's detail names that run).
func (c *Client) Retry(ctx context.Context, runID string) (*Run, error) {
	var run Run
	r := request{method: http.MethodPost, path: c.runPath(runID, "retry"), body: struct{}{}}
	if _, err := c.do(ctx, r, &run); err != nil {
		return nil, err
	}
	return &run, nil
}

// TriggerSchedule starts one run of a schedule now, outside its cron (its
// next fire time does not move), and returns the run, without its input.
func (c *Client) TriggerSchedule(ctx context.Context, scheduleID string) (*Run, error) {
	var run Run
	r := request{method: http.MethodPost, path: c.nsPath + "/schedules/" + url.PathEscape(scheduleID) + "/trigger", body: struct{}{}}
	if _, err := c.do(ctx, r, &run); err != nil {
		return nil, err
	}
	return &run, nil
}

// ScheduleRunsPage returns one page of the runs a schedule started, fired
// or triggered, newest first; cursor is "" for the first page. pageSize 0
// takes the server's default.
func (c *Client) ScheduleRunsPage(ctx context.Context, scheduleID string, pageSize int, cursor string) (*RunPage, error) {
	var page struct {
		Runs       []Run   `json:"workflows"`
		NextCursor *string `json:"next_cursor"`
	}
	q := pageQuery(pageSize, cursor)
	q.Set("schedule_id", scheduleID)
	r := request{method: http.MethodGet, path: c.nsPath + "/workflows", query: q, idempotent: true}
	if _, err := c.do(ctx, r, &page); err != nil {
		return nil, err
	}
	return &RunPage{Runs: page.Runs, NextCursor: deref(page.NextCursor)}, nil
}

// StatsOptions selects what Stats counts. Window and Bucket are rounded
// down to milliseconds; zero takes the server's defaults (an hour, a
// minute).
type StatsOptions struct {
	Window, Bucket          time.Duration
	TaskQueue, WorkflowType string
}

// StatsBucket counts a bucket's runs: started (created) in it, finished
// in it by how they ended, and the percentiles of the finished runs'
// durations in ms (nil when none of them had started).
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

// Stats is the runs of the client's namespace per bucket of a window,
// oldest first, and its live runs now.
type Stats struct {
	Buckets []StatsBucket `json:"buckets"`
	Now     LiveCounts    `json:"now"`
}

// Stats returns the runs started and finished per bucket of the window
// ending now, and the live runs.
func (c *Client) Stats(ctx context.Context, opts StatsOptions) (*Stats, error) {
	q := url.Values{}
	if opts.Window > 0 {
		q.Set("window_ms", strconv.FormatInt(opts.Window.Milliseconds(), 10))
	}
	if opts.Bucket > 0 {
		q.Set("bucket_ms", strconv.FormatInt(opts.Bucket.Milliseconds(), 10))
	}
	if opts.TaskQueue != "" {
		q.Set("task_queue", opts.TaskQueue)
	}
	if opts.WorkflowType != "" {
		q.Set("workflow_type", opts.WorkflowType)
	}
	var st Stats
	r := request{method: http.MethodGet, path: c.nsPath + "/stats", query: q, idempotent: true}
	if _, err := c.do(ctx, r, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// WorkflowTypeSummary is a workflow type of a namespace, its live runs and
// when its latest run was started.
type WorkflowTypeSummary struct {
	Name string `json:"name"`
	LiveCounts
	LastStartedAt *time.Time `json:"last_started_at"`
}

// WorkflowTypesPage returns one page of the workflow types of the client's
// namespace, by name; cursor is "" for the first page and the returned
// next cursor after it ("" after the last page).
func (c *Client) WorkflowTypesPage(ctx context.Context, pageSize int, cursor string) ([]WorkflowTypeSummary, string, error) {
	var page struct {
		Types      []WorkflowTypeSummary `json:"workflow_types"`
		NextCursor *string               `json:"next_cursor"`
	}
	r := request{method: http.MethodGet, path: c.nsPath + "/workflow-types", query: pageQuery(pageSize, cursor), idempotent: true}
	if _, err := c.do(ctx, r, &page); err != nil {
		return nil, "", err
	}
	return page.Types, deref(page.NextCursor), nil
}

// NamespaceSummary is a namespace in use and its live runs.
type NamespaceSummary struct {
	Name string `json:"name"`
	LiveCounts
}

// NamespacesPage returns one page of the namespaces in use (those the
// client's key covers, when auth is on), by name.
func (c *Client) NamespacesPage(ctx context.Context, pageSize int, cursor string) ([]NamespaceSummary, string, error) {
	var page struct {
		Namespaces []NamespaceSummary `json:"namespaces"`
		NextCursor *string            `json:"next_cursor"`
	}
	r := request{method: http.MethodGet, path: "/v1/namespaces", query: pageQuery(pageSize, cursor), idempotent: true}
	if _, err := c.do(ctx, r, &page); err != nil {
		return nil, "", err
	}
	return page.Namespaces, deref(page.NextCursor), nil
}

func pageQuery(pageSize int, cursor string) url.Values {
	q := url.Values{}
	if pageSize > 0 {
		q.Set("limit", strconv.Itoa(pageSize))
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	return q
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
