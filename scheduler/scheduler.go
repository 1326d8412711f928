// Package scheduler is the cron scheduler: the loop, run on every replica,
// that starts the runs of schedules whose fire time has come. The cron
// dialect itself is package schedule.
package scheduler

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kagzi/kagzi/domain"
)

// Store is what the cron scheduler needs of storage. Each method is
// safe to run on every replica at once.
type Store interface {
	// FireDueSchedules starts the runs of up to limit due schedules and
	// moves their next fire times on; each fire time is started once,
	// however many replicas call it at the same time.
	FireDueSchedules(ctx context.Context, limit int) (domain.ScheduleFiring, error)
	// NextScheduleFire says how long until the earliest next fire time of
	// any enabled schedule, by the database's clock; ok is false when none
	// has one.
	NextScheduleFire(ctx context.Context) (wait time.Duration, ok bool, err error)
}

// Scheduler is the cron scheduler: it starts the runs of schedules whose
// fire time has come. Every replica runs one; the store makes sure that
// each fire time starts exactly one run.
type Scheduler struct {
	store    Store
	logger   *slog.Logger
	interval time.Duration
	started  prometheus.Counter
	skipped  prometheus.Counter
}

// scheduleBatch bounds the schedules one firing transaction locks.
const scheduleBatch = 50

// New returns a scheduler that looks for due schedules every
// interval (jittered), and sooner when the earliest next fire time comes
// first. reg may be nil.
func New(store Store, logger *slog.Logger, interval time.Duration, reg prometheus.Registerer) *Scheduler {
	s := &Scheduler{
		store:    store,
		logger:   logger.With("component", "scheduler"),
		interval: interval,
		started: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kagzi_schedule_runs_started_total",
			Help: "Runs started by cron schedules.",
		}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kagzi_schedule_fires_already_live_total",
			Help: "Schedule fire times for which a live run already held the external ID, so nothing was started.",
		}),
	}
	if reg != nil {
		reg.MustRegister(s.started, s.skipped)
	}
	return s
}

// Run fires due schedules until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		s.Tick(ctx)
		timer.Reset(s.wait(ctx))
	}
}

// wait is how long to sleep before the next tick: the polling interval,
// jittered so that replicas spread out, or less when a schedule fires
// sooner. Polling stays, since a schedule created or changed on another
// replica sends no notification.
func (s *Scheduler) wait(ctx context.Context) time.Duration {
	d := s.interval - s.interval/10 + rand.N(s.interval/5+1)
	next, ok, err := s.store.NextScheduleFire(ctx)
	if err != nil && ctx.Err() == nil {
		s.logger.Error("read the next schedule fire time", "error", err)
	}
	if ok && next < d {
		// Not below a floor: a due schedule another replica is firing
		// right now reads as due until that replica commits.
		d = max(next, minScheduleWait)
	}
	return d
}

// minScheduleWait is the shortest wait between two ticks.
const minScheduleWait = 20 * time.Millisecond

// Tick fires every schedule that is due now, in batches.
func (s *Scheduler) Tick(ctx context.Context) {
	for ctx.Err() == nil {
		f, err := s.store.FireDueSchedules(ctx, scheduleBatch)
		if err != nil {
			if ctx.Err() == nil {
				s.logger.Error("fire due schedules", "error", err)
			}
			return
		}
		s.started.Add(float64(f.Started))
		s.skipped.Add(float64(f.AlreadyLive))
		if f.Started > 0 {
			s.logger.Debug("schedules fired", "schedules", f.Schedules, "runs_started", f.Started)
		}
		if f.AlreadyLive > 0 {
			s.logger.Info("schedule fire times already had a live run; nothing started for them", "fire_times", f.AlreadyLive)
		}
		if f.Broken > 0 {
			s.logger.Warn("schedules whose cron or time zone no longer parses stopped firing until changed", "schedules", f.Broken)
		}
		if f.Schedules < scheduleBatch {
			return
		}
	}
}
