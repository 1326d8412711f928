ALTER TABLE workflow_steps DROP COLUMN IF EXISTS run_attempt;
