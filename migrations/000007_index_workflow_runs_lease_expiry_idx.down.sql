DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_lease_expiry_idx;
