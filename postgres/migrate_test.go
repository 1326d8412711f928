package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kagzi/kagzi/migrations"
	"github.com/kagzi/kagzi/postgres"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

// migrateTimeout bounds each wait for a migration or a server state, and
// testTimeout each test's queries. They only guard against hangs (a
// migration blocked forever); they never pace a test.
const (
	migrateTimeout = 10 * time.Second
	testTimeout    = 30 * time.Second
)

// kagziTables are the tables migration 1 creates.
var kagziTables = []string{"schedules", "task_queues", "workers", "workflow_runs", "workflow_steps"}

// TestMigrateUpDownUp migrates a fresh database all the way up, all the way
// down and up again: every down migration undoes its up migration.
func TestMigrateUpDownUp(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewEmptyDatabase(t)
	ctx := testContext(t)
	conn := connect(t, dbURL)
	mg := newMigrator(t, dbURL)

	if err := mg.Up(ctx); err != nil {
		t.Fatalf("first Up: %v", err)
	}
	assertMigrated(t, ctx, mg, conn)

	// Versions may have gaps: step down by the number of migrations.
	ups, err := fs.Glob(migrations.FS, "*.up.sql")
	if err != nil {
		t.Fatal(err)
	}
	if err := mg.Steps(ctx, -len(ups)); err != nil {
		t.Fatalf("Steps(-%d): %v", len(ups), err)
	}
	if v, dirty, err := mg.Version(ctx); err != nil || v != 0 || dirty {
		t.Fatalf("after full down: Version() = %d, dirty %v, %v; want 0, false, nil", v, dirty, err)
	}
	if got := publicTables(t, ctx, conn); !slices.Equal(got, []string{"schema_migrations"}) {
		t.Fatalf("tables after full down = %v, want only schema_migrations", got)
	}
	if got := publicIndexes(t, ctx, conn); !slices.Equal(got, []string{"schema_migrations_pkey"}) {
		t.Fatalf("indexes after full down = %v, want only schema_migrations_pkey", got)
	}

	if err := mg.Up(ctx); err != nil {
		t.Fatalf("second Up: %v", err)
	}
	assertMigrated(t, ctx, mg, conn)
}

// TestMigrateLeavesNoInvalidIndex checks that every index the migrations
// build concurrently exists and is valid after Up.
func TestMigrateLeavesNoInvalidIndex(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewEmptyDatabase(t)
	ctx := testContext(t)
	mg := newMigrator(t, dbURL)
	if err := mg.Up(ctx); err != nil {
		t.Fatalf("Up: %v", err)
	}
	conn := connect(t, dbURL)
	if got := invalidIndexes(t, ctx, conn); len(got) != 0 {
		t.Fatalf("invalid indexes after Up: %v", got)
	}
	indexes := publicIndexes(t, ctx, conn)
	for _, name := range migrationIndexes(t) {
		if !slices.Contains(indexes, name) {
			t.Errorf("index %s, created by a migration, is missing; have %v", name, indexes)
		}
	}
}

// TestIndexBuildDoesNotBlockInserts holds migration 2's concurrent index
// build in progress behind an open snapshot and checks that writes to the
// table go on meanwhile: the build must not take a lock that blocks them.
func TestIndexBuildDoesNotBlockInserts(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewEmptyDatabase(t)
	ctx := testContext(t)
	mg := newMigrator(t, dbURL)
	if err := mg.Steps(ctx, 1); err != nil {
		t.Fatalf("Steps(1): %v", err)
	}
	conn := connect(t, dbURL)
	for range 10 {
		insertRun(t, ctx, conn, "ns")
	}

	// A transaction holding a snapshot older than the build makes CREATE
	// INDEX CONCURRENTLY wait for it before it can finish. REPEATABLE READ
	// keeps the snapshot for the whole transaction; under READ COMMITTED an
	// idle transaction holds none and the build would not wait.
	blockerConn := connect(t, dbURL)
	blocker, err := blockerConn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := blocker.Exec(ctx, "SELECT txid_current()"); err != nil {
		t.Fatal(err)
	}

	migration := goMigrate(t, dbURL, func() error { return mg.Steps(context.Background(), 1) })
	t.Cleanup(func() { _ = blocker.Rollback(context.Background()) }) // runs before the wait for migration
	phase := waitIndexBuildBlockedBy(t, ctx, conn, blockerConn.PgConn().PID(), migration)
	t.Logf("index build waiting on the open snapshot, phase %q", phase)

	writer := connect(t, dbURL)
	if _, err := writer.Exec(ctx, "SET lock_timeout = '2s'"); err != nil {
		t.Fatal(err)
	}
	insertRun(t, ctx, writer, "ns")

	var building bool
	if err := conn.QueryRow(ctx, `
		SELECT EXISTS (SELECT FROM pg_stat_progress_create_index
		               WHERE datname = current_database() AND relid = 'workflow_runs'::regclass)`,
	).Scan(&building); err != nil {
		t.Fatal(err)
	}
	if done, err := migration.finished(); done {
		t.Fatalf("migration 2 finished (err %v) while the blocker was open", err)
	}
	if !building {
		t.Fatal("index build no longer in progress after the insert; the insert did not run during the build")
	}

	if err := blocker.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := migration.wait(t); err != nil {
		t.Fatalf("migration 2: %v", err)
	}
	if v, dirty, err := mg.Version(ctx); err != nil || v != 2 || dirty {
		t.Fatalf("Version() = %d, dirty %v, %v; want 2, false, nil", v, dirty, err)
	}
	def := indexDef(t, ctx, conn, "workflow_runs_claim_idx")
	if !def.valid {
		t.Fatalf("workflow_runs_claim_idx is INVALID: %s", def.sql)
	}

	// The row written during the build is in the index.
	const claimable = `
		SELECT count(*) FROM workflow_runs
		WHERE namespace = 'ns' AND task_queue = 'q' AND status IN ('pending', 'sleeping')`
	var plan string
	var got int
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL enable_seqscan = off"); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, "EXPLAIN "+claimable)
		if err != nil {
			return err
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		plan = strings.Join(lines, "\n")
		return tx.QueryRow(ctx, claimable).Scan(&got)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(plan, "workflow_runs_claim_idx") {
		t.Fatalf("count does not read workflow_runs_claim_idx:\n%s", plan)
	}
	if want := 11; got != want {
		t.Fatalf("rows found through the index = %d, want %d", got, want)
	}
}

// TestMigrateReplicaStartsDuringIndexBuild starts a second replica's
// migrator while the first is building an index, as a rolling deploy does.
// The newcomer must wait for the migration lock without holding a snapshot
// open: CREATE INDEX CONCURRENTLY waits for every older snapshot, so a
// newcomer blocked inside a lock statement would wait on the build while
// the build waits on it.
func TestMigrateReplicaStartsDuringIndexBuild(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewEmptyDatabase(t)
	ctx := testContext(t)
	first := newMigrator(t, dbURL)
	if err := first.Steps(ctx, 1); err != nil {
		t.Fatalf("Steps(1): %v", err)
	}
	conn := connect(t, dbURL)

	// An open write transaction on workflow_runs holds the first replica's
	// build in its first phase, before it takes the snapshots it waits on.
	writerConn := connect(t, dbURL)
	writer, err := writerConn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	insertRun(t, ctx, writer, "ns")

	firstUp := goMigrate(t, dbURL, func() error { return first.Up(context.Background()) })
	t.Cleanup(func() { _ = writer.Rollback(context.Background()) }) // runs before the wait for firstUp
	waitIndexBuildBlockedBy(t, ctx, conn, writerConn.PgConn().PID(), firstUp)

	secondUp := goMigrate(t, dbURL, func() error {
		mg, err := postgres.NewMigrator(dbURL, slog.New(slog.DiscardHandler))
		if err != nil {
			return err
		}
		return errors.Join(mg.Up(context.Background()), mg.Close())
	})
	t.Cleanup(func() { _ = writer.Rollback(context.Background()) })
	// Wait until the second replica is queued for a lock (any of them) that
	// the first one holds.
	waitFor(t, ctx, conn, "the second replica queued for a migration lock", secondUp, `
		SELECT EXISTS (
			SELECT FROM pg_stat_activity a
			WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
			  AND a.query ILIKE '%advisory_lock(%'
			  AND NOT EXISTS (SELECT FROM pg_locks l
			                  WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted))`)

	if err := writer.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := firstUp.wait(t); err != nil {
		t.Errorf("first replica Up: %v", err)
	}
	if err := secondUp.wait(t); err != nil {
		t.Errorf("second replica Up: %v", err)
	}
	if t.Failed() {
		return
	}
	assertMigrated(t, ctx, first, conn)
	if got := invalidIndexes(t, ctx, conn); len(got) != 0 {
		t.Fatalf("invalid indexes: %v", got)
	}
}

// TestMigrateRetriesDirtyIndexMigration checks that Up recovers from a
// failed concurrent index build: the INVALID index it left is dropped and
// built again with the migration's definition.
func TestMigrateRetriesDirtyIndexMigration(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewEmptyDatabase(t)
	ctx := testContext(t)
	mg := newMigrator(t, dbURL)
	if err := mg.Steps(ctx, 1); err != nil {
		t.Fatalf("Steps(1): %v", err)
	}
	conn := connect(t, dbURL)
	insertRun(t, ctx, conn, "dup")
	insertRun(t, ctx, conn, "dup")

	// A unique build over duplicates fails after creating the catalog entry,
	// leaving an INVALID index under migration 2's index name.
	_, err := conn.Exec(ctx, "CREATE UNIQUE INDEX CONCURRENTLY workflow_runs_claim_idx ON workflow_runs (namespace)")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23505" {
		t.Fatalf("failing unique build: err = %v, want unique violation", err)
	}
	if def := indexDef(t, ctx, conn, "workflow_runs_claim_idx"); def.valid {
		t.Fatalf("setup: workflow_runs_claim_idx is valid, want INVALID: %s", def.sql)
	}
	if _, err := conn.Exec(ctx, "UPDATE schema_migrations SET version = 2, dirty = true"); err != nil {
		t.Fatal(err)
	}

	if err := mg.Up(ctx); err != nil {
		t.Fatalf("Up after a failed index build: %v", err)
	}
	if v, dirty, err := mg.Version(ctx); err != nil || v != migrations.Latest() || dirty {
		t.Fatalf("Version() = %d, dirty %v, %v; want %d, false, nil", v, dirty, err, migrations.Latest())
	}
	def := indexDef(t, ctx, conn, "workflow_runs_claim_idx")
	if !def.valid {
		t.Fatalf("workflow_runs_claim_idx still INVALID after Up: %s", def.sql)
	}
	if !strings.Contains(def.sql, "available_at") || strings.Contains(def.sql, "UNIQUE") {
		t.Fatalf("workflow_runs_claim_idx = %q, want migration 2's definition", def.sql)
	}
	if got := invalidIndexes(t, ctx, conn); len(got) != 0 {
		t.Fatalf("invalid indexes after Up: %v", got)
	}
}

// TestMigrateConcurrentReplicas starts several replicas' migrators on one
// empty database at once, as a fleet rolling out does.
func TestMigrateConcurrentReplicas(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewEmptyDatabase(t)
	const replicas = 4

	start := make(chan struct{})
	var ups []*background
	for range replicas {
		ups = append(ups, goMigrate(t, dbURL, func() error {
			<-start
			mg, err := postgres.NewMigrator(dbURL, slog.New(slog.DiscardHandler))
			if err != nil {
				return err
			}
			return errors.Join(mg.Up(context.Background()), mg.Close())
		}))
	}
	close(start)
	for i, up := range ups {
		if err := up.wait(t); err != nil {
			t.Errorf("replica %d Up: %v", i, err)
		}
	}
	if t.Failed() {
		return
	}

	ctx := testContext(t)
	mg := newMigrator(t, dbURL)
	conn := connect(t, dbURL)
	assertMigrated(t, ctx, mg, conn)
	if got := invalidIndexes(t, ctx, conn); len(got) != 0 {
		t.Fatalf("invalid indexes after concurrent Up: %v", got)
	}
}

// TestMigrateDirtyNonIndexMigrationNeedsForce checks that Up refuses to
// rerun a dirty migration that is not an index build, and says how to
// recover, changing nothing.
func TestMigrateDirtyNonIndexMigrationNeedsForce(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewEmptyDatabase(t)
	ctx := testContext(t)
	mg := newMigrator(t, dbURL)
	if err := mg.Steps(ctx, 1); err != nil {
		t.Fatalf("Steps(1): %v", err)
	}
	conn := connect(t, dbURL)
	if _, err := conn.Exec(ctx, "UPDATE schema_migrations SET dirty = true"); err != nil {
		t.Fatal(err)
	}

	err := mg.Up(ctx)
	if err == nil || !strings.Contains(err.Error(), "force") {
		t.Fatalf("Up on dirty version 1: err = %v, want an error mentioning force", err)
	}
	if v, dirty, err := mg.Version(ctx); err != nil || v != 1 || !dirty {
		t.Fatalf("Version() = %d, dirty %v, %v; want 1, true, nil (Up must change nothing)", v, dirty, err)
	}
	if got := publicIndexes(t, ctx, conn); slices.Contains(got, "workflow_runs_claim_idx") {
		t.Fatalf("Up ran migration 2 on a dirty version 1: indexes %v", got)
	}
}

// TestMigrateForceAdviceRecovers follows the advice Up gives for a dirty
// first migration: mend the database, force the version it names, and Up
// must then bring the schema to the latest version.
func TestMigrateForceAdviceRecovers(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewEmptyDatabase(t)
	ctx := testContext(t)
	mg := newMigrator(t, dbURL)
	if err := mg.Steps(ctx, 1); err != nil {
		t.Fatalf("Steps(1): %v", err)
	}
	conn := connect(t, dbURL)
	if _, err := conn.Exec(ctx, "UPDATE schema_migrations SET dirty = true"); err != nil {
		t.Fatal(err)
	}
	err := mg.Up(ctx)
	m := regexp.MustCompile(`force (-?\d+)`).FindStringSubmatch(fmt.Sprint(err))
	if m == nil {
		t.Fatalf("Up on dirty version 1: err = %v, want advice 'force V'", err)
	}
	version, err := strconv.Atoi(m[1])
	if err != nil {
		t.Fatal(err)
	}

	// Mending a failed first migration means removing what it half made.
	if _, err := conn.Exec(ctx, "DROP TABLE "+strings.Join(kagziTables, ", ")); err != nil {
		t.Fatal(err)
	}
	if err := mg.Force(ctx, version); err != nil {
		t.Fatalf("Force(%d), as advised: %v", version, err)
	}
	if err := mg.Up(ctx); err != nil {
		t.Fatalf("Up after Force(%d), as advised: %v", version, err)
	}
	assertMigrated(t, ctx, mg, conn)
}

// background is a migration running in a goroutine that ends before the
// test does.
type background struct {
	dbURL string
	done  chan struct{} // closed when fn has returned
	err   error         // fn's result, read after done
}

// goMigrate runs fn in a goroutine. The test waits for it at cleanup, so
// cleanups registered after goMigrate (which run before) must release
// whatever fn may be waiting for.
func goMigrate(t *testing.T, dbURL string, fn func() error) *background {
	t.Helper()
	b := &background{dbURL: dbURL, done: make(chan struct{})}
	go func() {
		defer close(b.done)
		b.err = fn()
	}()
	t.Cleanup(func() { _ = b.wait(t) })
	return b
}

// finished reports whether fn has returned, and its error.
func (b *background) finished() (bool, error) {
	select {
	case <-b.done:
		return true, b.err
	default:
		return false, nil
	}
}

// wait returns fn's error. If fn does not return within migrateTimeout, it
// logs what the database's sessions wait for, ends them so that fn returns,
// and fails the test.
func (b *background) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-b.done:
		return b.err
	case <-time.After(migrateTimeout):
		logSessions(t, b.dbURL)
		terminateBackends(t, b.dbURL)
		<-b.done
		t.Fatalf("migration did not finish within %v: %v", migrateTimeout, b.err)
		return nil
	}
}

// waitFor polls the boolean query on conn until it is true, failing the
// test when b finishes first or at the deadline.
func waitFor(t *testing.T, ctx context.Context, conn *pgx.Conn, what string, b *background, query string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(migrateTimeout)
	for {
		var ok bool
		if err := conn.QueryRow(ctx, query, args...).Scan(&ok); err != nil {
			t.Fatalf("wait for %s: %v", what, err)
		}
		if ok {
			return
		}
		if done, err := b.finished(); done {
			t.Fatalf("migration finished (err %v) before %s", err, what)
		}
		if time.Now().After(deadline) {
			logSessions(t, b.dbURL)
			t.Fatalf("no %s within %v", what, migrateTimeout)
		}
		time.Sleep(10 * time.Millisecond) // poll interval for observing server state
	}
}

// waitIndexBuildBlockedBy waits until a CREATE INDEX on workflow_runs, run
// by b, waits for the session pid, and returns the build's phase.
func waitIndexBuildBlockedBy(t *testing.T, ctx context.Context, conn *pgx.Conn, pid uint32, b *background) string {
	t.Helper()
	const blocked = `
		SELECT EXISTS (SELECT FROM pg_stat_progress_create_index
		               WHERE datname = current_database() AND relid = 'workflow_runs'::regclass
		                 AND current_locker_pid = $1)`
	waitFor(t, ctx, conn, fmt.Sprintf("index build waiting on pid %d", pid), b, blocked, pid)
	var phase string
	if err := conn.QueryRow(ctx, `
		SELECT phase FROM pg_stat_progress_create_index
		WHERE datname = current_database() AND relid = 'workflow_runs'::regclass`).Scan(&phase); err != nil {
		t.Fatalf("index build phase: %v", err)
	}
	return phase
}

// assertMigrated checks that the database is at the latest version, clean,
// with all of Kagzi's tables and the indexes the migrations create.
func assertMigrated(t *testing.T, ctx context.Context, mg *postgres.Migrator, conn *pgx.Conn) {
	t.Helper()
	v, dirty, err := mg.Version(ctx)
	if err != nil || v != migrations.Latest() || dirty {
		t.Fatalf("Version() = %d, dirty %v, %v; want %d, false, nil", v, dirty, err, migrations.Latest())
	}
	want := append([]string{"schema_migrations", "api_keys", "signals"}, kagziTables...)
	slices.Sort(want)
	if got := publicTables(t, ctx, conn); !slices.Equal(got, want) {
		t.Fatalf("tables = %v, want %v", got, want)
	}
	indexes := publicIndexes(t, ctx, conn)
	for _, name := range migrationIndexes(t) {
		if !slices.Contains(indexes, name) {
			t.Fatalf("index %s is missing; have %v", name, indexes)
		}
	}
}

var createIndexRE = regexp.MustCompile(`(?i)CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(\w+)`)

var dropIndexRE = regexp.MustCompile(`(?i)^DROP\s+INDEX\s+CONCURRENTLY\s+IF\s+EXISTS\s+(\w+);`)

// migrationIndexes returns the names of the indexes the up migrations
// build and leave in place: a migration that only drops an index (its
// first statement, with no build after it) removes it from the list.
func migrationIndexes(t *testing.T) []string {
	t.Helper()
	names, err := fs.Glob(migrations.FS, "*.up.sql")
	if err != nil {
		t.Fatal(err)
	}
	var indexes []string
	for _, name := range names {
		body, err := fs.ReadFile(migrations.FS, name)
		if err != nil {
			t.Fatal(err)
		}
		built := createIndexRE.FindAllStringSubmatch(string(body), -1)
		for _, m := range built {
			indexes = append(indexes, m[1])
		}
		if len(built) == 0 {
			for _, line := range strings.Split(string(body), "\n") {
				if m := dropIndexRE.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
					indexes = slices.DeleteFunc(indexes, func(n string) bool { return n == m[1] })
				}
			}
		}
	}
	if len(indexes) == 0 {
		t.Fatal("no CREATE INDEX CONCURRENTLY found in the migrations")
	}
	return indexes
}

func publicTables(t *testing.T, ctx context.Context, conn *pgx.Conn) []string {
	t.Helper()
	return queryNames(t, ctx, conn, `
		SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename`)
}

func publicIndexes(t *testing.T, ctx context.Context, conn *pgx.Conn) []string {
	t.Helper()
	return queryNames(t, ctx, conn, `
		SELECT indexname FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname`)
}

// invalidIndexes returns every index of the database, catalogs included,
// that a failed concurrent build left INVALID or not ready.
func invalidIndexes(t *testing.T, ctx context.Context, conn *pgx.Conn) []string {
	t.Helper()
	return queryNames(t, ctx, conn, `
		SELECT i.indexrelid::regclass::text FROM pg_index i
		WHERE NOT i.indisvalid OR NOT i.indisready ORDER BY 1`)
}

func queryNames(t *testing.T, ctx context.Context, conn *pgx.Conn, sql string) []string {
	t.Helper()
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

type indexInfo struct {
	sql   string
	valid bool
}

func indexDef(t *testing.T, ctx context.Context, conn *pgx.Conn, name string) indexInfo {
	t.Helper()
	var info indexInfo
	err := conn.QueryRow(ctx, `
		SELECT pg_get_indexdef(i.indexrelid), i.indisvalid
		FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public' AND c.relname = $1`, name).Scan(&info.sql, &info.valid)
	if err != nil {
		t.Fatalf("index %s: %v", name, err)
	}
	return info
}

// insertRun inserts a pending run through db, a connection or a transaction.
func insertRun(t *testing.T, ctx context.Context, db interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}, namespace string) {
	t.Helper()
	_, err := db.Exec(ctx, `
		INSERT INTO workflow_runs (run_id, namespace, task_queue, workflow_type, status, retry_policy, available_at)
		VALUES ($1, $2, 'q', 'wf', 'pending', '{}'::jsonb, now())`, uuid.New(), namespace)
	if err != nil {
		t.Fatalf("insert run: %v", err)
	}
}

func newMigrator(t *testing.T, dbURL string) *postgres.Migrator {
	t.Helper()
	mg, err := postgres.NewMigrator(dbURL, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("NewMigrator: %v", err)
	}
	t.Cleanup(func() { _ = mg.Close() })
	return mg
}

func connect(t *testing.T, dbURL string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), migrateTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// terminateBackends ends every session on the database at dbURL but this
// one, so that a migration stuck waiting returns with an error.
func terminateBackends(t *testing.T, dbURL string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), migrateTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Errorf("terminate backends: %v", err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `
		SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid()`); err != nil {
		t.Errorf("terminate backends: %v", err)
	}
}

// logSessions logs what each session on the database at dbURL is doing and
// waiting for, to explain a migration that hangs.
func logSessions(t *testing.T, dbURL string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), migrateTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Logf("log sessions: %v", err)
		return
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `
		SELECT format('pid %s %s, xmin %s, waits on %s/%s (blocked by %s), index build %s: %s',
		              a.pid, a.state, coalesce(a.backend_xmin::text, '-'),
		              coalesce(a.wait_event_type, '-'), coalesce(a.wait_event, '-'),
		              pg_blocking_pids(a.pid),
		              coalesce(p.phase || ' waiting on pid ' || coalesce(p.current_locker_pid::text, '-'), '-'),
		              regexp_replace(a.query, '\s+', ' ', 'g'))
		FROM pg_stat_activity a LEFT JOIN pg_stat_progress_create_index p ON p.pid = a.pid
		WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
		ORDER BY a.pid`)
	if err != nil {
		t.Logf("log sessions: %v", err)
		return
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Logf("log sessions: %v", err)
		return
	}
	for _, l := range lines {
		t.Log(l)
	}
}

// TestMigrateUpLeavesNewerSchema: a replica of an older binary that starts
// during a rolling upgrade, when a newer one has migrated further (or is
// migrating), starts: there is nothing for it to apply or recover.
func TestMigrateUpLeavesNewerSchema(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewEmptyDatabase(t)
	ctx := testContext(t)
	mg := newMigrator(t, dbURL)
	if err := mg.Up(ctx); err != nil {
		t.Fatalf("Up: %v", err)
	}
	conn := connect(t, dbURL)
	newer := migrations.Latest() + 1
	for _, dirty := range []bool{false, true} {
		if _, err := conn.Exec(ctx, "UPDATE schema_migrations SET version = $1, dirty = $2", newer, dirty); err != nil {
			t.Fatal(err)
		}
		if err := mg.Up(ctx); err != nil {
			t.Fatalf("Up on schema %d (dirty: %v): %v", newer, dirty, err)
		}
		if v, d, err := mg.Version(ctx); err != nil || v != newer || d != dirty {
			t.Fatalf("after Up: Version() = %d, dirty %v, %v; want %d, %v, nil", v, d, err, newer, dirty)
		}
	}
}
