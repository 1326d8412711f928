package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/postgres"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

func stepCount(t testing.TB, s interface {
	ListSteps(context.Context, string, string) ([]domain.Step, error)
}, r heldRun) int {
	t.Helper()
	steps, err := s.ListSteps(context.Background(), r.namespace, r.runID)
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
