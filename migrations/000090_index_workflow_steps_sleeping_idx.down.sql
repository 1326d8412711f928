DROP INDEX CONCURRENTLY IF EXISTS workflow_steps_sleeping_idx;
