package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kagzi/kagzi/client"
)

// usageError is a command line that does not say what to do; kagzi exits
// with 2 for it, 1 for every other error.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// exitCode is the process's exit status for the error a command returned.
func exitCode(err error) int {
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		return 2
	}
	return 1
}

// clientCommands are the subcommands that act on a running server.
const clientCommands = `
Commands for a running server (KAGZI_URL, default http://localhost:8080; KAGZI_API_KEY):
  kagzi runs start TYPE [--input JSON] [--queue Q] [--external-id ID] [--wait]
  kagzi runs get RUN_ID
  kagzi runs list [--status S,S] [--queue Q] [--type T] [--limit N] [--cursor C]
  kagzi runs cancel RUN_ID
  kagzi runs retry RUN_ID
  kagzi runs signal RUN_ID NAME [--input JSON] [--idempotency-key KEY]
  kagzi queues list
  kagzi queues pause|resume QUEUE
  kagzi workers list [--queue Q] [--status S]
  kagzi workers drain WORKER_ID
  kagzi schedules list
  kagzi schedules create TYPE --cron EXPR [--timezone TZ] [--queue Q] [--input JSON] [--disabled]
  kagzi schedules trigger|enable|disable SCHEDULE_ID
Each takes --namespace NS (default "default"), --json (the API's JSON, for scripts)
and --wide (whole IDs). Exit status: 0 done, 1 failed, 2 a bad command line.
`

// cli is one invocation of a client command.
type cli struct {
	c      *client.Client
	url    string
	out    io.Writer
	json   bool
	wide   bool
	fs     *flag.FlagSet
	getenv func(string) string
}

// clientCommand runs `kagzi runs|queues|workers|schedules …` against the
// server at KAGZI_URL.
func clientCommand(ctx context.Context, noun string, args []string, stdout io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		return usagef("%s needs a command (kagzi %s --help lists them)", noun, noun)
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, strings.TrimLeft(clientCommands, "\n"))
		return nil
	}
	verb := args[0]
	k := &cli{out: stdout, getenv: getenv, fs: flag.NewFlagSet("kagzi "+noun+" "+verb, flag.ContinueOnError)}
	k.fs.SetOutput(io.Discard)
	ns := k.fs.String("namespace", "default", "namespace")
	k.fs.BoolVar(&k.json, "json", false, "print the API's JSON")
	k.fs.BoolVar(&k.wide, "wide", false, "print whole IDs")
	k.url = getenv("KAGZI_URL")
	if k.url == "" {
		k.url = "http://localhost:8080"
	}
	k.fs.StringVar(&k.url, "url", k.url, "server URL")
	connect := func() {
		opts := []client.Option{client.WithNamespace(*ns),
			client.WithCallRetry(client.CallRetry{MaxAttempts: 3, Initial: 100 * time.Millisecond, Max: time.Second}),
			client.WithAPIKey(getenv("KAGZI_API_KEY"))}
		k.c = client.New(k.url, opts...)
	}
	var cmd func(context.Context, []string) error
	var want int // positional arguments
	switch noun + " " + verb {
	case "runs start":
		cmd, want = k.runsStart(), 1
	case "runs get":
		cmd, want = k.runsGet, 1
	case "runs list":
		cmd = k.runsList()
	case "runs cancel":
		cmd, want = k.runsCancel, 1
	case "runs retry":
		cmd, want = k.runsRetry, 1
	case "runs signal":
		cmd, want = k.runsSignal(), 2
	case "queues list":
		cmd = k.queuesList
	case "queues pause":
		cmd, want = k.queuesPause(true), 1
	case "queues resume":
		cmd, want = k.queuesPause(false), 1
	case "workers list":
		cmd = k.workersList()
	case "workers drain":
		cmd, want = k.workersDrain, 1
	case "schedules list":
		cmd = k.schedulesList
	case "schedules create":
		cmd, want = k.schedulesCreate(), 1
	case "schedules trigger":
		cmd, want = k.schedulesTrigger, 1
	case "schedules enable":
		cmd, want = k.schedulesEnable(true), 1
	case "schedules disable":
		cmd, want = k.schedulesEnable(false), 1
	default:
		return usagef("unknown command %q (kagzi %s --help lists them)", noun+" "+verb, noun)
	}
	pos, err := parseInterspersed(k.fs, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stdout, "kagzi %s %s takes:\n", noun, verb)
		k.fs.SetOutput(stdout)
		k.fs.PrintDefaults()
		return nil
	}
	if err != nil {
		return usagef("%s %s: %v", noun, verb, err)
	}
	if len(pos) != want {
		return usagef("%s %s takes %d argument(s), got %d (%q)", noun, verb, want, len(pos), pos)
	}
	connect()
	return k.explain(cmd(ctx, pos))
}

// parseInterspersed parses flags wherever they are among the arguments
// (flag stops at the first positional one) and returns the positional
// ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := args[:len(args)-len(rest)]; len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
			return append(pos, rest...), nil // everything after "--" is positional
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

// explain turns what the client says into a sentence for the person at the
// terminal: which server could not be reached, that a key is needed.
func (k *cli) explain(err error) error {
	if err == nil {
		return nil
	}
	var apiErr *client.Error
	var opErr *net.OpError
	switch {
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return fmt.Errorf("no Kagzi server answers at %s (%v); start one with `kagzi dev`, or point KAGZI_URL at yours", k.url, opErr.Err)
	case errors.As(err, &apiErr) && apiErr.Code == client.CodeUnauthenticated:
		if k.getenv("KAGZI_API_KEY") == "" {
			return fmt.Errorf("the server at %s has authentication on: set KAGZI_API_KEY to a key (kagzi keys create)", k.url)
		}
		return fmt.Errorf("the server at %s refuses KAGZI_API_KEY: %s", k.url, apiErr.Detail)
	case errors.As(err, &apiErr):
		if apiErr.Detail == "" {
			return fmt.Errorf("%s (HTTP %d)", apiErr.Code, apiErr.Status)
		}
		return fmt.Errorf("%s: %s", apiErr.Code, apiErr.Detail)
	}
	return err
}

// notFound names what was not found, and where.
func (k *cli) notFound(err error, what, id string) error {
	if errors.Is(err, client.ErrNotFound) {
		return fmt.Errorf("no %s %s in namespace %s", what, id, k.c.Namespace())
	}
	return err
}

// jsonInput reads a --input flag's value: JSON, or "" for none.
func jsonInput(s string) (json.RawMessage, error) {
	if s == "" {
		return nil, nil
	}
	if !json.Valid([]byte(s)) {
		return nil, usagef("--input is not JSON: %s (quote it: --input '{\"k\":1}')", s)
	}
	return json.RawMessage(s), nil
}

func (k *cli) printJSON(v any) error {
	enc := json.NewEncoder(k.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns; rows are tab-separated.
func (k *cli) table(header string, rows []string) {
	tw := tabwriter.NewWriter(k.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, r)
	}
	tw.Flush()
}

// id shortens a UUID for a table (its head, which orders UUIDv7s by time,
// and its tail, which tells apart those of the same millisecond), unless
// --wide.
func (k *cli) id(s string) string {
	if k.wide || len(s) <= 16 {
		return s
	}
	return s[:8] + "…" + s[len(s)-4:]
}

// age says how long ago t was ("3m ago"), or how far ahead ("in 5s");
// "-" for none.
func age(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	if d < 0 {
		return "in " + short(-d)
	}
	return short(d) + " ago"
}

func agePtr(t *time.Time, now time.Time) string {
	if t == nil {
		return "-"
	}
	return age(*t, now)
}

func short(d time.Duration) string {
	switch {
	case d < time.Second:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

func orDash[T any](p *T) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprint(*p)
}

// runJSON is a run as the API spells it: times the server leaves null are
// null, not Go's zero time.
type runJSON struct {
	RunID          string             `json:"run_id"`
	Namespace      string             `json:"namespace"`
	TaskQueue      string             `json:"task_queue"`
	WorkflowType   string             `json:"workflow_type"`
	ExternalID     *string            `json:"external_id"`
	Version        *string            `json:"version"`
	Status         client.Status      `json:"status"`
	Input          json.RawMessage    `json:"input,omitempty"`
	Output         json.RawMessage    `json:"output,omitempty"`
	Error          *client.ErrorInfo  `json:"error"`
	Attempt        int                `json:"attempt"`
	RetryPolicy    client.RetryPolicy `json:"retry_policy"`
	WorkerID       *string            `json:"worker_id"`
	LeaseExpiresAt *time.Time         `json:"lease_expires_at"`
	AvailableAt    *time.Time         `json:"available_at"`
	CreatedAt      time.Time          `json:"created_at"`
	StartedAt      *time.Time         `json:"started_at"`
	FinishedAt     *time.Time         `json:"finished_at"`
	AlreadyExists  *bool              `json:"already_exists,omitempty"`
}

func nonZero[T comparable](v T) *T {
	var zero T
	if v == zero {
		return nil
	}
	return &v
}

func toRunJSON(r *client.Run) runJSON {
	return runJSON{RunID: r.RunID, Namespace: r.Namespace, TaskQueue: r.TaskQueue, WorkflowType: r.WorkflowType,
		ExternalID: nonZero(r.ExternalID), Version: nonZero(r.Version), Status: r.Status, Input: r.Input, Output: r.Output,
		Error: r.Error, Attempt: r.Attempt, RetryPolicy: r.RetryPolicy, WorkerID: nonZero(r.WorkerID),
		LeaseExpiresAt: nonZero(r.LeaseExpiresAt), AvailableAt: nonZero(r.AvailableAt), CreatedAt: r.CreatedAt,
		StartedAt: nonZero(r.StartedAt), FinishedAt: nonZero(r.FinishedAt)}
}

func (k *cli) runsStart() func(context.Context, []string) error {
	input := k.fs.String("input", "", "the run's input, JSON")
	queue := k.fs.String("queue", "", "task queue (default \"default\")")
	externalID := k.fs.String("external-id", "", "external ID: while a run with it is live, starting again returns that run")
	wait := k.fs.Bool("wait", false, "wait for the run to finish and print its output")
	return func(ctx context.Context, pos []string) error {
		in, err := jsonInput(*input)
		if err != nil {
			return err
		}
		res, err := k.c.Start(ctx, client.StartRequest{WorkflowType: pos[0], TaskQueue: *queue, Input: in, ExternalID: *externalID})
		if err != nil {
			return err
		}
		if !*wait {
			if k.json {
				j := toRunJSON(&res.Run)
				j.AlreadyExists = &res.AlreadyExists
				return k.printJSON(j)
			}
			verb := "started run %s (%s, queue %s)\n"
			if res.AlreadyExists {
				verb = "run %s already exists (%s, queue %s)\n"
			}
			fmt.Fprintf(k.out, verb, res.Run.RunID, res.Run.Status, res.Run.TaskQueue)
			return nil
		}
		run, err := k.c.Wait(ctx, res.Run.RunID)
		if err != nil {
			return fmt.Errorf("waiting for run %s: %w", res.Run.RunID, err)
		}
		return k.finished(run)
	}
}

// finished prints the outcome of a run that --wait saw finish: its output
// on success, an error otherwise.
func (k *cli) finished(run *client.Run) error {
	if k.json {
		if err := k.printJSON(toRunJSON(run)); err != nil {
			return err
		}
	} else if run.Status == client.StatusCompleted {
		fmt.Fprintln(k.out, string(run.Output))
	}
	if run.Status != client.StatusCompleted {
		msg := ""
		if run.Error != nil {
			msg = ": " + run.Error.Message
		}
		return fmt.Errorf("run %s %s%s", run.RunID, run.Status, msg)
	}
	return nil
}

func (k *cli) runsGet(ctx context.Context, pos []string) error {
	run, err := k.c.Get(ctx, pos[0])
	if err != nil {
		return k.notFound(err, "run", pos[0])
	}
	if k.json {
		return k.printJSON(toRunJSON(run))
	}
	now := time.Now()
	tw := tabwriter.NewWriter(k.out, 0, 4, 2, ' ', 0)
	line := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	line("run", run.RunID)
	line("type", run.WorkflowType)
	line("queue", run.TaskQueue)
	line("status", string(run.Status))
	line("attempt", fmt.Sprint(run.Attempt))
	if run.ExternalID != "" {
		line("external id", run.ExternalID)
	}
	line("created", age(run.CreatedAt, now))
	if !run.StartedAt.IsZero() {
		line("started", age(run.StartedAt, now))
	}
	if !run.FinishedAt.IsZero() {
		line("finished", age(run.FinishedAt, now))
	}
	if run.Status == client.StatusPending || run.Status == client.StatusSleeping {
		line("available", age(run.AvailableAt, now))
	}
	if run.WorkerID != "" {
		line("worker", run.WorkerID)
	}
	line("input", string(run.Input))
	if run.Status == client.StatusCompleted {
		line("output", string(run.Output))
	}
	if run.Error != nil {
		line("error", run.Error.Message)
	}
	return tw.Flush()
}

func (k *cli) runsList() func(context.Context, []string) error {
	status := k.fs.String("status", "", "statuses, comma-separated")
	queue := k.fs.String("queue", "", "task queue")
	typ := k.fs.String("type", "", "workflow type")
	externalID := k.fs.String("external-id", "", "external ID")
	limit := k.fs.Int("limit", 20, "runs to list (at most 500)")
	cursor := k.fs.String("cursor", "", "the next_cursor of a previous page")
	return func(ctx context.Context, _ []string) error {
		opts := client.ListOptions{TaskQueue: *queue, WorkflowType: *typ, ExternalID: *externalID, PageSize: *limit}
		if *status != "" {
			for _, s := range strings.Split(*status, ",") {
				opts.Statuses = append(opts.Statuses, client.Status(s))
			}
		}
		page, err := k.c.ListPage(ctx, opts, *cursor)
		if err != nil {
			return err
		}
		if k.json {
			runs := make([]runJSON, len(page.Runs))
			for i := range page.Runs {
				runs[i] = toRunJSON(&page.Runs[i])
			}
			return k.printJSON(struct {
				Workflows  []runJSON `json:"workflows"`
				NextCursor *string   `json:"next_cursor"`
			}{runs, nonZero(page.NextCursor)})
		}
		now := time.Now()
		rows := make([]string, len(page.Runs))
		for i, r := range page.Runs {
			rows[i] = strings.Join([]string{k.id(r.RunID), r.WorkflowType, r.TaskQueue, string(r.Status),
				fmt.Sprint(r.Attempt), age(r.CreatedAt, now)}, "\t")
		}
		k.table("RUN\tTYPE\tQUEUE\tSTATUS\tATTEMPT\tCREATED", rows)
		if page.NextCursor != "" {
			fmt.Fprintf(k.out, "more: --cursor %s\n", page.NextCursor)
		}
		return nil
	}
}

func (k *cli) runsCancel(ctx context.Context, pos []string) error {
	run, err := k.c.Cancel(ctx, pos[0])
	if err != nil {
		return k.notFound(err, "run", pos[0])
	}
	if k.json {
		return k.printJSON(toRunJSON(run))
	}
	fmt.Fprintf(k.out, "run %s %s\n", run.RunID, run.Status)
	return nil
}

func (k *cli) runsRetry(ctx context.Context, pos []string) error {
	run, err := k.c.Retry(ctx, pos[0])
	if err != nil {
		return k.notFound(err, "run", pos[0])
	}
	if k.json {
		return k.printJSON(toRunJSON(run))
	}
	fmt.Fprintf(k.out, "run %s %s again (attempt %d so far)\n", run.RunID, run.Status, run.Attempt)
	return nil
}

func (k *cli) runsSignal() func(context.Context, []string) error {
	input := k.fs.String("input", "", "the signal's input, JSON")
	key := k.fs.String("idempotency-key", "", "a key that makes a retried send answer the first")
	return func(ctx context.Context, pos []string) error {
		in, err := jsonInput(*input)
		if err != nil {
			return err
		}
		var opts []client.SignalOption
		if *key != "" {
			opts = append(opts, client.WithIdempotencyKey(*key))
		}
		sg, err := k.c.Signal(ctx, pos[0], pos[1], in, opts...)
		if err != nil {
			return k.notFound(err, "run", pos[0])
		}
		if k.json {
			return k.printJSON(sg)
		}
		how := "sent"
		if sg.Duplicate {
			how = "already sent"
		}
		fmt.Fprintf(k.out, "signal %s #%d %s to run %s (%s)\n", sg.Name, sg.Seq, how, sg.RunID, sg.Status)
		return nil
	}
}

func (k *cli) queuesList(ctx context.Context, _ []string) error {
	page, err := k.c.TaskQueuesPage(ctx, 0, "")
	if err != nil {
		return err
	}
	if k.json {
		return k.printJSON(page)
	}
	now := time.Now()
	rows := make([]string, len(page.TaskQueues))
	for i, q := range page.TaskQueues {
		paused := "no"
		if q.Paused {
			paused = "yes"
		}
		rows[i] = fmt.Sprintf("%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%d", q.Name, q.Available, q.Pending, q.Running,
			q.Sleeping, agePtr(q.OldestAvailableAt, now), paused, orDash(q.MaxConcurrent), q.WorkersOnline)
	}
	k.table("QUEUE\tAVAILABLE\tPENDING\tRUNNING\tSLEEPING\tOLDEST\tPAUSED\tLIMIT\tWORKERS", rows)
	return nil
}

func (k *cli) queuesPause(paused bool) func(context.Context, []string) error {
	return func(ctx context.Context, pos []string) error {
		q, err := k.c.SetTaskQueuePaused(ctx, pos[0], paused)
		if err != nil {
			return err
		}
		if k.json {
			return k.printJSON(q)
		}
		state := "resumed"
		if q.Paused {
			state = "paused"
		}
		fmt.Fprintf(k.out, "queue %s %s (%d available, %d running)\n", q.Name, state, q.Available, q.Running)
		return nil
	}
}

func (k *cli) workersList() func(context.Context, []string) error {
	queue := k.fs.String("queue", "", "task queue")
	status := k.fs.String("status", "", "online, draining or offline")
	return func(ctx context.Context, _ []string) error {
		page, err := k.c.WorkersPage(ctx, *queue, *status, 0, "")
		if err != nil {
			return err
		}
		if k.json {
			return k.printJSON(page)
		}
		now := time.Now()
		rows := make([]string, len(page.Workers))
		for i, w := range page.Workers {
			rows[i] = fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%d/%d\t%d\t%d\t%s", k.id(w.WorkerID), w.TaskQueue, w.Status,
				orDash(w.Hostname), orDash(w.PID), w.ActiveCount, w.MaxConcurrent, w.TotalCompleted, w.TotalFailed,
				age(w.LastHeartbeatAt, now))
		}
		k.table("WORKER\tQUEUE\tSTATUS\tHOST\tPID\tACTIVE\tCOMPLETED\tFAILED\tHEARTBEAT", rows)
		return nil
	}
}

func (k *cli) workersDrain(ctx context.Context, pos []string) error {
	w, err := k.c.DrainWorker(ctx, pos[0])
	if err != nil {
		return k.notFound(err, "worker", pos[0])
	}
	if k.json {
		return k.printJSON(w)
	}
	fmt.Fprintf(k.out, "worker %s %s (%d active)\n", w.WorkerID, w.Status, w.ActiveCount)
	return nil
}

func (k *cli) schedulesList(ctx context.Context, _ []string) error {
	page, err := k.c.SchedulesPage(ctx, 0, "")
	if err != nil {
		return err
	}
	if k.json {
		return k.printJSON(page)
	}
	now := time.Now()
	rows := make([]string, len(page.Schedules))
	for i, s := range page.Schedules {
		enabled := "yes"
		if !s.Enabled {
			enabled = "no"
		}
		rows[i] = fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", k.id(s.ScheduleID), s.WorkflowType, s.TaskQueue,
			s.Cron, s.Timezone, enabled, agePtr(s.NextFireAt, now), agePtr(s.LastFiredAt, now))
	}
	k.table("SCHEDULE\tTYPE\tQUEUE\tCRON\tTIMEZONE\tENABLED\tNEXT\tLAST", rows)
	return nil
}

func (k *cli) schedulesCreate() func(context.Context, []string) error {
	cron := k.fs.String("cron", "", "cron expression (five fields, six with seconds, @hourly, @every 90s …)")
	tz := k.fs.String("timezone", "", "IANA time zone (default UTC)")
	queue := k.fs.String("queue", "", "task queue (default \"default\")")
	input := k.fs.String("input", "", "each run's input, JSON")
	disabled := k.fs.Bool("disabled", false, "create it disabled")
	return func(ctx context.Context, pos []string) error {
		if *cron == "" {
			return usagef("schedules create needs --cron")
		}
		in, err := jsonInput(*input)
		if err != nil {
			return err
		}
		s, err := k.c.CreateSchedule(ctx, client.ScheduleRequest{WorkflowType: pos[0], Cron: *cron, Timezone: *tz,
			TaskQueue: *queue, Input: in, Disabled: *disabled})
		if err != nil {
			return err
		}
		if k.json {
			return k.printJSON(s)
		}
		fmt.Fprintf(k.out, "created schedule %s: %s %q in %s, next fire %s\n", s.ScheduleID, s.WorkflowType, s.Cron,
			s.Timezone, agePtr(s.NextFireAt, time.Now()))
		return nil
	}
}

func (k *cli) schedulesTrigger(ctx context.Context, pos []string) error {
	run, err := k.c.TriggerSchedule(ctx, pos[0])
	if err != nil {
		return k.notFound(err, "schedule", pos[0])
	}
	if k.json {
		return k.printJSON(toRunJSON(run))
	}
	fmt.Fprintf(k.out, "started run %s of schedule %s (%s, queue %s)\n", run.RunID, pos[0], run.Status, run.TaskQueue)
	return nil
}

func (k *cli) schedulesEnable(enabled bool) func(context.Context, []string) error {
	return func(ctx context.Context, pos []string) error {
		s, err := k.c.SetScheduleEnabled(ctx, pos[0], enabled)
		if err != nil {
			return k.notFound(err, "schedule", pos[0])
		}
		if k.json {
			return k.printJSON(s)
		}
		state := "disabled"
		if s.Enabled {
			state = "enabled, next fire " + agePtr(s.NextFireAt, time.Now())
		}
		fmt.Fprintf(k.out, "schedule %s %s\n", s.ScheduleID, state)
		return nil
	}
}
