DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_schedule_idx;
