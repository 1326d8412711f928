DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_status_idx;
