package ui_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/internal/testserver"
)

// chromiumPath is Debian's chromium, which .ci/run installs when missing.
const chromiumPath = "/usr/bin/chromium"

// screenshotDir is where the browser tests leave a screenshot of each page
// (ignored by git), for anyone to look at.
const screenshotDir = "screenshots"

// browserEnv is a real server with runs in it, and a headless Chromium.
type browserEnv struct {
	t   *testing.T
	srv *testserver.Server
	ctx context.Context
}

func newBrowserEnv(t *testing.T) *browserEnv {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("the browser tests need Chromium at %s (apt-get install -y chromium): %v", chromiumPath, err)
	}
	srv := testserver.New(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(cancelCtx)
	// confirm() dialogs (cancel a run, remove a worker) are accepted.
	chromedp.ListenTarget(ctx, func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			go chromedp.Run(ctx, page.HandleJavaScriptDialog(true))
		}
	})
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	if err := os.MkdirAll(screenshotDir, 0o755); err != nil {
		t.Fatal(err)
	}
	return &browserEnv{t: t, srv: srv, ctx: ctx}
}

// call sends an API request and decodes the answer into out, wanting want.
func (e *browserEnv) call(method, path string, body, out any, want int) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		e.t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, data, want)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

const base = "/v1/namespaces/default"

func (e *browserEnv) start(workflowType, queue string) string {
	e.t.Helper()
	var run struct {
		RunID string `json:"run_id"`
	}
	e.call("POST", base+"/workflows", map[string]any{"workflow_type": workflowType, "task_queue": queue,
		"input": map[string]any{"order": 42}}, &run, http.StatusCreated)
	return run.RunID
}

func (e *browserEnv) status(runID string) string {
	e.t.Helper()
	var run struct {
		Status string `json:"status"`
	}
	e.call("GET", base+"/workflows/"+runID, nil, &run, http.StatusOK)
	return run.Status
}

// run runs browser actions, failing the test with what failed.
func (e *browserEnv) run(what string, actions ...chromedp.Action) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		var text string
		_ = chromedp.Run(e.ctx, chromedp.Text("body", &text, chromedp.ByQuery))
		e.t.Fatalf("%s: %v\npage text:\n%s", what, err, text)
	}
}

// open goes to a dashboard page (the part after #) and waits until the
// page has drawn it (main's data-hash is the URL's).
func (e *browserEnv) open(hash, page string) {
	e.t.Helper()
	e.run("open "+hash,
		chromedp.Navigate(e.srv.URL+"/ui/#"+hash),
		chromedp.Poll(`document.querySelector('main').dataset.hash === location.hash`, nil),
		chromedp.WaitVisible(`main[data-page="`+page+`"]`, chromedp.ByQuery))
}

// waitText waits until the page's main area (or its message line) shows s.
func (e *browserEnv) waitText(s string) {
	e.t.Helper()
	js := fmt.Sprintf(`(document.querySelector('main').innerText + document.querySelector('#flash').innerText).includes(%q)`, s)
	e.run("wait for "+s, chromedp.Poll(js, nil, chromedp.WithPollingInterval(50*time.Millisecond)))
}

func (e *browserEnv) screenshot(name string) {
	e.t.Helper()
	var png []byte
	e.run("screenshot "+name, chromedp.FullScreenshot(&png, 100))
	if err := os.WriteFile(filepath.Join(screenshotDir, name+".png"), png, 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// TestDashboardInBrowser drives the dashboard in headless Chromium against
// a real server: runs in the list, a filter, a run and its steps, cancel,
// retry, pause and resume of a queue, a schedule's trigger, the overview
// and its chart, workers, and an error shown as a sentence.
func TestDashboardInBrowser(t *testing.T) {
	e := newBrowserEnv(t)

	// A failed run with a completed and a failed step, worked through the
	// worker API.
	failing := e.start("e2e-order", "e2e")
	var worker struct {
		WorkerID string `json:"worker_id"`
	}
	e.call("POST", base+"/workers", map[string]any{"task_queue": "e2e", "hostname": "e2e-host"}, &worker, http.StatusCreated)
	var claimed struct {
		Tasks []struct {
			RunID   string `json:"run_id"`
			LeaseID string `json:"lease_id"`
		} `json:"tasks"`
	}
	e.call("POST", base+"/task-queues/e2e/claim", map[string]any{"worker_id": worker.WorkerID, "wait_ms": 0}, &claimed, http.StatusOK)
	if len(claimed.Tasks) != 1 || claimed.Tasks[0].RunID != failing {
		t.Fatalf("claimed %+v, want run %s", claimed.Tasks, failing)
	}
	lease := claimed.Tasks[0].LeaseID
	runPath := base + "/workflows/" + failing
	e.call("POST", runPath+"/steps/charge/begin", map[string]any{"lease_id": lease}, nil, http.StatusOK)
	e.call("POST", runPath+"/steps/charge/complete", map[string]any{"lease_id": lease, "output": "charged"}, nil, http.StatusOK)
	e.call("POST", runPath+"/steps/ship/begin", map[string]any{"lease_id": lease}, nil, http.StatusOK)
	noTruck := map[string]any{"message": "no truck today", "non_retryable": true}
	e.call("POST", runPath+"/steps/ship/fail", map[string]any{"lease_id": lease, "error": noTruck}, nil, http.StatusOK)
	e.call("POST", runPath+"/fail", map[string]any{"lease_id": lease, "error": noTruck}, nil, http.StatusOK)
	waiting := e.start("e2e-order", "e2e")
	mail := e.start("e2e-mail", "e2e-mail")
	var sc struct {
		ScheduleID string `json:"schedule_id"`
	}
	e.call("POST", base+"/schedules", map[string]any{"workflow_type": "e2e-nightly", "cron": "0 3 * * *", "task_queue": "e2e-nightly"},
		&sc, http.StatusCreated)

	// The list shows every run; a filter narrows it, and the URL keeps it.
	e.open("/runs", "runs")
	for _, id := range []string{failing, waiting, mail} {
		e.waitText(id)
	}
	e.screenshot("runs")
	e.run("filter by workflow type",
		chromedp.SetValue(`input[name="workflow_type"]`, "e2e-mail", chromedp.ByQuery),
		chromedp.Click(`form.filters button[type="submit"]`, chromedp.ByQuery),
		chromedp.Poll(`location.hash.includes("workflow_type=e2e-mail") && document.querySelectorAll("main tbody tr").length === 1`, nil))
	e.waitText(mail)

	// A run: its steps, then a retry.
	e.open("/run/"+failing+"?ns=default", "run")
	e.waitText("charge")
	e.waitText("no truck today")
	e.screenshot("run")
	e.run("retry", chromedp.Click(`//button[text()="Retry run"]`, chromedp.BySearch))
	e.waitText("Retry the run done.")
	if got := e.status(failing); got != "pending" {
		t.Fatalf("after Retry: status %s, want pending", got)
	}

	// Cancel another, after a look at its inbox.
	e.call("POST", base+"/workflows/"+waiting+"/signals/approve", map[string]any{"input": map[string]any{"by": "ada-e2e"}}, nil, http.StatusAccepted)
	e.open("/run/"+waiting+"?ns=default", "run")
	e.waitText("Inbox")
	e.waitText("ada-e2e")
	e.waitText("This run has started no child.")
	// By keyboard: focus the button, press Enter.
	e.run("cancel", chromedp.Focus(`//button[text()="Cancel run"]`, chromedp.BySearch),
		chromedp.KeyEvent("\r"))
	e.waitText("Cancel the run done.")
	if got := e.status(waiting); got != "cancelled" {
		t.Fatalf("after Cancel: status %s, want cancelled", got)
	}

	// Pause and resume a queue.
	e.open("/queues?ns=default", "queues")
	e.run("pause", chromedp.Click(`button[aria-label="Pause e2e"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`button[aria-label="Resume e2e"]`, chromedp.ByQuery))
	var queues struct {
		TaskQueues []struct {
			Name   string `json:"name"`
			Paused bool   `json:"paused"`
		} `json:"task_queues"`
	}
	paused := func() bool {
		e.call("GET", base+"/task-queues", nil, &queues, http.StatusOK)
		for _, q := range queues.TaskQueues {
			if q.Name == "e2e" {
				return q.Paused
			}
		}
		t.Fatalf("queue e2e not listed: %+v", queues)
		return false
	}
	if !paused() {
		t.Fatal("the queue is not paused after Pause")
	}
	e.screenshot("queues")
	e.run("resume", chromedp.Click(`button[aria-label="Resume e2e"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`button[aria-label="Pause e2e"]`, chromedp.ByQuery))
	if paused() {
		t.Fatal("the queue is still paused after Resume")
	}

	// Trigger a schedule now.
	e.open("/schedules?ns=default", "schedules")
	e.run("trigger", chromedp.Click(`button[aria-label="Trigger schedule `+sc.ScheduleID+`"]`, chromedp.ByQuery))
	e.waitText("Started run")
	e.screenshot("schedules")
	var runsOf struct {
		Workflows []struct {
			RunID string `json:"run_id"`
		} `json:"workflows"`
	}
	e.call("GET", base+"/workflows?schedule_id="+sc.ScheduleID, nil, &runsOf, http.StatusOK)
	if len(runsOf.Workflows) != 1 {
		t.Fatalf("runs of the schedule after Trigger: %d, want 1", len(runsOf.Workflows))
	}

	// Workers: listed, and drained from the page.
	e.open("/workers?ns=default", "workers")
	e.waitText("e2e-host")
	e.screenshot("workers")
	e.run("drain", chromedp.Click(`button[aria-label="Drain worker `+worker.WorkerID+`"]`, chromedp.ByQuery))
	e.waitText("Drain the worker done.")

	// The overview: queues and the chart of the last hour.
	e.open("/overview?ns=default", "overview")
	// After a page change the focus is on the page's content: the first Tab
	// reaches its first link (the first queue), not the navigation.
	var focused string
	e.run("tab", chromedp.KeyEvent("\t"),
		chromedp.Evaluate(`document.activeElement.closest('main') ? document.activeElement.textContent : ''`, &focused))
	if focused != "e2e" {
		t.Errorf("a Tab focuses %q, want the first queue's link in the page", focused)
	}
	e.run("chart", chromedp.WaitVisible(`svg.chart polyline`, chromedp.ByQuery))
	e.waitText("e2e-mail")
	e.screenshot("overview")

	// An error is a sentence, not JSON.
	e.open("/run/0190c2a6-7a1c-7000-8000-000000000000?ns=default", "run")
	e.waitText("Run 0190c2a6-7a1c-7000-8000-000000000000 not found.")
	var text string
	e.run("read the error", chromedp.Text("main", &text, chromedp.ByQuery))
	if strings.Contains(text, "{") {
		t.Errorf("the error page shows JSON: %s", text)
	}
}

// TestDashboardKey checks the dashboard's side of authentication: without
// a key it says one is needed, a wrong key is told apart, and the key
// entered on the Key page is sent as a bearer token, against the server's
// own key check.
func TestDashboardKey(t *testing.T) {
	e := newBrowserEnv(t)
	runID := e.start("e2e-keyed", "e2e")
	// The first key turns authentication on (KAGZI_AUTH=auto): a reader
	// key, as a dashboard is given.
	secret := e.srv.NewKey(t, domain.RoleReader)

	e.open("/runs?ns=default", "runs")
	e.waitText("The server needs an API key. Enter one on the Key page.")
	e.screenshot("key-missing")

	enterKey := func(key string) {
		e.open("/key?ns=default", "key")
		e.run("enter a key", chromedp.SetValue(`#key`, key, chromedp.ByQuery),
			chromedp.Click(`//button[text()="Use this key"]`, chromedp.BySearch))
		e.waitText("The key is kept for this browser session only.")
	}
	enterKey("wrong-key")
	e.open("/runs?ns=default", "runs")
	e.waitText("The server refused the API key: it is unknown, revoked or expired.")

	enterKey(secret)
	e.open("/runs?ns=default", "runs")
	e.waitText(runID)
	var stored string
	e.run("read the stored key", chromedp.Evaluate(`sessionStorage.getItem('kagzi.apiKey')`, &stored))
	if stored != secret {
		t.Errorf("sessionStorage holds %q, want the key entered", stored)
	}
}
