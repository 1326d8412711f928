BEGIN;
DROP TABLE IF EXISTS signals;
DELETE FROM workflow_steps WHERE kind NOT IN ('function', 'sleep');
ALTER TABLE workflow_steps
    DROP CONSTRAINT IF EXISTS workflow_steps_kind_check,
    ADD CONSTRAINT workflow_steps_kind_check CHECK (kind IN ('function', 'sleep'));
UPDATE workflow_runs SET available_at = now() WHERE available_at IS NULL;
ALTER TABLE workflow_runs
    ALTER COLUMN available_at SET NOT NULL,
    DROP COLUMN IF EXISTS waiting_for;
COMMIT;
