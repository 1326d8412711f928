DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_type_idx;
