package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/postgres"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

func stepCount(t testing.TB, s *postgres.Store, r heldRun) int {
	t.Helper()
	steps, _, err := s.ListSteps(context.Background(), r.namespace, r.runID, domain.Page{Limit: domain.MaxPageLimit})
	if err != nil {
		t.Fatal(err)
	}
	return len(steps)
}

// One step report the database refuses fails alone: in a batch among good
// ones, and among concurrent single reports group-committed together.
func TestPoisonedStepReportFailsAlone(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	s := postgres.NewStore(pool, 0)
	ctx := context.Background()
	runs := startHeld(t, pool, s, "a", 6)
	report := func(r heldRun, output json.RawMessage) domain.StepReport {
		return domain.StepReport{RunID: r.runID, LeaseID: r.leaseID, Name: "s", Outcome: domain.StepOutcomeComplete, Output: output}
	}
	results := s.ReportSteps(ctx, "a", []domain.StepReport{
		report(runs[0], goodOutput(runs[0].runID)), report(runs[1], poison), report(runs[2], goodOutput(runs[2].runID)),
	})
	for i, res := range results {
		poisoned := i == 1
		var de *domain.Error
		if poisoned != (res.Err != nil) || poisoned && (!errors.As(res.Err, &de) || de.Code != domain.CodeInvalidArgument) {
			t.Errorf("batch item %d: got %v, want poisoned %v (invalid_argument)", i, res.Err, poisoned)
		}
		if want := map[bool]int{true: 0, false: 1}[poisoned]; stepCount(t, s, runs[i]) != want {
			t.Errorf("batch item %d: got %d steps, want %d", i, stepCount(t, s, runs[i]), want)
		}
	}

	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, r := range runs[3:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := goodOutput(r.runID)
			if i == 1 {
				out = poison
			}
			_, errs[i] = s.ReportStep(ctx, "a", report(r, out))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if (i == 1) != (err != nil) {
			t.Errorf("single report %d: got %v, want poisoned %v", i, err, i == 1)
		}
	}
}

// Concurrent reports of the same new step, under the same lease (a worker
// and its own retries), record it once: one report records it, every
// other answers the recorded step, already completed, with its output.
func TestConcurrentReportsOfAStepRecordItOnce(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	s := postgres.NewStore(pool, 0)
	ctx := context.Background()
	r := startHeld(t, pool, s, "a", 1)[0]
	const n = 16
	results := make([]domain.StepResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep := domain.StepReport{RunID: r.runID, LeaseID: r.leaseID, Name: "s", Outcome: domain.StepOutcomeComplete,
				Output: json.RawMessage(fmt.Sprint(i))}
			if i%2 == 1 { // half of them through a batch of their own
				res := s.ReportSteps(ctx, "a", []domain.StepReport{rep, rep})
				results[i], errs[i] = res[1], res[1].Err
				if !res[1].AlreadyCompleted {
					errs[i] = fmt.Errorf("the second of a batch's duplicates was not already completed: %+v", res[1])
				}
				return
			}
			results[i], errs[i] = s.ReportStep(ctx, "a", rep)
		}()
	}
	wg.Wait()
	recorded := 0
	for i, res := range results {
		if errs[i] != nil {
			t.Fatalf("report %d: %v", i, errs[i])
		}
		if res.Step.Attempt != 1 || res.Step.Status != domain.StepCompleted {
			t.Errorf("report %d: got %+v, want attempt 1 completed", i, res.Step)
		}
		if !res.AlreadyCompleted {
			recorded++
		}
	}
	steps, _, err := s.ListSteps(ctx, "a", r.runID, domain.Page{Limit: domain.MaxPageLimit})
	if err != nil || len(steps) != 1 {
		t.Fatalf("steps: got %d (%v), want 1", len(steps), err)
	}
	for i, res := range results {
		if string(res.Step.Output) != string(steps[0].Output) {
			t.Errorf("report %d: got output %s, want the recorded %s", i, res.Step.Output, steps[0].Output)
		}
	}
	if recorded > 1 {
		t.Errorf("%d reports recorded the step, want at most one (the others already completed)", recorded)
	}
}
