DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_namespace_idx;
