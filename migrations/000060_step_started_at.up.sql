-- When a step attempt started, as its worker reports it when it records
-- the attempt and its outcome in one write (without begin). NULL means
-- when the row was created. Adding a nullable column without a default
-- changes only the catalog, so this is online-safe.
ALTER TABLE workflow_steps ADD COLUMN started_at timestamptz;
