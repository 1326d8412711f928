package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kagzi/kagzi/domain"
)

const workerColumns = `worker_id, namespace, task_queue, workflow_types, hostname, pid, version,
	max_concurrent, active_count, total_completed, total_failed, status, labels, registered_at,
	last_heartbeat_at`

func scanWorker(row pgx.Row, w *domain.Worker) error {
	err := row.Scan(&w.WorkerID, &w.Namespace, &w.TaskQueue, &w.WorkflowTypes, &w.Hostname, &w.PID,
		&w.Version, &w.MaxConcurrent, &w.ActiveCount, &w.TotalCompleted, &w.TotalFailed, &w.Status,
		&w.Labels, &w.RegisteredAt, &w.LastHeartbeatAt)
	utc(&w.RegisteredAt)
	utc(&w.LastHeartbeatAt)
	if w.WorkflowTypes == nil {
		w.WorkflowTypes = []string{}
	}
	if w.Labels == nil {
		w.Labels = map[string]string{}
	}
	return err
}

const registerWorkerSQL = `
INSERT INTO workers (worker_id, namespace, task_queue, workflow_types, hostname, pid, version,
	max_concurrent, labels)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING ` + workerColumns

// RegisterWorker records a new online worker.
func (s *Store) RegisterWorker(ctx context.Context, namespace string, w domain.Worker) (domain.Worker, error) {
	var out domain.Worker
	err := scanWorker(s.pool.QueryRow(ctx, registerWorkerSQL, newID(), namespace, w.TaskQueue,
		w.WorkflowTypes, w.Hostname, w.PID, w.Version, w.MaxConcurrent, w.Labels), &out)
	if err != nil {
		return out, fmt.Errorf("register worker: %w", translate(err))
	}
	return out, nil
}

const getWorkerSQL = `SELECT ` + workerColumns + ` FROM workers WHERE namespace = $1 AND worker_id = $2`

// GetWorker returns a worker.
func (s *Store) GetWorker(ctx context.Context, namespace, workerID string) (domain.Worker, error) {
	var w domain.Worker
	if err := scanWorker(s.pool.QueryRow(ctx, getWorkerSQL, namespace, workerID), &w); err != nil {
		return w, fmt.Errorf("get worker %s: %w", workerID, notFound(translate(err), "worker %s not found", workerID))
	}
	return w, nil
}

// ListWorkers returns a page of workers, newest first.
func (s *Store) ListWorkers(ctx context.Context, f domain.WorkerFilter) ([]domain.Worker, string, error) {
	q := newListQuery(f.Namespace)
	if f.TaskQueue != "" {
		q.add("task_queue = ?", f.TaskQueue)
	}
	if f.Status != "" {
		q.add("status = ?", string(f.Status))
	}
	sql, args := q.sql(workerColumns, "workers", "worker_id", f.Page.After, f.Page.Limit)
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, "", fmt.Errorf("list workers: %w", translate(err))
	}
	workers, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.Worker, error) {
		var w domain.Worker
		return w, scanWorker(row, &w)
	})
	if err != nil {
		return nil, "", fmt.Errorf("list workers: %w", translate(err))
	}
	return nextPage(workers, f.Page.Limit, func(w domain.Worker) string { return w.WorkerID })
}

const workerStateSQL = `SELECT status, task_queue FROM workers WHERE namespace = $1 AND worker_id = $2`

// CheckClaimant returns nil when the worker may claim from queue: it is
// registered on it and online.
func (s *Store) CheckClaimant(ctx context.Context, namespace, queue, workerID string) error {
	var status domain.WorkerStatus
	var workerQueue string
	err := s.pool.QueryRow(ctx, workerStateSQL, namespace, workerID).Scan(&status, &workerQueue)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return domain.Errorf(domain.CodeNotFound, "worker %s is not registered in namespace %s", workerID, namespace)
	case err != nil:
		return fmt.Errorf("check worker %s: %w", workerID, translate(err))
	}
	return claimantError(workerID, status, workerQueue, queue)
}

// claimantError says why a worker in status, registered on workerQueue,
// may not claim from queue; nil when it may.
func claimantError(workerID string, status domain.WorkerStatus, workerQueue, queue string) error {
	switch {
	case workerQueue != queue:
		return domain.Errorf(domain.CodeNotFound, "worker %s is registered on task queue %s, not %s", workerID, workerQueue, queue)
	case status == domain.WorkerDraining:
		return domain.Errorf(domain.CodeWorkerDraining, "worker %s is draining and gets no new work", workerID)
	case status == domain.WorkerOffline:
		return domain.Errorf(domain.CodeWorkerOffline, "worker %s is offline; register again", workerID)
	}
	return nil
}

// workerStateError says why a statement guarded by a worker's state
// touched no row.
func (s *Store) workerStateError(ctx context.Context, namespace, workerID string) error {
	var status domain.WorkerStatus
	var queue string
	err := s.pool.QueryRow(ctx, workerStateSQL, namespace, workerID).Scan(&status, &queue)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return domain.Errorf(domain.CodeNotFound, "worker %s not found", workerID)
	case err != nil:
		return translate(err)
	case status == domain.WorkerOffline:
		return domain.Errorf(domain.CodeWorkerOffline, "worker %s is offline; register again", workerID)
	}
	return domain.Errorf(domain.CodeConflict, "worker %s is %s", workerID, status)
}

// workerHeartbeatSQL extends the leases the worker holds, of the runs
// listed in $7 or, when $7 is NULL, of all of them. It locks those runs in
// run_id order, the order every statement that writes many runs locks
// them in, so that it cannot deadlock with a batch of completions. Every
// listed run it does not extend is returned, for cancelledRunsSQL to sort
// into lost and cancelled.
const workerHeartbeatSQL = `
WITH w AS (
	UPDATE workers SET last_heartbeat_at = now(), active_count = $3,
		-- The counters saturate rather than overflow.
		total_completed = total_completed + LEAST($4, 9223372036854775807 - total_completed),
		total_failed = total_failed + LEAST($5, 9223372036854775807 - total_failed)
	WHERE namespace = $1 AND worker_id = $2 AND status <> 'offline'
	RETURNING status
), held AS (
	SELECT run_id FROM workflow_runs
	WHERE worker_id = $2 AND namespace = $1 AND status = 'running' AND lease_expires_at > now()
		AND ($7::uuid[] IS NULL OR run_id = ANY ($7::uuid[]))
		AND EXISTS (SELECT FROM w)
	ORDER BY run_id
	FOR UPDATE
), l AS (
	UPDATE workflow_runs r SET lease_expires_at = now() + $6 * interval '1 millisecond'
	FROM held WHERE r.run_id = held.run_id
	RETURNING r.run_id, r.lease_expires_at
)
SELECT status, (SELECT max(lease_expires_at) FROM l),
	ARRAY(SELECT DISTINCT id::text FROM unnest($7::uuid[]) AS u(id)
		WHERE NOT EXISTS (SELECT FROM l WHERE l.run_id = u.id) ORDER BY 1)
FROM w`

// cancelledRunsSQL picks the cancelled runs out of those a heartbeat did
// not extend. It is a statement of its own, after the heartbeat: a cancel
// that commits while the heartbeat waits for a run's lock makes the
// heartbeat skip the run, but the heartbeat's own snapshot still shows it
// running.
const cancelledRunsSQL = `
SELECT run_id::text FROM workflow_runs
WHERE run_id = ANY ($2::uuid[]) AND namespace = $1 AND status = 'cancelled'
ORDER BY run_id`

// WorkerHeartbeat records a worker's heartbeat and extends the leases of
// the runs it lists that it holds (every run it holds when it lists none).
func (s *Store) WorkerHeartbeat(ctx context.Context, namespace, workerID string, hb domain.WorkerHeartbeat) (domain.HeartbeatResult, error) {
	var res domain.HeartbeatResult
	var listed []string // NULL: every run the worker holds
	if hb.RunIDs.Set {
		listed = append([]string{}, hb.RunIDs.IDs...)
	}
	err := s.pool.QueryRow(ctx, workerHeartbeatSQL, namespace, workerID, hb.ActiveCount,
		hb.CompletedDelta, hb.FailedDelta, s.leaseDuration.Milliseconds(), listed).
		Scan(&res.Status, &res.LeaseExpiresAt, &res.Lost)
	if errors.Is(err, pgx.ErrNoRows) {
		err = s.workerStateError(ctx, namespace, workerID)
	}
	if err == nil {
		res.Lost, res.Cancelled, err = s.sortUnextended(ctx, namespace, res.Lost)
	}
	if err != nil {
		return res, fmt.Errorf("worker heartbeat %s: %w", workerID, translate(err))
	}
	res.ShouldDrain = res.Status == domain.WorkerDraining
	res.LeaseExpiresAt = utcp(res.LeaseExpiresAt)
	return res, nil
}

// sortUnextended splits the runs a heartbeat did not extend into those
// cancelled and those lost; it costs a query only when there are any.
func (s *Store) sortUnextended(ctx context.Context, namespace string, unextended []string) (lost, cancelled []string, err error) {
	lost, cancelled = []string{}, []string{}
	if len(unextended) == 0 {
		return lost, cancelled, nil
	}
	rows, err := s.pool.Query(ctx, cancelledRunsSQL, namespace, unextended)
	if err != nil {
		return nil, nil, err
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, nil, err
	}
	cancelled = append(cancelled, found...)
	for _, id := range unextended {
		if !slices.Contains(cancelled, id) {
			lost = append(lost, id)
		}
	}
	return lost, cancelled, nil
}

const drainWorkerSQL = `
UPDATE workers SET status = 'draining' WHERE namespace = $1 AND worker_id = $2 AND status <> 'offline'
RETURNING ` + workerColumns

// DrainWorker stops giving a worker new work; its heartbeats say so.
func (s *Store) DrainWorker(ctx context.Context, namespace, workerID string) (domain.Worker, error) {
	var w domain.Worker
	err := scanWorker(s.pool.QueryRow(ctx, drainWorkerSQL, namespace, workerID), &w)
	if errors.Is(err, pgx.ErrNoRows) {
		err = s.workerStateError(ctx, namespace, workerID)
	}
	if err != nil {
		return w, fmt.Errorf("drain worker %s: %w", workerID, translate(err))
	}
	return w, nil
}

const deregisterWorkerSQL = `
UPDATE workers SET status = 'offline', active_count = 0 WHERE namespace = $1 AND worker_id = $2
RETURNING ` + workerColumns

const heldLeasesSQL = `
SELECT run_id, lease_id FROM workflow_runs WHERE worker_id = $1 AND status = 'running'`

// DeregisterWorker takes a worker offline and puts the runs it still holds
// back to pending at once, without consuming an attempt.
func (s *Store) DeregisterWorker(ctx context.Context, namespace, workerID string) (domain.Worker, error) {
	var w domain.Worker
	err := s.inTx(ctx, "deregister worker "+workerID, func(tx pgx.Tx) error {
		err := scanWorker(tx.QueryRow(ctx, deregisterWorkerSQL, namespace, workerID), &w)
		if errors.Is(err, pgx.ErrNoRows) {
			return domain.Errorf(domain.CodeNotFound, "worker %s not found", workerID)
		}
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, heldLeasesSQL, workerID)
		if err != nil {
			return err
		}
		var runIDs, leaseIDs []string
		var runID, leaseID string
		if _, err := pgx.ForEachRow(rows, []any{&runID, &leaseID}, func() error {
			runIDs, leaseIDs = append(runIDs, runID), append(leaseIDs, leaseID)
			return nil
		}); err != nil {
			return err
		}
		if len(runIDs) > 0 {
			_, err = tx.Exec(ctx, releaseSQL, runIDs, leaseIDs, releasedStepError)
		}
		return err
	})
	return w, err
}

// staleWorkersSQL reads workers_live_heartbeat_idx: only the workers not
// yet offline, not the table's history.
const staleWorkersSQL = `
UPDATE workers SET status = 'offline', active_count = 0
WHERE status <> 'offline' AND last_heartbeat_at < now() - $1 * interval '1 millisecond'`

// MarkStaleWorkersOffline takes offline the workers silent for longer than
// silence, and returns how many.
func (s *Store) MarkStaleWorkersOffline(ctx context.Context, silence time.Duration) (int64, error) {
	tag, err := s.pool.Exec(ctx, staleWorkersSQL, silence.Milliseconds())
	if err != nil {
		return 0, fmt.Errorf("mark stale workers offline: %w", translate(err))
	}
	return tag.RowsAffected(), nil
}

// deleteOfflineWorkersSQL deletes one batch of the workers offline since
// before the cutoff (by their last heartbeat), through
// workers_offline_idx. SKIP LOCKED keeps replicas from waiting on each
// other.
const deleteOfflineWorkersSQL = `
DELETE FROM workers WHERE worker_id IN (
	SELECT worker_id FROM workers
	WHERE status = 'offline' AND last_heartbeat_at < now() - $1 * interval '1 millisecond'
	ORDER BY last_heartbeat_at
	LIMIT $2
	FOR UPDATE SKIP LOCKED
)`

// DeleteOfflineWorkers deletes up to limit workers that are offline and
// last heartbeated longer than retention ago, and returns how many.
func (s *Store) DeleteOfflineWorkers(ctx context.Context, retention time.Duration, limit int) (int64, error) {
	tag, err := s.pool.Exec(ctx, deleteOfflineWorkersSQL, retention.Milliseconds(), limit)
	if err != nil {
		return 0, fmt.Errorf("delete offline workers: %w", translate(err))
	}
	return tag.RowsAffected(), nil
}
