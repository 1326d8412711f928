-- Online-safe: built CONCURRENTLY, so writes to the table go on while it is
-- built. The first statement removes what a failed earlier build of this
-- migration left behind (an INVALID index), so a retry starts clean.
-- A claim on a queue with concurrency limits counts the queue's running
-- runs by type: this keeps that count to the running runs alone.
DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_running_idx;
CREATE INDEX CONCURRENTLY workflow_runs_running_idx
    ON workflow_runs (namespace, task_queue, workflow_type)
    WHERE status = 'running';
