ALTER TABLE workflow_runs
    DROP COLUMN IF EXISTS parent_run_id,
    DROP COLUMN IF EXISTS parent_step,
    DROP COLUMN IF EXISTS parent_close_policy;
