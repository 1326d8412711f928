package postgres

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/kagzi/kagzi/domain"
)

const stepColumns = `run_id, name, kind, attempt, status, input, output, error, retry_at, wake_up_at,
	created_at, finished_at`

// scanStep reads stepColumns, followed by extra, into st.
func scanStep(row pgx.Row, st *domain.Step, extra ...any) error {
	err := row.Scan(append([]any{&st.RunID, &st.Name, &st.Kind, &st.Attempt, &st.Status, &st.Input, &st.Output,
		&st.Error, &st.RetryAt, &st.WakeUpAt, &st.CreatedAt, &st.FinishedAt}, extra...)...)
	normalizeStep(st)
	return err
}

// listStepsSQL reads a page of $4 step attempts of run $2 after seq $3, in
// the order they began, through workflow_steps_run_seq_idx.
const listStepsSQL = `
SELECT ` + stepColumns + `, seq FROM workflow_steps
WHERE run_id = $2 AND seq > $3 AND EXISTS (SELECT FROM workflow_runs WHERE namespace = $1 AND run_id = $2)
ORDER BY seq LIMIT $4`

const runExistsSQL = `SELECT EXISTS (SELECT FROM workflow_runs WHERE namespace = $1 AND run_id = $2)`

// ListSteps returns a page of the attempts of a run's steps, in the order
// they began, and the key after which the next page starts ("" on the
// last page). page.After is a step's seq in decimal.
func (s *Store) ListSteps(ctx context.Context, namespace, runID string, page domain.Page) ([]domain.Step, string, error) {
	var after int64
	if page.After != "" {
		var err error
		if after, err = strconv.ParseInt(page.After, 10, 64); err != nil {
			return nil, "", fmt.Errorf("list steps of %s: bad key %q: %w", runID, page.After, err)
		}
	}
	type keyed struct {
		step domain.Step
		seq  int64
	}
	rows, err := s.pool.Query(ctx, listStepsSQL, namespace, runID, after, page.Limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("list steps of %s: %w", runID, translate(err))
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (keyed, error) {
		var k keyed
		return k, scanStep(row, &k.step, &k.seq)
	})
	if err != nil {
		return nil, "", fmt.Errorf("list steps of %s: %w", runID, translate(err))
	}
	if len(list) == 0 {
		var exists bool
		if err := s.pool.QueryRow(ctx, runExistsSQL, namespace, runID).Scan(&exists); err != nil {
			return nil, "", fmt.Errorf("list steps of %s: %w", runID, translate(err))
		}
		if !exists {
			return nil, "", fmt.Errorf("list steps of %s: %w", runID, domain.Errorf(domain.CodeNotFound, "run %s not found", runID))
		}
	}
	list, next, _ := nextPage(list, page.Limit, func(k keyed) string { return strconv.FormatInt(k.seq, 10) })
	steps := make([]domain.Step, len(list))
	for i, k := range list {
		steps[i] = k.step
	}
	return steps, next, nil
}
