-- Online-safe: built CONCURRENTLY, so writes to the table go on while it is
-- built. The first statement removes what a failed earlier build of this
-- migration left behind (an INVALID index), so a retry starts clean.
DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_external_id_idx;
CREATE INDEX CONCURRENTLY workflow_runs_external_id_idx
    ON workflow_runs (namespace, external_id, run_id)
    WHERE external_id IS NOT NULL;
