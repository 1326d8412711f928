-- Online-safe: built CONCURRENTLY, so writes to the table go on while it is
-- built. The first statement removes what a failed earlier build of this
-- migration left behind (an INVALID index), so a retry starts clean.
-- A claim that names its workflow types walks this index once per type, so
-- a backlog of other types costs it nothing. Claims for any type keep
-- walking workflow_runs_claim_idx, which has no type to skip over.
DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_claim_type_idx;
CREATE INDEX CONCURRENTLY workflow_runs_claim_type_idx
    ON workflow_runs (namespace, task_queue, workflow_type, available_at, run_id)
    WHERE status IN ('pending', 'sleeping');
