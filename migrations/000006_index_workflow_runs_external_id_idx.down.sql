DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_external_id_idx;
