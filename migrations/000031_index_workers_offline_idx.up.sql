-- Online-safe: built CONCURRENTLY, so writes to the table go on while it is
-- built. The first statement removes what a failed earlier build of this
-- migration left behind (an INVALID index), so a retry starts clean.
-- Worker retention finds the workers offline longest first without reading
-- the live ones.
DROP INDEX CONCURRENTLY IF EXISTS workers_offline_idx;
CREATE INDEX CONCURRENTLY workers_offline_idx
    ON workers (last_heartbeat_at)
    WHERE status = 'offline';
