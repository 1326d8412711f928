package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kagzi/kagzi/internal/testserver"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

// TestRunWithAnotherDatabase: -db naming a database that is not the
// server's is refused before any load, whether it has Kagzi's schema or
// none.
func TestRunWithAnotherDatabase(t *testing.T) {
	t.Parallel()
	srv := testserver.New(t)
	for name, db := range map[string]string{"migrated": pgtest.NewDatabase(t), "empty": pgtest.NewEmptyDatabase(t)} {
		t.Run(name, func(t *testing.T) {
			o := options{url: srv.URL, namespace: "bench", queue: "q-" + name, db: db, runs: 100, workers: 1, maxTasks: 10, batch: 100}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := run(ctx, o, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), "-db is not the database of the server at "+srv.URL) {
				t.Fatalf("run: got %v, want an error saying -db is not the server's database", err)
			}
			var n int
			if err := srv.Pool.QueryRow(ctx, `SELECT count(*) FROM workflow_runs WHERE task_queue = $1`, o.queue).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Errorf("runs started before the refusal: %d, want 0", n)
			}
		})
	}
}

// TestEndToEndWithoutCompletedRuns: the percentiles of no runs are NULL,
// which reads as zeros rather than an error.
func TestEndToEndWithoutCompletedRuns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	p, err := endToEnd(ctx, conn, options{namespace: "bench", queue: "none"})
	if err != nil || p != (Pct{}) {
		t.Fatalf("endToEnd of no runs: got %+v, %v; want zeros, no error", p, err)
	}
}
