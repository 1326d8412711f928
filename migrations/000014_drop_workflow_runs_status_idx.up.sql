-- Online-safe: dropped CONCURRENTLY. Every change of a run's status wrote
-- an entry into this index, a fifth of a run's index writes, for list
-- filters that the namespace index serves for live and completed runs. The
-- rarely listed failed and cancelled runs get a partial index of their own
-- in the next migration.
DROP INDEX CONCURRENTLY IF EXISTS workflow_runs_status_idx;
