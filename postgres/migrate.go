package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"

	"github.com/golang-migrate/migrate/v4"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/kagzi/kagzi/migrations"
)

// migrateLockKey is the session advisory lock that serializes Kagzi's own
// migration logic (dirty-state recovery and Up) across replicas starting at
// once; golang-migrate's own lock covers one step at a time only.
const migrateLockKey = 0x6b61677a69 // "kagzi"

// Migrator runs the embedded migrations against one database.
type Migrator struct {
	m      *migrate.Migrate
	db     *sql.DB
	logger *slog.Logger
}

// NewMigrator opens a migrator for the database at url.
func NewMigrator(url string, logger *slog.Logger) (*Migrator, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	driver, err := migratepgx.WithInstance(db, &migratepgx.Config{MultiStatementEnabled: true})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open migration driver: %w", err)
	}
	src, err := iofs.New(migrations.FS, ".")
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open migration files: %w", err)
	}
	m, err := migrate.NewWithInstance("iofs", src, "pgx5", driver)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open migrations: %w", err)
	}
	return &Migrator{m: m, db: db, logger: logger}, nil
}

// Close releases the migrator's connections.
func (mg *Migrator) Close() error {
	srcErr, dbErr := mg.m.Close()
	return errors.Join(srcErr, dbErr, mg.db.Close())
}

// Up applies every pending migration. A migration left dirty by a failed
// run is retried when it is safe to run again (an index migration, which
// first drops the INVALID index the failure left); any other dirty state
// stops with an error saying what to do.
func (mg *Migrator) Up(ctx context.Context) error {
	return mg.locked(ctx, func() error {
		if err := mg.recoverDirty(); err != nil {
			return err
		}
		if err := mg.m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
			return fmt.Errorf("migrate up: %w", err)
		}
		return nil
	})
}

// Steps applies n migrations up (n > 0) or down (n < 0).
func (mg *Migrator) Steps(ctx context.Context, n int) error {
	return mg.locked(ctx, func() error {
		if err := mg.m.Steps(n); err != nil && !errors.Is(err, migrate.ErrNoChange) {
			return fmt.Errorf("migrate steps %d: %w", n, err)
		}
		return nil
	})
}

// Force sets the recorded version without running anything, clearing the
// dirty flag: the operator's way out after mending a failed migration.
func (mg *Migrator) Force(ctx context.Context, version int) error {
	return mg.locked(ctx, func() error { return mg.m.Force(version) })
}

// Version returns the recorded schema version and whether it is dirty.
// A database with no migrations applied is version 0.
func (mg *Migrator) Version() (version uint, dirty bool, err error) {
	version, dirty, err = mg.m.Version()
	if errors.Is(err, migrate.ErrNilVersion) {
		return 0, false, nil
	}
	return version, dirty, err
}

func (mg *Migrator) recoverDirty() error {
	version, dirty, err := mg.Version()
	if err != nil || !dirty {
		return err
	}
	if !rerunnable(version) {
		return fmt.Errorf("schema version %d is dirty: mend the database, then run 'kagzi migrate force %d'", version, version-1)
	}
	mg.logger.Warn("retrying dirty index migration", "version", version)
	return mg.m.Force(int(version) - 1)
}

// rerunnable reports whether migration version is an index migration,
// whose first statement removes what a failed earlier run left.
func rerunnable(version uint) bool {
	names, _ := fs.Glob(migrations.FS, fmt.Sprintf("%06d_*.up.sql", version))
	for _, name := range names {
		body, err := fs.ReadFile(migrations.FS, name)
		if err == nil && strings.Contains(string(body), "DROP INDEX CONCURRENTLY IF EXISTS") {
			return true
		}
	}
	return false
}

func (mg *Migrator) locked(ctx context.Context, fn func() error) error {
	conn, err := mg.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connect for migration lock: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", migrateLockKey); err != nil {
		return fmt.Errorf("take migration lock: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrateLockKey)
	return fn()
}
