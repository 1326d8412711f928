// Package postgres is Kagzi's storage: the pgx implementation of what the
// other packages declare, the LISTEN connection and the migrations runner.
// All SQL lives here, as constants beside the method that runs it.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/puddle/v2"

	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/internal/batch"
)

// Channel is the one NOTIFY channel Kagzi uses. Its payload is
// "q:{namespace}/{task_queue}" when work may have become claimable on a
// queue, and "f:{namespace}/{task_queue}/{run_id},{run_id}..." when runs
// became terminal (which also frees their slots under a concurrency limit),
// and "k:{key_id}" when an API key was created or revoked.
const Channel = "kagzi"

// finishedPayload is the SQL expression of the "f:" payload for the row at
// hand.
const finishedPayload = `'f:' || namespace || '/' || task_queue || '/' || run_id`

// Store is Kagzi's state in PostgreSQL.
type Store struct {
	pool          *pgxpool.Pool
	leaseDuration time.Duration
	completions   *batch.Batcher[completeReq, completeRes]
	stepReports   *batch.Batcher[stepReq, domain.StepResult]
	handoff       domain.Handoff // nil: runs wait for the distributor's claims
}

// Group commit of run completions: batches of up to 200 runs (so that one
// notification names them all within NOTIFY's 8000-byte payload) or 8 MiB
// of output, at most 4 in flight.
const (
	completeBatch    = 200
	completeBytes    = 8 << 20
	completeInflight = 4
)

// NewStore returns a store over pool. Claims and heartbeats give leases of
// leaseDuration.
func NewStore(pool *pgxpool.Pool, leaseDuration time.Duration) *Store {
	s := &Store{pool: pool, leaseDuration: leaseDuration}
	s.completions = batch.New(completeBatch, completeBytes, completeInflight,
		func(r completeReq) int { return len(r.output) }, s.completeRuns)
	s.stepReports = batch.New(stepReportBatch, stepReportBytes, stepReportInflight, stepReqSize, s.reportSteps)
	return s
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
			return fmt.Errorf("%w: %w", domain.ErrUnavailable, err)
		}
		return err
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) || pgconn.SafeToRetry(err) || errors.Is(err, puddle.ErrClosedPool) {
		return fmt.Errorf("%w: %w", domain.ErrUnavailable, err)
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

// isDeadlock reports whether err is a deadlock PostgreSQL broke by
// aborting this statement, which is safe to retry.
func isDeadlock(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "40P01"
}

// notFound gives a not-found error a message that names what is missing.
func notFound(err error, format string, args ...any) error {
	if errors.Is(err, domain.ErrNotFound) {
		return domain.Errorf(domain.CodeNotFound, format, args...)
	}
	return err
}

// listQuery builds a keyset-paginated list query from the filters present,
// rather than from "$n IS NULL OR ..." conditions, so that the planner sees
// each shape as it is and picks the index that fits it.
type listQuery struct {
	where []string
	args  []any
	arms  []string // a row meets one of these: see addOneOf
}

func newListQuery(namespace string) *listQuery {
	return &listQuery{where: []string{"namespace = $1"}, args: []any{namespace}}
}

// add adds a condition; "?" in it stands for arg.
func (q *listQuery) add(cond string, arg any) {
	q.args = append(q.args, arg)
	q.where = append(q.where, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(q.args))))
}

// addOneOf adds the condition that column holds one of values, which must
// be distinct. With more than one, the query becomes a UNION ALL of one
// arm per value, each a page read in key order from an index (an arm with
// a WHERE of its own is planned on its own, so each carries the ORDER BY
// and LIMIT), merged: "column = ANY(...)" would read every match and sort
// them all.
func (q *listQuery) addOneOf(column string, values []string) {
	if len(values) == 1 {
		q.add(column+" = ?", values[0])
		return
	}
	for _, v := range values {
		q.args = append(q.args, v)
		q.arms = append(q.arms, column+" = $"+strconv.Itoa(len(q.args)))
	}
}

// sql returns the query for one page of limit rows after the key (when
// set), newest key first. It fetches one row more, for nextPage.
func (q *listQuery) sql(columns, table, key, after string, limit int) (string, []any) {
	if after != "" {
		q.add(key+" < ?", after)
	}
	q.args = append(q.args, limit+1)
	where := strings.Join(q.where, " AND ")
	tail := ` ORDER BY ` + key + ` DESC LIMIT $` + strconv.Itoa(len(q.args))
	if len(q.arms) == 0 {
		return `SELECT ` + columns + ` FROM ` + table + ` WHERE ` + where + tail, q.args
	}
	arms := make([]string, len(q.arms))
	for i, arm := range q.arms {
		arms[i] = `(SELECT ` + columns + ` FROM ` + table + ` WHERE ` + where + ` AND ` + arm + tail + `)`
	}
	return `SELECT * FROM (` + strings.Join(arms, ` UNION ALL `) + `) AS page` + tail, q.args
}
