// Package postgres is Kagzi's storage: the pgx implementation of what the
// other packages declare, the LISTEN connection and the migrations runner.
// All SQL lives here, as constants beside the method that runs it.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kagzi/kagzi/domain"
)

// Channel is the one NOTIFY channel Kagzi uses. Its payload is
// "q:{namespace}/{task_queue}" when work may have become claimable on a
// queue, and "r:{run_id}" when a run became terminal.
const Channel = "kagzi"

// Store is Kagzi's state in PostgreSQL.
type Store struct {
	pool          *pgxpool.Pool
	leaseDuration time.Duration
}

// NewStore returns a store over pool. Claims and heartbeats give leases of
// leaseDuration.
func NewStore(pool *pgxpool.Pool, leaseDuration time.Duration) *Store {
	return &Store{pool: pool, leaseDuration: leaseDuration}
}

// NewPool connects a pool to url with at most maxConns connections (0 keeps
// pgx's default).
func NewPool(ctx context.Context, url string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open pool: %w", err)
	}
	return pool, nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	return translate(s.pool.Ping(ctx))
}

// SchemaVersion returns the migration version recorded in the database and
// whether it is dirty.
func (s *Store) SchemaVersion(ctx context.Context) (version uint, dirty bool, err error) {
	var v int64
	err = s.pool.QueryRow(ctx, `SELECT version, dirty FROM schema_migrations LIMIT 1`).Scan(&v, &dirty)
	if err != nil {
		return 0, false, translate(err)
	}
	return uint(v), dirty, nil
}

// newID returns a time-ordered UUIDv7, so that run and worker IDs sort by
// creation time and keyset pages are stable while rows are added.
func newID() string {
	return uuid.Must(uuid.NewV7()).String()
}

// translate maps driver errors to domain errors, once, at the edge.
func translate(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return domain.ErrNotFound
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "23505": // unique_violation
			return fmt.Errorf("%w: %s", domain.ErrConflict, pgErr.Message)
		case "57P01", "57P02", "57P03", "53300": // admin/crash shutdown, cannot connect now, too many connections
			return fmt.Errorf("%w: %s", domain.ErrUnavailable, pgErr.Message)
		}
		return err
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) || pgconn.SafeToRetry(err) {
		return fmt.Errorf("%w: %v", domain.ErrUnavailable, err)
	}
	return err
}

func utc(t *time.Time) {
	if t != nil && !t.IsZero() {
		*t = t.UTC()
	}
}

func utcp(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// notFound gives a not-found error a message that names what is missing.
func notFound(err error, format string, args ...any) error {
	if errors.Is(err, domain.ErrNotFound) {
		return domain.Errorf(domain.CodeNotFound, format, args...)
	}
	return err
}
