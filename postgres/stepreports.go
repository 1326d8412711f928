package postgres

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/internal/batch"
)

// Group commit of step reports: batches of up to 200 reports or 8 MiB of
// payload, at most 4 in flight, as for run completions.
const (
	stepReportBatch    = 200
	stepReportBytes    = 8 << 20
	stepReportInflight = 4
)

// insertStepReportSQL records a step attempt and its outcome at once, for
// a worker that skipped begin: $10 is when the worker says the attempt
// started (never later than now), $11 the delay of a retry in ms.
const insertStepReportSQL = `
INSERT INTO workflow_steps (run_id, name, attempt, kind, status, input, output, error, retry_policy,
	run_attempt, started_at, retry_at, finished_at)
VALUES ($1, $2, $3, 'function', $4, $5, $6, $7, $8, $9, LEAST($10::timestamptz, now()),
	CASE WHEN $11::bigint IS NULL THEN NULL ELSE now() + $11 * interval '1 millisecond' END, now())
RETURNING ` + stepColumns

type stepReq struct {
	namespace string
	report    domain.StepReport
}

// ReportStep records the outcome of a step attempt; see reportStep.
// Concurrent calls are grouped into one transaction (see batch).
func (s *Store) ReportStep(ctx context.Context, namespace string, r domain.StepReport) (domain.StepResult, error) {
	res := s.stepReports.Do(stepReq{namespace, r})
	if res.Err != nil {
		return res, fmt.Errorf("%s step %s: %w", r.Outcome, r.Name, res.Err)
	}
	return res, nil
}

// ReportSteps records a batch of step reports of runs of one namespace,
// each under its own lease, and returns one result per report, in order.
func (s *Store) ReportSteps(ctx context.Context, namespace string, reports []domain.StepReport) []domain.StepResult {
	out := make([]domain.StepResult, 0, len(reports))
	for chunk := range slices.Chunk(reports, stepReportBatch) {
		reqs := make([]stepReq, len(chunk))
		for i, r := range chunk {
			reqs[i] = stepReq{namespace, r}
		}
		for i, res := range s.reportSteps(reqs) {
			if res.Err != nil {
				res.Err = fmt.Errorf("%s step %s of run %s: %w", chunk[i].Outcome, chunk[i].Name, chunk[i].RunID, res.Err)
			}
			out = append(out, res)
		}
	}
	return out
}

func stepReqSize(r stepReq) int {
	n := len(r.report.Output) + len(r.report.Input)
	if r.report.Error != nil {
		n += len(r.report.Error.Message) + len(r.report.Error.Details)
	}
	return n
}

// reportSteps runs one batch of step reports in one transaction, and
// returns one result per report. Each report fails for its own fault
// only: when the database refuses the transaction for what a report holds,
// the batch is split until each culprit is alone (see batch.Isolate).
func (s *Store) reportSteps(reqs []stepReq) []domain.StepResult {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return batch.Isolate(func(reqs []stepReq) ([]domain.StepResult, error) { return s.stepReportBatch(ctx, reqs) },
		refused, func(err error) domain.StepResult { return domain.StepResult{Err: batchItemError(err)} })(reqs)
}

// stepReportBatch runs reqs in one transaction, in run_id order so that
// it locks runs in the order every multi-run writer does, again when
// PostgreSQL broke a deadlock by aborting it. Every batch commits
// durably: a step the worker was told is recorded must survive a crash, or
// a replay could run it again after the workflow went on with its output.
func (s *Store) stepReportBatch(ctx context.Context, reqs []stepReq) ([]domain.StepResult, error) {
	order := make([]int, len(reqs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(reqs[a].report.RunID, reqs[b].report.RunID) })
	for try := 1; ; try++ {
		res := make([]domain.StepResult, len(reqs))
		err := s.inTx(ctx, "report steps", func(tx pgx.Tx) error {
			done, err := recordNewSteps(ctx, tx, reqs, res)
			if err != nil {
				return err
			}
			for _, i := range order {
				if done[i] {
					continue
				}
				if res[i], err = reportStep(ctx, tx, reqs[i].namespace, reqs[i].report); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil || !isDeadlock(err) || try == 3 {
			return res, errors.Unwrap(err) // inTx wrapped it with the operation
		}
	}
}

// newStepsSQL records, in one statement, the completions of the steps
// that have no attempt yet, of the runs that $2 and $3 (lease) hold: the
// common report, a new step completed without begin. It locks the runs in
// run_id order, as every multi-run writer does, each by primary key, so that the reports that
// follow in the transaction (those it did not record) find them locked. A
// duplicate in the batch is left to those.
const newStepsSQL = `
WITH req AS (
	SELECT * FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])
		WITH ORDINALITY AS r(namespace, run_id, lease_id, name, input, output, started_at, i)
), runs AS MATERIALIZED (
	-- One primary-key lookup per run, in run_id order, the state checked
	-- on the locked row: with the state in the lookup and statistics from
	-- before many runs were running, the planner walked every running run.
	SELECT w.run_id, w.namespace, w.lease_id, w.attempt, w.retry_policy
	FROM (SELECT DISTINCT run_id FROM req ORDER BY run_id) q, LATERAL (
		SELECT run_id, namespace, lease_id, attempt, retry_policy, status, lease_expires_at
		FROM workflow_runs WHERE run_id = q.run_id
		OFFSET 0 -- keeps the state test below out of this lookup
		FOR UPDATE
	) w
	WHERE w.status = 'running' AND w.lease_expires_at > now()
)
INSERT INTO workflow_steps AS st (run_id, name, attempt, kind, status, input, output, retry_policy, run_attempt,
	started_at, finished_at)
SELECT DISTINCT ON (req.run_id, req.name) req.run_id, req.name, 1, 'function', 'completed', req.input::json,
	req.output::json, runs.retry_policy, runs.attempt, LEAST(req.started_at, now()), now()
FROM req JOIN runs ON runs.run_id = req.run_id AND runs.namespace = req.namespace AND runs.lease_id = req.lease_id
WHERE NOT EXISTS (SELECT FROM workflow_steps x WHERE x.run_id = req.run_id AND x.name = req.name)
ORDER BY req.run_id, req.name, req.i
ON CONFLICT DO NOTHING
RETURNING ` + stepColumns + `, (SELECT min(req.i) FROM req
	JOIN runs ON runs.run_id = req.run_id AND runs.namespace = req.namespace AND runs.lease_id = req.lease_id
	WHERE req.run_id = st.run_id AND req.name = st.name)`

// recordNewSteps records the reports of reqs that newStepsSQL can take
// (completions without a retry policy) into res, and says which.
func recordNewSteps(ctx context.Context, tx pgx.Tx, reqs []stepReq, res []domain.StepResult) ([]bool, error) {
	done := make([]bool, len(reqs))
	var nss, runIDs, leaseIDs, names, inputs, outputs []string
	var started []*time.Time
	for _, r := range reqs {
		rep := r.report
		if rep.Outcome != domain.StepOutcomeComplete || rep.RetryPolicy != nil {
			continue
		}
		nss, runIDs, leaseIDs, names = append(nss, r.namespace), append(runIDs, rep.RunID), append(leaseIDs, rep.LeaseID), append(names, rep.Name)
		inputs, outputs, started = append(inputs, string(orNullRaw(rep.Input))), append(outputs, string(orNullRaw(rep.Output))), append(started, rep.StartedAt)
	}
	if len(runIDs) == 0 {
		return done, nil
	}
	// Indexes in the statement count the reports it was given, which are
	// those of reqs that qualified, in order.
	index := make([]int, 0, len(runIDs))
	for i, r := range reqs {
		if r.report.Outcome == domain.StepOutcomeComplete && r.report.RetryPolicy == nil {
			index = append(index, i)
		}
	}
	rows, err := tx.Query(ctx, newStepsSQL, nss, runIDs, leaseIDs, names, inputs, outputs, started)
	if err != nil {
		return nil, err
	}
	var st domain.Step
	var k int
	_, err = pgx.ForEachRow(rows, []any{&st.RunID, &st.Name, &st.Kind, &st.Attempt, &st.Status, &st.Input, &st.Output,
		&st.Error, &st.RetryAt, &st.WakeUpAt, &st.StartedAt, &st.CreatedAt, &st.FinishedAt, &k}, func() error {
		normalizeStep(&st)
		i := index[k-1]
		res[i], done[i] = domain.StepResult{Step: st}, true
		st = domain.Step{}
		return nil
	})
	return done, err
}

// reportStep records one step report in tx: the outcome of the step's
// running attempt, or, when it has none (the worker skipped begin), a new
// attempt with its outcome. A step that already completed, or failed for
// good in this attempt of the run, is never overwritten: the result is the
// recorded attempt, AlreadyCompleted. A failure the step's policy retries
// ends the lease and puts the run back to pending until the retry is due.
// A refusal of this report alone (lease lost, conflict) is its result's
// Err; an error returned ends the transaction.
func reportStep(ctx context.Context, tx pgx.Tx, namespace string, r domain.StepReport) (res domain.StepResult, err error) {
	refuse := func(err error) (domain.StepResult, error) {
		if de := (*domain.Error)(nil); errors.As(err, &de) {
			return domain.StepResult{Err: err}, nil
		}
		return res, err
	}
	runAttempt, runPolicy, err := fence(ctx, tx, namespace, r.RunID, r.LeaseID)
	if err != nil {
		return refuse(err)
	}
	latest, err := currentStep(ctx, tx, r.RunID, r.Name, domain.StepFunction, runAttempt)
	switch {
	case err != nil:
		return refuse(err)
	case latest.found && latest.Status == domain.StepCompleted || latest.failedForGood(runAttempt):
		return domain.StepResult{Step: latest.Step, AlreadyCompleted: true}, nil
	}
	running := latest.found && latest.Status == domain.StepRunning
	if r.Outcome == domain.StepOutcomeComplete {
		output := orNullRaw(r.Output)
		if running {
			err = scanStep(tx.QueryRow(ctx, completeStepSQL, r.RunID, r.Name, output, runAttempt), &res.Step)
			return res, err
		}
		policy, err := r.RetryPolicy.Resolve("retry_policy", runPolicy)
		if err != nil {
			return refuse(err)
		}
		err = scanStep(tx.QueryRow(ctx, insertStepReportSQL, r.RunID, r.Name, latest.Attempt+1,
			domain.StepCompleted, orNullRaw(r.Input), output, nil, policy, runAttempt, r.StartedAt, nil), &res.Step)
		return res, err
	}
	// A failure: the policy the attempt began with, or the one given now.
	policy, attempts := latest.policy, latest.attempts
	if !running {
		p, err := r.RetryPolicy.Resolve("retry_policy", runPolicy)
		if err != nil {
			return refuse(err)
		}
		policy, attempts = &p, attempts+1
	}
	if policy == nil {
		policy = &runPolicy
	}
	var delayMS *int64
	retry, delay := policy.Decide(attempts, r.Error)
	if retry {
		ms := delay.Milliseconds()
		delayMS = &ms
	}
	if running {
		err = scanStep(tx.QueryRow(ctx, failStepSQL, r.RunID, r.Name, r.Error, delayMS), &res.Step)
	} else {
		err = scanStep(tx.QueryRow(ctx, insertStepReportSQL, r.RunID, r.Name, latest.Attempt+1,
			domain.StepFailed, orNullRaw(r.Input), nil, r.Error, *policy, runAttempt, r.StartedAt, delayMS), &res.Step)
	}
	if err == nil && retry {
		res.RetryScheduled = true
		_, err = tx.Exec(ctx, retryStepRunSQL, r.RunID, res.Step.RetryAt)
	}
	return res, err
}

func orNullRaw(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return json.RawMessage("null")
	}
	return raw
}
