package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kagzi/kagzi/client"
)

// The client package must import nothing of the server, so that users can
// depend on it alone: the standard library, and golang.org/x/sync at most.
func TestClientImportsNoServerPackage(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{.Standard}}", "github.com/kagzi/kagzi/client").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		path, std, _ := strings.Cut(line, " ")
		switch {
		case std == "true", path == "github.com/kagzi/kagzi/client", strings.HasPrefix(path, "golang.org/x/sync/"),
			path == "github.com/kagzi/kagzi/internal/batch": // a standard-library-only utility
		default:
			t.Errorf("the client package depends on %s", path)
		}
	}
}

type greeting struct {
	Name string `json:"name"`
}

// TestClient runs the tests below against one server.
func TestClient(t *testing.T) {
	t.Parallel()
	runTests(t, []namedTest{
		{"StartGetAndIdempotentStart", testStartGetAndIdempotentStart},
		{"StartBatch", testStartBatch},
		{"ListIteratesOverPages", testListIteratesOverPages},
		{"CancelAndWait", testCancelAndWait},
		{"WaitIsALongPoll", testWaitIsALongPoll},
		{"TypedErrors", testTypedErrors},
	})
}

func testStartGetAndIdempotentStart(t *testing.T, e *env) {
	ctx := context.Background()

	res, err := e.c.Start(ctx, client.StartRequest{
		WorkflowType: "greet",
		Input:        greeting{Name: "Ada"},
		ExternalID:   "greet-ada",
		Version:      "v1",
		RetryPolicy:  &client.RetryPolicy{MaxAttempts: 3, InitialInterval: 1500 * time.Millisecond},
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if res.AlreadyExists || res.Run.Status != client.StatusPending || res.Run.Input != nil {
		t.Errorf("Start = %+v, want a new pending run without its input", res)
	}
	got := e.get(t, res.Run.RunID)
	if string(got.Input) != `{"name":"Ada"}` || got.ExternalID != "greet-ada" || got.Version != "v1" || got.WorkflowType != "greet" || got.TaskQueue != "default" {
		t.Errorf("Get = %+v, want the run as started", got)
	}
	if p := got.RetryPolicy; p.MaxAttempts != 3 || p.InitialInterval != 1500*time.Millisecond || p.BackoffCoefficient != 2 {
		t.Errorf("retry policy = %+v, want 3 attempts from 1.5s with the default coefficient", p)
	}

	again, err := e.c.Start(ctx, client.StartRequest{WorkflowType: "greet", ExternalID: "greet-ada"})
	if err != nil {
		t.Fatalf("Start again: %v", err)
	}
	if !again.AlreadyExists || again.Run.RunID != res.Run.RunID {
		t.Errorf("Start again = %+v, want the same run, already existing", again)
	}

	delayed, err := e.c.Start(ctx, client.StartRequest{WorkflowType: "greet", StartDelay: time.Hour})
	if err != nil {
		t.Fatalf("Start with a delay: %v", err)
	}
	if d := delayed.Run.AvailableAt.Sub(delayed.Run.CreatedAt); d < 59*time.Minute || d > 61*time.Minute {
		t.Errorf("available %s after creation, want an hour", d)
	}
	raw, err := e.c.Start(ctx, client.StartRequest{WorkflowType: "greet", Input: json.RawMessage(`[1, 2]`)})
	if err != nil {
		t.Fatalf("Start with raw input: %v", err)
	}
	if got := e.get(t, raw.Run.RunID); string(got.Input) != `[1,2]` && string(got.Input) != `[1, 2]` {
		t.Errorf("input = %s, want [1, 2]", got.Input)
	}
}

func testStartBatch(t *testing.T, e *env) {
	ctx := context.Background()
	existing := e.start(t, client.StartRequest{WorkflowType: "greet", ExternalID: "x-1"})

	res, err := e.c.StartBatch(ctx, []client.StartRequest{
		{WorkflowType: "greet", Input: greeting{Name: "a"}},
		{WorkflowType: "greet", ExternalID: "x-1"},
		{WorkflowType: "resize", TaskQueue: "images"},
	})
	if err != nil {
		t.Fatalf("StartBatch: %v", err)
	}
	if len(res) != 3 || res[0].AlreadyExists || !res[1].AlreadyExists || res[1].RunID != existing || res[2].AlreadyExists {
		t.Fatalf("StartBatch = %+v, want new, existing %s, new", res, existing)
	}
	if got := e.get(t, res[2].RunID); got.TaskQueue != "images" || got.WorkflowType != "resize" {
		t.Errorf("third run = %+v, want a resize run on images", got)
	}

	// All or nothing: a bad item names itself and nothing is created.
	_, err = e.c.StartBatch(ctx, []client.StartRequest{{WorkflowType: "greet", ExternalID: "x-2"}, {WorkflowType: ""}})
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.Code != client.CodeInvalidArgument || apiErr.Field != "workflows[1].workflow_type" {
		t.Fatalf("StartBatch with a bad item: %v, want invalid_argument on workflows[1].workflow_type", err)
	}
	for run, err := range e.c.List(ctx, client.ListOptions{ExternalID: "x-2"}) {
		t.Errorf("List(x-2) = %+v, %v; want nothing created", run, err)
	}
}

func testListIteratesOverPages(t *testing.T, e *env) {
	ctx := context.Background()
	var want []string
	for i := range 7 {
		want = append(want, e.start(t, client.StartRequest{WorkflowType: "listed", Input: i}))
	}
	e.start(t, client.StartRequest{WorkflowType: "other"})
	slices.Reverse(want) // newest first

	var got []string
	for run, err := range e.c.List(ctx, client.ListOptions{WorkflowType: "listed", PageSize: 3}) {
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if run.Input != nil {
			t.Errorf("listed run has its input")
		}
		got = append(got, run.RunID)
	}
	if !slices.Equal(got, want) {
		t.Errorf("List = %v, want %v", got, want)
	}
	pages := e.rec.answered(func(c call) bool { return c.method == http.MethodGet && strings.HasSuffix(c.path, "/workflows") })
	if len(pages) != 3 {
		t.Errorf("List fetched %d pages, want 3 (of 3, 3 and 1)", len(pages))
	}

	// Breaking out of the loop fetches no further page.
	before := len(pages)
	for range e.c.List(ctx, client.ListOptions{PageSize: 2}) {
		break
	}
	pages = e.rec.answered(func(c call) bool { return c.method == http.MethodGet && strings.HasSuffix(c.path, "/workflows") })
	if len(pages) != before+1 {
		t.Errorf("a loop that stops at once fetched %d pages, want 1", len(pages)-before)
	}

	page, err := e.c.ListPage(ctx, client.ListOptions{Statuses: []client.Status{client.StatusPending}, WorkflowType: "other"}, "")
	if err != nil || len(page.Runs) != 1 || page.NextCursor != "" {
		t.Errorf("ListPage(pending other) = %+v, %v; want one run on the last page", page, err)
	}

	// An error ends the iteration.
	var errs []error
	for _, err := range e.c.List(ctx, client.ListOptions{Statuses: []client.Status{"bogus"}}) {
		errs = append(errs, err)
	}
	if len(errs) != 1 || !errors.Is(errs[0], client.ErrInvalidArgument) {
		t.Errorf("List with a bad status yielded %v, want one invalid_argument error", errs)
	}
}

func testCancelAndWait(t *testing.T, e *env) {
	ctx := context.Background()
	id := e.start(t, client.StartRequest{WorkflowType: "never-run"})

	// Wait ends with its context when the run does not finish.
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := e.c.Wait(wctx, id)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait on a pending run = %v, want the context's deadline", err)
	}

	run, err := e.c.Cancel(ctx, id)
	if err != nil || run.Status != client.StatusCancelled {
		t.Fatalf("Cancel = %+v, %v; want the run cancelled", run, err)
	}
	if _, err := e.c.Cancel(ctx, id); err != nil {
		t.Errorf("Cancel again: %v, want no error", err)
	}
	run = e.wait(t, id)
	if err := run.Result(nil); !errors.Is(err, client.ErrCancelled) {
		t.Errorf("Result of a cancelled run = %v, want ErrCancelled", err)
	}
	var runErr *client.RunError
	if err := run.Result(nil); !errors.As(err, &runErr) || runErr.Status != client.StatusCancelled {
		t.Errorf("Result = %v, want a *RunError", err)
	}
	steps, err := e.c.Steps(ctx, id)
	if err != nil || len(steps) != 0 {
		t.Errorf("Steps = %v, %v; want none", steps, err)
	}
}

// Wait holds its request at the server until the run finishes: one
// request, answered when the worker completes the run.
func testWaitIsALongPoll(t *testing.T, e *env) {
	release := make(chan struct{})
	e.startWorker(t, func(w *client.Worker) {
		client.Register(w, "greet", func(ctx *client.WorkflowContext, in greeting) (string, error) {
			<-release
			return "Hello, " + in.Name, nil
		})
	})
	id := e.start(t, client.StartRequest{WorkflowType: "greet", Input: greeting{Name: "Ada"}})
	mark := e.rec.mark()
	done := make(chan *client.Run)
	go func() { done <- e.wait(t, id) }()
	e.rec.waitFor(t, mark, 10*time.Second, "Wait's request", func(c call) bool {
		return c.started && c.method == http.MethodGet && strings.HasSuffix(c.path, id)
	})
	close(release)
	run := <-done
	var out string
	if err := run.Result(&out); err != nil || out != "Hello, Ada" {
		t.Errorf("Result = %q, %v; want Hello, Ada", out, err)
	}
	gets := e.rec.answered(func(c call) bool { return c.method == http.MethodGet && strings.HasSuffix(c.path, id) })
	if len(gets) != 1 {
		t.Errorf("Wait sent %d requests, want 1", len(gets))
	}
}

func testTypedErrors(t *testing.T, e *env) {
	ctx := context.Background()

	_, err := e.c.Get(ctx, "01234567-89ab-7def-8123-456789abcdef")
	var apiErr *client.Error
	if !errors.Is(err, client.ErrNotFound) || !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound || apiErr.Detail == "" {
		t.Errorf("Get(unknown) = %v, want a 404 not_found with a detail", err)
	}
	if errors.Is(err, client.ErrConflict) {
		t.Errorf("a not_found error matches ErrConflict")
	}
	if _, err := e.c.Get(ctx, "not-a-uuid"); !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("Get(not-a-uuid) = %v, want invalid_argument", err)
	}
	_, err = e.c.Start(ctx, client.StartRequest{WorkflowType: "x", TaskQueue: "bad queue!"})
	if !errors.As(err, &apiErr) || apiErr.Code != client.CodeInvalidArgument || apiErr.Field != "task_queue" || apiErr.Status != 400 {
		t.Errorf("Start with a bad queue = %v, want invalid_argument on task_queue", err)
	}
	big := strings.Repeat("x", e.srv.Limits.Payload.MaxBytes) // 2 more bytes once quoted
	_, err = e.c.Start(ctx, client.StartRequest{WorkflowType: "x", Input: big})
	if !errors.Is(err, client.ErrPayloadTooLarge) || !errors.As(err, &apiErr) || apiErr.Field != "input" || apiErr.Status != 413 {
		t.Errorf("Start with a large input = %v, want payload_too_large on input", err)
	}
	_, err = e.c.Start(ctx, client.StartRequest{WorkflowType: "x", StartAt: time.Now(), StartDelay: time.Second})
	if !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("Start with start_at and a delay = %v, want invalid_argument", err)
	}
	if _, err := e.c.Start(ctx, client.StartRequest{WorkflowType: "x", Input: func() {}}); err == nil {
		t.Errorf("Start with an input that is not JSON succeeded")
	}

	// A completed run cannot be cancelled.
	e.startWorker(t, func(w *client.Worker) {
		client.Register(w, "noop", func(*client.WorkflowContext, any) (any, error) { return nil, nil })
	})
	id := e.start(t, client.StartRequest{WorkflowType: "noop"})
	if run := e.wait(t, id); run.Status != client.StatusCompleted {
		t.Fatalf("noop run = %s, want completed", run.Status)
	}
	if _, err := e.c.Cancel(ctx, id); !errors.Is(err, client.ErrConflict) {
		t.Errorf("Cancel(completed) = %v, want conflict", err)
	}
	if _, err := e.c.Steps(ctx, "01234567-89ab-7def-8123-456789abcdef"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("Steps(unknown) = %v, want not_found", err)
	}
	// Another namespace does not see the run.
	other := client.New(e.srv.URL, client.WithNamespace("other"))
	if _, err := other.Get(ctx, id); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("Get in another namespace = %v, want not_found", err)
	}
	info, err := e.c.Info(ctx)
	if err != nil || info.APIVersion != "v1" || info.Auth != "off" || info.Limits.MaxBatchBytes <= 0 ||
		info.Limits.HeartbeatIntervalMS != testHeartbeat.Milliseconds() {
		t.Errorf("Info = %+v, %v", info, err)
	}
}
