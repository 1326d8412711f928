package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/kagzi/kagzi/domain"
)

// historySQL reads the memoized histories of the claimed runs $1 (in
// their attempts $2): the latest attempt of each step, in the order they
// began, memo when it completed or failed for good in the run's attempt
// (the others only say how many attempts the step had). It walks the
// steps' primary key once per step name. The histories fit
// together, in task order, while their size stays within $3 bytes: the
// JSON of each step's payloads plus an allowance for its other members;
// the steps of a run that does not fit come without their payloads, and
// are dropped.
const historySQL = `
WITH t AS (
	SELECT * FROM unnest($1::uuid[], $2::int[]) WITH ORDINALITY AS t(run_id, run_attempt, ord)
), l AS (
	SELECT t.ord, st.*, st.status = 'completed'
		OR st.status = 'failed' AND st.retry_at IS NULL AND st.run_attempt = t.run_attempt
			AND COALESCE(st.error->>'type', '') NOT IN ('` + releasedType + `', '` + runEndedType + `') AS memo
	FROM t, LATERAL (
		SELECT DISTINCT ON (name) run_id, name, kind, attempt, status, input, output, error, retry_at,
			wake_up_at, COALESCE(started_at, created_at) AS started_at, created_at, finished_at, seq,
			run_attempt, 400 + 6 * octet_length(name) + COALESCE(octet_length(input::text), 4)
				+ COALESCE(octet_length(output::text), 4) + COALESCE(octet_length(error::text), 4) AS bytes
		FROM workflow_steps WHERE run_id = t.run_id
		ORDER BY name, attempt DESC
	) st
), sized AS (
	SELECT ord, sum(sum(CASE WHEN memo THEN bytes ELSE 20 + 6 * octet_length(name) END))
		OVER (ORDER BY ord) <= $3 AS fits
	FROM l GROUP BY ord
)
SELECT l.ord, sized.fits, l.memo, run_id, name, kind, attempt, status,
	CASE WHEN fits THEN input END, CASE WHEN fits THEN output END, CASE WHEN fits THEN error END,
	retry_at, wake_up_at, started_at, created_at, finished_at
FROM l JOIN sized USING (ord)
ORDER BY l.ord, l.seq`

// LoadHistories gives each task its run's memoized history (Steps), the
// histories of all the tasks together within maxBytes: a task whose
// history does not fit gets none, and StepsTruncated. A fresh task (a
// run's first claim) has none to load. When reading them fails, every task
// that may have one is left truncated, so that its worker asks begin per
// step, and the error is returned.
func (s *Store) LoadHistories(ctx context.Context, tasks []domain.Task, maxBytes int64) error {
	var runIDs []string
	var attempts []int
	var index []int // the task of each run looked up
	for i := range tasks {
		t := &tasks[i]
		if t.Fresh {
			t.Steps, t.StepsTruncated, t.StepAttempts = []domain.Step{}, false, map[string]int{}
			continue
		}
		t.Steps, t.StepsTruncated, t.StepAttempts = nil, true, map[string]int{}
		runIDs, attempts, index = append(runIDs, t.RunID), append(attempts, t.Attempt), append(index, i)
	}
	if len(runIDs) == 0 {
		return nil
	}
	rows, err := s.pool.Query(ctx, historySQL, runIDs, attempts, maxBytes)
	if err != nil {
		return fmt.Errorf("load histories: %w", translate(err))
	}
	histories := make([][]domain.Step, len(runIDs))
	stepAttempts := make([]map[string]int, len(runIDs))
	truncated := make([]bool, len(runIDs))
	var ord int
	var fits, memo bool
	var st domain.Step
	_, err = pgx.ForEachRow(rows, []any{&ord, &fits, &memo, &st.RunID, &st.Name, &st.Kind, &st.Attempt, &st.Status,
		&st.Input, &st.Output, &st.Error, &st.RetryAt, &st.WakeUpAt, &st.StartedAt, &st.CreatedAt, &st.FinishedAt},
		func() error {
			switch truncated[ord-1] = !fits; {
			case fits && memo:
				normalizeStep(&st)
				histories[ord-1] = append(histories[ord-1], st)
			case fits:
				if stepAttempts[ord-1] == nil {
					stepAttempts[ord-1] = map[string]int{}
				}
				stepAttempts[ord-1][st.Name] = st.Attempt
			}
			st = domain.Step{}
			return nil
		})
	if err != nil {
		return fmt.Errorf("load histories: %w", translate(err))
	}
	for k, i := range index {
		if !truncated[k] {
			tasks[i].Steps, tasks[i].StepsTruncated = histories[k], false
			if tasks[i].Steps == nil {
				tasks[i].Steps = []domain.Step{}
			}
			if stepAttempts[k] != nil {
				tasks[i].StepAttempts = stepAttempts[k]
			}
		}
	}
	return nil
}
