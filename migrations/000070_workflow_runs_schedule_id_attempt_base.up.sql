-- schedule_id: the schedule that started a run (fired or triggered), for
-- GET .../workflows?schedule_id=. attempt_base: the run's attempt when it
-- was last retried by hand, so that retry_policy.max_attempts bounds the
-- attempts since then (attempt - attempt_base). A nullable column, and a
-- NOT NULL column with a constant default, change only the catalog
-- (PostgreSQL 11 and later): online-safe.
ALTER TABLE workflow_runs
    ADD COLUMN schedule_id uuid,
    ADD COLUMN attempt_base integer NOT NULL DEFAULT 0;
