package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kagzi/kagzi/domain"
)

// claimSQL claims, in one statement, up to $4 claimable runs of a queue,
// oldest available_at first, skipping rows other claims hold, and gives the
// n-th of them to slot n of $5 (a worker ID or NULL per slot). The order is
// exactly the claim index's columns, so the planner walks that index even
// right after a bulk enqueue. A claim starts a new attempt only when the
// previous one failed or its lease expired (new_attempt).
const claimSQL = `
WITH picked AS (
	SELECT run_id, row_number() OVER (ORDER BY available_at, run_id) AS slot
	FROM (
		SELECT run_id, available_at FROM workflow_runs
		WHERE namespace = $1 AND task_queue = $2
			AND status IN ('pending', 'sleeping') AND available_at <= now()
			AND (cardinality($3::text[]) = 0 OR workflow_type = ANY($3))
		ORDER BY available_at, run_id
		LIMIT $4
		FOR UPDATE SKIP LOCKED
	) c
), slots AS (
	SELECT worker_id, slot FROM unnest($5::uuid[]) WITH ORDINALITY AS s(worker_id, slot)
)
UPDATE workflow_runs r SET
	status = 'running',
	attempt = r.attempt + r.new_attempt::int,
	new_attempt = false,
	lease_id = gen_random_uuid(),
	lease_expires_at = now() + $6 * interval '1 millisecond',
	worker_id = slots.worker_id,
	started_at = COALESCE(r.started_at, now())
FROM picked JOIN slots USING (slot)
WHERE r.run_id = picked.run_id
RETURNING picked.slot, r.run_id, r.workflow_type, r.version, r.input, r.attempt, r.lease_id,
	r.lease_expires_at`

// ClaimRuns claims runs for a batch of waiting slots; see distributor.Store.
func (s *Store) ClaimRuns(ctx context.Context, namespace, queue string, types []string, slots []string) ([]domain.SlotTask, error) {
	workerIDs := make([]*string, len(slots))
	for i := range slots {
		if slots[i] != "" {
			workerIDs[i] = &slots[i]
		}
	}
	if types == nil {
		types = []string{}
	}
	rows, err := s.pool.Query(ctx, claimSQL, namespace, queue, types, len(slots), workerIDs, s.leaseDuration.Milliseconds())
	if err != nil {
		return nil, fmt.Errorf("claim %s/%s: %w", namespace, queue, translate(err))
	}
	tasks, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.SlotTask, error) {
		st := domain.SlotTask{Task: domain.Task{Namespace: namespace, TaskQueue: queue}}
		t := &st.Task
		err := row.Scan(&st.Slot, &t.RunID, &t.WorkflowType, &t.Version, &t.Input, &t.Attempt,
			&t.LeaseID, &t.LeaseExpiresAt)
		st.Slot-- // ordinality counts from 1
		utc(&t.LeaseExpiresAt)
		return st, err
	})
	if err != nil {
		return nil, fmt.Errorf("claim %s/%s: %w", namespace, queue, translate(err))
	}
	return tasks, nil
}

// releaseSQL puts runs back to pending under the leases named, keeping the
// attempt (the next claim continues it), marks their unfinished step
// attempts failed, and notifies their queues so another waiter takes them.
const releaseSQL = `
WITH released AS (
	UPDATE workflow_runs r SET status = 'pending', lease_id = NULL, lease_expires_at = NULL,
		worker_id = NULL, new_attempt = false, available_at = LEAST(r.available_at, now())
	FROM unnest($1::uuid[], $2::uuid[]) AS l(run_id, lease_id)
	WHERE r.run_id = l.run_id AND r.lease_id = l.lease_id AND r.status = 'running'
	RETURNING r.run_id, r.namespace, r.task_queue
), steps AS (
	UPDATE workflow_steps st SET status = 'failed', finished_at = now(), error = $3
	FROM released WHERE st.run_id = released.run_id AND st.status = 'running'
)
SELECT pg_notify('` + Channel + `', k) FROM (SELECT DISTINCT 'q:' || namespace || '/' || task_queue AS k FROM released) q`

// ReleaseRuns puts claimed runs back; see distributor.Store.
func (s *Store) ReleaseRuns(ctx context.Context, leases []domain.Lease) error {
	runIDs, leaseIDs := make([]string, len(leases)), make([]string, len(leases))
	for i, l := range leases {
		runIDs[i], leaseIDs[i] = l.RunID, l.LeaseID
	}
	if _, err := s.pool.Exec(ctx, releaseSQL, runIDs, leaseIDs, releasedStepError); err != nil {
		return fmt.Errorf("release %d runs: %w", len(leases), translate(err))
	}
	return nil
}

var releasedStepError = func() *domain.ErrorInfo {
	t := "released"
	return &domain.ErrorInfo{Message: "the run was released before this step finished", Type: &t}
}()

const nextAvailableSQL = `
SELECT EXTRACT(EPOCH FROM min(available_at) - now()) * 1000 FROM workflow_runs
WHERE namespace = $1 AND task_queue = $2 AND status IN ('pending', 'sleeping') AND available_at > now()`

// NextAvailableIn says when the queue next has work; see distributor.Store.
func (s *Store) NextAvailableIn(ctx context.Context, namespace, queue string) (time.Duration, bool, error) {
	var ms *float64
	if err := s.pool.QueryRow(ctx, nextAvailableSQL, namespace, queue).Scan(&ms); err != nil {
		return 0, false, fmt.Errorf("next available in %s/%s: %w", namespace, queue, translate(err))
	}
	if ms == nil {
		return 0, false, nil
	}
	return time.Duration(*ms * float64(time.Millisecond)), true, nil
}

const queueDepthsSQL = `
SELECT namespace, task_queue, status, count(*) FROM workflow_runs
WHERE status IN ('pending', 'sleeping', 'running')
GROUP BY namespace, task_queue, status`

// QueueDepths counts live runs by queue and status.
func (s *Store) QueueDepths(ctx context.Context) ([]domain.QueueDepth, error) {
	rows, err := s.pool.Query(ctx, queueDepthsSQL)
	if err != nil {
		return nil, fmt.Errorf("queue depths: %w", translate(err))
	}
	depths, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.QueueDepth, error) {
		var d domain.QueueDepth
		return d, row.Scan(&d.Namespace, &d.TaskQueue, &d.Status, &d.Count)
	})
	if err != nil {
		return nil, fmt.Errorf("queue depths: %w", translate(err))
	}
	return depths, nil
}
