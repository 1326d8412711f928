package distributor

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// MaintenanceStore is what the background maintenance needs of storage.
// Each method is safe to run on every replica at once.
type MaintenanceStore interface {
	// RescueExpired ends the attempt of up to limit runs whose lease
	// expired, and says how many were retried and failed.
	RescueExpired(ctx context.Context, limit int) (retried, failed int, err error)
	// MarkStaleWorkersOffline takes offline the workers silent for longer
	// than silence.
	MarkStaleWorkersOffline(ctx context.Context, silence time.Duration) (int64, error)
}

// Maintainer runs the background loops that keep work moving: the rescuer
// of expired leases and the reaper of silent workers.
type Maintainer struct {
	store    MaintenanceStore
	logger   *slog.Logger
	interval time.Duration
	silence  time.Duration
	rescued  *prometheus.CounterVec
}

// rescueBatch bounds the rows one rescue transaction locks.
const rescueBatch = 500

// NewMaintainer returns a maintainer that looks every interval (jittered)
// and takes offline workers silent for three heartbeat intervals. reg may
// be nil.
func NewMaintainer(store MaintenanceStore, logger *slog.Logger, interval, heartbeatInterval time.Duration, reg prometheus.Registerer) *Maintainer {
	m := &Maintainer{
		store:    store,
		logger:   logger.With("component", "maintainer"),
		interval: interval,
		silence:  3 * heartbeatInterval,
		rescued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kagzi_runs_rescued_total",
			Help: "Runs whose lease expired, by outcome: retry (scheduled) or failed (no attempt left).",
		}, []string{"outcome"}),
	}
	if reg != nil {
		reg.MustRegister(m.rescued)
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
}
