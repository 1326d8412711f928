DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_status_idx;
CREATE INDEX CONCURRENTLY workflow_runs_status_idx
    ON workflow_runs (namespace, status, run_id);
