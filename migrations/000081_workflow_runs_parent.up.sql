-- A child run names its parent, the parent's step that started it, and
-- what becomes of it when the parent ends (cancel or abandon). Nullable
-- columns without a default change only the catalog: online-safe.
ALTER TABLE workflow_runs
    ADD COLUMN parent_run_id uuid,
    ADD COLUMN parent_step text,
    ADD COLUMN parent_close_policy text;
