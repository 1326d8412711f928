// Package migrations holds Kagzi's schema as golang-migrate SQL files,
// embedded into the binary.
//
// Files run in multi-statement mode: each statement is sent on its own, so
// a file can hold a DROP INDEX CONCURRENTLY followed by a CREATE INDEX
// CONCURRENTLY (neither may run in a transaction), and a file that must be
// atomic says BEGIN and COMMIT itself. Every index on a table that may
// already hold rows is built CONCURRENTLY in a file of its own, and its
// first statement drops the INVALID index a failed earlier build left.
//
// Migrations are additive, so that older replicas keep serving a newer
// schema during a rolling upgrade. One that is not sets
// COMMENT ON TABLE schema_migrations IS 'kagzi:breaks-older-than N', N
// its own version (its down migration sets it to NULL), and binaries that
// need a version below N turn unready (see postgres.BreaksOlderMarker).
//
// Version numbers may skip (work developed side by side took ranges of
// its own); only their order matters, and a dirty migration is retried
// from the version that exists before it (Previous).
package migrations

import "embed"

// FS holds the migration files.
//
//go:embed *.sql
var FS embed.FS
