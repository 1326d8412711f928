DROP INDEX CONCURRENTLY IF EXISTS schedules_namespace_idx;
