package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kagzi/kagzi/domain"
)

// The claim statements share a head and a tail. Their parameters: $1 and
// $2 the namespace and queue, $3 the workflow types (empty: any), $4 how
// many runs to pick at most, $5 the slots (a worker ID or NULL each), $6
// the lease in milliseconds.
//
// claimHeadSQL checks the workers the slots name in the statement that
// claims for them, holding their rows FOR SHARE: a drain or delete that
// commits first is seen (the slot gets nothing), one that comes later
// waits for the claim. slots numbers the eligible slots 1, 2, ... in
// order; ord is a slot's place in $5.
const claimHeadSQL = `
WITH claimants AS MATERIALIZED (
	SELECT worker_id, status, task_queue FROM workers
	WHERE namespace = $1 AND worker_id = ANY($5::uuid[])
	FOR SHARE
), slots AS MATERIALIZED (
	SELECT s.worker_id, s.ord, row_number() OVER (ORDER BY s.ord) AS slot
	FROM unnest($5::uuid[]) WITH ORDINALITY AS s(worker_id, ord)
	WHERE s.worker_id IS NULL
		OR s.worker_id IN (SELECT worker_id FROM claimants WHERE status = 'online' AND task_queue = $2)
)`

// claimableSQL is what makes a run of queue $1/$2 claimable now; unlimited
// adds that the queue has no settings that hold claims back (those take
// claimLimitedSQL), and that some slot may claim.
const (
	claimableSQL = `namespace = $1 AND task_queue = $2
			AND status IN ('pending', 'sleeping') AND available_at <= now()`
	unlimitedSQL = `
			AND EXISTS (SELECT FROM slots)
			AND NOT EXISTS (SELECT FROM task_queues tq WHERE tq.namespace = $1 AND tq.name = $2
				AND (tq.paused OR tq.max_concurrent IS NOT NULL OR tq.workflow_type_limits <> '{}'))`
)

// claimAnySQL claims, for a claim of any type, up to $4 claimable runs,
// oldest available_at first, skipping rows other claims hold. The order is
// exactly the claim index's columns, so the planner walks that index even
// right after a bulk enqueue.
const claimAnySQL = claimHeadSQL + `, picked AS (
	SELECT run_id, row_number() OVER (ORDER BY available_at, run_id) AS slot
	FROM (
		SELECT run_id, available_at FROM workflow_runs
		WHERE ` + claimableSQL + ` AND cardinality($3::text[]) = 0` + unlimitedSQL + `
		ORDER BY available_at, run_id
		LIMIT $4
		FOR UPDATE SKIP LOCKED
	) c
)` + claimTailSQL

// claimTypedSQL is claimAnySQL for a claim of the types $3: it walks the
// type index once per type, so that another type's backlog costs nothing.
// A first look, without locks, finds how many of the $4 oldest runs each
// type has; then each type locks that many of its oldest runs, skipping
// rows other claims hold, and no more: a row locked and not claimed would
// make a concurrent claim come up short while that run waits.
const claimTypedSQL = claimHeadSQL + `, candidates AS (
	SELECT c.workflow_type, c.available_at, c.run_id
	FROM unnest($3::text[]) AS t(workflow_type), LATERAL (
		SELECT workflow_type, available_at, run_id FROM workflow_runs
		WHERE ` + claimableSQL + ` AND workflow_type = t.workflow_type` + unlimitedSQL + `
		ORDER BY available_at, run_id
		LIMIT $4
	) c
), shares AS (
	SELECT workflow_type, count(*) AS n
	FROM (SELECT workflow_type FROM candidates ORDER BY available_at, run_id LIMIT $4) oldest
	GROUP BY workflow_type
), picked AS (
	SELECT c.run_id, row_number() OVER (ORDER BY c.available_at, c.run_id) AS slot
	FROM shares, LATERAL (
		SELECT run_id, available_at FROM workflow_runs
		WHERE ` + claimableSQL + ` AND workflow_type = shares.workflow_type
		ORDER BY available_at, run_id
		LIMIT shares.n
		FOR UPDATE SKIP LOCKED
	) c
)` + claimTailSQL

// claimLimitedSQL is the claim for a queue with limits, run under the
// queue's advisory lock once the allowance is known: at most $4 runs. A
// claim of any type takes runs of no type in $7 (blocked or limited), plus
// up to $9[i] runs of each limited type $8[i]; a claim of the types $3
// takes up to $9[i] runs of each type $8[i] (Go lists the allowed ones).
// Each part is an index walk that stops at its own limit, so a backlog
// costs no more than on an unlimited queue.
const claimLimitedSQL = claimHeadSQL + `, candidates AS (
	(SELECT run_id, available_at FROM workflow_runs
	WHERE ` + claimableSQL + ` AND cardinality($3::text[]) = 0
		AND workflow_type <> ALL($7::text[])
	ORDER BY available_at, run_id
	LIMIT $4)
	UNION ALL
	SELECT c.run_id, c.available_at
	FROM unnest($8::text[], $9::int[]) AS t(workflow_type, n),
	LATERAL (
		SELECT run_id, available_at FROM workflow_runs
		WHERE ` + claimableSQL + ` AND workflow_type = t.workflow_type
		ORDER BY available_at, run_id
		LIMIT t.n
	) c
), allowed AS MATERIALIZED (
	SELECT run_id FROM candidates ORDER BY available_at, run_id LIMIT $4
), locked AS (
	-- One primary-key lookup per allowed run, the state checked on the
	-- locked row: with a join, "IN (...)" or the status in the lookup, and
	-- statistics from before a bulk enqueue, the planner walked the whole
	-- backlog, once per allowed run.
	SELECT w.run_id, w.available_at FROM allowed, LATERAL (
		SELECT run_id, available_at, status FROM workflow_runs
		WHERE run_id = allowed.run_id
		OFFSET 0 -- keeps the state test below out of this lookup
		FOR UPDATE SKIP LOCKED
	) w
	WHERE w.status IN ('pending', 'sleeping') AND w.available_at <= now()
		AND EXISTS (SELECT FROM slots)
), picked AS (
	SELECT run_id, row_number() OVER (ORDER BY available_at, run_id) AS slot FROM locked
)` + claimTailSQL

// claimTailSQL marks the picked runs running under fresh leases, the n-th
// for the n-th eligible slot, and answers them with the claimants' states.
// A run claimed for the first time (its start set now) is fresh: it has no
// history to load.
// A claim starts a new attempt only when the previous one failed or its
// lease expired (new_attempt). A run picked for a slot that turned out
// refused stays pending, but was locked meanwhile, so a concurrent claim
// may have skipped it: the queue is notified, and that claim looks again.
const claimTailSQL = `, claimed AS (
	UPDATE workflow_runs r SET
		status = 'running',
		attempt = r.attempt + r.new_attempt::int,
		new_attempt = false,
		waiting_for = NULL,
		lease_id = gen_random_uuid(),
		lease_expires_at = now() + $6 * interval '1 millisecond',
		worker_id = slots.worker_id,
		started_at = COALESCE(r.started_at, now())
	FROM picked JOIN slots USING (slot)
	WHERE r.run_id = picked.run_id
	RETURNING slots.ord, r.run_id, r.workflow_type, r.version, r.input, r.attempt, r.lease_id,
		r.lease_expires_at, r.started_at = now() AS fresh
), slept AS (
	-- The claim that follows a durable sleep's wake-up records the sleep
	-- step completed (only a run claimed before can have one).
	UPDATE workflow_steps st SET status = 'completed', finished_at = now()
	FROM claimed c
	WHERE NOT c.fresh AND st.run_id = c.run_id AND st.kind = 'sleep' AND st.status = 'running'
		AND st.wake_up_at <= now()
), dropped AS (
	SELECT pg_notify('` + Channel + `', 'q:' || $1 || '/' || $2)
	WHERE (SELECT count(*) FROM picked) > (SELECT count(*) FROM claimed)
)
SELECT ord, run_id, workflow_type, version, input, attempt, lease_id, lease_expires_at, fresh,
	NULL::uuid, NULL, NULL
FROM claimed
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, worker_id, status, task_queue FROM claimants
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM dropped`

// ClaimRuns claims runs for a batch of waiting slots; see
// distributor.Store. Slots of workers that may not claim (draining,
// offline, unknown) are refused, by the claim statement itself, and get
// nothing; the result also says when the queue's settings held the claim
// back, so that the distributor knows a finishing run may let it claim
// again.
func (s *Store) ClaimRuns(ctx context.Context, namespace, queue string, types []string, slots []string) (domain.ClaimResult, error) {
	types = distinctTypes(types)
	workerIDs := make([]*string, len(slots))
	for i := range slots {
		if slots[i] != "" {
			workerIDs[i] = &slots[i]
		}
	}
	sql := claimAnySQL
	if len(types) > 0 {
		sql = claimTypedSQL
	}
	// Planned afresh each time, with its parameters known (an unnamed
	// statement): a cached generic plan, made while the queue was small or
	// its statistics came from an empty table, sorted the whole backlog at
	// every claim instead of walking the claim index for $4 runs.
	res, err := runClaim(ctx, customPlan{s.pool}, sql, namespace, queue, slots, types, len(slots), workerIDs,
		s.leaseDuration.Milliseconds())
	eligible := 0 // the slots not known to be refused
	for _, id := range slots {
		if res.Refused[id] == nil {
			eligible++
		}
	}
	if err == nil && len(res.Tasks) == 0 {
		// Empty, or held back by settings: only then is the second look
		// paid, and the limited claim only when a slot may claim.
		if _, res.Limited, err = s.queueLimits(ctx, s.pool, namespace, queue); err == nil && res.Limited && eligible > 0 {
			var limited domain.ClaimResult
			limited, err = s.claimLimited(ctx, namespace, queue, types, slots, workerIDs)
			res.Tasks = limited.Tasks
			if limited.Refused != nil { // it looked at the workers again
				res.Refused = limited.Refused
			}
		}
	}
	if err != nil {
		return domain.ClaimResult{}, fmt.Errorf("claim %s/%s: %w", namespace, queue, translate(err))
	}
	for i := range res.Tasks {
		res.Tasks[i].Task.Namespace, res.Tasks[i].Task.TaskQueue = namespace, queue
	}
	return res, nil
}

// distinctTypes returns types sorted, without duplicates, and never nil.
func distinctTypes(types []string) []string {
	types = append([]string{}, types...)
	slices.Sort(types)
	return slices.Compact(types)
}

// claimRow is a row of a claim statement's answer: a task (ord set) or a
// claimant's state (worker_id set).
type claimRow struct {
	ord            *int
	task           domain.Task
	runID, typ     *string
	attempt        *int
	leaseID        *string
	leaseExpiresAt *time.Time
	fresh          *bool
	workerID       *string
	workerStatus   *domain.WorkerStatus
	workerQueue    *string
}

// claim runs a claim statement for slots and reads its answer: the tasks,
// each with the index of its slot, and why each refused worker may not
// claim.
func runClaim(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, sql, namespace, queue string, slots []string, args ...any) (domain.ClaimResult, error) {
	res := domain.ClaimResult{Refused: map[string]error{}}
	rows, err := q.Query(ctx, sql, append([]any{namespace, queue}, args...)...)
	if err != nil {
		return res, err
	}
	claimed, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (claimRow, error) {
		var r claimRow
		err := row.Scan(&r.ord, &r.runID, &r.typ, &r.task.Version, &r.task.Input, &r.attempt, &r.leaseID,
			&r.leaseExpiresAt, &r.fresh, &r.workerID, &r.workerStatus, &r.workerQueue)
		return r, err
	})
	if err != nil {
		return res, err
	}
	found := map[string]bool{}
	for _, r := range claimed {
		switch {
		case r.ord != nil:
			t := r.task
			t.RunID, t.WorkflowType, t.Attempt, t.LeaseID = *r.runID, *r.typ, *r.attempt, *r.leaseID
			t.LeaseExpiresAt, t.Fresh = *r.leaseExpiresAt, *r.fresh
			utc(&t.LeaseExpiresAt)
			res.Tasks = append(res.Tasks, domain.SlotTask{Slot: *r.ord - 1, Task: t}) // ordinality counts from 1
		case r.workerID != nil:
			found[*r.workerID] = true
			if err := claimantError(*r.workerID, *r.workerStatus, *r.workerQueue, queue); err != nil {
				res.Refused[*r.workerID] = err
			}
		}
	}
	// In slot order, which is the runs' order: RETURNING keeps none.
	slices.SortFunc(res.Tasks, func(a, b domain.SlotTask) int { return a.Slot - b.Slot })
	for _, id := range slots {
		if id != "" && !found[id] {
			res.Refused[id] = domain.Errorf(domain.CodeNotFound, "worker %s is not registered in namespace %s", id, namespace)
		}
	}
	return res, nil
}

// customPlan runs queries as unnamed statements, which PostgreSQL plans
// for the parameters of each execution, never with a cached generic plan.
type customPlan struct{ pool *pgxpool.Pool }

func (c customPlan) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return c.pool.Query(ctx, sql, append([]any{pgx.QueryExecModeCacheDescribe}, args...)...)
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
func (s *Store) claimLimited(ctx context.Context, namespace, queue string, types, slots []string, workerIDs []*string) (res domain.ClaimResult, err error) {
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
		limit := len(slots)
		if allow.Total >= 0 {
			limit = min(limit, allow.Total)
		}
		if limit == 0 {
			return nil
		}
		// A claim of any type walks the queue past the blocked and limited
		// types, and each limited type apart; a claim of some types walks
		// each of them apart, as far as it may take.
		excluded, walked, left := []string{}, []string{}, []int{} // never NULL in SQL
		if len(types) == 0 {
			excluded = append(excluded, allow.Blocked...)
			for t, n := range allow.PerType {
				excluded = append(excluded, t)
				walked, left = append(walked, t), append(left, n)
			}
		} else {
			for _, t := range types {
				if n, ok := allow.PerType[t]; ok {
					walked, left = append(walked, t), append(left, min(n, limit))
				} else if !slices.Contains(allow.Blocked, t) {
					walked, left = append(walked, t), append(left, limit)
				}
			}
		}
		res, err = runClaim(ctx, tx, claimLimitedSQL, namespace, queue, slots, types, limit, workerIDs,
			s.leaseDuration.Milliseconds(), excluded, walked, left)
		return err
	})
	return res, err
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

// nextAvailableSQL finds the next time a run of the queue, of the types
// $4 (empty: any), becomes claimable, on the claim indexes: a claim for
// some types never waits on another type's timers.
const nextAvailableSQL = `
SELECT EXTRACT(EPOCH FROM min(next) - now()) * 1000 FROM (
	SELECT min(available_at) AS next FROM workflow_runs
	WHERE namespace = $1 AND task_queue = $2 AND status IN ('pending', 'sleeping')
		AND available_at > now() - $3 * interval '1 microsecond' AND cardinality($4::text[]) = 0
	UNION ALL
	SELECT n.next FROM unnest($4::text[]) AS t(workflow_type), LATERAL (
		SELECT min(available_at) AS next FROM workflow_runs
		WHERE namespace = $1 AND task_queue = $2 AND workflow_type = t.workflow_type
			AND status IN ('pending', 'sleeping') AND available_at > now() - $3 * interval '1 microsecond'
	) n
) runs`

// NextAvailableIn says when the queue next has work of the types; see
// distributor.Store.
func (s *Store) NextAvailableIn(ctx context.Context, namespace, queue string, types []string, since time.Duration) (time.Duration, bool, error) {
	var ms *float64
	if err := s.pool.QueryRow(ctx, nextAvailableSQL, namespace, queue, since.Microseconds(), distinctTypes(types)).Scan(&ms); err != nil {
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
