-- The whole schema's tables, created empty in one transaction. Indexes on
-- tables that may already hold rows are never added here: each has a
-- migration of its own that builds it CONCURRENTLY (see README.md).
BEGIN;

CREATE TABLE workflow_runs (
    run_id            uuid        PRIMARY KEY,
    namespace         text        NOT NULL,
    task_queue        text        NOT NULL,
    workflow_type     text        NOT NULL,
    external_id       text,
    version           text,
    status            text        NOT NULL
        CHECK (status IN ('pending', 'sleeping', 'running', 'completed', 'failed', 'cancelled')),
    input             json        NOT NULL DEFAULT 'null',
    output            json,
    error             jsonb,
    -- attempt counts execution attempts, and new_attempt says whether the next
    -- claim starts a new one (after a failed attempt or an expired lease)
    -- or continues this one (after a sleep, a step retry or a release).
    attempt           integer     NOT NULL DEFAULT 0,
    new_attempt       boolean     NOT NULL DEFAULT true,
    retry_policy      jsonb       NOT NULL,
    worker_id         uuid,
    lease_id          uuid,
    lease_expires_at  timestamptz,
    available_at      timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    CHECK ((status = 'running') = (lease_id IS NOT NULL))
);

CREATE TABLE workflow_steps (
    run_id        uuid        NOT NULL REFERENCES workflow_runs (run_id) ON DELETE CASCADE,
    name          text        NOT NULL,
    attempt       integer     NOT NULL,
    seq           bigint      GENERATED ALWAYS AS IDENTITY,
    kind          text        NOT NULL CHECK (kind IN ('function', 'sleep')),
    status        text        NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    input         json,
    output        json,
    error         jsonb,
    retry_policy  jsonb,
    retry_at      timestamptz,
    wake_up_at    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    PRIMARY KEY (run_id, name, attempt)
);

CREATE TABLE workers (
    worker_id          uuid        PRIMARY KEY,
    namespace          text        NOT NULL,
    task_queue         text        NOT NULL,
    workflow_types     text[]      NOT NULL DEFAULT '{}',
    hostname           text,
    pid                integer,
    version            text,
    max_concurrent     integer     NOT NULL DEFAULT 10,
    active_count       integer     NOT NULL DEFAULT 0,
    total_completed    bigint      NOT NULL DEFAULT 0,
    total_failed       bigint      NOT NULL DEFAULT 0,
    status             text        NOT NULL DEFAULT 'online'
        CHECK (status IN ('online', 'draining', 'offline')),
    labels             jsonb       NOT NULL DEFAULT '{}',
    registered_at      timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE task_queues (
    namespace             text    NOT NULL,
    name                  text    NOT NULL,
    paused                boolean NOT NULL DEFAULT false,
    max_concurrent        integer,
    workflow_type_limits  jsonb   NOT NULL DEFAULT '{}',
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, name)
);

CREATE TABLE schedules (
    schedule_id    uuid        PRIMARY KEY,
    namespace      text        NOT NULL,
    task_queue     text        NOT NULL,
    workflow_type  text        NOT NULL,
    cron           text        NOT NULL,
    timezone       text        NOT NULL DEFAULT 'UTC',
    input          json        NOT NULL DEFAULT 'null',
    retry_policy   jsonb,
    version        text,
    enabled        boolean     NOT NULL DEFAULT true,
    max_catchup    integer     NOT NULL DEFAULT 1,
    next_fire_at   timestamptz,
    last_fired_at  timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

COMMIT;
