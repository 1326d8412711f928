package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strconv"
	"strings"
	"time"

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

// Migrator runs the embedded migrations against one database. Each command
// holds a session advisory lock, so that replicas starting at once migrate
// one after the other. A Migrator is for one goroutine at a time.
type Migrator struct {
	db     *sql.DB
	logger *slog.Logger
	m      *migrate.Migrate // opened by the first command, under the lock
}

// NewMigrator returns a migrator for the database at url. It does no I/O
// until its first command.
func NewMigrator(url string, logger *slog.Logger) (*Migrator, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	return &Migrator{db: stdlib.OpenDB(*cfg), logger: logger}, nil
}

// locked runs fn holding the migration lock, with golang-migrate open. The
// lock is waited for by polling rather than in pg_advisory_lock: a backend
// blocked in a statement holds a snapshot, and CREATE INDEX CONCURRENTLY on
// the replica that holds the lock would wait for that snapshot forever.
// For the same reason golang-migrate, which takes a lock of its own with
// pg_advisory_lock as it opens and runs, is only used under this lock.
func (mg *Migrator) locked(ctx context.Context, fn func() error) error {
	conn, err := mg.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connect for migration lock: %w", err)
	}
	defer conn.Close()
	for {
		var got bool
		if err := conn.QueryRowContext(ctx, "SELECT pg_try_advisory_lock($1)", migrateLockKey).Scan(&got); err != nil {
			return fmt.Errorf("take migration lock: %w", err)
		}
		if got {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrateLockKey)
	if mg.m == nil {
		driver, err := migratepgx.WithInstance(mg.db, &migratepgx.Config{MultiStatementEnabled: true})
		if err != nil {
			return fmt.Errorf("open migration driver: %w", err)
		}
		src, err := iofs.New(migrations.FS, ".")
		if err != nil {
			return fmt.Errorf("open migration files: %w", err)
		}
		if mg.m, err = migrate.NewWithInstance("iofs", src, "pgx5", driver); err != nil {
			return fmt.Errorf("open migrations: %w", err)
		}
	}
	return fn()
}

// Close releases the migrator's connections.
func (mg *Migrator) Close() error {
	var errs []error
	if mg.m != nil {
		srcErr, dbErr := mg.m.Close()
		errs = append(errs, srcErr, dbErr)
	}
	return errors.Join(append(errs, mg.db.Close())...)
}

// Up applies every pending migration. A migration left dirty by a failed
// run is retried when it is safe to run again (an index migration, which
// first drops the INVALID index the failure left); any other dirty state
// stops with an error saying what to do.
func (mg *Migrator) Up(ctx context.Context) error {
	return mg.locked(ctx, func() error {
		// A newer binary migrated further (its migration may still be in
		// progress): nothing here is for this binary to apply or recover.
		if v, dirty, err := mg.m.Version(); err == nil && v > migrations.Latest() {
			mg.logger.Info("the schema is newer than this binary", "version", v, "dirty", dirty, "binary", migrations.Latest())
			return nil
		}
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
// Version -1 records that no migration is applied.
func (mg *Migrator) Force(ctx context.Context, version int) error {
	return mg.locked(ctx, func() error { return mg.m.Force(version) })
}

// Version returns the recorded schema version and whether it is dirty.
// A database with no migrations applied is version 0.
func (mg *Migrator) Version(ctx context.Context) (version uint, dirty bool, err error) {
	err = mg.locked(ctx, func() error {
		version, dirty, err = mg.m.Version()
		if errors.Is(err, migrate.ErrNilVersion) {
			version, dirty, err = 0, false, nil
		}
		return err
	})
	return version, dirty, err
}

func (mg *Migrator) recoverDirty() error {
	version, dirty, err := mg.m.Version()
	if errors.Is(err, migrate.ErrNilVersion) {
		return nil
	}
	if err != nil || !dirty {
		return err
	}
	if !rerunnable(version) {
		return fmt.Errorf("schema version %d is dirty: mend the database, then run 'kagzi migrate force %d'", version, migrations.Previous(version))
	}
	mg.logger.Warn("retrying dirty index migration", "version", version)
	return mg.m.Force(migrations.Previous(version))
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

// BreaksOlderMarker starts the comment on schema_migrations that a
// migration which is not additive sets (and its down migration removes):
//
//	COMMENT ON TABLE schema_migrations IS 'kagzi:breaks-older-than 17'
//
// Binaries that need a schema version below 17 then turn unready: they
// cannot serve the schema, and they do not have the file to know it.
const BreaksOlderMarker = "kagzi:breaks-older-than "

// SchemaState is the migration state recorded in the database.
type SchemaState struct {
	Version uint
	Dirty   bool
	// BreaksOlderThan is the version of BreaksOlderMarker, 0 when no
	// migration set it.
	BreaksOlderThan uint
}

// SchemaState reads the recorded schema version, whether it is dirty, and
// which binaries it breaks.
func (s *Store) SchemaState(ctx context.Context) (SchemaState, error) {
	var (
		st      SchemaState
		v       int64
		comment string
	)
	err := s.pool.QueryRow(ctx, `SELECT version, dirty, coalesce(obj_description('schema_migrations'::regclass, 'pg_class'), '')
		FROM schema_migrations LIMIT 1`).Scan(&v, &st.Dirty, &comment)
	if err != nil {
		return st, translate(err)
	}
	st.Version = uint(v)
	if rest, ok := strings.CutPrefix(comment, BreaksOlderMarker); ok {
		n, err := strconv.ParseUint(strings.TrimSpace(rest), 10, 64)
		if err != nil {
			return st, fmt.Errorf("the comment on schema_migrations is not %q followed by a version: %q", BreaksOlderMarker, comment)
		}
		st.BreaksOlderThan = uint(n)
	}
	return st, nil
}
