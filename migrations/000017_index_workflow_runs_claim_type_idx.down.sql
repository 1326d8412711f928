DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_claim_type_idx;
