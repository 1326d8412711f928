DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_parent_idx;
