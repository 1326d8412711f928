-- Online-safe: built CONCURRENTLY, so writes to the table go on while it is
-- built. The first statement removes what a failed earlier build of this
-- migration left behind (an INVALID index), so a retry starts clean.
-- Lists of one workflow type, newest first, without walking other types'
-- history. It covers finished runs too, so it costs an entry on each
-- status change of every run (three in a plain run's life).
DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_type_idx;
CREATE INDEX CONCURRENTLY workflow_runs_type_idx
    ON workflow_runs (namespace, workflow_type, run_id);
