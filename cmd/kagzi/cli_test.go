package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kagzi/kagzi/client"
	"github.com/kagzi/kagzi/internal/testserver"
)

// kagziCLI runs the command line in the test process as main would, with
// env as its environment, and returns what it printed and its exit status.
func kagziCLI(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	err := clientCommand(ctx, args[0], args[1:], &out, func(k string) string { return env[k] })
	if err != nil {
		stderr = fmt.Sprintf("kagzi: %v\n", err)
	}
	return out.String(), stderr, exitCode(err)
}

func TestCLI(t *testing.T) {
	t.Parallel()
	srv := testserver.New(t)
	env := map[string]string{"KAGZI_URL": srv.URL}
	run := func(t *testing.T, wantCode int, args ...string) string {
		t.Helper()
		out, errOut, code := kagziCLI(t, env, args...)
		if code != wantCode {
			t.Fatalf("kagzi %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, wantCode, out, errOut)
		}
		if wantCode != 0 {
			return errOut
		}
		return out
	}
	ctx := context.Background()
	c := client.New(srv.URL)

	// A worker that greets, for --wait, and to list and drain.
	w := client.NewWorker(c, "greetings", client.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	client.Register(w, "greet", func(_ *client.WorkflowContext, in struct{ Name string }) (string, error) {
		if in.Name == "" {
			return "", client.NonRetryable(errors.New("no name"))
		}
		return "Hello, " + in.Name + "!", nil
	})
	wctx, stopWorker := context.WithCancel(ctx)
	workerDone := make(chan error, 1)
	go func() { workerDone <- w.Run(wctx) }()
	t.Cleanup(func() { stopWorker(); <-workerDone })

	var runID string
	t.Run("runs start, get, list, cancel", func(t *testing.T) {
		out := run(t, 0, "runs", "start", "send-invoice", "--input", `{"amount_cents":1999}`, "--external-id", "invoice-42")
		m := regexp.MustCompile(`^started run ([0-9a-f-]{36}) \(pending, queue default\)\n$`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("runs start: got %q", out)
		}
		runID = m[1]
		out = run(t, 0, "runs", "start", "send-invoice", "--external-id", "invoice-42", "--json")
		var started struct {
			RunID         string  `json:"run_id"`
			Status        string  `json:"status"`
			AlreadyExists bool    `json:"already_exists"`
			StartedAt     *string `json:"started_at"`
		}
		if err := json.Unmarshal([]byte(out), &started); err != nil {
			t.Fatalf("runs start --json: %v\n%s", err, out)
		}
		if started.RunID != runID || !started.AlreadyExists || started.Status != "pending" || started.StartedAt != nil {
			t.Errorf("runs start --json again: got %+v, want run %s, pending, already_exists, started_at null", started, runID)
		}

		out = run(t, 0, "runs", "get", runID)
		for _, want := range []string{"run          " + runID, "status       pending", `input        {"amount_cents":1999}`, "created      0s ago"} {
			if !strings.Contains(out, want) {
				t.Errorf("runs get: got\n%s\nwant a line %q", out, want)
			}
		}
		out = run(t, 0, "runs", "list", "--type", "send-invoice")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 {
			t.Fatalf("runs list: got\n%s\nwant a header and one run", out)
		}
		short := runID[:8] + "…" + runID[32:]
		if want := fmt.Sprintf("%s  send-invoice  default  pending  0        0s ago", short); lines[1] != want {
			t.Errorf("runs list: got row %q, want %q", lines[1], want)
		}
		if !strings.HasPrefix(lines[0], "RUN            TYPE          QUEUE    STATUS   ATTEMPT  CREATED") {
			t.Errorf("runs list: got header %q, want aligned columns", lines[0])
		}
		if out := run(t, 0, "runs", "list", "--type", "send-invoice", "--wide"); !strings.Contains(out, runID) {
			t.Errorf("runs list --wide: got\n%s\nwant the whole ID", out)
		}
		out = run(t, 0, "runs", "cancel", runID)
		if want := "run " + runID + " cancelled\n"; out != want {
			t.Errorf("runs cancel: got %q, want %q", out, want)
		}
		if out := run(t, 0, "runs", "retry", runID); out != "run "+runID+" pending again (attempt 0 so far)\n" {
			t.Errorf("runs retry: got %q", out)
		}
		if errOut := run(t, 1, "runs", "retry", runID); !strings.HasPrefix(errOut, "kagzi: conflict: ") {
			t.Errorf("runs retry of a pending run: got %q, want a conflict", errOut)
		}
		run(t, 0, "runs", "cancel", runID) // the queue list below has no default queue
		if errOut := run(t, 1, "runs", "cancel", runID+"x"); !strings.Contains(errOut, "invalid_argument") {
			t.Errorf("runs cancel of a bad ID: got %q", errOut)
		}
		missing := "01a21502-0000-7000-8000-000000000000"
		if errOut := run(t, 1, "runs", "get", missing); errOut != "kagzi: no run "+missing+" in namespace default\n" {
			t.Errorf("runs get of an unknown run: got %q", errOut)
		}
		if errOut := run(t, 1, "runs", "get", runID, "--namespace", "other"); !strings.Contains(errOut, "no run "+runID+" in namespace other") {
			t.Errorf("runs get in another namespace: got %q", errOut)
		}
	})

	t.Run("runs start --wait", func(t *testing.T) {
		out := run(t, 0, "runs", "start", "greet", "--queue", "greetings", "--input", `{"Name":"Ada"}`, "--wait")
		if out != "\"Hello, Ada!\"\n" {
			t.Errorf("runs start --wait: got %q, want the output", out)
		}
		errOut := run(t, 1, "runs", "start", "greet", "--queue", "greetings", "--input", `{}`, "--wait")
		if !regexp.MustCompile(`^kagzi: run [0-9a-f-]{36} failed: no name\n$`).MatchString(errOut) {
			t.Errorf("runs start --wait of a run that fails: got %q", errOut)
		}
		out = run(t, 0, "runs", "start", "greet", "--queue", "greetings", "--input", `{"Name":"Bo"}`, "--wait", "--json")
		var done struct {
			Status string          `json:"status"`
			Output json.RawMessage `json:"output"`
		}
		if err := json.Unmarshal([]byte(out), &done); err != nil || done.Status != "completed" || string(done.Output) != `"Hello, Bo!"` {
			t.Errorf("runs start --wait --json: got %+v (%v) from\n%s", done, err, out)
		}
	})

	t.Run("queues", func(t *testing.T) {
		out := run(t, 0, "queues", "pause", "greetings")
		if !strings.HasPrefix(out, "queue greetings paused") {
			t.Errorf("queues pause: got %q", out)
		}
		out = run(t, 0, "queues", "list")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], "QUEUE      AVAILABLE  PENDING  RUNNING  SLEEPING  OLDEST  PAUSED  LIMIT  WORKERS") {
			t.Fatalf("queues list: got\n%s\nwant a header and the queue greetings (default holds only a cancelled run)", out)
		}
		if want := "greetings  0          0        0        0         -       yes     -      1"; lines[1] != want {
			t.Errorf("queues list: got row %q, want %q", lines[1], want)
		}
		if out := run(t, 0, "queues", "resume", "greetings"); !strings.HasPrefix(out, "queue greetings resumed") {
			t.Errorf("queues resume: got %q", out)
		}
		var page struct {
			TaskQueues []struct {
				Name   string `json:"name"`
				Paused bool   `json:"paused"`
			} `json:"task_queues"`
			NextCursor *string `json:"next_cursor"`
		}
		if err := json.Unmarshal([]byte(run(t, 0, "queues", "list", "--json")), &page); err != nil || len(page.TaskQueues) != 1 || page.TaskQueues[0].Paused {
			t.Errorf("queues list --json: got %+v (%v)", page, err)
		}
	})

	t.Run("workers", func(t *testing.T) {
		out := run(t, 0, "workers", "list", "--wide")
		if !strings.Contains(out, w.ID()) || !strings.Contains(out, "greetings  online") {
			t.Errorf("workers list: got\n%s\nwant the worker %s online", out, w.ID())
		}
		if out := run(t, 0, "workers", "drain", w.ID()); out != "worker "+w.ID()+" draining (0 active)\n" {
			t.Errorf("workers drain: got %q", out)
		}
		if out := run(t, 0, "workers", "list", "--status", "online"); strings.Count(out, "\n") != 1 {
			t.Errorf("workers list --status online: got\n%s\nwant none", out)
		}
	})

	t.Run("schedules", func(t *testing.T) {
		out := run(t, 0, "schedules", "create", "nightly-report", "--cron", "30 2 * * *", "--timezone", "America/New_York", "--input", `{"format":"pdf"}`)
		m := regexp.MustCompile(`^created schedule ([0-9a-f-]{36}): nightly-report "30 2 \* \* \*" in America/New_York, next fire in \d+[hm]\n$`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("schedules create: got %q", out)
		}
		id := m[1]
		out = run(t, 0, "schedules", "trigger", id)
		if !regexp.MustCompile(`^started run [0-9a-f-]{36} of schedule ` + id + ` \(pending, queue default\)\n$`).MatchString(out) {
			t.Errorf("schedules trigger: got %q", out)
		}
		missing := "01a21502-0000-7000-8000-000000000000"
		if errOut := run(t, 1, "schedules", "trigger", missing); errOut != "kagzi: no schedule "+missing+" in namespace default\n" {
			t.Errorf("schedules trigger of an unknown schedule: got %q", errOut)
		}
		if out := run(t, 0, "schedules", "disable", id); out != "schedule "+id+" disabled\n" {
			t.Errorf("schedules disable: got %q", out)
		}
		out = run(t, 0, "schedules", "list")
		if !strings.Contains(out, "nightly-report  default  30 2 * * *  America/New_York  no       -     -") {
			t.Errorf("schedules list: got\n%s", out)
		}
		if out := run(t, 0, "schedules", "enable", id); !strings.HasPrefix(out, "schedule "+id+" enabled, next fire in ") {
			t.Errorf("schedules enable: got %q", out)
		}
		errOut := run(t, 1, "schedules", "create", "x", "--cron", "0 25 * * *")
		if !strings.Contains(errOut, "invalid_argument: cron is not a cron expression") {
			t.Errorf("schedules create with a bad cron: got %q", errOut)
		}
	})

	t.Run("help", func(t *testing.T) {
		if out := run(t, 0, "runs", "start", "--help"); !strings.Contains(out, "-wait") || !strings.Contains(out, "-input") {
			t.Errorf("runs start --help: got\n%s\nwant its flags", out)
		}
		if out := run(t, 0, "queues", "--help"); !strings.Contains(out, "kagzi queues pause|resume QUEUE") {
			t.Errorf("queues --help: got\n%s\nwant the commands", out)
		}
	})

	t.Run("usage errors exit 2", func(t *testing.T) {
		for _, args := range [][]string{
			{"runs"},
			{"runs", "frobnicate"},
			{"runs", "get"},
			{"runs", "get", "a", "b"},
			{"runs", "start", "greet", "--input", "{not json"},
			{"runs", "list", "--limit", "many"},
			{"schedules", "create", "x"},
		} {
			if _, errOut, code := kagziCLI(t, env, args...); code != 2 || errOut == "" {
				t.Errorf("kagzi %q: exit %d (%q), want 2 and a message", args, code, errOut)
			}
		}
	})
}

func TestCLIUnreachableServer(t *testing.T) {
	t.Parallel()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	u := fmt.Sprintf("http://127.0.0.1:%d", port)
	_, errOut, code := kagziCLI(t, map[string]string{"KAGZI_URL": u}, "runs", "list")
	if code != 1 || !strings.Contains(errOut, "no Kagzi server answers at "+u) || !strings.Contains(errOut, "connection refused") {
		t.Errorf("runs list with no server: exit %d, %q; want 1 and a message naming %s", code, errOut, u)
	}
}

// TestCLISendsAPIKey checks the header KAGZI_API_KEY becomes, and what the
// command line says to a 401, on a stand-in for a server with auth on.
func TestCLISendsAPIKey(t *testing.T) {
	t.Parallel()
	got := make(chan string, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "application/problem+json")
		w.Header().Set("WWW-Authenticate", "Bearer")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"type":"about:blank","title":"Unauthorized","status":401,"code":"unauthenticated","detail":"the API key is unknown"}`)
	}))
	defer srv.Close()

	_, errOut, code := kagziCLI(t, map[string]string{"KAGZI_URL": srv.URL, "KAGZI_API_KEY": "kz_secret"}, "queues", "list")
	if h := <-got; h != "Bearer kz_secret" {
		t.Errorf("Authorization: got %q, want Bearer kz_secret", h)
	}
	if code != 1 || !strings.Contains(errOut, "refuses KAGZI_API_KEY: the API key is unknown") {
		t.Errorf("with a wrong key: exit %d, %q", code, errOut)
	}
	_, errOut, code = kagziCLI(t, map[string]string{"KAGZI_URL": srv.URL}, "queues", "list")
	if h := <-got; h != "" {
		t.Errorf("Authorization without a key: got %q, want none", h)
	}
	if code != 1 || !strings.Contains(errOut, "set KAGZI_API_KEY") {
		t.Errorf("without a key: exit %d, %q", code, errOut)
	}
}

func TestCLIRunsSignal(t *testing.T) {
	t.Parallel()
	srv := testserver.New(t)
	env := map[string]string{"KAGZI_URL": srv.URL}
	c := client.New(srv.URL)
	ctx := context.Background()
	res, err := c.Start(ctx, client.StartRequest{WorkflowType: "expense", TaskQueue: "nobody"})
	if err != nil {
		t.Fatal(err)
	}
	id := res.Run.RunID
	out, errOut, code := kagziCLI(t, env, "runs", "signal", id, "approve", "--input", `{"by":"ada"}`, "--idempotency-key", "k1")
	if want := "signal approve #1 sent to run " + id + " (buffered)\n"; code != 0 || out != want {
		t.Fatalf("runs signal: exit %d, got %q %q, want %q", code, out, errOut, want)
	}
	out, _, code = kagziCLI(t, env, "runs", "signal", id, "approve", "--input", `{"by":"ada"}`, "--idempotency-key", "k1")
	if want := "signal approve #1 already sent to run " + id + " (buffered)\n"; code != 0 || out != want {
		t.Fatalf("runs signal again: exit %d, got %q, want %q", code, out, want)
	}
	if _, err := c.Cancel(ctx, id); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = kagziCLI(t, env, "runs", "signal", id, "approve")
	if code != 1 || !strings.Contains(errOut, "run_finished") {
		t.Fatalf("runs signal to a cancelled run: exit %d, %q", code, errOut)
	}
	if _, errOut, code = kagziCLI(t, env, "runs", "signal", id); code != 2 {
		t.Fatalf("runs signal without a name: exit %d, %q", code, errOut)
	}
}
