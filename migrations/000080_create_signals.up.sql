-- Signals: each run's inbox, a table of its own (created empty, with its
-- constraints, so no index is built over existing rows). seq numbers a
-- run's signals from 1 in the order they were accepted (under the run's
-- row lock), so it also counts them all. idempotency_key is unique per
-- namespace, target says how the first request addressed the run
-- ("run:<run_id>" or "external_id:<external_id>") for its replays.
--
-- On workflow_runs, changes to the catalog only (online-safe):
-- waiting_for names the signals a parked run waits for, available_at may
-- be NULL for a run parked in a wait without a timeout (NULL is never
-- <= now(), so the claim and its timer pass it by). workflow_steps gains
-- the wait and child kinds, the new check is NOT VALID, so it scans
-- nothing (the old one held every row to a subset of it).
BEGIN;

CREATE TABLE signals (
    signal_id        uuid        PRIMARY KEY,
    namespace        text        NOT NULL,
    run_id           uuid        NOT NULL REFERENCES workflow_runs (run_id) ON DELETE CASCADE,
    seq              bigint      NOT NULL,
    name             text        NOT NULL,
    input            json        NOT NULL DEFAULT 'null',
    status           text        NOT NULL DEFAULT 'buffered'
        CHECK (status IN ('buffered', 'delivered', 'discarded')),
    step             text,
    idempotency_key  text,
    target           text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (run_id, seq),
    UNIQUE (namespace, idempotency_key)
);

ALTER TABLE workflow_runs
    ALTER COLUMN available_at DROP NOT NULL,
    ADD COLUMN waiting_for text[];

ALTER TABLE workflow_steps
    DROP CONSTRAINT workflow_steps_kind_check,
    ADD CONSTRAINT workflow_steps_kind_check
        CHECK (kind IN ('function', 'sleep', 'wait', 'child')) NOT VALID;

COMMIT;
