ALTER TABLE workflow_runs DROP COLUMN IF EXISTS schedule_id, DROP COLUMN IF EXISTS attempt_base;
