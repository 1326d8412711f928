// Package pgtest gives each test its own PostgreSQL database, cloned from a
// template that is migrated once, so that database tests are isolated and
// run in parallel.
//
// It finds a server in this order: KAGZI_TEST_DATABASE_URL (a server where
// the role may create databases), then the local server at DefaultURL, then
// a PostgreSQL container started with dockertest. When none answers, the
// test fails and says how to provide one. It never skips.
package pgtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/ory/dockertest/v3"
	"github.com/ory/dockertest/v3/docker"

	"github.com/kagzi/kagzi/migrations"
	"github.com/kagzi/kagzi/postgres"
)

// DefaultURL is the server tried when KAGZI_TEST_DATABASE_URL is unset.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// EnvURL names the variable that points the tests at a server.
const EnvURL = "KAGZI_TEST_DATABASE_URL"

var (
	serverOnce sync.Once
	serverURL  string
	serverErr  error

	templateOnce sync.Once
	templateName string
	templateErr  error
)

// NewDatabase creates a migrated database for t, dropped when t ends, and
// returns its URL.
func NewDatabase(t testing.TB) string {
	t.Helper()
	tmpl := template(t)
	return createDatabase(t, "TEMPLATE "+pgx.Identifier{tmpl}.Sanitize())
}

// NewEmptyDatabase creates a database with no schema for t, dropped when t
// ends, and returns its URL.
func NewEmptyDatabase(t testing.TB) string {
	t.Helper()
	server(t)
	return createDatabase(t, "")
}

// NewPool creates a migrated database for t and returns a pool on it,
// closed when t ends, with the database's URL.
func NewPool(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	dbURL := NewDatabase(t)
	pool, err := postgres.NewPool(context.Background(), dbURL, 20)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool, dbURL
}

// WithDatabase returns serverURL with its database replaced by name.
func WithDatabase(serverURL, name string) string {
	u, err := url.Parse(serverURL)
	if err != nil {
		panic(err) // checked when the server was found
	}
	u.Path = "/" + name
	return u.String()
}

func server(t testing.TB) string {
	t.Helper()
	serverOnce.Do(func() { serverURL, serverErr = findServer() })
	if serverErr != nil {
		t.Fatalf("pgtest: no PostgreSQL server for the tests: %v\n"+
			"Set %s to a server where the role may create databases, e.g.\n"+
			"  export %s='postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable'\n"+
			"or start one locally, or run a Docker engine so a container can be started.",
			serverErr, EnvURL, EnvURL)
	}
	return serverURL
}

func findServer() (string, error) {
	if u := os.Getenv(EnvURL); u != "" {
		if err := ping(u); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvURL, u, err)
		}
		return u, nil
	}
	localErr := ping(DefaultURL)
	if localErr == nil {
		return DefaultURL, nil
	}
	u, dockerErr := startContainer()
	if dockerErr != nil {
		return "", fmt.Errorf("%s: %v; dockertest: %v", DefaultURL, localErr, dockerErr)
	}
	return u, nil
}

func ping(u string) error {
	if _, err := url.Parse(u); err != nil {
		return fmt.Errorf("must be a postgres:// URL: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// startContainer runs PostgreSQL in Docker for machines with no server.
// The container removes itself after ten minutes at most.
func startContainer() (string, error) {
	pool, err := dockertest.NewPool("")
	if err != nil {
		return "", err
	}
	if err := pool.Client.Ping(); err != nil {
		return "", err
	}
	res, err := pool.RunWithOptions(&dockertest.RunOptions{
		Repository: "postgres",
		Tag:        "15",
		Env:        []string{"POSTGRES_HOST_AUTH_METHOD=trust"},
	}, func(hc *docker.HostConfig) {
		hc.AutoRemove = true
		hc.RestartPolicy = docker.RestartPolicy{Name: "no"}
	})
	if err != nil {
		return "", err
	}
	_ = res.Expire(600)
	u := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", res.GetHostPort("5432/tcp"))
	pool.MaxWait = 60 * time.Second
	if err := pool.Retry(func() error { return ping(u) }); err != nil {
		return "", err
	}
	return u, nil
}

// template returns the name of a database migrated to the latest schema.
// Its name carries a hash of the migrations, so test processes (one per
// package, running at once) share it, and a changed schema gets a new one.
func template(t testing.TB) string {
	t.Helper()
	srv := server(t)
	templateOnce.Do(func() { templateName, templateErr = ensureTemplate(srv) })
	if templateErr != nil {
		t.Fatalf("pgtest: prepare template database: %v", templateErr)
	}
	return templateName
}

func ensureTemplate(srv string) (string, error) {
	name := "kagzi_template_" + migrationsHash()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, srv)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	// Processes racing to build the template take turns.
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(hashtext($1))", name); err != nil {
		return "", err
	}
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock(hashtext($1))", name)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", err
	}
	if exists {
		return name, nil
	}
	building := name + "_building"
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{building}.Sanitize()); err != nil {
		return "", err
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{building}.Sanitize()); err != nil {
		return "", err
	}
	if err := migrate(ctx, WithDatabase(srv, building)); err != nil {
		return "", err
	}
	_, err = conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{building}.Sanitize()+" RENAME TO "+pgx.Identifier{name}.Sanitize())
	return name, err
}

func migrate(ctx context.Context, dbURL string) error {
	m, err := postgres.NewMigrator(dbURL, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	return errors.Join(m.Up(ctx), m.Close())
}

func migrationsHash() string {
	h := sha256.New()
	err := fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(migrations.FS, path)
		h.Write([]byte(path))
		h.Write(b)
		return err
	})
	if err != nil {
		panic(err)
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

func createDatabase(t testing.TB, clause string) string {
	t.Helper()
	srv := server(t)
	name := "kagzi_test_" + randomSuffix()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, srv)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, strings.TrimSpace("CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" "+clause)); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() { dropDatabase(t, srv, name) })
	return WithDatabase(srv, name)
}

func dropDatabase(t testing.TB, srv, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, srv)
	if err != nil {
		t.Errorf("pgtest: drop %s: %v", name, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		t.Errorf("pgtest: drop %s: %v", name, err)
	}
}

func randomSuffix() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
