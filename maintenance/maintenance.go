// Package maintenance runs the background services that keep work moving
// and every table bounded: the rescuer of expired leases, the reaper of
// silent workers, and the retention of finished runs. Every replica runs
// them; the store makes each safe to run on all replicas at once.
package maintenance

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Store is what the background maintenance needs of storage.
// Each method is safe to run on every replica at once.
type Store interface {
	// RescueExpired ends the attempt of up to limit runs whose lease
	// expired, and says how many were retried and failed.
	RescueExpired(ctx context.Context, limit int) (retried, failed int, err error)
	// MarkStaleWorkersOffline takes offline the workers silent for longer
	// than silence.
	MarkStaleWorkersOffline(ctx context.Context, silence time.Duration) (int64, error)
	// DeleteFinishedRuns deletes up to limit runs that finished longer
	// than retention ago.
	DeleteFinishedRuns(ctx context.Context, retention time.Duration, limit int) (int64, error)
}

// Options configure a Maintainer.
type Options struct {
	// Interval is how often the loops run (jittered ±10%).
	Interval time.Duration
	// HeartbeatInterval is the workers' heartbeat interval: a worker
	// silent for three of them goes offline.
	HeartbeatInterval time.Duration
	// Retention is how long finished runs are kept; 0 keeps them forever.
	Retention time.Duration
	// Registerer, when not nil, receives the maintainer's metrics.
	Registerer prometheus.Registerer
}

// Maintainer runs the background loops that keep work moving and the
// database lean: the rescuer of expired leases, the reaper of silent
// workers and the retention of finished runs.
type Maintainer struct {
	store     Store
	logger    *slog.Logger
	interval  time.Duration
	silence   time.Duration
	retention time.Duration
	rescued   *prometheus.CounterVec
	deleted   prometheus.Counter
}

// Batch sizes bound the rows one maintenance transaction locks.
const (
	rescueBatch    = 500
	retentionBatch = 500
)

// New returns a maintainer. It does no I/O until Run or Tick.
func New(store Store, logger *slog.Logger, opts Options) *Maintainer {
	m := &Maintainer{
		store:     store,
		logger:    logger.With("component", "maintainer"),
		interval:  opts.Interval,
		silence:   3 * opts.HeartbeatInterval,
		retention: opts.Retention,
		deleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kagzi_runs_deleted_total", Help: "Finished runs deleted by retention.",
		}),
		rescued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kagzi_runs_rescued_total",
			Help: "Runs whose lease expired, by outcome: retry (scheduled) or failed (no attempt left).",
		}, []string{"outcome"}),
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(m.rescued, m.deleted)
	}
	return m
}

// Run loops until ctx ends.
func (m *Maintainer) Run(ctx context.Context) error {
	for {
		m.Tick(ctx)
		jitter := rand.N(m.interval/5 + 1)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(m.interval - m.interval/10 + jitter):
		}
	}
}

// Tick runs each maintenance task once.
func (m *Maintainer) Tick(ctx context.Context) {
	for ctx.Err() == nil {
		retried, failed, err := m.store.RescueExpired(ctx, rescueBatch)
		if err != nil {
			if ctx.Err() == nil {
				m.logger.Error("rescue expired leases", "error", err)
			}
			break
		}
		if retried+failed > 0 {
			m.logger.Info("rescued runs with expired leases", "retried", retried, "failed", failed)
			m.rescued.WithLabelValues("retry").Add(float64(retried))
			m.rescued.WithLabelValues("failed").Add(float64(failed))
		}
		if retried+failed < rescueBatch {
			break
		}
	}
	n, err := m.store.MarkStaleWorkersOffline(ctx, m.silence)
	if err != nil && ctx.Err() == nil {
		m.logger.Error("mark stale workers offline", "error", err)
	}
	if n > 0 {
		m.logger.Info("workers went offline after missing heartbeats", "workers", n)
	}
	m.deleteFinished(ctx)
}

// deleteFinished applies the retention in small batches until nothing old
// is left, so that no transaction holds many locks for long.
func (m *Maintainer) deleteFinished(ctx context.Context) {
	if m.retention <= 0 {
		return
	}
	for ctx.Err() == nil {
		n, err := m.store.DeleteFinishedRuns(ctx, m.retention, retentionBatch)
		if err != nil {
			if ctx.Err() == nil {
				m.logger.Error("delete finished runs", "error", err)
			}
			return
		}
		m.deleted.Add(float64(n))
		if n < retentionBatch {
			return
		}
	}
}
