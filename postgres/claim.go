package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kagzi/kagzi/domain"
)

// claimSQL claims, in one statement, up to $4 claimable runs of a queue,
// oldest available_at first, skipping rows other claims hold, and gives the
// n-th of them to slot n of $5 (a worker ID or NULL per slot). The order is
// exactly the claim index's columns, so the planner walks that index even
// right after a bulk enqueue. It claims nothing on a queue that is paused
// or has limits: those take claimLimitedSQL.
const claimSQL = `
WITH picked AS (
	SELECT run_id, row_number() OVER (ORDER BY available_at, run_id) AS slot
	FROM (
		SELECT run_id, available_at FROM workflow_runs
		WHERE namespace = $1 AND task_queue = $2
			AND status IN ('pending', 'sleeping') AND available_at <= now()
			AND (cardinality($3::text[]) = 0 OR workflow_type = ANY($3))
			AND NOT EXISTS (SELECT FROM task_queues tq WHERE tq.namespace = $1 AND tq.name = $2
				AND (tq.paused OR tq.max_concurrent IS NOT NULL OR tq.workflow_type_limits <> '{}'))
		ORDER BY available_at, run_id
		LIMIT $4
		FOR UPDATE SKIP LOCKED
	) c
)` + claimUpdateSQL

// claimLimitedSQL is claimSQL for a queue with limits, run under the
// queue's advisory lock once the allowance is known: at most $4 runs, none
// of a type in $7 (blocked or limited), plus up to $9[i] runs of each
// limited type $8[i]. Each part is an index walk that stops at its own
// limit, so a backlog costs no more than on an unlimited queue.
const claimLimitedSQL = `
WITH candidates AS (
	(SELECT run_id, available_at FROM workflow_runs
	WHERE namespace = $1 AND task_queue = $2
		AND status IN ('pending', 'sleeping') AND available_at <= now()
		AND (cardinality($3::text[]) = 0 OR workflow_type = ANY($3))
		AND workflow_type <> ALL($7::text[])
	ORDER BY available_at, run_id
	LIMIT $4)
	UNION ALL
	SELECT c.run_id, c.available_at
	FROM unnest($8::text[], $9::int[]) AS t(workflow_type, n),
	LATERAL (
		SELECT run_id, available_at FROM workflow_runs
		WHERE namespace = $1 AND task_queue = $2
			AND status IN ('pending', 'sleeping') AND available_at <= now()
			AND workflow_type = t.workflow_type
			AND (cardinality($3::text[]) = 0 OR workflow_type = ANY($3))
		ORDER BY available_at, run_id
		LIMIT t.n
	) c
), allowed AS MATERIALIZED (
	SELECT run_id FROM candidates ORDER BY available_at, run_id LIMIT $4
), locked AS (
	-- One primary-key lookup per allowed run, the status checked on the
	-- locked row: with a join, "IN (...)" or the status in the lookup, and
	-- statistics from before a bulk enqueue, the planner walked the whole
	-- backlog, once per allowed run.
	SELECT w.run_id, w.available_at FROM allowed, LATERAL (
		SELECT run_id, available_at, status FROM workflow_runs
		WHERE run_id = allowed.run_id
		OFFSET 0 -- keeps the status test below out of this lookup
		FOR UPDATE SKIP LOCKED
	) w
	WHERE w.status IN ('pending', 'sleeping')
), picked AS (
	SELECT run_id, row_number() OVER (ORDER BY available_at, run_id) AS slot FROM locked
)` + claimUpdateSQL

// claimUpdateSQL marks the picked runs running under fresh leases. A claim
// starts a new attempt only when the previous one failed or its lease
// expired (new_attempt).
const claimUpdateSQL = `, slots AS (
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

// ClaimRuns claims runs for a batch of waiting slots; see
// distributor.Store. Slots of workers that may not claim (draining,
// offline, unknown) are refused and get nothing; the result also says when
// the queue's settings held the claim back, so that the distributor knows
// a finishing run may let it claim again.
func (s *Store) ClaimRuns(ctx context.Context, namespace, queue string, types []string, slots []string) (domain.ClaimResult, error) {
	var res domain.ClaimResult
	refused, err := s.refusedWorkers(ctx, namespace, queue, slots)
	if err != nil {
		return res, fmt.Errorf("claim %s/%s: %w", namespace, queue, translate(err))
	}
	res.Refused = refused
	var workerIDs []*string
	var origin []int // origin[i] is the caller's index of compacted slot i
	for i := range slots {
		if slots[i] == "" {
			workerIDs, origin = append(workerIDs, nil), append(origin, i)
		} else if refused[slots[i]] == nil {
			workerIDs, origin = append(workerIDs, &slots[i]), append(origin, i)
		}
	}
	if len(workerIDs) == 0 {
		return res, nil
	}
	if types == nil {
		types = []string{}
	}
	res.Tasks, err = collectClaimed(s.pool.Query(ctx, claimSQL, namespace, queue, types, len(workerIDs), workerIDs,
		s.leaseDuration.Milliseconds()))
	if err == nil && len(res.Tasks) == 0 {
		// Empty, or held back by settings: only then is the second look paid.
		if _, res.Limited, err = s.queueLimits(ctx, s.pool, namespace, queue); err == nil && res.Limited {
			res.Tasks, err = s.claimLimited(ctx, namespace, queue, types, workerIDs)
		}
	}
	if err != nil {
		return domain.ClaimResult{}, fmt.Errorf("claim %s/%s: %w", namespace, queue, translate(err))
	}
	for i := range res.Tasks {
		t := &res.Tasks[i]
		t.Slot = origin[t.Slot]
		t.Task.Namespace, t.Task.TaskQueue = namespace, queue
	}
	return res, nil
}

const claimantsSQL = `SELECT worker_id::text, status, task_queue FROM workers WHERE namespace = $1 AND worker_id = ANY($2)`

// refusedWorkers checks the workers the slots name, and returns why each
// that may not claim from queue now may not.
func (s *Store) refusedWorkers(ctx context.Context, namespace, queue string, slots []string) (map[string]error, error) {
	var ids []string
	seen := map[string]bool{}
	for _, id := range slots {
		if id != "" && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, claimantsSQL, namespace, ids)
	if err != nil {
		return nil, err
	}
	found := map[string]bool{}
	refused := map[string]error{}
	var id, workerQueue string
	var status domain.WorkerStatus
	_, err = pgx.ForEachRow(rows, []any{&id, &status, &workerQueue}, func() error {
		found[id] = true
		if err := claimantError(id, status, workerQueue, queue); err != nil {
			refused[id] = err
		}
		return nil
	})
	for _, id := range ids {
		if !found[id] {
			refused[id] = domain.Errorf(domain.CodeNotFound, "worker %s is not registered in namespace %s", id, namespace)
		}
	}
	return refused, err
}

func collectClaimed(rows pgx.Rows, err error) ([]domain.SlotTask, error) {
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.SlotTask, error) {
		var st domain.SlotTask
		t := &st.Task
		err := row.Scan(&st.Slot, &t.RunID, &t.WorkflowType, &t.Version, &t.Input, &t.Attempt,
			&t.LeaseID, &t.LeaseExpiresAt)
		st.Slot-- // ordinality counts from 1
		utc(&t.LeaseExpiresAt)
		return st, err
	})
}

const queueLockSQL = `SELECT pg_advisory_xact_lock(hashtextextended('kagzi.queue:' || $1 || '/' || $2, 0))`

const runningByTypeSQL = `
SELECT workflow_type, count(*) FROM workflow_runs
WHERE namespace = $1 AND task_queue = $2 AND status = 'running'
GROUP BY workflow_type`

// claimLimited claims on a queue with settings. Claims of the queue take
// its advisory lock, so that counting its running runs and claiming more
// cannot interleave across replicas; counting afresh each time means every
// path that ends a lease gives its slot back with no bookkeeping.
func (s *Store) claimLimited(ctx context.Context, namespace, queue string, types []string, workerIDs []*string) (tasks []domain.SlotTask, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, queueLockSQL, namespace, queue); err != nil {
			return err
		}
		// A generic plan of claimLimitedSQL knows neither its limits nor
		// how few rows it locks, and may scan the whole table for it.
		if _, err := tx.Exec(ctx, "SET LOCAL plan_cache_mode = force_custom_plan"); err != nil {
			return err
		}
		limits, _, err := s.queueLimits(ctx, tx, namespace, queue)
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, runningByTypeSQL, namespace, queue)
		if err != nil {
			return err
		}
		running := map[string]int{}
		var typ string
		var n int
		if _, err := pgx.ForEachRow(rows, []any{&typ, &n}, func() error { running[typ] = n; return nil }); err != nil {
			return err
		}
		allow := limits.Allow(running)
		limit := len(workerIDs)
		if allow.Total >= 0 {
			limit = min(limit, allow.Total)
		}
		if limit == 0 {
			return nil
		}
		excluded := append([]string{}, allow.Blocked...)
		var limitedTypes []string
		var left []int
		for t, n := range allow.PerType {
			excluded = append(excluded, t)
			limitedTypes, left = append(limitedTypes, t), append(left, n)
		}
		tasks, err = collectClaimed(tx.Query(ctx, claimLimitedSQL, namespace, queue, types, limit,
			workerIDs, s.leaseDuration.Milliseconds(), excluded, limitedTypes, left))
		return err
	})
	return tasks, err
}

const queueLimitsSQL = `
SELECT paused, max_concurrent, workflow_type_limits FROM task_queues WHERE namespace = $1 AND name = $2`

// queueLimits reads a queue's settings, and whether any of them limits
// claims.
func (s *Store) queueLimits(ctx context.Context, q querier, namespace, queue string) (l domain.QueueLimits, limited bool, err error) {
	err = q.QueryRow(ctx, queueLimitsSQL, namespace, queue).Scan(&l.Paused, &l.MaxConcurrent, &l.WorkflowTypeLimits)
	if errors.Is(err, pgx.ErrNoRows) {
		return l, false, nil
	}
	return l, l.Paused || l.MaxConcurrent != nil || len(l.WorkflowTypeLimits) > 0, err
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

// releasedType is the error type of a step attempt cut short by a release:
// its worker was stopped or its client left, so it counts as no attempt.
const releasedType = "released"

var releasedStepError = func() *domain.ErrorInfo {
	t := releasedType
	return &domain.ErrorInfo{Message: "the run was released before this step finished", Type: &t}
}()

const nextAvailableSQL = `
SELECT EXTRACT(EPOCH FROM min(available_at) - now()) * 1000 FROM workflow_runs
WHERE namespace = $1 AND task_queue = $2 AND status IN ('pending', 'sleeping')
	AND available_at > now() - $3 * interval '1 microsecond'`

// NextAvailableIn says when the queue next has work; see distributor.Store.
func (s *Store) NextAvailableIn(ctx context.Context, namespace, queue string, since time.Duration) (time.Duration, bool, error) {
	var ms *float64
	if err := s.pool.QueryRow(ctx, nextAvailableSQL, namespace, queue, since.Microseconds()).Scan(&ms); err != nil {
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
