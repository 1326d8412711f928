ALTER TABLE workflow_steps DROP COLUMN IF EXISTS started_at;
