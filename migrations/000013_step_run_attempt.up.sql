-- The run attempt a step attempt ran in, so that a step that failed for
-- good is replayed as failed within that run attempt. Adding a nullable
-- column without a default changes only the catalog: online-safe.
ALTER TABLE workflow_steps ADD COLUMN run_attempt integer;
