-- Online-safe: built CONCURRENTLY, so writes to the table go on while it is
-- built. The first statement removes what a failed earlier build of this
-- migration left behind (an INVALID index), so a retry starts clean.
DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_external_id_live_idx;
CREATE UNIQUE INDEX CONCURRENTLY workflow_runs_external_id_live_idx
    ON workflow_runs (namespace, external_id)
    WHERE external_id IS NOT NULL AND status IN ('pending', 'sleeping', 'running');
