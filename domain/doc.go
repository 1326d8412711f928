// Package domain is Kagzi's vocabulary: workflow runs, steps and workers,
// their statuses and legal transitions, the retry policy and its backoff,
// name and payload validation, and the typed errors every layer shares.
//
// It does no I/O and imports only the standard library, so every decision
// made here is a pure function that is tested without a database.
package domain
