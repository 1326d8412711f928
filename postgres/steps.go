package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/kagzi/kagzi/domain"
)

const stepColumns = `run_id, name, kind, attempt, status, input, output, error, retry_at, wake_up_at,
	COALESCE(started_at, created_at), created_at, finished_at`

func scanStep(row pgx.Row, st *domain.Step) error {
	err := row.Scan(&st.RunID, &st.Name, &st.Kind, &st.Attempt, &st.Status, &st.Input, &st.Output,
		&st.Error, &st.RetryAt, &st.WakeUpAt, &st.StartedAt, &st.CreatedAt, &st.FinishedAt)
	normalizeStep(st)
	return err
}

const listStepsSQL = `
SELECT ` + stepColumns + ` FROM workflow_steps
WHERE run_id = $2 AND EXISTS (SELECT FROM workflow_runs WHERE namespace = $1 AND run_id = $2)
ORDER BY seq`

const runExistsSQL = `SELECT EXISTS (SELECT FROM workflow_runs WHERE namespace = $1 AND run_id = $2)`

// ListSteps returns every attempt of every step of a run, in the order they
// began.
func (s *Store) ListSteps(ctx context.Context, namespace, runID string) ([]domain.Step, error) {
	rows, err := s.pool.Query(ctx, listStepsSQL, namespace, runID)
	if err != nil {
		return nil, fmt.Errorf("list steps of %s: %w", runID, translate(err))
	}
	steps, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.Step, error) {
		var st domain.Step
		return st, scanStep(row, &st)
	})
	if err != nil {
		return nil, fmt.Errorf("list steps of %s: %w", runID, translate(err))
	}
	if len(steps) == 0 {
		var exists bool
		if err := s.pool.QueryRow(ctx, runExistsSQL, namespace, runID).Scan(&exists); err != nil {
			return nil, fmt.Errorf("list steps of %s: %w", runID, translate(err))
		}
		if !exists {
			return nil, fmt.Errorf("list steps of %s: %w", runID, domain.Errorf(domain.CodeNotFound, "run %s not found", runID))
		}
	}
	return steps, nil
}
