DROP INDEX CONCURRENTLY IF EXISTS workflow_steps_run_seq_idx;
