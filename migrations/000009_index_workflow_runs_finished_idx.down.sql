DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_finished_idx;
