DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_live_idx;
