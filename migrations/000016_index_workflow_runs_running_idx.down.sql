DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_running_idx;
