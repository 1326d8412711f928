-- Online-safe: built CONCURRENTLY, so writes to the table go on while it is
-- built. The first statement removes what a failed earlier build of this
-- migration left behind (an INVALID index), so a retry starts clean.
-- The stats endpoint counts a namespace's runs that finished in a window
-- and their durations from this index alone (an index-only scan where the
-- visibility map allows). Partial: a run gets its one entry as it
-- finishes.
DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_ns_finished_idx;
CREATE INDEX CONCURRENTLY workflow_runs_ns_finished_idx
    ON workflow_runs (namespace, finished_at) INCLUDE (status, started_at)
    WHERE status IN ('completed', 'failed', 'cancelled');
