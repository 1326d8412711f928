package api_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// stepsPage is a page of GET .../workflows/{run_id}/steps.
type stepsPage struct {
	Steps []struct {
		Name    string `json:"name"`
		Attempt int    `json:"attempt"`
	} `json:"steps"`
	NextCursor *string `json:"next_cursor"`
}

// taskQueuesPage is a page of GET .../task-queues.
type taskQueuesPage struct {
	TaskQueues []taskQueueView `json:"task_queues"`
	NextCursor *string         `json:"next_cursor"`
}

// pages reads every page of the list at path, limit items a page (0 sends
// no limit), and returns them in order and how many pages there were.
func pages[P any](t *testing.T, e *env, path string, limit int, items func(P) []string, next func(P) *string) ([]string, int) {
	t.Helper()
	var all []string
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", fmt.Sprint(limit))
	}
	for n := 1; ; n++ {
		var p P
		e.do(t, http.MethodGet, path+"?"+q.Encode(), nil).wantStatus(t, http.StatusOK).decode(t, &p)
		all = append(all, items(p)...)
		c := next(p)
		if c == nil {
			return all, n
		}
		if n > 1000 {
			t.Fatalf("%s: more than 1000 pages", path)
		}
		q.Set("cursor", *c)
	}
}

func stepNames(p stepsPage) []string {
	out := make([]string, len(p.Steps))
	for i, s := range p.Steps {
		out[i] = fmt.Sprintf("%s/%d", s.Name, s.Attempt)
	}
	return out
}

func queueNames(p taskQueuesPage) []string {
	out := make([]string, len(p.TaskQueues))
	for i, q := range p.TaskQueues {
		out[i] = q.Name
	}
	return out
}

func TestListStepsPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run := e.start(t, "x", nil)
	// 1,203 attempts, begun in an order that is not the order of their
	// names: s1203 first, s1 last.
	if _, err := e.pool.Exec(context.Background(), `
		INSERT INTO workflow_steps (run_id, name, attempt, kind, status)
		SELECT $1, 's' || (1204 - i), 1 + i % 2, 'function', 'completed' FROM generate_series(1, 1203) i ORDER BY i`,
		run.RunID); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := 1; i <= 1203; i++ {
		want = append(want, fmt.Sprintf("s%d/%d", 1204-i, 1+i%2))
	}
	path := runPath(run.RunID) + "/steps"
	next := func(p stepsPage) *string { return p.NextCursor }

	// Without a limit, as before steps were paginated: 500 at a time.
	var first stepsPage
	e.do(t, http.MethodGet, path, nil).wantStatus(t, http.StatusOK).decode(t, &first)
	if got := stepNames(first); len(got) != 500 || !slices.Equal(got, want[:500]) || first.NextCursor == nil {
		t.Fatalf("first page without a limit: %d steps, next_cursor %v; want the first 500 and a cursor", len(got), first.NextCursor)
	}
	for _, c := range []struct{ limit, pages int }{{0, 3}, {500, 3}, {7, 172}, {1203, 1}} {
		if c.limit > 500 {
			e.do(t, http.MethodGet, fmt.Sprintf("%s?limit=%d", path, c.limit), nil).wantProblem(t, http.StatusBadRequest, "invalid_argument", "limit")
			continue
		}
		got, n := pages(t, e, path, c.limit, stepNames, next)
		if !slices.Equal(got, want) {
			t.Errorf("limit %d: got %d steps (first %v), want all %d in the order they began", c.limit, len(got), got[:min(3, len(got))], len(want))
		}
		if n != c.pages {
			t.Errorf("limit %d: %d pages, want %d", c.limit, n, c.pages)
		}
	}

	// A step begun while the pages are read comes on a later page.
	var p stepsPage
	e.do(t, http.MethodGet, path+"?limit=500", nil).wantStatus(t, http.StatusOK).decode(t, &p)
	if _, err := e.pool.Exec(context.Background(), `
		INSERT INTO workflow_steps (run_id, name, attempt, kind, status) VALUES ($1, 'late', 1, 'function', 'running')`,
		run.RunID); err != nil {
		t.Fatal(err)
	}
	rest := stepNames(p)
	for p.NextCursor != nil {
		c := *p.NextCursor
		p = stepsPage{}
		e.do(t, http.MethodGet, path+"?limit=500&cursor="+url.QueryEscape(c), nil).wantStatus(t, http.StatusOK).decode(t, &p)
		rest = append(rest, stepNames(p)...)
	}
	if !slices.Equal(rest, append(slices.Clone(want), "late/1")) {
		t.Errorf("steps with one begun while paging: got %d, last %v; want %d ending with late/1", len(rest), rest[len(rest)-1], len(want)+1)
	}

	// A cursor this server did not issue for a step list is refused.
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, c := range []string{"!!!", b64("0"), b64("-5"), b64("007"), b64("1e3"), b64("99999999999999999999"),
		b64(run.RunID), b64("default")} {
		e.do(t, http.MethodGet, path+"?cursor="+url.QueryEscape(c), nil).wantProblem(t, http.StatusBadRequest, "invalid_argument", "cursor")
	}
	for _, q := range []string{"limit=0", "limit=501", "limit=x"} {
		e.do(t, http.MethodGet, path+"?"+q, nil).wantProblem(t, http.StatusBadRequest, "invalid_argument", "limit")
	}
	e.do(t, http.MethodGet, path+"?page=2", nil).wantProblem(t, http.StatusBadRequest, "invalid_argument", "page")
	// A cursor of another run's steps reads that position in this run.
	other := e.start(t, "x", nil)
	var none stepsPage
	e.do(t, http.MethodGet, runPath(other.RunID)+"/steps?cursor="+url.QueryEscape(*first.NextCursor), nil).
		wantStatus(t, http.StatusOK).decode(t, &none)
	if len(none.Steps) != 0 || none.NextCursor != nil {
		t.Errorf("steps of a run with none after a cursor: %+v", none)
	}
	e.do(t, http.MethodGet, runPath("0190a5d0-ac96-774b-bcce-b302099a8057")+"/steps?cursor="+url.QueryEscape(*first.NextCursor), nil).
		wantProblem(t, http.StatusNotFound, "not_found", "")
}

func TestListTaskQueuesPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// Queues in use for each reason, named so that the sources interleave.
	e.start(t, "w", map[string]any{"task_queue": "b-live"})
	e.start(t, "w", map[string]any{"task_queue": "b-live"})
	e.start(t, "w", map[string]any{"task_queue": "e-live", "start_delay_ms": 600000})
	_, _ = e.startClaimed(t, "w", map[string]any{"task_queue": "g-running"})
	for _, q := range []string{"a-set", "d-set", "b-live"} {
		e.do(t, http.MethodPatch, ns+"/task-queues/"+q, map[string]any{"max_concurrent": 5}).wantStatus(t, http.StatusOK)
	}
	for _, q := range []string{"c-workers", "f-workers", "e-live"} {
		e.do(t, http.MethodPost, ns+"/workers", map[string]any{"task_queue": q}).wantStatus(t, http.StatusCreated)
	}
	for i := range 30 {
		e.do(t, http.MethodPatch, ns+fmt.Sprintf("/task-queues/z%02d", i), map[string]any{"paused": true}).wantStatus(t, http.StatusOK)
	}
	want := []string{"a-set", "b-live", "c-workers", "d-set", "e-live", "f-workers", "g-running"}
	for i := range 30 {
		want = append(want, fmt.Sprintf("z%02d", i))
	}
	next := func(p taskQueuesPage) *string { return p.NextCursor }
	for _, limit := range []int{0, 1, 2, 3, 500} {
		if got, _ := pages(t, e, ns+"/task-queues", limit, queueNames, next); !slices.Equal(got, want) {
			t.Errorf("limit %d: got %v, want %v", limit, got, want)
		}
	}

	// Counts and settings on a page after a cursor are those of the queue.
	var p taskQueuesPage
	e.do(t, http.MethodGet, ns+"/task-queues?limit=3", nil).wantStatus(t, http.StatusOK).decode(t, &p)
	if p.NextCursor == nil {
		t.Fatal("no cursor after the first 3 queues")
	}
	second := taskQueuesPage{}
	e.do(t, http.MethodGet, ns+"/task-queues?limit=4&cursor="+url.QueryEscape(*p.NextCursor), nil).
		wantStatus(t, http.StatusOK).decode(t, &second)
	byName := map[string]taskQueueView{}
	for _, q := range append(p.TaskQueues, second.TaskQueues...) {
		byName[q.Name] = q
	}
	if q := byName["b-live"]; q.Pending != 2 || q.Available != 2 || q.MaxConcurrent == nil || *q.MaxConcurrent != 5 {
		t.Errorf("b-live: %+v, want 2 pending, 2 available, max_concurrent 5", q)
	}
	if q := byName["e-live"]; q.Pending != 1 || q.Available != 0 || q.WorkersOnline != 1 || q.OldestAvailableAt == nil {
		t.Errorf("e-live: %+v, want 1 pending not yet available and 1 worker", q)
	}
	if q := byName["g-running"]; q.Running != 1 || q.Pending != 0 {
		t.Errorf("g-running: %+v, want 1 running", q)
	}
	if q := byName["c-workers"]; q.WorkersOnline != 1 || q.Pending != 0 {
		t.Errorf("c-workers: %+v, want 1 worker online", q)
	}

	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, c := range []string{"!!!", b64("bad name"), b64(strings.Repeat("q", 64)), b64("-q")} {
		e.do(t, http.MethodGet, ns+"/task-queues?cursor="+url.QueryEscape(c), nil).wantProblem(t, http.StatusBadRequest, "invalid_argument", "cursor")
	}
	for _, q := range []string{"limit=0", "limit=501", "limit=x"} {
		e.do(t, http.MethodGet, ns+"/task-queues?"+q, nil).wantProblem(t, http.StatusBadRequest, "invalid_argument", "limit")
	}
}
