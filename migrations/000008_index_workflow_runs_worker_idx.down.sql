DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_worker_idx;
