-- Online-safe: built CONCURRENTLY, so writes to the table go on while it is
-- built. The first statement removes what a failed earlier build of this
-- migration left behind (an INVALID index), so a retry starts clean.
DROP INDEX CONCURRENTLY IF EXISTS schedules_due_idx;
CREATE INDEX CONCURRENTLY schedules_due_idx
    ON schedules (next_fire_at)
    WHERE enabled;
