-- Online-safe: built CONCURRENTLY, so writes to the table go on while it is
-- built. The first statement removes what a failed earlier build of this
-- migration left behind (an INVALID index), so a retry starts clean.
-- A parent's step starts at most one child: unique per (parent, step).
-- Partial: runs that are nobody's child have no entry.
DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_parent_idx;
CREATE UNIQUE INDEX CONCURRENTLY workflow_runs_parent_idx
    ON workflow_runs (parent_run_id, parent_step)
    WHERE parent_run_id IS NOT NULL;
