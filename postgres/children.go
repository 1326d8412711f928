package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kagzi/kagzi/domain"
)

// A child is a run started by a step of its parent, once per (parent,
// step) (workflow_runs_parent_idx). Its end reaches the parent as the
// signal kagzi.child/{step}, in the child's own finishing transaction:
// every statement that ends runs is followed, in its transaction, by
// endChildren.

const startChildSQL = `
WITH ins AS (
	INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, external_id, version,
		status, input, retry_policy, available_at, parent_run_id, parent_step, parent_close_policy)
	VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, now(), $9, $10, $11)
	ON CONFLICT (namespace, external_id)
		WHERE external_id IS NOT NULL AND status IN ('pending', 'sleeping', 'running')
		DO NOTHING
	RETURNING run_id, namespace, task_queue
)
SELECT run_id, pg_notify('` + Channel + `', 'q:' || namespace || '/' || task_queue) FROM ins`

const childOfStepSQL = `SELECT run_id FROM workflow_runs WHERE parent_run_id = $1 AND parent_step = $2`

const runQueueSQL = `SELECT task_queue FROM workflow_runs WHERE run_id = $1`

// childLimitsSQL reads, for the parent $1, its live children (counted up
// to $2) and its depth: how many ancestors it has, walked up
// parent_run_id at most $3 steps, so the walk costs no more than the
// limit it checks.
const childLimitsSQL = `
WITH RECURSIVE up (run_id, depth) AS (
	SELECT parent_run_id, 1 FROM workflow_runs WHERE run_id = $1 AND parent_run_id IS NOT NULL
	UNION ALL
	SELECT r.parent_run_id, up.depth + 1 FROM up JOIN workflow_runs r ON r.run_id = up.run_id
	WHERE r.parent_run_id IS NOT NULL AND up.depth < $3::bigint
)
SELECT (SELECT count(*) FROM (SELECT 1 FROM workflow_runs WHERE parent_run_id = $1
		AND status IN ('pending', 'sleeping', 'running') LIMIT $2::bigint) live),
	COALESCE((SELECT max(depth) FROM up), 0)`

// checkChildLimits refuses a new child of the parent when the parent has
// its most live children already, or is as deep as a run may be. The
// caller holds the parent's row lock (fence), so concurrent child calls
// of one parent count one after the other, each seeing the children the
// ones before it committed.
func checkChildLimits(ctx context.Context, tx pgx.Tx, parentID string, l domain.ChildLimits) error {
	l = l.WithDefaults()
	var live, depth int64
	if err := tx.QueryRow(ctx, childLimitsSQL, parentID, l.MaxLive, l.MaxDepth).Scan(&live, &depth); err != nil {
		return err
	}
	if live >= int64(l.MaxLive) {
		return domain.Errorf(domain.CodeLimitExceeded,
			"run %s has %d live children, the most a run may have (max_live_children); one must end before another starts",
			parentID, live)
	}
	if depth >= int64(l.MaxDepth) {
		return domain.Errorf(domain.CodeLimitExceeded,
			"run %s is at depth %d; a child of it would pass the deepest a chain of children may go (max_child_depth %d)",
			parentID, depth, l.MaxDepth)
	}
	return nil
}

// childEndSignalSQL is the end signal of a child step, when it has one.
const childEndSignalSQL = `
SELECT signal_id, name, seq, input FROM signals
WHERE run_id = $1 AND name = $2 AND status <> 'discarded' ORDER BY seq LIMIT 1`

// childInput is what a child step's record keeps as its input.
type childInput struct {
	ChildRunID string `json:"child_run_id"`
	Await      bool   `json:"await"`
}

// StartChild is a worker's child step. It starts the child once; a replay,
// or a call after the child ended, answers from the recorded outcome.
// With Await it answers like a wait on kagzi.child/{step} (parking the
// run until the child ends or the timeout passes); without, it resolves at
// once with {"child_run_id"}.
func (s *Store) StartChild(ctx context.Context, namespace, runID, leaseID string, req domain.ChildRequest) (res domain.WaitResult, childID string, err error) {
	signal := domain.ChildSignalPrefix + req.Step
	err = s.inTx(ctx, "child "+req.Step, func(tx pgx.Tx) error {
		runAttempt, _, err := fence(ctx, tx, namespace, runID, leaseID)
		if err != nil {
			return err
		}
		latest, err := currentStep(ctx, tx, runID, req.Step, domain.StepChild, runAttempt)
		if err != nil {
			return err
		}
		var in childInput
		if latest.found {
			_ = json.Unmarshal(latest.Input, &in)
			childID = in.ChildRunID
		}
		if latest.found && latest.Status == domain.StepCompleted {
			return childAnswer(ctx, tx, runID, signal, latest.Step, in.Await, &res)
		}
		var deadline *time.Time
		if req.Await && req.Timeout != nil {
			var now time.Time
			ms := req.Timeout.Milliseconds()
			if err := tx.QueryRow(ctx, deadlineSQL, nil, ms).Scan(&deadline, &now); err != nil {
				return err
			}
		}
		if latest.found && latest.Status == domain.StepRunning {
			deadline = latest.WakeUpAt
		} else {
			if childID, err = startChild(ctx, tx, namespace, runID, req); err != nil {
				return err
			}
			in = childInput{ChildRunID: childID, Await: req.Await}
			input, _ := json.Marshal(in)
			var st domain.Step
			if err := scanStep(tx.QueryRow(ctx, insertStepSQL, runID, req.Step, latest.Attempt+1,
				domain.StepChild, domain.StepRunning, input, nil, deadline, runAttempt), &st); err != nil {
				return err
			}
			// A child found already ended (started by an earlier attempt of
			// the parent) resolves the step at once.
			if err := endChildren(ctx, tx, []string{childID}); err != nil {
				return err
			}
			latest.Step = st
		}
		var step domain.Step
		err = scanStep(tx.QueryRow(ctx, `SELECT `+stepColumns+` FROM workflow_steps WHERE run_id = $1 AND name = $2
			ORDER BY attempt DESC LIMIT 1`, runID, req.Step), &step)
		if err != nil {
			return err
		}
		if step.Status == domain.StepCompleted || !in.Await {
			return childAnswer(ctx, tx, runID, signal, step, in.Await, &res)
		}
		var now time.Time
		if err := tx.QueryRow(ctx, `SELECT now()`).Scan(&now); err != nil {
			return err
		}
		if deadline != nil && !deadline.After(now) {
			res.Resolved = true
			return resolveChildTimeout(ctx, tx, runID, req.Step, &res.Step)
		}
		res.WakeAt = utcp(deadline)
		_, err = tx.Exec(ctx, parkWaitSQL, runID, deadline, []string{signal})
		return err
	})
	return res, childID, err
}

// startChild creates the child of the parent's step, or finds the one an
// earlier attempt of the parent created. A live run holding the child's
// external ID is a conflict: it is never adopted. Only a new child is held
// to the child limits: finding the existing one answers as before, at the
// cap or not.
func startChild(ctx context.Context, tx pgx.Tx, namespace, parentID string, req domain.ChildRequest) (string, error) {
	var id string
	err := tx.QueryRow(ctx, childOfStepSQL, parentID, req.Step).Scan(&id)
	if err == nil || !errors.Is(err, pgx.ErrNoRows) {
		return id, err
	}
	if err := checkChildLimits(ctx, tx, parentID, req.Limits); err != nil {
		return "", err
	}
	n := req.Run
	if n.TaskQueue == "" {
		if err := tx.QueryRow(ctx, runQueueSQL, parentID).Scan(&n.TaskQueue); err != nil {
			return "", err
		}
	}
	err = tx.QueryRow(ctx, startChildSQL, newID(), namespace, n.TaskQueue, n.WorkflowType, n.ExternalID,
		n.Version, n.Input, n.RetryPolicy, parentID, req.Step, req.ParentClosePolicy).Scan(&id, nil)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", domain.Errorf(domain.CodeConflict, "a live run holds external_id %q", *n.ExternalID)
	}
	return id, err
}

// childAnswer is the answer of a resolved or non-awaited child step.
func childAnswer(ctx context.Context, tx pgx.Tx, runID, signal string, step domain.Step, await bool, res *domain.WaitResult) error {
	res.Resolved, res.Step = true, step
	if !await {
		var in childInput
		_ = json.Unmarshal(step.Input, &in)
		res.Output, _ = json.Marshal(map[string]string{"child_run_id": in.ChildRunID})
		return nil
	}
	if step.Status != domain.StepCompleted {
		return nil
	}
	var sig domain.WaitSignal
	err := tx.QueryRow(ctx, childEndSignalSQL, runID, signal).Scan(&sig.SignalID, &sig.Name, &sig.Seq, &sig.Input)
	if errors.Is(err, pgx.ErrNoRows) {
		res.Output = step.Output // timed out
		return nil
	}
	if err != nil {
		return err
	}
	res.Output, err = json.Marshal(domain.WaitOutput{Signal: &sig})
	return err
}

const resolveChildTimeoutSQL = `
UPDATE workflow_steps SET status = 'completed', output = '{"signal":null,"timed_out":true}', finished_at = now()
WHERE run_id = $1 AND name = $2 AND kind = 'child' AND status = 'running'
RETURNING ` + stepColumns

func resolveChildTimeout(ctx context.Context, tx pgx.Tx, runID, step string, st *domain.Step) error {
	return scanStep(tx.QueryRow(ctx, resolveChildTimeoutSQL, runID, step), st)
}

// lockParentsSQL locks the parents of the ended children $1, in run_id
// order, before their inboxes are read.
const lockParentsSQL = `
SELECT p.run_id FROM workflow_runs p
WHERE p.run_id IN (SELECT parent_run_id FROM workflow_runs WHERE run_id = ANY($1::uuid[]) AND parent_run_id IS NOT NULL
	AND status IN ('completed', 'failed', 'cancelled'))
ORDER BY p.run_id FOR UPDATE OF p`

// childEndsSQL delivers the end of each ended child of $1 to its parent
// (locked by lockParentsSQL): the signal kagzi.child/{step}, delivered to
// the awaiting child step, or to a wait step waiting for it, or buffered;
// discarded when the step had resolved already. The child step completes
// with the signal's input, and a parked parent waiting for it wakes, its
// queue notified.
const childEndsSQL = `
WITH ended AS (
	SELECT c.run_id AS child_id, c.parent_run_id, c.parent_step, 'kagzi.child/' || c.parent_step AS name,
		json_build_object('child_run_id', c.run_id, 'status', c.status, 'output', c.output, 'error', c.error) AS input,
		row_number() OVER (PARTITION BY c.parent_run_id ORDER BY c.run_id) AS n
	FROM workflow_runs c
	WHERE c.run_id = ANY($1::uuid[]) AND c.parent_run_id IS NOT NULL AND c.status IN ('completed', 'failed', 'cancelled')
), e AS (
	SELECT ended.*, p.namespace, p.attempt, cs.status AS step_status, cs.input->>'await' = 'true' AS await,
		(SELECT w.name FROM workflow_steps w WHERE w.run_id = ended.parent_run_id AND w.kind = 'wait'
			AND w.status = 'running' AND w.run_attempt = p.attempt AND (w.input->'signals')::jsonb ? ended.name
			ORDER BY w.seq LIMIT 1) AS wait_step,
		(SELECT COALESCE(max(seq), 0) FROM signals s WHERE s.run_id = ended.parent_run_id) + ended.n AS seq,
		gen_random_uuid() AS signal_id
	FROM ended JOIN workflow_runs p ON p.run_id = ended.parent_run_id
	LEFT JOIN LATERAL (
		SELECT status, input FROM workflow_steps
		WHERE run_id = ended.parent_run_id AND name = ended.parent_step AND kind = 'child'
		ORDER BY attempt DESC LIMIT 1
	) cs ON true
), d AS (
	SELECT e.*, CASE WHEN step_status IS DISTINCT FROM 'running' THEN NULL
		WHEN await THEN parent_step ELSE wait_step END AS taker
	FROM e
), sig AS (
	INSERT INTO signals (signal_id, namespace, run_id, seq, name, input, status, step)
	SELECT signal_id, namespace, parent_run_id, seq, name, input,
		CASE WHEN step_status IS DISTINCT FROM 'running' THEN 'discarded' WHEN taker IS NOT NULL THEN 'delivered'
			ELSE 'buffered' END, taker
	FROM d
), child_steps AS (
	UPDATE workflow_steps s SET status = 'completed', output = d.input, finished_at = now()
	FROM d WHERE s.run_id = d.parent_run_id AND s.name = d.parent_step AND s.kind = 'child' AND s.status = 'running'
), wait_steps AS (
	UPDATE workflow_steps s SET status = 'completed', finished_at = now(),
		output = json_build_object('signal', json_build_object('name', d.name, 'input', d.input, 'seq', d.seq,
			'signal_id', d.signal_id), 'timed_out', false)
	FROM d WHERE NOT d.await AND d.taker IS NOT NULL AND s.run_id = d.parent_run_id AND s.name = d.taker
		AND s.kind = 'wait' AND s.status = 'running'
), woken AS (
	UPDATE workflow_runs p SET waiting_for = NULL,
		status = CASE WHEN p.status = 'sleeping' THEN 'pending' ELSE p.status END,
		available_at = CASE WHEN p.status = 'sleeping' THEN now() ELSE p.available_at END
	FROM (SELECT DISTINCT parent_run_id FROM d WHERE taker IS NOT NULL) w
	WHERE p.run_id = w.parent_run_id AND p.waiting_for IS NOT NULL
	RETURNING p.namespace, p.task_queue, p.status
)
SELECT pg_notify('` + Channel + `', 'q:' || namespace || '/' || task_queue)
FROM (SELECT DISTINCT namespace, task_queue FROM woken WHERE status = 'pending') q`

// cascadeCancelSQL cancels the live cancel-policy children of the ended
// runs $1. Children locked by a transaction of their own are skipped (it
// may be their end); cascadeCancelWaitSQL waits for them.
const cascadeCancelSQL = cascadeCancelHead + `FOR UPDATE SKIP LOCKED` + cascadeCancelTail

const cascadeCancelWaitSQL = cascadeCancelHead + `FOR UPDATE` + cascadeCancelTail

const cascadeCancelHead = `
WITH c AS (
	SELECT run_id FROM workflow_runs
	WHERE parent_run_id = ANY($1::uuid[]) AND parent_close_policy = 'cancel'
		AND status IN ('pending', 'sleeping', 'running')
		AND parent_run_id IN (SELECT run_id FROM workflow_runs WHERE run_id = ANY($1::uuid[])
			AND status IN ('completed', 'failed', 'cancelled'))
	ORDER BY run_id `

const cascadeCancelTail = `
)
UPDATE workflow_runs r SET status = 'cancelled', finished_at = now(), lease_id = NULL,
	lease_expires_at = NULL, waiting_for = NULL
FROM c WHERE r.run_id = c.run_id
RETURNING r.run_id, pg_notify('` + Channel + `', 'f:' || r.namespace || '/' || r.task_queue || '/' || r.run_id)`

// runEndWorkSQL says whether any of the runs $1 is a child, a parent, or
// has buffered signals: one index probe per run for each. As
// "parent_run_id = ANY($1)", with statistics from a table with no child
// (or from an empty one), the planner expected a match early in a
// sequential scan, and read the whole table at every completion.
const runEndWorkSQL = `
SELECT EXISTS (SELECT FROM unnest($1::uuid[]) AS u(id), LATERAL (
		SELECT FROM workflow_runs w WHERE w.run_id = u.id AND w.parent_run_id IS NOT NULL LIMIT 1) x),
	EXISTS (SELECT FROM unnest($1::uuid[]) AS u(id), LATERAL (
		SELECT FROM workflow_runs w WHERE w.parent_run_id = u.id LIMIT 1) x),
	EXISTS (SELECT FROM unnest($1::uuid[]) AS u(id), LATERAL (
		SELECT FROM signals s WHERE s.run_id = u.id AND s.status = 'buffered' LIMIT 1) x)`

// discardInboxSQL discards the unconsumed signals of the runs $1 that
// completed or were cancelled; a failed run keeps its inbox, for a retry.
const discardInboxSQL = `
UPDATE signals s SET status = 'discarded'
FROM workflow_runs r
WHERE s.run_id = ANY($1::uuid[]) AND s.status = 'buffered' AND r.run_id = s.run_id
	AND r.status IN ('completed', 'cancelled')`

// endChildren runs after a statement that may have ended the runs ids, in
// its transaction: it discards the unconsumed signals of runs that
// completed or were cancelled, delivers each ended child's end to its
// parent, and cancels the live cancel-policy children of each ended run,
// down the generations.
func endChildren(ctx context.Context, tx pgx.Tx, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	// The usual run has no parent, no child and nothing in its inbox: one
	// look through three indexes says so.
	var child, parent, inbox bool
	if err := tx.QueryRow(ctx, runEndWorkSQL, ids).Scan(&child, &parent, &inbox); err != nil {
		return fmt.Errorf("look at ended runs: %w", err)
	}
	if inbox {
		if _, err := tx.Exec(ctx, discardInboxSQL, ids); err != nil {
			return fmt.Errorf("discard inboxes: %w", err)
		}
	}
	if !child && !parent {
		return nil
	}
	for len(ids) > 0 {
		if _, err := tx.Exec(ctx, lockParentsSQL, ids); err != nil {
			return fmt.Errorf("lock parents: %w", err)
		}
		if _, err := tx.Exec(ctx, childEndsSQL, ids); err != nil {
			return fmt.Errorf("deliver child ends: %w", err)
		}
		cancelled, err := cancelChildren(ctx, tx, cascadeCancelSQL, ids)
		if err != nil {
			return err
		}
		// Children another transaction held were skipped: wait for them a
		// little. A child whose own end holds it waits for its parent,
		// which this transaction holds, so the wait is bounded (by
		// childLockTimeout, in a savepoint) rather than left to the
		// deadlock detector; that child is ending anyway.
		var more bool
		if err := tx.QueryRow(ctx, liveCancelChildrenSQL, ids).Scan(&more); err != nil {
			return fmt.Errorf("cancel children: %w", err)
		}
		if more {
			waited, err := cancelBusyChildren(ctx, tx, ids)
			if err != nil {
				return err
			}
			cancelled = append(cancelled, waited...)
		}
		ids = cancelled
	}
	return nil
}

// liveCancelChildrenSQL says whether an ended run of $1 still has a live
// cancel-policy child.
const liveCancelChildrenSQL = `
SELECT EXISTS (SELECT 1 FROM workflow_runs WHERE parent_run_id = ANY($1::uuid[])
	AND parent_close_policy = 'cancel' AND status IN ('pending', 'sleeping', 'running'))`

// childLockTimeout bounds the wait for a child another transaction holds.
const childLockTimeout = "200ms"

func cancelChildren(ctx context.Context, tx pgx.Tx, sql string, ids []string) ([]string, error) {
	rows, err := tx.Query(ctx, sql, ids)
	if err != nil {
		return nil, fmt.Errorf("cancel children: %w", err)
	}
	cancelled, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (string, error) {
		var id string
		return id, row.Scan(&id, nil)
	})
	if err != nil {
		return nil, fmt.Errorf("cancel children: %w", err)
	}
	return cancelled, nil
}

// cancelBusyChildren is the cascade again, waiting up to childLockTimeout
// for the children's rows, in a savepoint: a timeout leaves them as they
// are and the transaction going on.
func cancelBusyChildren(ctx context.Context, tx pgx.Tx, ids []string) ([]string, error) {
	var prev string
	if err := tx.QueryRow(ctx, `SELECT current_setting('lock_timeout')`).Scan(&prev); err != nil {
		return nil, err
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := sp.Exec(ctx, `SELECT set_config('lock_timeout', $1, true)`, childLockTimeout); err != nil {
		_ = sp.Rollback(ctx)
		return nil, err
	}
	cancelled, err := cancelChildren(ctx, sp, cascadeCancelWaitSQL, ids)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "55P03" { // lock_not_available
		return nil, sp.Rollback(ctx) // also undoes the lock_timeout
	}
	if err != nil {
		_ = sp.Rollback(ctx)
		return nil, err
	}
	if err := sp.Commit(ctx); err != nil {
		return nil, err
	}
	_, err = tx.Exec(ctx, `SELECT set_config('lock_timeout', $1, true)`, prev)
	return cancelled, err
}

const listChildrenSQL = `
SELECT ` + runColumns + ` FROM workflow_runs
WHERE parent_run_id = $1 AND namespace = $2 AND ($3::uuid IS NULL OR run_id > $3)
ORDER BY run_id LIMIT $4`

// ListChildren reads a page of a run's children, oldest first.
func (s *Store) ListChildren(ctx context.Context, namespace, runID string, page domain.Page) ([]domain.Run, string, error) {
	var exists bool
	if err := s.pool.QueryRow(ctx, runExistsSQL, namespace, runID).Scan(&exists); err != nil {
		return nil, "", fmt.Errorf("list children of %s: %w", runID, translate(err))
	}
	if !exists {
		return nil, "", fmt.Errorf("list children of %s: %w", runID, domain.Errorf(domain.CodeNotFound, "run %s not found", runID))
	}
	var after *string
	if page.After != "" {
		after = &page.After
	}
	rows, err := s.pool.Query(ctx, listChildrenSQL, runID, namespace, after, page.Limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("list children of %s: %w", runID, translate(err))
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.Run, error) {
		var r domain.Run
		return r, scanRun(row, &r)
	})
	if err != nil {
		return nil, "", fmt.Errorf("list children of %s: %w", runID, translate(err))
	}
	list, next, _ := nextPage(list, page.Limit, func(r domain.Run) string { return r.RunID })
	return list, next, nil
}
