DROP INDEX CONCURRENTLY IF EXISTS workers_live_heartbeat_idx;
