-- Online-safe: built CONCURRENTLY, so writes to the table go on while it is
-- built. The first statement removes what a failed earlier build of this
-- migration left behind (an INVALID index), so a retry starts clean.
-- A run's steps in the order they began, one page at a time, without
-- reading and sorting all of them for each page. One entry per step
-- attempt: a step's later updates keep seq and stay HOT-eligible.
DROP INDEX CONCURRENTLY IF EXISTS workflow_steps_run_seq_idx;
CREATE INDEX CONCURRENTLY workflow_steps_run_seq_idx
    ON workflow_steps (run_id, seq);
