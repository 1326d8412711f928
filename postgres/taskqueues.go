package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/kagzi/kagzi/domain"
)

// taskQueuesSQL lists a page of $3 queues of namespace $1 in use, by name
// after $2 (in byte order, which keyset pages need to agree with the
// comparison, whatever the database's collation): those with live runs,
// settings or workers that are not offline; $4, when not empty, is the one
// queue wanted. The live counts read workflow_runs_live_idx alone, so they
// cost the namespace's live runs, never its history; they are counted by
// queue and status first, which is cheaper per run than one aggregate per
// figure. Each source gives at most a page of names after $2 and the page
// is the first $3 of them all, so a queue on the page that has live runs or
// workers is among the first $3 of those.
const taskQueuesSQL = `
WITH counts AS (
	SELECT task_queue, status, count(*) AS n, count(*) FILTER (WHERE available_at <= now()) AS due,
		min(available_at) AS oldest
	FROM workflow_runs
	WHERE namespace = $1 AND status IN ('pending', 'sleeping', 'running')
		AND ($2 = '' OR task_queue COLLATE "C" > $2) AND ($4 = '' OR task_queue = $4)
	GROUP BY task_queue, status
), live AS (
	SELECT task_queue AS name,
		COALESCE(sum(n) FILTER (WHERE status = 'pending'), 0)::bigint AS pending,
		COALESCE(sum(due) FILTER (WHERE status <> 'running'), 0)::bigint AS available,
		COALESCE(sum(n) FILTER (WHERE status = 'running'), 0)::bigint AS running,
		COALESCE(sum(n) FILTER (WHERE status = 'sleeping'), 0)::bigint AS sleeping,
		min(oldest) FILTER (WHERE status <> 'running') AS oldest_available_at
	FROM counts
	GROUP BY task_queue
	ORDER BY task_queue COLLATE "C" LIMIT $3
), w AS (
	SELECT task_queue AS name, count(*) FILTER (WHERE status = 'online') AS online
	FROM workers
	WHERE namespace = $1 AND status <> 'offline'
		AND ($2 = '' OR task_queue COLLATE "C" > $2) AND ($4 = '' OR task_queue = $4)
	GROUP BY task_queue
	ORDER BY task_queue COLLATE "C" LIMIT $3
), names AS (
	SELECT name FROM (
		SELECT name FROM live
		UNION SELECT name FROM w
		UNION (SELECT name FROM task_queues
			WHERE namespace = $1 AND ($2 = '' OR name COLLATE "C" > $2) AND ($4 = '' OR name = $4)
			ORDER BY name COLLATE "C" LIMIT $3)
	) AS u
	ORDER BY name COLLATE "C" LIMIT $3
)
SELECT names.name, COALESCE(live.pending, 0), COALESCE(live.available, 0), COALESCE(live.running, 0),
	COALESCE(live.sleeping, 0), live.oldest_available_at, COALESCE(tq.paused, false), tq.max_concurrent,
	COALESCE(tq.workflow_type_limits, '{}'), COALESCE(w.online, 0)
FROM names
LEFT JOIN live USING (name)
LEFT JOIN w USING (name)
LEFT JOIN task_queues tq ON tq.namespace = $1 AND tq.name = names.name
ORDER BY names.name COLLATE "C"`

// ListTaskQueues returns a page of the queues of a namespace in use, by
// name, and the name after which the next page starts ("" on the last).
func (s *Store) ListTaskQueues(ctx context.Context, namespace string, page domain.Page) ([]domain.TaskQueue, string, error) {
	queues, err := s.taskQueues(ctx, namespace, page.After, page.Limit+1, "")
	if err != nil {
		return nil, "", err
	}
	return nextPage(queues, page.Limit, func(q domain.TaskQueue) string { return q.Name })
}

// taskQueues reads up to limit queues named after after, or only the one
// named only when that is not empty.
func (s *Store) taskQueues(ctx context.Context, namespace, after string, limit int, only string) ([]domain.TaskQueue, error) {
	rows, err := s.pool.Query(ctx, taskQueuesSQL, namespace, after, limit, only)
	if err != nil {
		return nil, fmt.Errorf("list task queues: %w", translate(err))
	}
	queues, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.TaskQueue, error) {
		var q domain.TaskQueue
		err := row.Scan(&q.Name, &q.Pending, &q.Available, &q.Running, &q.Sleeping, &q.OldestAvailableAt,
			&q.Paused, &q.MaxConcurrent, &q.WorkflowTypeLimits, &q.WorkersOnline)
		q.OldestAvailableAt = utcp(q.OldestAvailableAt)
		return q, err
	})
	if err != nil {
		return nil, fmt.Errorf("list task queues: %w", translate(err))
	}
	return queues, nil
}

// patchTaskQueueSQL merges a patch into a queue's settings: $3 paused (NULL
// keeps it), $5 max_concurrent when $4, the limits of $6 set and those
// named in $7 removed. It notifies the queue, so that waiters of a resumed
// or widened queue are served at once.
const patchTaskQueueSQL = `
WITH p AS (
	INSERT INTO task_queues (namespace, name, paused, max_concurrent, workflow_type_limits)
	VALUES ($1, $2, COALESCE($3, false), CASE WHEN $4 THEN $5::int END, $6::jsonb - $7::text[])
	ON CONFLICT (namespace, name) DO UPDATE SET
		paused = COALESCE($3, task_queues.paused),
		max_concurrent = CASE WHEN $4 THEN $5::int ELSE task_queues.max_concurrent END,
		workflow_type_limits = (task_queues.workflow_type_limits || $6::jsonb) - $7::text[],
		updated_at = now()
	RETURNING namespace, name
)
SELECT pg_notify('` + Channel + `', 'q:' || namespace || '/' || name) FROM p`

// PatchTaskQueue changes a queue's settings and returns the queue.
func (s *Store) PatchTaskQueue(ctx context.Context, namespace, queue string, p domain.TaskQueuePatch) (domain.TaskQueue, error) {
	set := map[string]int{}
	removed := []string{}
	for t, v := range p.WorkflowTypeLimits {
		if v == nil {
			removed = append(removed, t)
		} else {
			set[t] = *v
		}
	}
	if _, err := s.pool.Exec(ctx, patchTaskQueueSQL, namespace, queue, p.Paused, p.MaxConcurrent.Set,
		p.MaxConcurrent.Value, set, removed); err != nil {
		return domain.TaskQueue{}, fmt.Errorf("patch task queue %s: %w", queue, translate(err))
	}
	queues, err := s.taskQueues(ctx, namespace, "", 1, queue)
	if err != nil {
		return domain.TaskQueue{}, err
	}
	if len(queues) != 1 {
		return domain.TaskQueue{}, errors.New("patch task queue: the queue vanished")
	}
	return queues[0], nil
}
