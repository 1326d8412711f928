-- Online-safe: built CONCURRENTLY, so writes to the table go on while it is
-- built. The first statement removes what a failed earlier build of this
-- migration left behind (an INVALID index), so a retry starts clean.
-- A silent-worker reaper pass reads the workers not yet offline alone, not the
-- history of offline ones.
DROP INDEX CONCURRENTLY IF EXISTS workers_live_heartbeat_idx;
CREATE INDEX CONCURRENTLY workers_live_heartbeat_idx
    ON workers (last_heartbeat_at)
    WHERE status <> 'offline';
