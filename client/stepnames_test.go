package client_test

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kagzi/kagzi/client"
)

// TestStepNamesWithEscapes: the SDK escapes step names with
// url.PathEscape, and the server decodes them exactly once, so that a step
// named "50%" or "a/b" is stored under its name and found again when the
// workflow is replayed (after the sleep), never run twice.
func TestStepNamesWithEscapes(t *testing.T) {
	t.Parallel()
	runTests(t, []namedTest{{"RoundTrip", func(t *testing.T, e *env) {
		names := []string{"50%", "a/b", "x%41", "a%2Fb", "sp ace?#"}
		var runs atomic.Int32
		e.startWorker(t, func(w *client.Worker) {
			client.Register(w, "escapes", func(ctx *client.WorkflowContext, _ any) (string, error) {
				out := ""
				for _, name := range names {
					v, err := client.Step(ctx, name, func(context.Context) (string, error) {
						runs.Add(1)
						return name, nil
					})
					if err != nil {
						return "", err
					}
					out += v + "|"
				}
				if err := client.Sleep(ctx, 10*time.Millisecond); err != nil {
					return "", err
				}
				return out, nil
			})
		})
		run := e.wait(t, e.start(t, client.StartRequest{WorkflowType: "escapes"}))
		var out string
		if err := run.Result(&out); err != nil {
			t.Fatalf("Result: %v (run %+v)", err, run)
		}
		if want := "50%|a/b|x%41|a%2Fb|sp ace?#|"; out != want {
			t.Errorf("output = %q, want %q", out, want)
		}
		if n := runs.Load(); n != int32(len(names)) {
			t.Errorf("step functions ran %d times, want %d", n, len(names))
		}
		var want []string
		for _, name := range names {
			want = append(want, name+":1:completed")
		}
		want = append(want, "sleep-1:1:completed")
		if got := e.steps(t, run.RunID); !slices.Equal(got, want) {
			t.Errorf("steps = %q, want %q", got, want)
		}
	}}})
}
