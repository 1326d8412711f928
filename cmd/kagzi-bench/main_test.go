package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/kagzi/kagzi/auth"
	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/internal/testserver"
)

func TestRunAgainstServer(t *testing.T) {
	t.Parallel()
	srv := testserver.New(t)
	// The pool's connection string is the test database's URL.
	dbURL := srv.Pool.Config().ConnString()
	if dbURL == "" {
		t.Fatal("the test server's pool has no connection string")
	}
	for _, tc := range []struct {
		protocol string
		// requests per step, at most (and more than 0)
		maxRequests float64
	}{
		{protocolSDK, 1}, // one write per step, fewer when batched
		{protocolHTTP, 1},
		{protocolHTTPBegin, 2}, // begin and complete
	} {
		t.Run(tc.protocol, func(t *testing.T) {
			// One at a time: the transactions per run count the whole
			// cluster's.
			testRunAgainstServer(t, srv, dbURL, tc.protocol, tc.maxRequests)
		})
	}
}

func testRunAgainstServer(t *testing.T, srv *testserver.Server, dbURL, protocol string, maxRequests float64) {
	o := options{url: srv.URL, namespace: "bench", queue: "q-" + protocol, db: dbURL, protocol: protocol,
		runs: 300, workers: 2, maxTasks: 50, steps: 2, payload: 64, batch: 100}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var progress bytes.Buffer
	rep, err := run(ctx, o, &progress)
	if err != nil {
		t.Fatalf("run: %v\nprogress: %s", err, progress.String())
	}

	if rep.Runs != 300 {
		t.Errorf("Runs: got %d, want 300", rep.Runs)
	}
	if rep.Seconds <= 0 || rep.RunsPerSecond <= 0 {
		t.Errorf("Seconds %v, RunsPerSecond %v: want both > 0", rep.Seconds, rep.RunsPerSecond)
	}
	if got, want := rep.StepsPerSecond, 2*rep.RunsPerSecond; got < want*0.999 || got > want*1.001 {
		t.Errorf("StepsPerSecond: got %v, want %v (two steps a run)", got, want)
	}
	if rep.RequestsPerStep <= 0 || rep.RequestsPerStep > maxRequests {
		t.Errorf("RequestsPerStep: got %v, want more than 0, at most %v", rep.RequestsPerStep, maxRequests)
	}
	if p := rep.PickupMS; p.P50 <= 0 || p.P50 > p.P90 || p.P90 > p.P99 {
		t.Errorf("pickup: got %+v, want 0 < p50 <= p90 <= p99", p)
	}
	if rep.Protocol != protocol || rep.Workers != 2 || rep.MaxTasks != 50 || rep.Steps != 2 || rep.PayloadBytes != 64 {
		t.Errorf("report settings: got protocol %s workers %d max tasks %d steps %d payload %d, want %s, 2, 50, 2, 64",
			rep.Protocol, rep.Workers, rep.MaxTasks, rep.Steps, rep.PayloadBytes, protocol)
	}
	if rep.XactsPerRun <= 0 || rep.XactsPerStep <= 0 {
		t.Errorf("XactsPerRun %v, XactsPerStep %v: want both > 0 with db set", rep.XactsPerRun, rep.XactsPerStep)
	}
	if p := rep.EndToEndMS; p == nil {
		t.Errorf("EndToEndMS: got nil, want percentiles with db set")
	} else if p.P50 <= 0 || p.P50 > p.P90 || p.P90 > p.P99 {
		t.Errorf("end to end: got %+v, want 0 < p50 <= p90 <= p99", *p)
	}

	// Every run was started in the namespace and queue asked for, with the
	// padded input, and completed with its steps done.
	var runs, completed, steps, short int
	err = srv.Pool.QueryRow(ctx, `
		SELECT count(*), count(*) FILTER (WHERE status = 'completed'),
			(SELECT count(*) FROM workflow_steps s JOIN workflow_runs r USING (run_id)
				WHERE r.namespace = 'bench' AND r.task_queue = $1 AND s.name IN ('step-0', 'step-1') AND s.status = 'completed'),
			count(*) FILTER (WHERE length(input::text) < 64)
		FROM workflow_runs WHERE namespace = 'bench' AND task_queue = $1`, o.queue).Scan(&runs, &completed, &steps, &short)
	if err != nil {
		t.Fatal(err)
	}
	if runs != 300 || completed != 300 || steps != 600 || short != 0 {
		t.Errorf("in the database: %d runs, %d completed, %d steps done, %d inputs under 64 bytes; want 300, 300, 600, 0",
			runs, completed, steps, short)
	}

	var out bytes.Buffer
	rep.print(&out)
	for _, want := range []string{"runs            300 in ", "throughput", "pickup", "end to end", "db writes/run", "steps/s", "db writes/step"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("printed report has no %q:\n%s", want, out.String())
		}
	}
}

// TestRunWithAPIKey: against a server with auth on, the tool sends its
// key on every call, its workers' included, and on the queue's limit.
func TestRunWithAPIKey(t *testing.T) {
	t.Parallel()
	srv := testserver.New(t, testserver.WithAuth(auth.ModeRequired))
	o := options{url: srv.URL, namespace: "bench", queue: "q", runs: 50, workers: 1, maxTasks: 10, payload: 16, batch: 50,
		queueLimit: 10}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := run(ctx, o, io.Discard); err == nil {
		t.Fatal("run without a key: no error, want the server's refusal")
	}
	o.apiKey = srv.NewKey(t, domain.RoleAdmin, "bench")
	rep, err := run(ctx, o, io.Discard)
	if err != nil || rep.Runs != 50 {
		t.Fatalf("run with a key: %d runs, %v; want 50", rep.Runs, err)
	}
}

func TestRunWithoutServer(t *testing.T) {
	t.Parallel()
	// Nothing listens on port 1 of the loopback: the tool says so at once.
	o := options{url: "http://127.0.0.1:1", namespace: "bench", queue: "q", runs: 1, workers: 1, maxTasks: 1, batch: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := run(ctx, o, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("run against no server: got error %v, want one naming the server", err)
	}
}

func TestPercentiles(t *testing.T) {
	t.Parallel()
	ms := func(ns ...int) []time.Duration {
		ds := make([]time.Duration, len(ns))
		for i, n := range ns {
			ds[i] = time.Duration(n) * time.Millisecond
		}
		return ds
	}
	// 1..101 ms, shuffled. The sizes are such that p*n is never a whole
	// number: the p-th percentile is then the value of rank ceil(p*n).
	many := make([]int, 101)
	for i := range many {
		many[i] = (i*37)%101 + 1
	}
	for _, tc := range []struct {
		name string
		in   []time.Duration
		want Pct
	}{
		{"none", nil, Pct{}},
		{"one", ms(7), Pct{P50: 7, P90: 7, P99: 7}},
		{"five", ms(50, 10, 40, 20, 30), Pct{P50: 30, P90: 50, P99: 50}},
		{"a hundred and one", ms(many...), Pct{P50: 51, P90: 91, P99: 100}},
		{"sub-millisecond", []time.Duration{1500 * time.Microsecond, 250 * time.Microsecond, 2750 * time.Microsecond},
			Pct{P50: 1.5, P90: 2.75, P99: 2.75}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentiles(tc.in); got != tc.want {
				t.Fatalf("percentiles: got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestSignalRoundTrips(t *testing.T) {
	t.Parallel()
	srv := testserver.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := signalRoundTrips(ctx, options{url: srv.URL, namespace: "bench", queue: "sig"}, 20)
	if err != nil {
		t.Fatal(err)
	}
	if rep.RoundTrips != 20 || rep.SignalToCodeMS.P50 <= 0 || rep.SignalToCodeMS.P99 < rep.SignalToCodeMS.P50 {
		t.Fatalf("report %+v", rep)
	}
	var out bytes.Buffer
	rep.print(&out)
	if !strings.Contains(out.String(), "signal to code") {
		t.Fatalf("printed %q", out.String())
	}
}
