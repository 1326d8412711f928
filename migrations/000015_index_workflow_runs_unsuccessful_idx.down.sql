DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_unsuccessful_idx;
