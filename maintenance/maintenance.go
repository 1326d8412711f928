// Package maintenance runs the background services that keep work moving
// and every table bounded: the rescuer of expired leases, the reaper of
// silent workers, and the retention of finished runs. Every replica runs
// them; the store makes each safe to run on all replicas at once.
package maintenance

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Store is what the background maintenance needs of storage.
// Each method is safe to run on every replica at once.
type Store interface {
	// NextLeaseExpiry says how long until the earliest lease of a running
	// run expires (zero or less: one has expired); ok is false when no
	// run is running.
	NextLeaseExpiry(ctx context.Context) (wait time.Duration, ok bool, err error)
	// RescueExpired ends the attempt of up to limit runs whose lease
	// expired, and says how many were retried and failed.
	RescueExpired(ctx context.Context, limit int) (retried, failed int, err error)
	// MarkStaleWorkersOffline takes offline the workers silent for longer
	// than silence.
	MarkStaleWorkersOffline(ctx context.Context, silence time.Duration) (int64, error)
	// DeleteFinishedRuns deletes up to limit runs that finished longer
	// than retention ago.
	DeleteFinishedRuns(ctx context.Context, retention time.Duration, limit int) (int64, error)
	// DeleteOfflineWorkers deletes up to limit workers offline since
	// longer than retention ago.
	DeleteOfflineWorkers(ctx context.Context, retention time.Duration, limit int) (int64, error)
}

// Options configure a Maintainer.
type Options struct {
	// Interval is the shortest pause of each service (jittered ±10%): the
	// rescuer ends an expired lease at most about this late.
	Interval time.Duration
	// LeaseDuration is the lease claims and heartbeats grant: the longest
	// the rescuer sleeps when no running run's lease expires sooner (a
	// lease granted meanwhile cannot expire sooner). 0 takes Interval.
	LeaseDuration time.Duration
	// HeartbeatInterval is the workers' heartbeat interval: a worker
	// silent for three of them goes offline, and the reaper looks once
	// per interval (at least Interval).
	HeartbeatInterval time.Duration
	// Retention is how long finished runs are kept; 0 keeps them forever.
	Retention time.Duration
	// WorkerRetention is how long offline workers are kept; 0 keeps them
	// forever.
	WorkerRetention time.Duration
	// RetentionInterval is how often retention runs while it has no
	// backlog; default a minute. With a backlog it runs every Interval.
	RetentionInterval time.Duration
	// RetentionBatch is how many rows one retention statement deletes;
	// default 500.
	RetentionBatch int
	// Registerer, when not nil, receives the maintainer's metrics.
	Registerer prometheus.Registerer
}

// Maintainer runs the background services that keep work moving and the
// database lean, each on its own timer so that none waits for another: the
// rescuer of expired leases, the reaper of silent workers and the
// retention of finished runs and offline workers.
type Maintainer struct {
	store             Store
	logger            *slog.Logger
	interval          time.Duration
	lease             time.Duration
	reapEvery         time.Duration
	silence           time.Duration
	retention         time.Duration
	workerRetention   time.Duration
	retentionInterval time.Duration
	retentionBatch    int
	rescued           *prometheus.CounterVec
	deleted           prometheus.Counter
	workersDeleted    prometheus.Counter
}

// Batch sizes bound the rows one maintenance transaction locks;
// retentionBatches bounds the statements of one retention pass.
const (
	rescueBatch      = 500
	retentionBatch   = 500
	retentionBatches = 20
)

// New returns a maintainer. It does no I/O until Run or Tick.
func New(store Store, logger *slog.Logger, opts Options) *Maintainer {
	m := &Maintainer{
		store:             store,
		logger:            logger.With("component", "maintainer"),
		interval:          opts.Interval,
		lease:             opts.LeaseDuration,
		reapEvery:         max(opts.Interval, opts.HeartbeatInterval),
		silence:           3 * opts.HeartbeatInterval,
		retention:         opts.Retention,
		workerRetention:   opts.WorkerRetention,
		retentionInterval: opts.RetentionInterval,
		retentionBatch:    opts.RetentionBatch,
		deleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kagzi_runs_deleted_total", Help: "Finished runs deleted by retention.",
		}),
		workersDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kagzi_workers_deleted_total", Help: "Offline workers deleted by retention.",
		}),
		rescued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kagzi_runs_rescued_total",
			Help: "Runs whose lease expired, by outcome: retry (scheduled) or failed (no attempt left).",
		}, []string{"outcome"}),
	}
	if m.lease <= 0 {
		m.lease = m.interval
	}
	if m.retentionInterval <= 0 {
		m.retentionInterval = time.Minute
	}
	if m.retentionBatch <= 0 {
		m.retentionBatch = retentionBatch
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(m.rescued, m.deleted, m.workersDeleted)
	}
	return m
}

// Run runs the rescuer, the reaper and retention, each in its own loop,
// until ctx ends.
func (m *Maintainer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, pass := range []func(context.Context) time.Duration{m.rescuePass, m.reapPass, m.retentionPass} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			timer := time.NewTimer(0)
			defer timer.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-timer.C:
				}
				timer.Reset(jitter(pass(ctx)))
			}
		}()
	}
	wg.Wait()
	return nil
}

// jitter spreads d by ±10%, so that replicas do not run in step.
func jitter(d time.Duration) time.Duration {
	return d - d/10 + rand.N(d/5+1)
}

// Tick runs each maintenance service once: it rescues every expired lease,
// reaps silent workers and runs one retention pass.
func (m *Maintainer) Tick(ctx context.Context) {
	m.rescue(ctx)
	m.reap(ctx)
	m.retain(ctx)
}

// rescuePass rescues the expired leases, if any, and sleeps until the next
// lease expires: an idle database costs one statement per lease duration.
func (m *Maintainer) rescuePass(ctx context.Context) time.Duration {
	next, ok, err := m.store.NextLeaseExpiry(ctx)
	switch {
	case err != nil:
		if ctx.Err() == nil {
			m.logger.Error("read the next lease expiry", "error", err)
		}
		return m.interval
	case !ok:
		return m.lease
	case next > 0:
		return min(max(next, m.interval), m.lease)
	}
	m.rescue(ctx)
	return m.interval
}

// rescue ends every expired lease, in batches.
func (m *Maintainer) rescue(ctx context.Context) {
	for ctx.Err() == nil {
		retried, failed, err := m.store.RescueExpired(ctx, rescueBatch)
		if err != nil {
			if ctx.Err() == nil {
				m.logger.Error("rescue expired leases", "error", err)
			}
			return
		}
		if retried+failed > 0 {
			m.logger.Info("rescued runs with expired leases", "retried", retried, "failed", failed)
			m.rescued.WithLabelValues("retry").Add(float64(retried))
			m.rescued.WithLabelValues("failed").Add(float64(failed))
		}
		if retried+failed < rescueBatch {
			return
		}
	}
}

func (m *Maintainer) reapPass(ctx context.Context) time.Duration {
	m.reap(ctx)
	return m.reapEvery
}

// reap takes the silent workers offline.
func (m *Maintainer) reap(ctx context.Context) {
	n, err := m.store.MarkStaleWorkersOffline(ctx, m.silence)
	if err != nil && ctx.Err() == nil {
		m.logger.Error("mark stale workers offline", "error", err)
	}
	if n > 0 {
		m.logger.Info("workers went offline after missing heartbeats", "workers", n)
	}
}

func (m *Maintainer) retentionPass(ctx context.Context) time.Duration {
	if m.retain(ctx) {
		return m.interval
	}
	return m.retentionInterval
}

// retain deletes old finished runs and old offline workers, in small
// batches so that no transaction holds many locks for long, and at most
// retentionBatches of each per pass; it reports whether a backlog is left.
func (m *Maintainer) retain(ctx context.Context) (backlog bool) {
	if m.retention > 0 {
		backlog = m.deleteBatches(ctx, "delete finished runs", m.deleted, func() (int64, error) {
			return m.store.DeleteFinishedRuns(ctx, m.retention, m.retentionBatch)
		})
	}
	if m.workerRetention > 0 {
		if m.deleteBatches(ctx, "delete offline workers", m.workersDeleted, func() (int64, error) {
			return m.store.DeleteOfflineWorkers(ctx, m.workerRetention, m.retentionBatch)
		}) {
			backlog = true
		}
	}
	return backlog
}

// deleteBatches runs del until a batch comes back short or the pass's
// bound is reached, and reports whether rows may be left.
func (m *Maintainer) deleteBatches(ctx context.Context, what string, deleted prometheus.Counter, del func() (int64, error)) bool {
	for range retentionBatches {
		if ctx.Err() != nil {
			return false
		}
		n, err := del()
		if err != nil {
			if ctx.Err() == nil {
				m.logger.Error(what, "error", err)
			}
			return false
		}
		deleted.Add(float64(n))
		if n < int64(m.retentionBatch) {
			return false
		}
	}
	return true
}
