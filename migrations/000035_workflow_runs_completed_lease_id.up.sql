-- The lease a run was completed under, so that a worker's retry of a
-- completion that already committed is answered as a success. Adding a
-- nullable column without a default changes only the catalog: online-safe.
ALTER TABLE workflow_runs ADD COLUMN completed_lease_id uuid;
