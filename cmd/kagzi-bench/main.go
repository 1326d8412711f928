// Command kagzi-bench is Kagzi's load tool: it starts runs on a running
// server in batches, executes them with workers of the Go SDK (or plain
// HTTP workers, -protocol http), and reports throughput, steps per second,
// requests and database writes per step, and latency.
//
//	go run ./cmd/kagzi-bench -runs 20000 -workers 4 -max-tasks 100
//
// Pickup latency is the time from a run's start request to its workflow
// function starting on a worker (both on this host's clock); end-to-end
// latency is from the start request to the run's completion as the
// database records it, and needs -db, as does the count of writing
// transactions per run.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kagzi/kagzi/client"
)

type options struct {
	url, namespace, queue, db string
	apiKey                    string
	runs, workers, maxTasks   int
	steps, payload, batch     int
	rate                      int
	queueLimit                int
	duration                  time.Duration
	json                      bool
	protocol                  string
	signalRoundTrips          int
}

func main() {
	var o options
	flag.StringVar(&o.url, "url", envOr("KAGZI_URL", "http://localhost:8080"), "server base URL")
	flag.StringVar(&o.apiKey, "api-key", os.Getenv("KAGZI_API_KEY"), "API key, when the server has auth on (default $KAGZI_API_KEY; admin on the namespace, as it starts and works runs)")
	flag.StringVar(&o.namespace, "namespace", "bench", "namespace of the runs")
	flag.StringVar(&o.queue, "queue", "", "task queue (default: a fresh one per invocation)")
	flag.StringVar(&o.db, "db", "", "database URL, for end-to-end latency and transactions per run")
	flag.IntVar(&o.runs, "runs", 10000, "runs to start (ignored with -duration)")
	flag.DurationVar(&o.duration, "duration", 0, "start runs for this long instead of -runs")
	flag.IntVar(&o.workers, "workers", 4, "SDK workers")
	flag.IntVar(&o.maxTasks, "max-tasks", 100, "each worker's max_concurrent, so its claims' max_tasks")
	flag.IntVar(&o.steps, "steps", 0, "steps per workflow")
	flag.IntVar(&o.payload, "payload", 16, "input size in bytes")
	flag.IntVar(&o.batch, "batch", 1000, "runs per batch start")
	flag.IntVar(&o.rate, "rate", 0, "runs started per second (0: as fast as possible)")
	flag.IntVar(&o.queueLimit, "queue-limit", 0, "set the queue's max_concurrent to this first (0: no limit)")
	flag.BoolVar(&o.json, "json", false, "print the report as JSON")
	flag.StringVar(&o.protocol, "protocol", protocolSDK, "workers: sdk (Go SDK), http (plain HTTP, steps and completions in batches), http-begin (plain HTTP, begin and complete per step)")
	flag.IntVar(&o.signalRoundTrips, "signal-round-trips", 0, "instead of the load, send this many signals to runs parked in a wait, one at a time, and report how long each took to reach the workflow code")
	cpuProfile := flag.String("cpuprofile", "", "write this tool's CPU profile to the file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "kagzi-bench:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if o.queue == "" {
		o.queue = fmt.Sprintf("bench-%d", time.Now().UnixNano())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.signalRoundTrips > 0 {
		rep, err := signalRoundTrips(ctx, o, o.signalRoundTrips)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kagzi-bench:", err)
			os.Exit(1)
		}
		if o.json {
			_ = json.NewEncoder(os.Stdout).Encode(rep)
		} else {
			rep.print(os.Stdout)
		}
		return
	}
	rep, err := run(ctx, o, os.Stderr)
	if err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "kagzi-bench:", err)
		os.Exit(1)
	}
	if o.json {
		_ = json.NewEncoder(os.Stdout).Encode(rep)
	} else {
		rep.print(os.Stdout)
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// input is what each run carries: when it was started, and padding.
type input struct {
	StartedNS int64  `json:"started_ns"`
	Pad       string `json:"pad,omitempty"`
}

// Report is the outcome of a load run.
type Report struct {
	Runs          int64   `json:"runs"`
	Seconds       float64 `json:"seconds"`
	RunsPerSecond float64 `json:"runs_per_second"`
	PickupMS      Pct     `json:"pickup_ms"`
	EndToEndMS    *Pct    `json:"end_to_end_ms,omitempty"`
	XactsPerRun   float64 `json:"db_write_transactions_per_run,omitempty"`
	// StepsPerSecond counts the step records the runs made per second.
	StepsPerSecond float64 `json:"steps_per_second,omitempty"`
	// RequestsPerStep counts the HTTP requests that recorded steps (begin,
	// complete, fail, steps/batch) per step record.
	RequestsPerStep float64 `json:"requests_per_step,omitempty"`
	// XactsPerStep is the writing transactions of the whole load (claims
	// and completions included) per step record.
	XactsPerStep float64 `json:"db_write_transactions_per_step,omitempty"`
	Protocol     string  `json:"protocol"`
	Workers      int     `json:"workers"`
	MaxTasks     int     `json:"max_tasks"`
	Steps        int     `json:"steps"`
	PayloadBytes int     `json:"payload_bytes"`
}

// Pct holds latency percentiles in milliseconds.
type Pct struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
}

func percentiles(ds []time.Duration) Pct {
	if len(ds) == 0 {
		return Pct{}
	}
	slices.Sort(ds)
	// The nearest-rank percentile: the smallest value with at least p of
	// the values at or below it.
	at := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(ds)))) - 1
		return float64(ds[max(0, min(len(ds)-1, i))].Microseconds()) / 1000
	}
	return Pct{P50: at(0.50), P90: at(0.90), P99: at(0.99)}
}

func (r Report) print(w io.Writer) {
	fmt.Fprintf(w, "runs            %d in %.2fs\n", r.Runs, r.Seconds)
	fmt.Fprintf(w, "throughput      %.0f runs/s\n", r.RunsPerSecond)
	fmt.Fprintf(w, "pickup          p50 %.1f ms  p90 %.1f ms  p99 %.1f ms\n", r.PickupMS.P50, r.PickupMS.P90, r.PickupMS.P99)
	if r.EndToEndMS != nil {
		fmt.Fprintf(w, "end to end      p50 %.1f ms  p90 %.1f ms  p99 %.1f ms\n", r.EndToEndMS.P50, r.EndToEndMS.P90, r.EndToEndMS.P99)
	}
	if r.StepsPerSecond > 0 {
		fmt.Fprintf(w, "steps           %.0f steps/s, %.2f requests/step\n", r.StepsPerSecond, r.RequestsPerStep)
	}
	if r.XactsPerRun > 0 {
		fmt.Fprintf(w, "db writes/run   %.2f transactions\n", r.XactsPerRun)
	}
	if r.XactsPerStep > 0 {
		fmt.Fprintf(w, "db writes/step  %.2f transactions (all of the load's, per step)\n", r.XactsPerStep)
	}
}

func run(ctx context.Context, o options, progress io.Writer) (Report, error) {
	if o.protocol == "" {
		o.protocol = protocolSDK
	}
	rep := Report{Protocol: o.protocol, Workers: o.workers, MaxTasks: o.maxTasks, Steps: o.steps, PayloadBytes: o.payload}
	counter := &stepCounter{next: newTransport()}
	hc := &http.Client{Transport: counter}
	c := client.New(o.url, client.WithNamespace(o.namespace), client.WithHTTPClient(hc), client.WithAPIKey(o.apiKey))
	if _, err := c.Info(ctx); err != nil {
		return rep, fmt.Errorf("server at %s: %w", o.url, err)
	}
	if o.queueLimit > 0 {
		if err := limitQueue(ctx, o); err != nil {
			return rep, err
		}
	}
	var conn *pgx.Conn
	var xacts0 int64
	if o.db != "" {
		var err error
		if conn, err = pgx.Connect(ctx, o.db); err != nil {
			return rep, err
		}
		defer conn.Close(context.Background())
		if err := checkDatabase(ctx, c, conn, o); err != nil {
			return rep, err
		}
		if xacts0, err = xactCommits(ctx, conn); err != nil {
			return rep, err
		}
	}

	var (
		mu        sync.Mutex
		pickups   []time.Duration
		completed atomic.Int64
		started   atomic.Int64
	)
	pickup := func(d time.Duration) {
		mu.Lock()
		pickups = append(pickups, d)
		mu.Unlock()
	}
	workflow := func(wc *client.WorkflowContext, in input) (int, error) {
		if wc.Attempt() == 1 {
			pickup(time.Duration(time.Now().UnixNano() - in.StartedNS))
		}
		for i := range o.steps {
			if _, err := client.Step(wc, fmt.Sprintf("step-%d", i), func(context.Context) (int, error) { return i, nil }); err != nil {
				return 0, err
			}
		}
		completed.Add(1)
		return 0, nil
	}
	wctx, stopWorkers := context.WithCancel(context.Background())
	defer stopWorkers()
	var wg sync.WaitGroup
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	switch o.protocol {
	case protocolSDK:
		for range o.workers {
			w := client.NewWorker(c, o.queue, client.WithMaxConcurrent(o.maxTasks), client.WithLogger(quiet),
				client.WithGracePeriod(5*time.Second))
			client.Register(w, "bench", workflow)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := w.Run(wctx); err != nil && !errors.Is(err, context.Canceled) {
					fmt.Fprintln(progress, "worker:", err)
				}
			}()
		}
	case protocolHTTP, protocolHTTPBegin:
		// Each worker holds max-tasks runs, claimed 100 at most at a time
		// by loops of its own.
		per := min(o.maxTasks, 100)
		for range o.workers * max(1, o.maxTasks/per) {
			w := &httpWorker{o: o, hc: hc, base: strings.TrimSuffix(o.url, "/") + "/v1/namespaces/" + o.namespace,
				begin: o.protocol == protocolHTTPBegin, maxTasks: per, pickup: pickup, completed: &completed}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := w.run(wctx); err != nil {
					fmt.Fprintln(progress, "worker:", err)
				}
			}()
		}
	default:
		return rep, fmt.Errorf("-protocol must be sdk, http or http-begin, not %q", o.protocol)
	}

	begin := time.Now()
	startErr := make(chan error, 1)
	go func() { startErr <- startRuns(ctx, c, o, &started) }()
	bar := newBar(progress)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var err error
	for waiting := true; waiting; {
		select {
		case <-ctx.Done():
			err = ctx.Err()
			waiting = false
		case err = <-startErr:
			if err != nil {
				waiting = false
			}
			startErr = nil
		case <-tick.C:
			bar.draw(completed.Load(), started.Load(), o, time.Since(begin))
			if startErr == nil && completed.Load() >= started.Load() {
				waiting = false
			}
		}
	}
	elapsed := time.Since(begin)
	bar.draw(completed.Load(), started.Load(), o, elapsed)
	fmt.Fprintln(progress)
	stopWorkers()
	wg.Wait()
	if err != nil {
		return rep, err
	}

	rep.Runs = completed.Load()
	rep.Seconds = elapsed.Seconds()
	rep.RunsPerSecond = float64(rep.Runs) / rep.Seconds
	stepRecords := rep.Runs * int64(o.steps)
	if stepRecords > 0 {
		rep.StepsPerSecond = float64(stepRecords) / rep.Seconds
		rep.RequestsPerStep = float64(counter.requests.Load()) / float64(stepRecords)
	}
	mu.Lock()
	rep.PickupMS = percentiles(pickups)
	mu.Unlock()
	if conn != nil {
		xacts, err := xactCommits(ctx, conn)
		if err != nil {
			return rep, err
		}
		rep.XactsPerRun = float64(xacts-xacts0) / float64(max(rep.Runs, 1))
		if stepRecords > 0 {
			rep.XactsPerStep = float64(xacts-xacts0) / float64(stepRecords)
		}
		e2e, err := endToEnd(ctx, conn, o)
		if err != nil {
			return rep, err
		}
		rep.EndToEndMS = &e2e
	}
	return rep, nil
}

// startRuns starts runs in batches: o.runs of them, or for o.duration, at
// o.rate per second when set.
func startRuns(ctx context.Context, c *client.Client, o options, started *atomic.Int64) error {
	pad := strings.Repeat("x", max(o.payload-40, 0))
	batch := o.batch
	var every time.Duration
	if o.rate > 0 {
		// Small batches often, so that starts are spread out in time.
		batch = max(1, min(o.batch, o.rate/100))
		every = time.Duration(float64(time.Second) * float64(batch) / float64(o.rate))
	}
	deadline := time.Now().Add(o.duration)
	next := time.Now()
	for n := 0; ; {
		if o.duration > 0 && time.Now().After(deadline) || o.duration == 0 && n >= o.runs {
			return nil
		}
		size := batch
		if o.duration == 0 {
			size = min(batch, o.runs-n)
		}
		now := time.Now().UnixNano()
		reqs := make([]client.StartRequest, size)
		for i := range reqs {
			reqs[i] = client.StartRequest{WorkflowType: "bench", TaskQueue: o.queue, Input: input{StartedNS: now, Pad: pad}}
		}
		if _, err := c.StartBatch(ctx, reqs); err != nil {
			return err
		}
		n += size
		started.Add(int64(size))
		if every > 0 {
			next = next.Add(every)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Until(next)):
			}
		}
	}
}

// limitQueue sets the queue's max_concurrent, to measure what claiming a
// limited queue costs.
func limitQueue(ctx context.Context, o options) error {
	body := fmt.Sprintf(`{"max_concurrent":%d}`, o.queueLimit)
	u := fmt.Sprintf("%s/v1/namespaces/%s/task-queues/%s", strings.TrimSuffix(o.url, "/"), o.namespace, o.queue)
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, u, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if o.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+o.apiKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("limit queue: %s: %s", resp.Status, msg)
	}
	return nil
}

// xactCommits returns the next transaction ID of the cluster: the delta
// over a run counts the writing transactions it took (pg_stat_database's
// commit counts reach the view up to seconds late, and the server writes
// nothing else meanwhile that a run does not cause).
func xactCommits(ctx context.Context, conn *pgx.Conn) (int64, error) {
	var n int64
	err := conn.QueryRow(ctx, `SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint`).Scan(&n)
	return n, err
}

// checkDatabase makes sure, before any load, that -db is the server's
// database: it starts a probe run through the API and looks for it there.
func checkDatabase(ctx context.Context, c *client.Client, conn *pgx.Conn, o options) error {
	res, err := c.Start(ctx, client.StartRequest{WorkflowType: "kagzi-bench-probe", TaskQueue: o.queue + "-probe"})
	if err != nil {
		return fmt.Errorf("start a probe run: %w", err)
	}
	defer func() { _, _ = c.Cancel(context.WithoutCancel(ctx), res.Run.RunID) }()
	var found bool
	err = conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM workflow_runs WHERE run_id = $1)`, res.Run.RunID).Scan(&found)
	if err == nil && !found {
		err = errors.New("the probe run the server just started is not in it")
	}
	if err != nil {
		return fmt.Errorf("-db is not the database of the server at %s (%v): pass the server's KAGZI_DATABASE_URL as -db, or leave -db out", o.url, err)
	}
	return nil
}

// endToEnd reads the runs' completion latency from the database: from the
// start request (in the input) to finished_at; zeros when no run completed.
func endToEnd(ctx context.Context, conn *pgx.Conn, o options) (Pct, error) {
	var p50, p90, p99 *float64 // NULL when no run completed
	err := conn.QueryRow(ctx, `
		SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.9) WITHIN GROUP (ORDER BY ms),
			percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)
		FROM (SELECT EXTRACT(EPOCH FROM finished_at) * 1000 - (input->>'started_ns')::numeric / 1e6 AS ms
			FROM workflow_runs WHERE namespace = $1 AND task_queue = $2 AND status = 'completed') r`,
		o.namespace, o.queue).Scan(&p50, &p90, &p99)
	if err != nil || p50 == nil || p90 == nil || p99 == nil {
		return Pct{}, err
	}
	return Pct{P50: *p50, P90: *p90, P99: *p99}, nil
}

// bar draws a progress bar on one line of stderr.
type bar struct{ w io.Writer }

func newBar(w io.Writer) *bar { return &bar{w: w} }

func (b *bar) draw(done, started int64, o options, elapsed time.Duration) {
	const width = 30
	total := int64(o.runs)
	frac := 0.0
	switch {
	case o.duration > 0:
		frac = min(1, elapsed.Seconds()/o.duration.Seconds())
	case total > 0:
		frac = float64(done) / float64(total)
	}
	filled := int(frac * width)
	rate := float64(done) / max(elapsed.Seconds(), 1e-9)
	fmt.Fprintf(b.w, "\r[%s%s] %3.0f%%  %d/%d done  %.0f runs/s ", strings.Repeat("=", filled),
		strings.Repeat(" ", width-filled), frac*100, done, started, rate)
}
