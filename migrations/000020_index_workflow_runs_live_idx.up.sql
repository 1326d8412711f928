-- Online-safe: built CONCURRENTLY, so writes to the table go on while it is
-- built. The first statement removes what a failed earlier build of this
-- migration left behind (an INVALID index), so a retry starts clean.
-- The live runs alone, whatever the history: lists filtered by a live status
-- walk it newest first, and queue depths (/metrics, the task-queue list)
-- count from it without visiting the table. Partial, so a run pays for it
-- while it is live (about two entries in its life: pending, then running)
-- and never once it has finished.
DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_live_idx;
CREATE INDEX CONCURRENTLY workflow_runs_live_idx
    ON workflow_runs (namespace, status, run_id) INCLUDE (task_queue, available_at)
    WHERE status IN ('pending', 'sleeping', 'running');
