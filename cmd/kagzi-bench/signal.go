package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/kagzi/kagzi/client"
)

// SignalReport is the outcome of the signal round-trip mode: how long a
// signal sent to a run parked in a wait takes to reach the workflow code
// (the send, the wake-up, the claim, the replay), one run at a time on an
// idle worker.
type SignalReport struct {
	RoundTrips int `json:"round_trips"`
	// SignalToCodeMS is from the send's start to the workflow code seeing
	// the signal.
	SignalToCodeMS Pct `json:"signal_to_code_ms"`
}

func (r SignalReport) print(w io.Writer) {
	fmt.Fprintf(w, "round trips     %d\n", r.RoundTrips)
	fmt.Fprintf(w, "signal to code  p50 %.1f ms  p90 %.1f ms  p99 %.1f ms\n",
		r.SignalToCodeMS.P50, r.SignalToCodeMS.P90, r.SignalToCodeMS.P99)
}

// signalRoundTrips starts n runs one after another; each parks in a wait,
// is sent a signal carrying the send's time, and reports when its code
// got it.
func signalRoundTrips(ctx context.Context, o options, n int) (SignalReport, error) {
	rep := SignalReport{RoundTrips: n}
	c := client.New(o.url, client.WithNamespace(o.namespace), client.WithAPIKey(o.apiKey))
	w := client.NewWorker(c, o.queue, client.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	got := make(chan time.Duration, 1)
	client.Register(w, "bench-signal", func(ctx *client.WorkflowContext, _ struct{}) (bool, error) {
		r, err := client.WaitForSignal[int64](ctx, "go", []string{"go"}, 0)
		if err != nil {
			return false, err
		}
		select {
		case got <- time.Since(time.Unix(0, r.Input)):
		default:
		}
		return true, nil
	})
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() { stop(); <-done }()

	var lat []time.Duration
	for i := 0; i < n; i++ {
		res, err := c.Start(ctx, client.StartRequest{WorkflowType: "bench-signal", TaskQueue: o.queue})
		if err != nil {
			return rep, err
		}
		id := res.Run.RunID
		for { // parked: sleeping, no lease
			r, err := c.Get(ctx, id)
			if err != nil {
				return rep, err
			}
			if r.Status == client.StatusSleeping {
				break
			}
			if err := sleepCtx(ctx, time.Millisecond); err != nil {
				return rep, err
			}
		}
		if _, err := c.Signal(ctx, id, "go", time.Now().UnixNano()); err != nil {
			return rep, err
		}
		select {
		case d := <-got:
			lat = append(lat, d)
		case <-time.After(10 * time.Second):
			return rep, fmt.Errorf("run %s did not see its signal within 10s", id)
		case <-ctx.Done():
			return rep, ctx.Err()
		}
		if _, err := c.Wait(ctx, id); err != nil {
			return rep, err
		}
	}
	rep.SignalToCodeMS = percentiles(lat)
	return rep, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
