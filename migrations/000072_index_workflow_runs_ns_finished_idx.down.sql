DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_ns_finished_idx;
