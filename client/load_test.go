package client_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kagzi/kagzi/api"
	"github.com/kagzi/kagzi/client"
	"github.com/kagzi/kagzi/internal/testserver"
)

// statusCounter counts the answers of 500 and more a client gets.
type statusCounter struct {
	next   http.RoundTripper
	failed atomic.Int64
}

func (s *statusCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := s.next.RoundTrip(r)
	if err == nil && resp.StatusCode >= 500 {
		s.failed.Add(1)
	}
	return resp, err
}

// Many workers complete a few thousand runs while heartbeating at a short
// interval, so that their heartbeats, which extend many leases in one
// statement, overlap the group-committed completions of the same runs.
// Both lock runs in run_id order: PostgreSQL must detect no deadlock, and
// no call may fail.
func TestNoDeadlockUnderLoad(t *testing.T) {
	t.Parallel()
	const (
		workers  = 8
		slots    = 50
		runs     = 3000
		interval = 100 * time.Millisecond
	)
	srv := testserver.New(t, testserver.WithHeartbeatInterval(interval), testserver.WithLimits(func(l *api.Limits) {
		l.LeaseDuration = 5 * time.Second
	}))
	counter := &statusCounter{next: newTransport()}
	c := client.New(srv.URL, client.WithNamespace("load"), client.WithHTTPClient(&http.Client{Transport: counter}))
	// The workers' warnings only: a log line per run would slow the load.
	records := logRecords{Handler: slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}),
		mu: &sync.Mutex{}, msgs: new([]string)}
	logger := slog.New(records)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	t.Cleanup(cancel)
	for range workers {
		w := client.NewWorker(c, "load", client.WithMaxConcurrent(slots), client.WithLogger(logger))
		client.Register(w, "echo", func(_ *client.WorkflowContext, n int) (int, error) {
			// Work of a few milliseconds, so that each worker holds many
			// runs when it heartbeats.
			time.Sleep(time.Duration(n%10) * time.Millisecond)
			return n, nil
		})
		wg.Go(func() {
			if err := w.Run(ctx); err != nil {
				t.Errorf("Worker.Run: %v", err)
			}
		})
	}
	start := time.Now()
	for i := 0; i < runs; i += 1000 { // runs is a multiple of 1000
		reqs := make([]client.StartRequest, 1000)
		for j := range reqs {
			reqs[j] = client.StartRequest{WorkflowType: "echo", TaskQueue: "load", Input: i + j}
		}
		if _, err := c.StartBatch(context.Background(), reqs); err != nil {
			t.Fatalf("StartBatch: %v", err)
		}
	}
	deadline := time.Now().Add(25 * time.Second)
	for {
		var done int
		if err := srv.Pool.QueryRow(context.Background(), `SELECT count(*) FROM workflow_runs WHERE status = 'completed'`).Scan(&done); err != nil {
			t.Fatal(err)
		}
		if done == runs {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d runs completed after %s", done, runs, time.Since(start))
		}
		time.Sleep(50 * time.Millisecond) // polling the table; no event says "all done"
	}
	t.Logf("%d runs completed by %d workers in %s", runs, workers, time.Since(start).Round(time.Millisecond))
	cancel()
	wg.Wait()

	for _, line := range strings.Split(srv.Log(), "\n") {
		if strings.Contains(line, "deadlock") || strings.Contains(line, "40P01") {
			t.Errorf("the server logged a deadlock: %s", line)
		}
	}
	if n := counter.failed.Load(); n > 0 {
		t.Errorf("the workers got %d answers of 500 or more", n)
	}
	// (Heartbeats may time out on a starved machine; completions must not
	// fail.)
	records.mu.Lock()
	defer records.mu.Unlock()
	for _, msg := range *records.msgs {
		if strings.Contains(msg, "could not") {
			t.Errorf("a worker logged %q", msg)
		}
	}
}

func newTransport() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 1024
	return t
}
