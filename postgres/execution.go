package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/internal/batch"
)

// A worker's every call names the lease it holds. The guard below is part
// of each statement that changes a run on a worker's behalf: a lease that
// is not the run's current one, or that has expired, changes nothing.
const leaseGuard = `namespace = $1 AND run_id = $2 AND lease_id = $3 AND status = 'running' AND lease_expires_at > now()`

const fenceSQL = `SELECT attempt, retry_policy FROM workflow_runs WHERE ` + leaseGuard + ` FOR UPDATE`

// fence locks the run for the rest of tx if leaseID holds it, and returns
// its attempt and retry policy; otherwise it says why not.
func fence(ctx context.Context, tx pgx.Tx, namespace, runID, leaseID string) (attempt int, policy domain.RetryPolicy, err error) {
	err = tx.QueryRow(ctx, fenceSQL, namespace, runID, leaseID).Scan(&attempt, &policy)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, policy, leaseError(ctx, tx, namespace, runID, leaseID)
	}
	return attempt, policy, err
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

const runStateSQL = `SELECT status FROM workflow_runs WHERE namespace = $1 AND run_id = $2`

// leaseError is the one follow-up read that says why a guarded statement
// touched no row: the run does not exist, was cancelled, or is not held by
// this lease (any more).
func leaseError(ctx context.Context, q querier, namespace, runID, leaseID string) error {
	var status domain.RunStatus
	err := q.QueryRow(ctx, runStateSQL, namespace, runID).Scan(&status)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return domain.Errorf(domain.CodeNotFound, "run %s not found", runID)
	case err != nil:
		return translate(err)
	case status == domain.RunCancelled:
		return domain.Errorf(domain.CodeCancelled, "run %s was cancelled; stop working on it", runID)
	}
	return domain.Errorf(domain.CodeLeaseLost, "lease %s does not hold run %s (the run is %s)", leaseID, runID, status)
}

// inTx runs fn in a transaction and translates its error once.
func (s *Store) inTx(ctx context.Context, op string, fn func(tx pgx.Tx) error) error {
	err := pgx.BeginFunc(ctx, s.pool, fn)
	var de *domain.Error
	if err != nil && !errors.As(err, &de) {
		err = translate(err)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

const heartbeatRunSQL = `
UPDATE workflow_runs SET lease_expires_at = now() + $4 * interval '1 millisecond'
WHERE ` + leaseGuard + ` RETURNING lease_expires_at`

// HeartbeatRun extends the lease on a run.
func (s *Store) HeartbeatRun(ctx context.Context, namespace, runID, leaseID string) (time.Time, error) {
	var expires time.Time
	err := s.pool.QueryRow(ctx, heartbeatRunSQL, namespace, runID, leaseID, s.leaseDuration.Milliseconds()).Scan(&expires)
	if errors.Is(err, pgx.ErrNoRows) {
		err = leaseError(ctx, s.pool, namespace, runID, leaseID)
	}
	if err != nil {
		return expires, fmt.Errorf("heartbeat run %s: %w", runID, translate(err))
	}
	return expires.UTC(), nil
}

const latestStepSQL = `
SELECT ` + stepColumns + `, retry_policy, run_attempt,
	(SELECT count(*) FROM workflow_steps c WHERE c.run_id = $1 AND c.name = $2
		-- only attempts since the run's last manual retry count
		AND (c.run_attempt IS NULL OR c.run_attempt > (SELECT attempt_base FROM workflow_runs WHERE run_id = $1))
		AND (c.status <> 'failed' OR c.error->>'type' IS NULL
			OR c.error->>'type' NOT IN ('` + releasedType + `', '` + runEndedType + `')))
FROM workflow_steps
WHERE run_id = $1 AND name = $2 ORDER BY attempt DESC LIMIT 1`

// stepState is the latest attempt of a step and what decisions about the
// step need.
type stepState struct {
	domain.Step
	found  bool
	policy *domain.RetryPolicy // resolved when the attempt began
	// runAttempt is the run attempt the latest attempt ran in.
	runAttempt *int
	// attempts counts the step's attempts that count against its retry
	// policy: all but those cut short (released, or their run ended).
	attempts int
}

// latestStep returns the state of a step.
func latestStep(ctx context.Context, tx pgx.Tx, runID, name string) (stepState, error) {
	var st stepState
	err := tx.QueryRow(ctx, latestStepSQL, runID, name).Scan(&st.RunID, &st.Name, &st.Kind, &st.Attempt,
		&st.Status, &st.Input, &st.Output, &st.Error, &st.RetryAt, &st.WakeUpAt, &st.StartedAt, &st.CreatedAt,
		&st.FinishedAt, &st.policy, &st.runAttempt, &st.attempts)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, nil
	}
	normalizeStep(&st.Step)
	st.found = err == nil
	return st, err
}

// currentStep is latestStep for a call on a step of kind that may begin
// an attempt in runAttempt: a step recorded as another kind is a conflict,
// and an attempt left running by an earlier run attempt is closed first
// (failed, cut short), so that it is never taken over.
func currentStep(ctx context.Context, tx pgx.Tx, runID, name string, kind domain.StepKind, runAttempt int) (stepState, error) {
	st, err := latestStep(ctx, tx, runID, name)
	if err == nil && st.found && st.Kind != kind {
		err = domain.Errorf(domain.CodeConflict, "step %q is a %s step, not a %s", name, st.Kind, kind)
	}
	if err != nil || !st.stale(runAttempt) {
		return st, err
	}
	e := runEndedStepError("attempt it began in ended")
	if _, err := tx.Exec(ctx, closeStaleStepSQL, runID, name, st.Attempt, e); err != nil {
		return st, err
	}
	st.Status, st.Error, st.attempts = domain.StepFailed, e, st.attempts-1
	return st, nil
}

// failedForGood reports whether the latest attempt failed with no retry in
// the run attempt at hand: then a replay of the step gets that failure
// again instead of running it once more. (A later run attempt runs it
// again; so does a step whose attempt was cut short.)
func (st stepState) failedForGood(runAttempt int) bool {
	return st.found && st.Status == domain.StepFailed && st.RetryAt == nil &&
		st.runAttempt != nil && *st.runAttempt == runAttempt && !st.cutShort()
}

// cutShort reports whether the latest attempt failed only because it was
// stopped from outside: released, or its run ended. Such an attempt
// counts as no attempt.
func (st stepState) cutShort() bool {
	return st.Status == domain.StepFailed && st.Error != nil && st.Error.Type != nil &&
		(*st.Error.Type == releasedType || *st.Error.Type == runEndedType)
}

// stale reports whether the latest attempt is still running though it
// began in an earlier attempt of the run: nobody will finish it, and the
// run attempt at hand must not take it over.
func (st stepState) stale(runAttempt int) bool {
	return st.found && st.Status == domain.StepRunning && st.runAttempt != nil && *st.runAttempt != runAttempt
}

// runEndedType is the error type of a step attempt still running when its
// run ended (completed, failed or cancelled): like a released one, it
// counts as no attempt.
const runEndedType = "run_ended"

// runEndedStepError is the error of the step attempts a run leaves
// running when it ends; how says how it ended.
func runEndedStepError(how string) *domain.ErrorInfo {
	t := runEndedType
	return &domain.ErrorInfo{Message: "the run " + how + " before this step finished", Type: &t}
}

// closeStaleStepSQL ends a step attempt left running by an earlier run
// attempt.
const closeStaleStepSQL = `
UPDATE workflow_steps SET status = 'failed', finished_at = now(), error = $4
WHERE run_id = $1 AND name = $2 AND attempt = $3 AND status = 'running'`

const insertStepSQL = `
INSERT INTO workflow_steps (run_id, name, attempt, kind, status, input, retry_policy, wake_up_at,
	run_attempt, finished_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, CASE WHEN $5 = 'running' THEN NULL ELSE now() END)
RETURNING ` + stepColumns

// BeginStep starts an attempt of a step, or, when its latest attempt
// completed (or failed for good in this run attempt), returns it for replay
// with shouldExecute false. A step whose latest attempt is still running
// is returned as it is, so a begin the worker retried does not start a
// second attempt.
func (s *Store) BeginStep(ctx context.Context, namespace, runID, leaseID string, b domain.BeginStep) (shouldExecute bool, step domain.Step, err error) {
	err = s.inTx(ctx, "begin step "+b.Name, func(tx pgx.Tx) error {
		runAttempt, runPolicy, err := fence(ctx, tx, namespace, runID, leaseID)
		if err != nil {
			return err
		}
		latest, err := currentStep(ctx, tx, runID, b.Name, b.Kind, runAttempt)
		if err != nil {
			return err
		}
		if latest.found && latest.Status != domain.StepFailed || latest.failedForGood(runAttempt) {
			step, shouldExecute = latest.Step, latest.Status == domain.StepRunning
			return nil
		}
		policy, err := b.RetryPolicy.Resolve("retry_policy", runPolicy)
		if err != nil {
			return err
		}
		input := b.Input
		if len(input) == 0 {
			input = json.RawMessage("null")
		}
		err = scanStep(tx.QueryRow(ctx, insertStepSQL, runID, b.Name, latest.Attempt+1, b.Kind,
			domain.StepRunning, input, policy, nil, runAttempt), &step)
		shouldExecute = true
		return err
	})
	return shouldExecute, step, err
}

const completeStepSQL = `
UPDATE workflow_steps SET status = 'completed', output = $3, finished_at = now()
WHERE run_id = $1 AND name = $2 AND status = 'running' AND (run_attempt IS NULL OR run_attempt = $4)
RETURNING ` + stepColumns

const failStepSQL = `
UPDATE workflow_steps SET status = 'failed', error = $3, finished_at = now(),
	retry_at = CASE WHEN $4::bigint IS NULL THEN NULL ELSE now() + $4 * interval '1 millisecond' END
WHERE run_id = $1 AND name = $2 AND status = 'running'
RETURNING ` + stepColumns

// retryRunSQL ends the lease and puts the run back to pending until a
// step retry is due; the next claim continues the same attempt.
const retryStepRunSQL = `
WITH r AS (
	UPDATE workflow_runs SET status = 'pending', available_at = $2, lease_id = NULL,
		lease_expires_at = NULL, new_attempt = false
	WHERE run_id = $1 RETURNING namespace, task_queue
)
SELECT pg_notify('` + Channel + `', 'q:' || namespace || '/' || task_queue) FROM r`

const sleepRunSQL = `
WITH r AS (
	UPDATE workflow_runs SET status = 'sleeping', available_at = $2, lease_id = NULL,
		lease_expires_at = NULL, new_attempt = false
	WHERE run_id = $1
	RETURNING ` + runColumnsWithPayload + `
)
SELECT r.*, pg_notify('` + Channel + `', 'q:' || namespace || '/' || task_queue) FROM r`

// setSleepDeadlineSQL gives a sleep step begun without one its wake-up
// time; a deadline once set is never moved.
const setSleepDeadlineSQL = `
UPDATE workflow_steps SET wake_up_at = COALESCE(wake_up_at, $3)
WHERE run_id = $1 AND name = $2 AND status = 'running'
RETURNING wake_up_at`

// completeDueSleepSQL records a running sleep step whose wake-up time has
// come completed; it answers no row when the time has not come.
const completeDueSleepSQL = `
UPDATE workflow_steps SET status = 'completed', finished_at = now()
WHERE run_id = $1 AND name = $2 AND kind = 'sleep' AND status = 'running' AND wake_up_at <= now()
RETURNING true`

const wakeTimeSQL = `SELECT COALESCE($1::timestamptz, now() + $2 * interval '1 millisecond')`

// Sleep records the sleep step, running until its wake-up time, and puts
// the run to sleep until then; the lease ends. The claim that follows the
// wake-up records the step completed (claimTailSQL), so it is in that
// task's history and its begin returns shouldExecute false. A sleep already
// done changes nothing: it returns the run, still held by the lease, and
// resolved true; so does a sleep whose wake-up time has come. The first
// call for a step fixes its wake-up time: a later one never moves it.
func (s *Store) Sleep(ctx context.Context, namespace, runID, leaseID string, req domain.SleepRequest) (run domain.Run, resolved bool, err error) {
	err = s.inTx(ctx, "sleep "+req.Step, func(tx pgx.Tx) error {
		runAttempt, _, err := fence(ctx, tx, namespace, runID, leaseID)
		if err != nil {
			return err
		}
		var wake time.Time
		if err := tx.QueryRow(ctx, wakeTimeSQL, req.Until, req.Duration.Milliseconds()).Scan(&wake); err != nil {
			return err
		}
		latest, err := currentStep(ctx, tx, runID, req.Step, domain.StepSleep, runAttempt)
		if err == nil && latest.found && latest.Status == domain.StepRunning {
			// Its wake-up time is fixed; if it has come, the sleep is done.
			err = tx.QueryRow(ctx, completeDueSleepSQL, runID, req.Step).Scan(&resolved)
			if errors.Is(err, pgx.ErrNoRows) {
				err = tx.QueryRow(ctx, setSleepDeadlineSQL, runID, req.Step, wake).Scan(&wake)
			}
		}
		switch {
		case err != nil:
			return err
		case resolved || latest.found && latest.Status == domain.StepCompleted:
			resolved = true
			err = scanRun(tx.QueryRow(ctx, getRunSQL, namespace, runID), &run, withPayload(&run)...)
			fillPayload(&run)
			return err
		case !latest.found || latest.Status != domain.StepRunning:
			var st domain.Step
			err = scanStep(tx.QueryRow(ctx, insertStepSQL, runID, req.Step, latest.Attempt+1,
				domain.StepSleep, domain.StepRunning, nil, nil, wake, runAttempt), &st)
		}
		if err != nil {
			return err
		}
		err = scanRun(tx.QueryRow(ctx, sleepRunSQL, runID, wake), &run, &run.Input, &run.Output, nil)
		fillPayload(&run)
		return err
	})
	return run, resolved, err
}

// completeRunsSQL completes a batch of runs, each under its own lease: the
// guard is per row, so a batch is exactly as fenced as single calls. It
// locks its rows in run_id order first, so that statements that change
// many runs at once (other batches, worker heartbeats) cannot deadlock
// with it by locking the same rows in another order. Step attempts the
// runs leave running are closed, cut short by the run's end. It sends one
// notification per queue, naming all of the queue's runs: a transaction
// that notifies holds a cluster-wide lock through its commit, so
// notifications are what a completion costs most. A payload holds at most
// notifyRunsPerPayload run IDs, so that it stays under PostgreSQL's
// 8000-byte limit on a notification whatever the batch's size.
const completeRunsSQL = `
WITH req AS (
	SELECT * FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::text[])
		WITH ORDINALITY AS r(namespace, run_id, lease_id, output, i)
), l AS MATERIALIZED (
	-- One primary-key lookup per request, in run_id order, the lease
	-- checked on the locked row (its latest version): with the state in
	-- the lookup, and statistics from before many runs were running, the
	-- planner took the partial index of running runs and joined every
	-- request against every running run, a cost that grew with the runs
	-- in flight.
	SELECT q.i, w.run_id
	FROM (SELECT run_id, namespace, lease_id, i FROM req ORDER BY run_id) q, LATERAL (
		SELECT run_id, namespace, lease_id, status, lease_expires_at
		FROM workflow_runs WHERE run_id = q.run_id
		OFFSET 0 -- keeps the lease test below out of this lookup
		FOR UPDATE
	) w
	WHERE w.namespace = q.namespace AND w.lease_id = q.lease_id
		AND w.status = 'running' AND w.lease_expires_at > now()
), c AS (
	-- The rows of l are locked by this statement and were checked on their
	-- latest version, so nothing can have changed them since; the lease is
	-- matched again only to pair each row with its own request.
	UPDATE workflow_runs w SET status = 'completed', output = req.output::json, finished_at = now(),
		completed_lease_id = w.lease_id, lease_id = NULL, lease_expires_at = NULL
	FROM l JOIN req USING (i)
	WHERE w.run_id = l.run_id AND w.lease_id = req.lease_id
	RETURNING w.namespace, w.task_queue, w.run_id, req.i
), s AS (
	UPDATE workflow_steps st SET status = 'failed', finished_at = now(), error = $5
	FROM c WHERE st.run_id = c.run_id AND st.status = 'running'
), n AS (
	SELECT pg_notify('` + Channel + `', 'f:' || namespace || '/' || task_queue || '/' || string_agg(run_id::text, ','))
	FROM (SELECT *, (row_number() OVER (PARTITION BY namespace, task_queue) - 1) / ` + notifyRunsPerPayload + ` AS chunk FROM c) cc
	GROUP BY namespace, task_queue, chunk
)
SELECT i, (SELECT count(*) FROM n) FROM c`

// notifyRunsPerPayload bounds the run IDs one completion notification names:
// 150 IDs of 37 bytes, plus the queue's name, stay under 8000 bytes.
const notifyRunsPerPayload = "150"

type completeReq struct {
	namespace, runID, leaseID string
	output                    json.RawMessage
}

type completeRes struct {
	err error
}

// CompleteRun ends a run with its output, and returns the run. Concurrent
// calls are grouped into one statement and one commit (see batch).
func (s *Store) CompleteRun(ctx context.Context, namespace, runID, leaseID string, output json.RawMessage) (domain.Run, error) {
	if len(output) == 0 {
		output = json.RawMessage("null")
	}
	if res := s.completions.Do(completeReq{namespace, runID, leaseID, output}); res.err != nil {
		return domain.Run{}, fmt.Errorf("complete run %s: %w", runID, res.err)
	}
	return s.GetRun(ctx, namespace, runID)
}

// CompleteRuns completes a batch of runs, each under its own lease, and
// returns an error for each that was not completed (nil: completed).
func (s *Store) CompleteRuns(ctx context.Context, namespace string, items []domain.RunCompletion) []error {
	errs := make([]error, 0, len(items))
	for chunk := range slices.Chunk(items, completeBatch) {
		reqs := make([]completeReq, len(chunk))
		for i, it := range chunk {
			reqs[i] = completeReq{namespace, it.RunID, it.LeaseID, it.Output}
		}
		for i, res := range s.completeRuns(reqs) {
			if res.err != nil {
				res.err = fmt.Errorf("complete run %s: %w", reqs[i].runID, res.err)
			}
			errs = append(errs, res.err)
		}
	}
	return errs
}

// completeRuns runs one batch of completions, and returns one result per
// request. Each request fails for its own fault only: when the database
// refuses the statement for what a request holds (an output it cannot
// store), the batch is split until each culprit is alone, and the others
// commit (see batch.Isolate).
func (s *Store) completeRuns(reqs []completeReq) []completeRes {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return batch.Isolate(func(reqs []completeReq) ([]completeRes, error) { return s.completeBatch(ctx, reqs) },
		refused, func(err error) completeRes { return completeRes{batchItemError(err)} })(reqs)
}

// completeBatch runs completeRunsSQL on reqs, again when PostgreSQL broke
// a deadlock by aborting it. A request the statement did not complete is
// explained by its own follow-up read (see notCompleted).
func (s *Store) completeBatch(ctx context.Context, reqs []completeReq) ([]completeRes, error) {
	n := len(reqs)
	nss, runIDs, leaseIDs, outputs := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i, r := range reqs {
		nss[i], runIDs[i], leaseIDs[i], outputs[i] = r.namespace, r.runID, r.leaseID, string(r.output)
	}
	var done []bool
	for try := 1; ; try++ {
		done = make([]bool, n)
		err := s.queryCompleteRuns(ctx, done, nss, runIDs, leaseIDs, outputs, completedStepError)
		if err == nil {
			break
		}
		if !isDeadlock(err) || try == 3 {
			return nil, err
		}
	}
	res := make([]completeRes, n)
	for i, r := range reqs {
		if !done[i] {
			res[i].err = s.notCompleted(ctx, r)
		}
	}
	return res, nil
}

const completedUnderSQL = `
SELECT true FROM workflow_runs
WHERE namespace = $1 AND run_id = $2 AND status = 'completed'
	AND completed_lease_id = $3 AND output::text = $4`

// notCompleted says why a completion changed nothing: nil when the run
// was already completed under this lease with this output (the worker's
// retry of a completion whose answer it lost), or else the lease error.
func (s *Store) notCompleted(ctx context.Context, r completeReq) error {
	var same bool
	err := s.pool.QueryRow(ctx, completedUnderSQL, r.namespace, r.runID, r.leaseID, string(r.output)).Scan(&same)
	if errors.Is(err, pgx.ErrNoRows) {
		err = leaseError(ctx, s.pool, r.namespace, r.runID, r.leaseID)
	}
	return translate(err)
}

var completedStepError = runEndedStepError("completed")

func (s *Store) queryCompleteRuns(ctx context.Context, done []bool, args ...any) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, completeRunsSQL, args...)
		if err != nil {
			return err
		}
		var ids []string
		runIDs := args[1].([]string)
		for rows.Next() {
			var i int
			if err := rows.Scan(&i, nil); err != nil {
				rows.Close()
				return err
			}
			done[i-1] = true
			ids = append(ids, runIDs[i-1])
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		// The completed children's ends reach their parents in this
		// transaction; a statement that finds no child costs one index probe.
		return endChildren(ctx, tx, ids)
	})
}

// refused reports whether PostgreSQL refused a statement for what it was
// given, rather than because it is unavailable or broke a deadlock: then
// a part of the statement may succeed where the whole failed.
func refused(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || len(pgErr.Code) < 2 {
		return false
	}
	switch pgErr.Code[:2] {
	case "08", "40", "53", "57", "58", "XX": // connection, rollback, resources, operator, system
		return false
	}
	return true
}

// batchItemError is the error of a group-committed item (a completion, a
// step report) whose statement failed alone: data the database cannot
// store is the item's fault (400); a deadlock that kept coming back is
// worth retrying (503); the rest is as translated.
func batchItemError(err error) error {
	var pgErr *pgconn.PgError
	switch {
	case isDeadlock(err):
		return fmt.Errorf("%w: %w", domain.ErrUnavailable, err)
	case errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "22"): // data exception
		return domain.Invalid("output", "cannot be stored: %s", pgErr.Message)
	}
	return translate(err)
}

// endAttemptSQL ends the run's current attempt after a failure: back to
// pending at $3 with a new attempt to follow when $2 (retry), else failed.
// It notifies the queue (a retry) or the run's watchers (failed).
const endAttemptSQL = `
WITH f AS (
	UPDATE workflow_runs SET
		status = CASE WHEN $2 THEN 'pending' ELSE 'failed' END,
		available_at = CASE WHEN $2 THEN now() + $3 * interval '1 millisecond' ELSE available_at END,
		finished_at = CASE WHEN $2 THEN NULL ELSE now() END,
		error = $4, new_attempt = true, lease_id = NULL, lease_expires_at = NULL
	WHERE run_id = $1
	RETURNING ` + runColumnsWithPayload + `
)
SELECT f.*, pg_notify('` + Channel + `',
	CASE WHEN $2 THEN 'q:' || namespace || '/' || task_queue ELSE ` + finishedPayload + ` END) FROM f`

// FailRun ends the run's attempt with an error: a retry is scheduled by its
// policy, or the run fails when no attempt is left or the error is not
// retryable. Step attempts left running are closed, cut short.
func (s *Store) FailRun(ctx context.Context, namespace, runID, leaseID string, e *domain.ErrorInfo) (domain.Run, error) {
	var run domain.Run
	err := s.inTx(ctx, "fail run "+runID, func(tx pgx.Tx) error {
		attempt, policy, err := fence(ctx, tx, namespace, runID, leaseID)
		if err != nil {
			return err
		}
		var base int // the policy bounds the attempts since the last manual retry
		if err := tx.QueryRow(ctx, attemptBaseSQL, runID).Scan(&base); err != nil {
			return err
		}
		retry, delay := policy.Decide(attempt-base, e)
		err = scanRun(tx.QueryRow(ctx, endAttemptSQL, runID, retry, delay.Milliseconds(), e),
			&run, &run.Input, &run.Output, nil)
		if err != nil {
			return err
		}
		fillPayload(&run)
		how := "failed"
		if retry {
			how = "attempt failed"
		}
		if _, err = tx.Exec(ctx, failRunningStepsSQL, []string{runID}, runEndedStepError(how)); err != nil {
			return err
		}
		return endChildren(ctx, tx, []string{runID})
	})
	return run, err
}

const attemptBaseSQL = `SELECT attempt_base FROM workflow_runs WHERE run_id = $1`

// expiredLeasesSQL counts each run's attempts since its last manual retry.
const expiredLeasesSQL = `
SELECT run_id, attempt - attempt_base, retry_policy FROM workflow_runs
WHERE status = 'running' AND lease_expires_at <= now()
ORDER BY lease_expires_at
LIMIT $1
FOR UPDATE SKIP LOCKED`

// rescueSQL ends the attempts of the given runs (locked by
// expiredLeasesSQL), each retried ($2) after its delay ($3, ms) or failed,
// in one statement that reads none of their payloads. It notifies each
// queue with a retried run (PostgreSQL sends equal payloads of one
// transaction once), and the watchers of each failed run: one payload per
// run, as a batch's IDs together could pass NOTIFY's 8000-byte limit.
const rescueSQL = `
WITH x AS (
	SELECT * FROM unnest($1::uuid[], $2::bool[], $3::bigint[]) AS x(run_id, retry, delay_ms)
), r AS (
	UPDATE workflow_runs w SET
		status = CASE WHEN x.retry THEN 'pending' ELSE 'failed' END,
		available_at = CASE WHEN x.retry THEN now() + x.delay_ms * interval '1 millisecond' ELSE w.available_at END,
		finished_at = CASE WHEN x.retry THEN NULL ELSE now() END,
		error = $4, new_attempt = true, lease_id = NULL, lease_expires_at = NULL
	FROM x
	WHERE w.run_id = x.run_id
	RETURNING w.namespace, w.task_queue, w.run_id, x.retry
), n AS (
	SELECT pg_notify('` + Channel + `', CASE WHEN retry THEN 'q:' || namespace || '/' || task_queue
		ELSE ` + finishedPayload + ` END)
	FROM r
)
SELECT count(*) FILTER (WHERE retry), count(*) FILTER (WHERE NOT retry), (SELECT count(*) FROM n) FROM r`

const failRunningStepsSQL = `
UPDATE workflow_steps SET status = 'failed', finished_at = now(), error = $2
WHERE run_id = ANY($1) AND status = 'running'`

// RescueExpired ends the attempt of up to limit runs whose lease expired:
// each is retried by its policy or failed with an error saying the lease
// expired. Replicas may run it at once: each takes rows the others do not
// hold. It returns how many runs were retried and failed.
func (s *Store) RescueExpired(ctx context.Context, limit int) (retried, failed int, err error) {
	e := domain.LeaseExpiredError()
	err = s.inTx(ctx, "rescue expired leases", func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, expiredLeasesSQL, limit)
		if err != nil {
			return err
		}
		var ids []string
		var retries []bool
		var delays []int64
		var id string
		var attempt int
		var policy domain.RetryPolicy
		if _, err := pgx.ForEachRow(rows, []any{&id, &attempt, &policy}, func() error {
			retry, delay := policy.Decide(attempt, e)
			ids, retries, delays = append(ids, id), append(retries, retry), append(delays, delay.Milliseconds())
			return nil
		}); err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		var notified int
		if err := tx.QueryRow(ctx, rescueSQL, ids, retries, delays, e).Scan(&retried, &failed, &notified); err != nil {
			return err
		}
		if _, err = tx.Exec(ctx, failRunningStepsSQL, ids, e); err != nil {
			return err
		}
		return endChildren(ctx, tx, ids)
	})
	return retried, failed, err
}

// nextLeaseExpirySQL is NULL when no run is running. It reads
// workflow_runs_lease_expiry_idx.
const nextLeaseExpirySQL = `
SELECT EXTRACT(EPOCH FROM min(lease_expires_at) - now())::float8
FROM workflow_runs WHERE status = 'running'`

// NextLeaseExpiry returns how long, by the database's clock, until the
// earliest lease of a running run expires (zero or less: one has expired);
// ok is false when no run is running.
func (s *Store) NextLeaseExpiry(ctx context.Context) (wait time.Duration, ok bool, err error) {
	var seconds *float64
	if err := s.pool.QueryRow(ctx, nextLeaseExpirySQL).Scan(&seconds); err != nil {
		return 0, false, fmt.Errorf("next lease expiry: %w", translate(err))
	}
	if seconds == nil {
		return 0, false, nil
	}
	return time.Duration(*seconds * float64(time.Second)), true, nil
}

func normalizeStep(st *domain.Step) {
	utc(&st.CreatedAt)
	utc(&st.StartedAt)
	st.RetryAt, st.WakeUpAt, st.FinishedAt = utcp(st.RetryAt), utcp(st.WakeUpAt), utcp(st.FinishedAt)
}
