package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/schedule"
)

// scheduleColumns are the columns of a schedule without its input, in the
// order scanSchedule reads them.
const scheduleColumns = `schedule_id, namespace, task_queue, workflow_type, cron, timezone,
	retry_policy, version, enabled, max_catchup, next_fire_at, last_fired_at, created_at, updated_at`

// scheduleColumnsWithInput adds input.
const scheduleColumnsWithInput = scheduleColumns + `, input`

// scanSchedule reads scheduleColumns, followed by extra, into s.
func scanSchedule(row pgx.Row, s *domain.Schedule, extra ...any) error {
	var policy *domain.RetryPolicy
	dest := []any{&s.ScheduleID, &s.Namespace, &s.TaskQueue, &s.WorkflowType, &s.Cron, &s.Timezone,
		&policy, &s.Version, &s.Enabled, &s.MaxCatchup, &s.NextFireAt, &s.LastFiredAt, &s.CreatedAt,
		&s.UpdatedAt}
	if err := row.Scan(append(dest, extra...)...); err != nil {
		return err
	}
	s.RetryPolicy = domain.DefaultRetryPolicy()
	if policy != nil {
		s.RetryPolicy = *policy
	}
	if s.RetryPolicy.NonRetryableErrorTypes == nil {
		s.RetryPolicy.NonRetryableErrorTypes = []string{}
	}
	s.NextFireAt = utcp(s.NextFireAt)
	s.LastFiredAt = utcp(s.LastFiredAt)
	utc(&s.CreatedAt)
	utc(&s.UpdatedAt)
	return nil
}

// firstFire is the fire time a schedule waits for after t: nil while it is
// disabled. A cron with no fire time left is refused, so that a schedule
// never silently waits forever from the moment it is written.
func firstFire(c *schedule.Cron, enabled bool, after time.Time) (*time.Time, error) {
	next := c.Next(after)
	if next.IsZero() {
		return nil, domain.Invalid("cron", "has no fire time in the next five years")
	}
	if !enabled {
		return nil, nil
	}
	return &next, nil
}

const createScheduleSQL = `
INSERT INTO schedules (schedule_id, namespace, task_queue, workflow_type, cron, timezone, input,
	retry_policy, version, enabled, max_catchup, next_fire_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
RETURNING ` + scheduleColumnsWithInput

// CreateSchedule creates a schedule whose first fire time is the first
// after the database's now(). A cron that does not parse is an
// invalid_argument error naming "cron", and nothing is written.
func (s *Store) CreateSchedule(ctx context.Context, namespace string, n domain.NewSchedule) (domain.Schedule, error) {
	var sc domain.Schedule
	c, err := schedule.Parse(n.Cron, n.Timezone)
	if err != nil {
		return sc, err
	}
	err = s.inTx(ctx, "create schedule", func(tx pgx.Tx) error {
		now, err := dbNow(ctx, tx)
		if err != nil {
			return err
		}
		next, err := firstFire(c, n.Enabled, now)
		if err != nil {
			return err
		}
		return scanSchedule(tx.QueryRow(ctx, createScheduleSQL, newID(), namespace, n.TaskQueue,
			n.WorkflowType, n.Cron, n.Timezone, n.Input, n.RetryPolicy, n.Version, n.Enabled,
			n.MaxCatchup, next), &sc, &sc.Input)
	})
	return sc, err
}

func dbNow(ctx context.Context, q querier) (time.Time, error) {
	var now time.Time
	err := q.QueryRow(ctx, `SELECT now()`).Scan(&now)
	return now, err
}

const getScheduleSQL = `SELECT ` + scheduleColumnsWithInput + ` FROM schedules WHERE namespace = $1 AND schedule_id = $2`

// GetSchedule returns a schedule with its input.
func (s *Store) GetSchedule(ctx context.Context, namespace, scheduleID string) (domain.Schedule, error) {
	var sc domain.Schedule
	if err := scanSchedule(s.pool.QueryRow(ctx, getScheduleSQL, namespace, scheduleID), &sc, &sc.Input); err != nil {
		return sc, fmt.Errorf("get schedule %s: %w", scheduleID, notFound(translate(err), "schedule %s not found", scheduleID))
	}
	return sc, nil
}

// ListSchedules returns a page of a namespace's schedules, newest first,
// without their input, and the key after which the next page starts (""
// on the last page).
func (s *Store) ListSchedules(ctx context.Context, namespace string, page domain.Page) ([]domain.Schedule, string, error) {
	sql, args := newListQuery(namespace).sql(scheduleColumns, "schedules", "schedule_id", page.After, page.Limit)
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, "", fmt.Errorf("list schedules: %w", translate(err))
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.Schedule, error) {
		var sc domain.Schedule
		return sc, scanSchedule(row, &sc)
	})
	if err != nil {
		return nil, "", fmt.Errorf("list schedules: %w", translate(err))
	}
	return nextPage(list, page.Limit, func(sc domain.Schedule) string { return sc.ScheduleID })
}

const lockScheduleSQL = `
SELECT ` + scheduleColumns + `, now() FROM schedules
WHERE namespace = $1 AND schedule_id = $2
FOR UPDATE`

const updateScheduleSQL = `
UPDATE schedules SET task_queue = $2, workflow_type = $3, cron = $4, timezone = $5,
	input = COALESCE($6::json, input), retry_policy = $7, version = $8, enabled = $9,
	max_catchup = $10, next_fire_at = $11, updated_at = now()
WHERE schedule_id = $1
RETURNING ` + scheduleColumnsWithInput

// UpdateSchedule changes the members p sets. When the cron, the time zone
// or enabled changes, next_fire_at is computed again from the database's
// now(): a disabled schedule has none, and one enabled again waits for its
// next fire time, starting nothing for the time it was disabled. A
// changed cron that does not parse is an invalid_argument error naming
// "cron", and nothing is changed.
func (s *Store) UpdateSchedule(ctx context.Context, namespace, scheduleID string, p *domain.SchedulePatch) (domain.Schedule, error) {
	if p.Empty() {
		return s.GetSchedule(ctx, namespace, scheduleID)
	}
	var sc domain.Schedule
	err := s.inTx(ctx, "update schedule "+scheduleID, func(tx pgx.Tx) error {
		var now time.Time
		err := scanSchedule(tx.QueryRow(ctx, lockScheduleSQL, namespace, scheduleID), &sc, &now)
		if errors.Is(err, pgx.ErrNoRows) {
			return domain.Errorf(domain.CodeNotFound, "schedule %s not found", scheduleID)
		}
		if err != nil {
			return err
		}
		timingChanged, err := p.Apply(&sc)
		if err != nil {
			return err
		}
		if timingChanged {
			c, err := schedule.Parse(sc.Cron, sc.Timezone)
			if err != nil {
				return err
			}
			// Never before the last fire time: a fire time is started once.
			after := now
			if sc.LastFiredAt != nil && sc.LastFiredAt.After(after) {
				after = *sc.LastFiredAt
			}
			if sc.NextFireAt, err = firstFire(c, sc.Enabled, after); err != nil {
				return err
			}
		}
		var input any
		if p.Input != nil {
			input = string(p.Input)
		}
		return scanSchedule(tx.QueryRow(ctx, updateScheduleSQL, scheduleID, sc.TaskQueue, sc.WorkflowType,
			sc.Cron, sc.Timezone, input, sc.RetryPolicy, sc.Version, sc.Enabled, sc.MaxCatchup,
			sc.NextFireAt), &sc, &sc.Input)
	})
	return sc, err
}

const deleteScheduleSQL = `DELETE FROM schedules WHERE namespace = $1 AND schedule_id = $2`

// DeleteSchedule deletes a schedule. Runs it started are left as they are.
func (s *Store) DeleteSchedule(ctx context.Context, namespace, scheduleID string) error {
	tag, err := s.pool.Exec(ctx, deleteScheduleSQL, namespace, scheduleID)
	if err != nil {
		return fmt.Errorf("delete schedule %s: %w", scheduleID, translate(err))
	}
	if tag.RowsAffected() == 0 {
		return domain.Errorf(domain.CodeNotFound, "schedule %s not found", scheduleID)
	}
	return nil
}

// claimDueSchedulesSQL locks the due schedules no other replica is firing.
// A row another replica fired meanwhile is skipped (locked) or, once that
// replica committed, re-checked against its advanced next_fire_at and
// left out: each fire time is handled by one transaction only.
const claimDueSchedulesSQL = `
SELECT now(), schedule_id, cron, timezone, max_catchup, next_fire_at
FROM schedules
WHERE enabled AND next_fire_at <= now()
ORDER BY next_fire_at
LIMIT $1
FOR UPDATE SKIP LOCKED`

// fireScheduleSQL starts a schedule's runs for the given fire times as
// StartRun does (a live run holding the external ID wins, and the queue is
// notified) and advances the schedule, in one statement. The input and
// policy are copied inside the database rather than sent back and forth.
const fireScheduleSQL = `
WITH ins AS (
	INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, external_id, version,
		status, input, retry_policy, available_at, schedule_id)
	SELECT f.run_id, s.namespace, s.task_queue, s.workflow_type, f.external_id, s.version, 'pending',
		s.input, COALESCE(s.retry_policy, $6::jsonb), now(), s.schedule_id
	FROM schedules s
	CROSS JOIN unnest($2::uuid[], $3::text[]) WITH ORDINALITY AS f(run_id, external_id, ord)
	WHERE s.schedule_id = $1
	ORDER BY f.ord
	ON CONFLICT (namespace, external_id)
		WHERE external_id IS NOT NULL AND status IN ('pending', 'sleeping', 'running')
		DO NOTHING
	RETURNING namespace, task_queue
), advanced AS (
	UPDATE schedules SET next_fire_at = $4, last_fired_at = COALESCE($5, last_fired_at)
	WHERE schedule_id = $1
)
SELECT pg_notify('` + Channel + `', 'q:' || namespace || '/' || task_queue) FROM ins`

// stopScheduleSQL parks a schedule whose cron or time zone no longer
// parses: it stays as it is, without a next fire time, until changed.
const stopScheduleSQL = `UPDATE schedules SET next_fire_at = NULL WHERE schedule_id = $1`

// FireDueSchedules starts the runs of up to limit due schedules, in one
// transaction: for each, of its fire times from next_fire_at up to the
// database's now(), the latest max_catchup (see schedule.Cron.Due), each as
// a run with external ID schedule:{schedule_id}:{fire time}; and it moves
// next_fire_at past now() and last_fired_at to the latest fire time. Safe
// on every replica at once: a fire time is started exactly once, because
// the row lock serializes the replicas and next_fire_at advances in the
// same transaction as the runs are created. (The unique index on live
// external IDs alone would not do: it forgets a fire time once its run
// has finished.)
func (s *Store) FireDueSchedules(ctx context.Context, limit int) (domain.ScheduleFiring, error) {
	var out domain.ScheduleFiring
	defaultPolicy, err := json.Marshal(domain.DefaultRetryPolicy())
	if err != nil {
		return out, fmt.Errorf("encode retry policy: %w", err)
	}
	err = s.inTx(ctx, "fire due schedules", func(tx pgx.Tx) error {
		type due struct {
			id         string
			cron, tz   string
			maxCatchup int
			next       time.Time
		}
		var now time.Time
		var d due
		rows, err := tx.Query(ctx, claimDueSchedulesSQL, limit)
		if err != nil {
			return err
		}
		var claimed []due
		if _, err := pgx.ForEachRow(rows, []any{&now, &d.id, &d.cron, &d.tz, &d.maxCatchup, &d.next}, func() error {
			claimed = append(claimed, d)
			return nil
		}); err != nil {
			return err
		}
		if len(claimed) == 0 {
			return nil
		}
		out.Schedules = len(claimed)
		batch := &pgx.Batch{}
		planned := make([]int, len(claimed)) // fire times per schedule; -1 when broken
		for i, d := range claimed {
			c, err := schedule.Parse(d.cron, d.tz)
			if err != nil {
				planned[i] = -1
				out.Broken++
				batch.Queue(stopScheduleSQL, d.id)
				continue
			}
			fires, following := c.Due(d.next, now, d.maxCatchup)
			ids, externalIDs := make([]string, len(fires)), make([]string, len(fires))
			for j, f := range fires {
				ids[j], externalIDs[j] = newID(), domain.ScheduleRunExternalID(d.id, f)
			}
			var next, last *time.Time
			if !following.IsZero() {
				next = &following
			}
			if len(fires) > 0 {
				last = &fires[len(fires)-1]
			}
			planned[i] = len(fires)
			batch.Queue(fireScheduleSQL, d.id, ids, externalIDs, next, last, string(defaultPolicy))
		}
		results := tx.SendBatch(ctx, batch)
		for _, n := range planned {
			if n < 0 {
				if _, err := results.Exec(); err != nil {
					results.Close()
					return err
				}
				continue
			}
			rows, err := results.Query()
			if err != nil {
				results.Close()
				return err
			}
			started := 0
			for rows.Next() {
				started++
			}
			if err := rows.Err(); err != nil {
				results.Close()
				return err
			}
			out.Started += started
			out.AlreadyLive += n - started
		}
		return results.Close()
	})
	if err != nil {
		return domain.ScheduleFiring{}, err
	}
	return out, nil
}

// nextScheduleFireSQL is NULL when no enabled schedule has a next fire
// time (min of no rows). It reads schedules_due_idx.
const nextScheduleFireSQL = `
SELECT EXTRACT(EPOCH FROM min(next_fire_at) - now())::float8
FROM schedules WHERE enabled`

// NextScheduleFire returns how long, by the database's clock, until the
// earliest next fire time of any enabled schedule (zero or less: one is
// due); ok is false when none has one.
func (s *Store) NextScheduleFire(ctx context.Context) (wait time.Duration, ok bool, err error) {
	var seconds *float64
	if err := s.pool.QueryRow(ctx, nextScheduleFireSQL).Scan(&seconds); err != nil {
		return 0, false, fmt.Errorf("next schedule fire: %w", translate(err))
	}
	if seconds == nil {
		return 0, false, nil
	}
	return time.Duration(*seconds * float64(time.Second)), true, nil
}
