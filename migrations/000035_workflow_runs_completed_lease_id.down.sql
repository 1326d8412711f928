ALTER TABLE workflow_runs DROP COLUMN IF EXISTS completed_lease_id;
