-- Online-safe: built CONCURRENTLY, so writes to the table go on while it is
-- built. The first statement removes what a failed earlier build of this
-- migration left behind (an INVALID index), so a retry starts clean.
-- The runs of one schedule, newest first. Partial: runs started by clients
-- have no entry.
DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_schedule_idx;
CREATE INDEX CONCURRENTLY workflow_runs_schedule_idx
    ON workflow_runs (namespace, schedule_id, run_id)
    WHERE schedule_id IS NOT NULL;
