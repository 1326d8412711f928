-- API keys. A new table takes no lock on any other, so creating it is
-- online-safe: its only index is its primary key, built on an empty table.
-- secret_hash is the SHA-256 of the key's secret (the secret itself is
-- shown once and never stored). Rows are never deleted: a revoked key keeps
-- its record, and KAGZI_AUTH=auto stays on once any key has existed.
CREATE TABLE IF NOT EXISTS api_keys (
    key_id       uuid PRIMARY KEY,
    name         text NOT NULL,
    role         text NOT NULL CHECK (role IN ('admin', 'client', 'worker', 'reader')),
    namespaces   text[] NOT NULL,
    secret_hash  bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
