-- Online-safe: built CONCURRENTLY, so writes to the table go on while it is
-- built. The first statement removes what a failed earlier build of this
-- migration left behind (an INVALID index), so a retry starts clean.
DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_unsuccessful_idx;
CREATE INDEX CONCURRENTLY workflow_runs_unsuccessful_idx
    ON workflow_runs (namespace, status, run_id)
    WHERE status IN ('failed', 'cancelled');
