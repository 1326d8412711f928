package client

import (
	"context"
	"fmt"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Start starts a run. With an ExternalID it is idempotent: while a run
// with that ID is unfinished, nothing is created and the result says
// AlreadyExists. Only such starts are retried after a transient failure;
// a plain start that failed may or may not have created its run.
func (c *Client) Start(ctx context.Context, req StartRequest) (*StartResult, error) {
	body, err := req.wire()
	if err != nil {
		return nil, err
	}
	var out struct {
		Run
		AlreadyExists bool `json:"already_exists"`
	}
	r := request{method: http.MethodPost, path: c.nsPath + "/workflows", body: body, idempotent: req.ExternalID != ""}
	if _, err := c.do(ctx, r, &out); err != nil {
		return nil, err
	}
	return &StartResult{Run: out.Run, AlreadyExists: out.AlreadyExists}, nil
}

// StartBatch starts up to the server's batch limit of runs (1000 by
// default) in one request and one transaction: all or nothing. Results
// are in request order. An invalid item fails the whole batch with an
// *Error whose Field names it ("workflows[3].input"). The call is retried
// after a transient failure only when every item has an ExternalID.
func (c *Client) StartBatch(ctx context.Context, reqs []StartRequest) ([]BatchResult, error) {
	items := make([]startRequestJSON, len(reqs))
	idempotent := true
	for i, req := range reqs {
		j, err := req.wire()
		if err != nil {
			return nil, fmt.Errorf("workflows[%d]: %w", i, err)
		}
		items[i] = j
		idempotent = idempotent && req.ExternalID != ""
	}
	body := struct {
		Workflows []startRequestJSON `json:"workflows"`
	}{items}
	var out struct {
		Workflows []BatchResult `json:"workflows"`
	}
	r := request{method: http.MethodPost, path: c.nsPath + "/workflows/batch", body: body, idempotent: idempotent}
	if _, err := c.do(ctx, r, &out); err != nil {
		return nil, err
	}
	return out.Workflows, nil
}

// Get returns a run with its input, output and error.
func (c *Client) Get(ctx context.Context, runID string) (*Run, error) {
	return c.get(ctx, runID, 0)
}

func (c *Client) get(ctx context.Context, runID string, wait time.Duration) (*Run, error) {
	r := request{method: http.MethodGet, path: c.runPath(runID), idempotent: true, wait: wait}
	if wait > 0 {
		r.query = url.Values{"wait_ms": {strconv.FormatInt(millis(wait), 10)}}
	}
	var run Run
	if _, err := c.do(ctx, r, &run); err != nil {
		return nil, err
	}
	return &run, nil
}

// waitChunk is the longest a single request of Wait asks the server to
// hold it; the server may cap it lower (KAGZI_MAX_WAIT_MS).
const waitChunk = 30 * time.Second

// Wait blocks until the run is finished (completed, failed or cancelled)
// and returns it; the server holds each request until the run finishes or
// its wait ends. Bound the wait with ctx. Decode the outcome with
// Run.Result.
func (c *Client) Wait(ctx context.Context, runID string) (*Run, error) {
	pause := 50 * time.Millisecond
	for {
		wait := waitChunk
		if dl, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(dl))
		}
		if wait <= 0 {
			return nil, ctx.Err()
		}
		began := time.Now()
		run, err := c.get(ctx, runID, wait)
		if err != nil {
			return nil, err
		}
		if run.Status.Terminal() {
			return run, nil
		}
		// A server that answers long before the wait is over (one whose
		// long polls are capped low, say) is asked again after a pause, so
		// that Wait never spins.
		if time.Since(began) < wait/2 {
			if err := sleepCtx(ctx, pause); err != nil {
				return nil, err
			}
			pause = min(2*pause, time.Second)
		}
	}
}

// ListPage returns one page of runs, newest first; cursor is "" for the
// first page and the previous page's NextCursor after it.
func (c *Client) ListPage(ctx context.Context, opts ListOptions, cursor string) (*RunPage, error) {
	q := url.Values{}
	if len(opts.Statuses) > 0 {
		s := make([]string, len(opts.Statuses))
		for i, st := range opts.Statuses {
			s[i] = string(st)
		}
		q.Set("status", strings.Join(s, ","))
	}
	for k, v := range map[string]string{"task_queue": opts.TaskQueue, "workflow_type": opts.WorkflowType, "external_id": opts.ExternalID, "cursor": cursor} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if opts.PageSize > 0 {
		q.Set("limit", strconv.Itoa(opts.PageSize))
	}
	var page struct {
		Runs       []Run   `json:"workflows"`
		NextCursor *string `json:"next_cursor"`
	}
	r := request{method: http.MethodGet, path: c.nsPath + "/workflows", query: q, idempotent: true}
	if _, err := c.do(ctx, r, &page); err != nil {
		return nil, err
	}
	out := &RunPage{Runs: page.Runs}
	if page.NextCursor != nil {
		out.NextCursor = *page.NextCursor
	}
	return out, nil
}

// List iterates over the runs opts selects, newest first, fetching a page
// at a time as the loop goes on. An error ends the iteration: it is
// yielded once, with a zero Run.
//
//	for run, err := range c.List(ctx, client.ListOptions{WorkflowType: "greet"}) {
//		if err != nil {
//			return err
//		}
//		fmt.Println(run.RunID, run.Status)
//	}
func (c *Client) List(ctx context.Context, opts ListOptions) iter.Seq2[Run, error] {
	return func(yield func(Run, error) bool) {
		cursor := ""
		for {
			page, err := c.ListPage(ctx, opts, cursor)
			if err != nil {
				yield(Run{}, err)
				return
			}
			for _, run := range page.Runs {
				if !yield(run, nil) {
					return
				}
			}
			if page.NextCursor == "" {
				return
			}
			cursor = page.NextCursor
		}
	}
}

// Cancel cancels a run that is not finished and returns it, now
// cancelled; cancelling a cancelled run is not an error. A completed or
// failed run cannot be cancelled (ErrConflict). The worker of a running
// run learns of it from its next call, and the SDK then cancels the
// workflow's context.
func (c *Client) Cancel(ctx context.Context, runID string) (*Run, error) {
	var run Run
	r := request{method: http.MethodPost, path: c.runPath(runID, "cancel"), body: struct{}{}, idempotent: true}
	if _, err := c.do(ctx, r, &run); err != nil {
		return nil, err
	}
	return &run, nil
}

// Steps returns every attempt of every step of a run, in the order they
// began.
func (c *Client) Steps(ctx context.Context, runID string) ([]StepAttempt, error) {
	var out struct {
		Steps []StepAttempt `json:"steps"`
	}
	if _, err := c.do(ctx, request{method: http.MethodGet, path: c.runPath(runID, "steps"), idempotent: true}, &out); err != nil {
		return nil, err
	}
	return out.Steps, nil
}
