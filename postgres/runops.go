package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kagzi/kagzi/domain"
)

// retryRunSQL puts a failed or cancelled run back to pending, claimable
// now, as a new attempt: its completed steps stay recorded, so the worker
// replays past them. attempt_base moves to the current attempt, so that
// the run's retry policy bounds the attempts from here.
const retryRunSQL = `
WITH r AS (
	UPDATE workflow_runs SET status = 'pending', available_at = now(), error = NULL, output = NULL,
		finished_at = NULL, new_attempt = true, attempt_base = attempt, lease_id = NULL,
		lease_expires_at = NULL, completed_lease_id = NULL
	WHERE namespace = $1 AND run_id = $2 AND status IN ('failed', 'cancelled')
	RETURNING ` + runColumnsWithPayload + `
)
SELECT r.*, pg_notify('` + Channel + `', 'q:' || namespace || '/' || task_queue) FROM r`

// externalIDLiveIndex is the unique index that keeps one live run per
// external ID.
const externalIDLiveIndex = "workflow_runs_external_id_live_idx"

// RetryRun makes a failed or cancelled run pending again. Any other status
// is a conflict, and so is another live run holding the run's external ID
// (the detail names that run).
func (s *Store) RetryRun(ctx context.Context, namespace, runID string) (domain.Run, error) {
	for range 3 {
		var run domain.Run
		err := scanRun(s.pool.QueryRow(ctx, retryRunSQL, namespace, runID), &run, &run.Input, &run.Output, nil)
		if err == nil {
			fillPayload(&run)
			return run, nil
		}
		var pgErr *pgconn.PgError
		isHeld := errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == externalIDLiveIndex
		if !isHeld && err != pgx.ErrNoRows {
			return run, fmt.Errorf("retry run %s: %w", runID, translate(err))
		}
		if run, err = s.GetRun(ctx, namespace, runID); err != nil {
			return run, err
		}
		if !isHeld {
			if run.Status == domain.RunFailed || run.Status == domain.RunCancelled {
				continue // it changed between the two statements
			}
			return run, domain.Errorf(domain.CodeConflict,
				"run %s is %s; only failed or cancelled runs can be retried", runID, run.Status)
		}
		var holder domain.Run
		err = scanRun(s.pool.QueryRow(ctx, liveRunByExternalIDSQL, namespace, *run.ExternalID), &holder)
		if err == nil {
			return run, domain.Errorf(domain.CodeConflict,
				"run %s holds external_id %q and is %s; run %s cannot be retried while it is live",
				holder.RunID, *run.ExternalID, holder.Status, runID)
		}
		if err != pgx.ErrNoRows {
			return run, fmt.Errorf("retry run %s: %w", runID, translate(err))
		}
		// The holder finished meanwhile: try again.
	}
	return domain.Run{}, fmt.Errorf("retry run %s: %w: the run kept changing; retry", runID, domain.ErrConflict)
}

// triggerScheduleSQL starts one run of a schedule now, as a fire time
// would but outside the cron: next_fire_at does not move.
const triggerScheduleSQL = `
WITH ins AS (
	INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, external_id, version,
		status, input, retry_policy, available_at, schedule_id)
	SELECT $3, s.namespace, s.task_queue, s.workflow_type, $4, s.version, 'pending',
		s.input, COALESCE(s.retry_policy, $5::jsonb), now(), s.schedule_id
	FROM schedules s
	WHERE s.namespace = $1 AND s.schedule_id = $2
	RETURNING ` + runColumns + `
)
SELECT ins.*, pg_notify('` + Channel + `', 'q:' || namespace || '/' || task_queue) FROM ins`

// TriggerSchedule starts one run of a schedule now, with external ID
// schedule:{schedule_id}:manual:{run_id}.
func (s *Store) TriggerSchedule(ctx context.Context, namespace, scheduleID string) (domain.Run, error) {
	var run domain.Run
	defaultPolicy, err := json.Marshal(domain.DefaultRetryPolicy())
	if err != nil {
		return run, fmt.Errorf("encode retry policy: %w", err)
	}
	runID := newID()
	err = scanRun(s.pool.QueryRow(ctx, triggerScheduleSQL, namespace, scheduleID, runID,
		domain.ManualScheduleRunExternalID(scheduleID, runID), defaultPolicy), &run, nil)
	if err != nil {
		return run, fmt.Errorf("trigger schedule %s: %w", scheduleID,
			notFound(translate(err), "schedule %s not found", scheduleID))
	}
	return run, nil
}

// liveCounts counts the live runs where cond holds, for LiveCounts: one
// count per status, so that each reads a partial index of live runs
// (status IN (...) in one condition would imply none of their
// predicates, and scan the table).
func liveCounts(cond string) string {
	count := func(status string) string {
		return `(SELECT count(*) FROM workflow_runs WHERE ` + cond + ` AND status = '` + status + `')`
	}
	return count("pending") + `, ` + count("running") + `, ` + count("sleeping")
}

// statsFirstMS is the start of the first bucket, in ms since the epoch:
// buckets are aligned to multiples of the bucket size ($2), and the last
// of the $3 buckets holds the database's now(), so that a refreshed chart
// keeps its buckets. Written out rather than computed once in a CTE, so
// that the planner estimates the window's rows from the value (now() is
// stable) instead of guessing, and a cheap plan stays cheap (no JIT).
const statsFirstMS = `((date_part('epoch', now()) * 1000)::bigint / $2 * $2 - ($3 - 1) * $2)`

// statsBucket is the bucket index of a time column.
func statsBucket(col string) string {
	return `(((date_part('epoch', ` + col + `) * 1000)::bigint - ` + statsFirstMS + `) / $2)::int`
}

// statsSQL counts, per bucket, the runs created in it and those finished
// in it, with the percentiles of the finished runs' durations, in one
// pass over each without joins. Runs started are read by a run_id range
// (run IDs are UUIDv7, their first 48 bits the creation time in ms; a
// minute of slack covers clock skew between the replica that made the ID
// and the database), runs finished by a finished_at range: both bounded
// by the window. The %s are the optional filters.
var statsSQL = `
SELECT to_timestamp((` + statsFirstMS + ` + i * $2) / 1000.0), sum(started)::bigint,
	count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'failed'),
	count(*) FILTER (WHERE status = 'cancelled'),
	(extract(epoch FROM percentile_disc(0.5) WITHIN GROUP (ORDER BY took)) * 1000)::bigint,
	(extract(epoch FROM percentile_disc(0.95) WITHIN GROUP (ORDER BY took)) * 1000)::bigint
FROM (
	SELECT ` + statsBucket("created_at") + ` AS i, 1 AS started, NULL AS status, NULL::interval AS took
	FROM workflow_runs
	WHERE namespace = $1 AND created_at >= to_timestamp(` + statsFirstMS + ` / 1000.0)
		AND run_id >= (lpad(to_hex(greatest(` + statsFirstMS + ` - 60000, 0)::bigint), 12, '0')
			|| '00000000000000000000')::uuid %s
	UNION ALL
	SELECT ` + statsBucket("finished_at") + `, 0, status, finished_at - started_at
	FROM workflow_runs
	WHERE namespace = $1 AND status IN ('completed', 'failed', 'cancelled')
		AND finished_at >= to_timestamp(` + statsFirstMS + ` / 1000.0) %s
	UNION ALL
	SELECT i, 0, NULL, NULL FROM generate_series(0, $3 - 1) AS i
) AS x
WHERE i < $3
GROUP BY i
ORDER BY i`

// liveStatsSQL counts the live runs of a namespace; %s are the optional
// filters.
var liveStatsSQL = `SELECT ` + liveCounts(`namespace = $1 %[1]s`)

// statsFilters returns the optional filters of f as SQL conditions on
// parameters from $next on, and their arguments.
func statsFilters(f domain.StatsFilter, next int) (string, []any) {
	var conds []string
	var args []any
	add := func(col, v string) {
		if v != "" {
			conds = append(conds, " AND "+col+" = $"+strconv.Itoa(next+len(args)))
			args = append(args, v)
		}
	}
	add("task_queue", f.TaskQueue)
	add("workflow_type", f.WorkflowType)
	return strings.Join(conds, ""), args
}

// Stats returns the runs of a namespace started and finished per bucket of
// the window, and its live runs now.
func (s *Store) Stats(ctx context.Context, f domain.StatsFilter) (domain.Stats, error) {
	out := domain.Stats{Buckets: make([]domain.StatsBucket, 0, f.Buckets())}
	cond, extra := statsFilters(f, 4)
	args := append([]any{f.Namespace, f.Bucket.Milliseconds(), f.Buckets()}, extra...)
	rows, err := s.pool.Query(ctx, fmt.Sprintf(statsSQL, cond, cond), args...)
	if err != nil {
		return out, fmt.Errorf("stats: %w", translate(err))
	}
	var b domain.StatsBucket
	_, err = pgx.ForEachRow(rows, []any{&b.Start, &b.Started, &b.Completed, &b.Failed, &b.Cancelled,
		&b.P50DurationMS, &b.P95DurationMS}, func() error {
		b.Start = b.Start.UTC()
		out.Buckets = append(out.Buckets, b)
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("stats: %w", translate(err))
	}
	cond, extra = statsFilters(f, 2)
	err = s.pool.QueryRow(ctx, fmt.Sprintf(liveStatsSQL, cond), append([]any{f.Namespace}, extra...)...).
		Scan(&out.Now.Pending, &out.Now.Running, &out.Now.Sleeping)
	if err != nil {
		return out, fmt.Errorf("stats: %w", translate(err))
	}
	return out, nil
}

// skipScanSQL walks the distinct values of col (of rows where scope holds)
// after $after, one index probe each, rather than reading every row: a
// loose index scan, which PostgreSQL does not plan by itself.
func skipScanSQL(name, table, col, scope, after string) string {
	next := func(from string) string {
		return `(SELECT ` + col + ` FROM ` + table + ` WHERE ` + scope + col + ` > ` + from +
			` ORDER BY ` + col + ` LIMIT 1)`
	}
	return name + ` (v) AS (SELECT ` + next(after) + ` UNION ALL SELECT ` + next(name+".v") +
		` FROM ` + name + ` WHERE ` + name + `.v IS NOT NULL)`
}

// workflowTypesSQL lists a page of the workflow types of a namespace by
// name: each found by a skip scan of an index led by (namespace,
// workflow_type), its live runs counted from the namespace's live runs,
// and its latest run read by its newest run ID.
var workflowTypesSQL = `
WITH RECURSIVE ` + skipScanSQL("t", "workflow_runs", "workflow_type", "namespace = $1 AND ", "$2") + `,
page AS (SELECT v AS name FROM t WHERE v IS NOT NULL LIMIT $3),
live AS (
	SELECT workflow_type AS name, count(*) FILTER (WHERE status = 'pending') AS pending,
		count(*) FILTER (WHERE status = 'running') AS running,
		count(*) FILTER (WHERE status = 'sleeping') AS sleeping
	FROM (
		SELECT workflow_type, status FROM workflow_runs WHERE namespace = $1 AND status IN ('pending', 'sleeping')
		UNION ALL
		SELECT workflow_type, status FROM workflow_runs WHERE namespace = $1 AND status = 'running'
	) AS l
	WHERE workflow_type IN (SELECT name FROM page)
	GROUP BY workflow_type
)
SELECT page.name, COALESCE(live.pending, 0), COALESCE(live.running, 0), COALESCE(live.sleeping, 0),
	(SELECT created_at FROM workflow_runs w WHERE w.namespace = $1 AND w.workflow_type = page.name
		ORDER BY w.run_id DESC LIMIT 1)
FROM page LEFT JOIN live USING (name)
ORDER BY page.name`

// ListWorkflowTypes returns a page of the workflow types a namespace has
// runs of, by name, and the name the next page starts after.
func (s *Store) ListWorkflowTypes(ctx context.Context, namespace string, page domain.Page) ([]domain.WorkflowTypeSummary, string, error) {
	rows, err := s.pool.Query(ctx, workflowTypesSQL, namespace, page.After, page.Limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("list workflow types: %w", translate(err))
	}
	types, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.WorkflowTypeSummary, error) {
		var t domain.WorkflowTypeSummary
		err := row.Scan(&t.Name, &t.Pending, &t.Running, &t.Sleeping, &t.LastStartedAt)
		t.LastStartedAt = utcp(t.LastStartedAt)
		return t, err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list workflow types: %w", translate(err))
	}
	return nextPage(types, page.Limit, func(t domain.WorkflowTypeSummary) string { return t.Name })
}

// namespacesSQL lists a page of the namespaces in use, by name: those with
// runs, schedules, workers or queue settings, each table walked by a skip
// scan of an index led by namespace, so a page costs a few probes per
// name. $3, when not NULL, keeps only the namespaces it lists.
var namespacesSQL = `
WITH RECURSIVE ` +
	skipScanSQL("r", "workflow_runs", "namespace", "", "$1") + `, ` +
	skipScanSQL("s", "schedules", "namespace", "", "$1") + `, ` +
	skipScanSQL("w", "workers", "namespace", "", "$1") + `, ` +
	skipScanSQL("q", "task_queues", "namespace", "", "$1") + `,
names AS (
	SELECT v FROM (SELECT v FROM r WHERE v IS NOT NULL LIMIT $2) r
	UNION SELECT v FROM (SELECT v FROM s WHERE v IS NOT NULL LIMIT $2) s
	UNION SELECT v FROM (SELECT v FROM w WHERE v IS NOT NULL LIMIT $2) w
	UNION SELECT v FROM (SELECT v FROM q WHERE v IS NOT NULL LIMIT $2) q
)
SELECT v, live.* FROM (SELECT v FROM names ORDER BY v LIMIT $2) page
CROSS JOIN LATERAL (SELECT ` + liveCounts(`namespace = page.v`) + `) live
ORDER BY v`

// allowedNamespacesSQL is namespacesSQL for a caller limited to the
// namespaces in $3: each is probed, not walked to.
var allowedNamespacesSQL = `
SELECT v, live.* FROM (
	SELECT v FROM unnest($3::text[]) AS v
	WHERE v > $1 AND (
		EXISTS (SELECT FROM workflow_runs WHERE namespace = v)
		OR EXISTS (SELECT FROM schedules WHERE namespace = v)
		OR EXISTS (SELECT FROM workers WHERE namespace = v)
		OR EXISTS (SELECT FROM task_queues WHERE namespace = v))
	ORDER BY v LIMIT $2
) page
CROSS JOIN LATERAL (SELECT ` + liveCounts(`namespace = page.v`) + `) live
ORDER BY v`

// ListNamespaces returns a page of the namespaces in use, by name, and the
// name the next page starts after. A nil allowed means every namespace;
// otherwise only those it lists are considered.
func (s *Store) ListNamespaces(ctx context.Context, allowed []string, page domain.Page) ([]domain.NamespaceSummary, string, error) {
	sql, args := namespacesSQL, []any{page.After, page.Limit + 1}
	if allowed != nil {
		sql, args = allowedNamespacesSQL, append(args, allowed)
	}
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, "", fmt.Errorf("list namespaces: %w", translate(err))
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.NamespaceSummary, error) {
		var n domain.NamespaceSummary
		return n, row.Scan(&n.Name, &n.Pending, &n.Running, &n.Sleeping)
	})
	if err != nil {
		return nil, "", fmt.Errorf("list namespaces: %w", translate(err))
	}
	return nextPage(list, page.Limit, func(n domain.NamespaceSummary) string { return n.Name })
}
