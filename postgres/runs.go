package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kagzi/kagzi/domain"
)

// runColumns are the columns of a run without its payloads, in the order
// scanRun reads them.
const runColumns = `run_id, namespace, task_queue, workflow_type, external_id, version, status,
	error, attempt, retry_policy, worker_id, lease_expires_at, available_at, created_at,
	started_at, finished_at, schedule_id, waiting_for, parent_run_id`

// runColumnsWithPayload adds input and output.
const runColumnsWithPayload = runColumns + `, input, output`

func runDest(r *domain.Run) []any {
	return []any{&r.RunID, &r.Namespace, &r.TaskQueue, &r.WorkflowType, &r.ExternalID, &r.Version,
		&r.Status, &r.Error, &r.Attempt, &r.RetryPolicy, &r.WorkerID, &r.LeaseExpiresAt,
		&r.AvailableAt, &r.CreatedAt, &r.StartedAt, &r.FinishedAt, &r.ScheduleID, &r.WaitingFor, &r.ParentRunID}
}

func normalizeRun(r *domain.Run) {
	r.AvailableAt = utcp(r.AvailableAt)
	utc(&r.CreatedAt)
	r.LeaseExpiresAt = utcp(r.LeaseExpiresAt)
	r.StartedAt = utcp(r.StartedAt)
	r.FinishedAt = utcp(r.FinishedAt)
	if r.RetryPolicy.NonRetryableErrorTypes == nil {
		r.RetryPolicy.NonRetryableErrorTypes = []string{}
	}
}

// scanRun reads runColumns, followed by extra, into r.
func scanRun(row pgx.Row, r *domain.Run, extra ...any) error {
	if err := row.Scan(append(runDest(r), extra...)...); err != nil {
		return err
	}
	normalizeRun(r)
	return nil
}

// withPayload is the extra destinations for runColumnsWithPayload.
func withPayload(r *domain.Run) []any { return []any{&r.Input, &r.Output} }

// fillPayload makes the full view always carry both payloads: a run that
// has no output yet reads as JSON null.
func fillPayload(r *domain.Run) {
	if r.Input == nil {
		r.Input = json.RawMessage("null")
	}
	if r.Output == nil {
		r.Output = json.RawMessage("null")
	}
}

const startRunSQL = `
WITH ins AS (
	INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, external_id, version,
		status, input, retry_policy, available_at)
	VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8,
		COALESCE($9, now() + $10 * interval '1 millisecond'))
	ON CONFLICT (namespace, external_id)
		WHERE external_id IS NOT NULL AND status IN ('pending', 'sleeping', 'running')
		DO NOTHING
	RETURNING ` + runColumns + `
)
SELECT ins.*, pg_notify('` + Channel + `', 'q:' || namespace || '/' || task_queue) FROM ins`

const liveRunByExternalIDSQL = `
SELECT ` + runColumns + ` FROM workflow_runs
WHERE namespace = $1 AND external_id = $2 AND status IN ('pending', 'sleeping', 'running')`

// handoffClaimSQL decides, in the statement that makes run $1 of queue
// $2/$3 claimable, whether it may be claimed at once for the parked claim
// of worker $4 (NULL: a claim that names none): the worker must still be
// online on the queue (its row held FOR SHARE, as a claim holds it) and
// the queue must have no settings that hold claims back. The run is then
// claimed as a claim would: running, attempt counted, under a fresh lease
// of $5 ms.
//
// The worker's row is taken SKIP LOCKED: the statement already holds the
// run (a signal's send locked it first), and a worker heartbeat or
// deregistration locks the worker's row, then its runs; waiting for the
// row here could close a cycle with them. A row that is busy makes the
// run pending instead, and a claim takes it as usual.
const handoffClaimSQL = `
claimant AS MATERIALIZED (
	SELECT worker_id FROM workers
	WHERE namespace = $2 AND worker_id = $4::uuid AND status = 'online' AND task_queue = $3
	FOR SHARE SKIP LOCKED
), handoff AS MATERIALIZED (
	SELECT ($4::uuid IS NULL OR EXISTS (SELECT FROM claimant))
		AND NOT EXISTS (SELECT FROM task_queues tq WHERE tq.namespace = $2 AND tq.name = $3
			AND (tq.paused OR tq.max_concurrent IS NOT NULL OR tq.workflow_type_limits <> '{}')) AS ok
)`

// startHandedOffSQL is startRunSQL for a run available now while a claim
// is parked for it on this replica: the run is created claimed when the
// claim may take it (handoffClaimSQL), and pending otherwise, its queue
// notified as usual.
const startHandedOffSQL = `
WITH ` + handoffClaimSQL + `, ins AS (
	INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, external_id, version,
		status, input, retry_policy, available_at,
		attempt, new_attempt, lease_id, lease_expires_at, worker_id, started_at)
	SELECT $1, $2, $3, $6, $7, $8, CASE WHEN ok THEN 'running' ELSE 'pending' END, $9, $10, now(),
		ok::int, NOT ok, CASE WHEN ok THEN $11::uuid END,
		CASE WHEN ok THEN now() + $5 * interval '1 millisecond' END,
		CASE WHEN ok THEN $4::uuid END, CASE WHEN ok THEN now() END
	FROM handoff
	ON CONFLICT (namespace, external_id)
		WHERE external_id IS NOT NULL AND status IN ('pending', 'sleeping', 'running')
		DO NOTHING
	RETURNING ` + runColumns + `, lease_id
)
SELECT ins.*, CASE WHEN status = 'pending' THEN pg_notify('` + Channel + `', 'q:' || namespace || '/' || task_queue) END
FROM ins`

// HandOffTo makes runs started available now, and parked runs woken by a
// signal, go straight to claims parked on this replica when h has one
// for them (see domain.Handoff). Call it before serving.
func (s *Store) HandOffTo(h domain.Handoff) { s.handoff = h }

// StartRun creates a run, or, when a live run of the namespace already has
// the same external ID, returns that one with created false. The unique
// index decides between concurrent identical starts. A run available now
// is handed to a claim parked for it on this replica, if any (HandOffTo):
// then it is created running, and returned so.
func (s *Store) StartRun(ctx context.Context, namespace string, n domain.NewRun) (run domain.Run, created bool, err error) {
	for {
		if run, created, err = s.startOnce(ctx, namespace, n); created {
			return run, true, nil
		}
		if err != pgx.ErrNoRows {
			return run, false, fmt.Errorf("start run: %w", translate(err))
		}
		// The insert conflicted: a live run holds the external ID. Read it;
		// if it became terminal meanwhile, the insert can now succeed.
		err = scanRun(s.pool.QueryRow(ctx, liveRunByExternalIDSQL, namespace, *n.ExternalID), &run)
		if err == nil {
			return run, false, nil
		}
		if err != pgx.ErrNoRows {
			return run, false, fmt.Errorf("read run by external id: %w", translate(err))
		}
	}
}

// startHandedOff starts a run for the parked claim slot holds, and
// answers that claim once the run is committed claimed for it; otherwise
// the claim goes back to waiting. It returns pgx.ErrNoRows when a live run
// holds the external ID.
func (s *Store) startHandedOff(ctx context.Context, conn *pgxpool.Conn, namespace string, n domain.NewRun, slot domain.HandoffSlot) (run domain.Run, created bool, err error) {
	var workerID *string
	if id := slot.WorkerID(); id != "" {
		workerID = &id
	}
	runID, lease := newID(), newLeaseID()
	var leaseID *string
	row := conn.QueryRow(ctx, startHandedOffSQL, runID, namespace, n.TaskQueue, workerID,
		s.leaseDuration.Milliseconds(), n.WorkflowType, n.ExternalID, n.Version, n.Input, n.RetryPolicy, lease)
	if err = scanRun(row, &run, &leaseID, nil); err != nil || leaseID == nil {
		slot.Cancel()
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			s.releaseUncertain(domain.Lease{RunID: runID, LeaseID: lease})
		}
		return run, err == nil, err
	}
	slot.Deliver(startedTask(run.RunID, namespace, n, run.Attempt, *leaseID, *run.LeaseExpiresAt))
	return run, true, nil
}

// startedTask is the task of a run n handed off as it started: its first
// claim, so it has no history to load.
func startedTask(runID, namespace string, n domain.NewRun, attempt int, leaseID string, expires time.Time) domain.Task {
	return domain.Task{RunID: runID, Namespace: namespace, TaskQueue: n.TaskQueue, WorkflowType: n.WorkflowType,
		Version: n.Version, Input: n.Input, Attempt: attempt, LeaseID: leaseID, LeaseExpiresAt: expires.UTC(), Fresh: true}
}

// startOnce inserts the run once; a run available now goes to a claim
// parked for it, if there is one once a connection is at hand (so that
// the claim is not held back while the pool is busy). It returns
// pgx.ErrNoRows when a live run holds the external ID.
func (s *Store) startOnce(ctx context.Context, namespace string, n domain.NewRun) (run domain.Run, created bool, err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return run, false, err
	}
	defer conn.Release()
	if s.handoff != nil && n.StartAt == nil && n.StartDelay <= 0 {
		if slot, ok := s.handoff.Offer(namespace, n.TaskQueue, n.WorkflowType); ok {
			return s.startHandedOff(ctx, conn, namespace, n, slot)
		}
	}
	row := conn.QueryRow(ctx, startRunSQL, newID(), namespace, n.TaskQueue, n.WorkflowType,
		n.ExternalID, n.Version, n.Input, n.RetryPolicy, n.StartAt, n.StartDelay.Milliseconds())
	err = scanRun(row, &run, nil)
	return run, err == nil, err
}

// newLeaseID returns a fresh lease ID, random as gen_random_uuid's: it is
// chosen here when the caller must know it even if the statement's
// outcome is unknown.
func newLeaseID() string { return uuid.NewString() }

// releaseUncertain puts back runs a hand-off may have claimed by a
// statement whose outcome is unknown (its answer was lost, or its context
// ended while it ran): their claim was given back to waiting, so a run
// committed under one of these leases would sit running, held by nobody,
// until the lease expired. A lease that was never committed matches
// nothing.
func (s *Store) releaseUncertain(leases ...domain.Lease) {
	if len(leases) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = s.ReleaseRuns(ctx, leases) // failing too, the lease expires and the rescuer puts it back
}

// StartResult is the outcome of one item of a batch start.
type StartResult = domain.StartResult

// startBatchSQL inserts a batch's runs. An item with handoff set is
// available now and has a claim parked for it on this replica, of worker
// worker_id (NULL: a claim that names none): it is created claimed for that
// claim when handoffClaimSQL's conditions hold, each item on its own queue.
const startBatchSQL = `
WITH b AS (
	SELECT * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
		$9::timestamptz[], $10::bigint[], $11::bool[], $12::uuid[], $14::uuid[])
		AS b(run_id, task_queue, workflow_type, external_id, version, input, retry_policy, start_at, delay_ms,
			handoff, worker_id, lease_id)
), claimants AS MATERIALIZED (
	SELECT worker_id, task_queue FROM workers
	WHERE namespace = $1 AND worker_id IN (SELECT worker_id FROM b WHERE handoff) AND status = 'online'
	FOR SHARE SKIP LOCKED -- as in handoffClaimSQL
), items AS (
	SELECT b.*, b.handoff
		AND (b.worker_id IS NULL
			OR EXISTS (SELECT FROM claimants c WHERE c.worker_id = b.worker_id AND c.task_queue = b.task_queue))
		AND NOT EXISTS (SELECT FROM task_queues tq WHERE tq.namespace = $1 AND tq.name = b.task_queue
			AND (tq.paused OR tq.max_concurrent IS NOT NULL OR tq.workflow_type_limits <> '{}')) AS ok
	FROM b
)
INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, external_id, version,
	status, input, retry_policy, available_at, attempt, new_attempt, lease_id, lease_expires_at, worker_id, started_at)
SELECT run_id, $1, task_queue, workflow_type, external_id, version, CASE WHEN ok THEN 'running' ELSE 'pending' END,
	input::json, retry_policy::jsonb, COALESCE(start_at, now() + delay_ms * interval '1 millisecond'),
	ok::int, NOT ok, CASE WHEN ok THEN lease_id END,
	CASE WHEN ok THEN now() + $13 * interval '1 millisecond' END,
	CASE WHEN ok THEN worker_id END, CASE WHEN ok THEN now() END
FROM items
ON CONFLICT (namespace, external_id)
	WHERE external_id IS NOT NULL AND status IN ('pending', 'sleeping', 'running')
	DO NOTHING
RETURNING run_id, attempt, lease_id, lease_expires_at`

const notifyQueuesSQL = `
SELECT pg_notify('` + Channel + `', 'q:' || $1 || '/' || q) FROM unnest($2::text[]) AS q`

const liveRunsByExternalIDSQL = `
SELECT external_id, run_id, status FROM workflow_runs
WHERE namespace = $1 AND external_id = ANY($2) AND status IN ('pending', 'sleeping', 'running')`

// StartRuns creates the runs of a batch in one transaction: all or none.
// Items whose external ID is held by a live run (or by an earlier item of
// the batch) are not created and report that run. Results are in request
// order, and each queue is notified once.
func (s *Store) StartRuns(ctx context.Context, namespace string, items []domain.NewRun) ([]domain.StartResult, error) {
	n := len(items)
	ids := make([]string, n)
	queues, types := make([]string, n), make([]string, n)
	externalIDs, versions := make([]*string, n), make([]*string, n)
	inputs, policies := make([]string, n), make([]string, n)
	startAts, delays := make([]*time.Time, n), make([]int64, n)
	distinctQueues := map[string]bool{}
	var queueList []string
	for i, it := range items {
		ids[i] = newID()
		queues[i], types[i] = it.TaskQueue, it.WorkflowType
		externalIDs[i], versions[i] = it.ExternalID, it.Version
		inputs[i] = string(it.Input)
		p, err := json.Marshal(it.RetryPolicy)
		if err != nil {
			return nil, fmt.Errorf("encode retry policy: %w", err)
		}
		policies[i] = string(p)
		startAts[i], delays[i] = it.StartAt, it.StartDelay.Milliseconds()
		if !distinctQueues[it.TaskQueue] {
			distinctQueues[it.TaskQueue] = true
			queueList = append(queueList, it.TaskQueue)
		}
	}

	// Items available now go to claims parked on this replica, if any,
	// in batch order: offered once the transaction has its connection.
	slots := make([]domain.HandoffSlot, n)
	handoff, workers, leases := make([]bool, n), make([]*string, n), make([]*string, n)
	offer := func() {
		if s.handoff == nil {
			return
		}
		for i, it := range items {
			if it.StartAt != nil || it.StartDelay > 0 {
				continue
			}
			if slot, ok := s.handoff.Offer(namespace, it.TaskQueue, it.WorkflowType); ok {
				lease := newLeaseID()
				slots[i], handoff[i], leases[i] = slot, true, &lease
				if id := slot.WorkerID(); id != "" {
					workers[i] = &id
				}
			}
		}
	}
	type claimed struct {
		attempt int
		leaseID *string
		expires *time.Time
	}
	var inserted map[string]claimed
	results := make([]domain.StartResult, n)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		offer()
		rows, err := tx.Query(ctx, startBatchSQL, namespace, ids, queues, types, externalIDs,
			versions, inputs, policies, startAts, delays, handoff, workers, s.leaseDuration.Milliseconds(), leases)
		if err != nil {
			return err
		}
		inserted = map[string]claimed{}
		var id string
		var c claimed
		if _, err := pgx.ForEachRow(rows, []any{&id, &c.attempt, &c.leaseID, &c.expires}, func() error {
			inserted[id] = c
			return nil
		}); err != nil {
			return err
		}
		var conflicted []string
		var notify []string // the queues of runs created pending
		for i := range items {
			c, ok := inserted[ids[i]]
			switch {
			case !ok:
				conflicted = append(conflicted, *externalIDs[i])
			case c.leaseID != nil:
				results[i] = domain.StartResult{RunID: ids[i], Status: domain.RunRunning}
			default:
				results[i] = domain.StartResult{RunID: ids[i], Status: domain.RunPending}
				if !slices.Contains(notify, queues[i]) {
					notify = append(notify, queues[i])
				}
			}
		}
		if len(conflicted) > 0 {
			rows, err := tx.Query(ctx, liveRunsByExternalIDSQL, namespace, conflicted)
			if err != nil {
				return err
			}
			live := map[string]domain.StartResult{}
			var ext string
			var res domain.StartResult
			_, err = pgx.ForEachRow(rows, []any{&ext, &res.RunID, &res.Status}, func() error {
				live[ext] = domain.StartResult{RunID: res.RunID, Status: res.Status, AlreadyExists: true}
				return nil
			})
			if err != nil {
				return err
			}
			for i := range items {
				if _, ok := inserted[ids[i]]; ok {
					continue
				}
				res, ok := live[*externalIDs[i]]
				if !ok {
					// Held by a run that finished after our insert saw it:
					// a rare race, and retrying the batch resolves it.
					return fmt.Errorf("%w: external_id %q changed hands during the batch; retry", domain.ErrConflict, *externalIDs[i])
				}
				results[i] = res
			}
		}
		if len(notify) > 0 {
			_, err = tx.Exec(ctx, notifyQueuesSQL, namespace, notify)
		}
		return err
	})
	var uncertain []domain.Lease
	for i, slot := range slots {
		if slot == nil {
			continue
		}
		c := inserted[ids[i]]
		if err != nil || c.leaseID == nil {
			slot.Cancel()
			if err != nil {
				uncertain = append(uncertain, domain.Lease{RunID: ids[i], LeaseID: *leases[i]})
			}
			continue
		}
		slot.Deliver(startedTask(ids[i], namespace, items[i], c.attempt, *c.leaseID, *c.expires))
	}
	if err != nil {
		s.releaseUncertain(uncertain...) // the commit may have happened
		return nil, fmt.Errorf("start batch: %w", translate(err))
	}
	return results, nil
}

const getRunSQL = `SELECT ` + runColumnsWithPayload + ` FROM workflow_runs WHERE namespace = $1 AND run_id = $2`

// GetRun returns a run with its input and output.
func (s *Store) GetRun(ctx context.Context, namespace, runID string) (domain.Run, error) {
	var run domain.Run
	if err := scanRun(s.pool.QueryRow(ctx, getRunSQL, namespace, runID), &run, withPayload(&run)...); err != nil {
		return run, fmt.Errorf("get run %s: %w", runID, notFound(translate(err), "run %s not found", runID))
	}
	fillPayload(&run)
	return run, nil
}

// ListRuns returns a page of runs, newest first, and the key after which
// the next page starts ("" on the last page).
func (s *Store) ListRuns(ctx context.Context, f domain.RunFilter) ([]domain.Run, string, error) {
	sql, args := listRunsQuery(f)
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, "", fmt.Errorf("list runs: %w", translate(err))
	}
	runs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.Run, error) {
		var r domain.Run
		return r, scanRun(row, &r)
	})
	if err != nil {
		return nil, "", fmt.Errorf("list runs: %w", translate(err))
	}
	return nextPage(runs, f.Page.Limit, func(r domain.Run) string { return r.RunID })
}

// listRunsQuery returns the statement for one page of runs matching f.
func listRunsQuery(f domain.RunFilter) (string, []any) {
	q := newListQuery(f.Namespace)
	if len(f.Statuses) > 0 {
		var statuses []string
		for _, st := range f.Statuses {
			if !slices.Contains(statuses, string(st)) {
				statuses = append(statuses, string(st))
			}
		}
		q.addOneOf("status", statuses)
	}
	if f.TaskQueue != "" {
		q.add("task_queue = ?", f.TaskQueue)
	}
	if f.WorkflowType != "" {
		q.add("workflow_type = ?", f.WorkflowType)
	}
	if f.ExternalID != "" {
		q.add("external_id = ?", f.ExternalID)
	}
	if f.ScheduleID != "" {
		q.add("schedule_id = ?", f.ScheduleID)
	}
	return q.sql(runColumns, "workflow_runs", "run_id", f.Page.After, f.Page.Limit)
}

// nextPage trims the extra row a list query fetched to learn whether
// another page follows, and returns the key the next page starts after.
func nextPage[T any](items []T, limit int, key func(T) string) ([]T, string, error) {
	if len(items) <= limit {
		return items, "", nil
	}
	items = items[:limit]
	return items, key(items[limit-1]), nil
}

const cancelRunSQL = `
WITH c AS (
	UPDATE workflow_runs
	SET status = 'cancelled', finished_at = now(), lease_id = NULL, lease_expires_at = NULL
	WHERE namespace = $1 AND run_id = $2 AND status IN ('pending', 'sleeping', 'running')
	RETURNING ` + runColumnsWithPayload + `
), s AS (
	UPDATE workflow_steps st SET status = 'failed', finished_at = now(), error = $3
	FROM c WHERE st.run_id = c.run_id AND st.status = 'running'
)
SELECT c.*, pg_notify('` + Channel + `', ` + finishedPayload + `) FROM c`

var cancelledStepError = runEndedStepError("was cancelled")

// CancelRun cancels a live run, closing the step attempts it leaves
// running. Cancelling a cancelled run returns it as it is; a completed or
// failed run is a conflict.
func (s *Store) CancelRun(ctx context.Context, namespace, runID string) (domain.Run, error) {
	var run domain.Run
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		err := scanRun(tx.QueryRow(ctx, cancelRunSQL, namespace, runID, cancelledStepError), &run, &run.Input, &run.Output, nil)
		if err != nil {
			return err
		}
		return endChildren(ctx, tx, []string{runID})
	})
	if err == nil {
		fillPayload(&run)
		return run, nil
	}
	if err != pgx.ErrNoRows {
		return run, fmt.Errorf("cancel run %s: %w", runID, translate(err))
	}
	run, err = s.GetRun(ctx, namespace, runID)
	switch {
	case err != nil:
		return run, err
	case run.Status == domain.RunCancelled:
		return run, nil
	default:
		return run, domain.Errorf(domain.CodeConflict, "run %s is %s and cannot be cancelled", runID, run.Status)
	}
}

// deleteFinishedSQL deletes one small batch of runs that finished before
// the cutoff, with their steps (ON DELETE CASCADE). SKIP LOCKED keeps
// replicas from waiting on each other, and the small batch keeps each
// transaction's locks short.
const deleteFinishedSQL = `
DELETE FROM workflow_runs WHERE run_id IN (
	SELECT run_id FROM workflow_runs
	WHERE status IN ('completed', 'failed', 'cancelled')
		AND finished_at < now() - $1 * interval '1 millisecond'
	ORDER BY finished_at
	LIMIT $2
	FOR UPDATE SKIP LOCKED
)`

// DeleteFinishedRuns deletes up to limit runs (with their steps and
// payloads) that finished longer than retention ago, and returns how many.
func (s *Store) DeleteFinishedRuns(ctx context.Context, retention time.Duration, limit int) (int64, error) {
	tag, err := s.pool.Exec(ctx, deleteFinishedSQL, retention.Milliseconds(), limit)
	if err != nil {
		return 0, fmt.Errorf("delete finished runs: %w", translate(err))
	}
	return tag.RowsAffected(), nil
}
