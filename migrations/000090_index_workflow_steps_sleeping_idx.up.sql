-- Online-safe: built CONCURRENTLY, so writes to the table go on while it is
-- built. The first statement removes what a failed earlier build of this
-- migration left behind (an INVALID index), so a retry starts clean.
-- The sleep steps still running (their runs asleep), by run: the claim that
-- follows a wake-up completes them through it, whatever the size of
-- workflow_steps or the number of steps a run has. Partial: a step that is
-- not a pending sleep has no entry.
DROP INDEX CONCURRENTLY IF EXISTS workflow_steps_sleeping_idx;
CREATE INDEX CONCURRENTLY workflow_steps_sleeping_idx
    ON workflow_steps (run_id)
    WHERE kind = 'sleep' AND status = 'running';
