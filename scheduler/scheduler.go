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
	// any enabled schedule, by the database's clock (zero or less when one
	// is due); ok is false when none has one.
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
	// contended is the wait after a pass found schedules due but fired
	// none; it doubles while that lasts. Only Run's goroutine uses it.
	contended time.Duration
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

// Run fires due schedules until ctx ends. Each pass reads the earliest
// next fire time (one statement) and fires only when something is due, so
// a replica with no schedule due soon polls once per interval: that
// interval is how soon it notices a schedule another replica created or
// changed, since such changes send no notification. Failures back off
// exponentially, up to maxBackoff, and log once per attempt.
func (s *Scheduler) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	var backoff time.Duration
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		wait, err := s.pass(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			backoff = min(max(2*backoff, minFailureWait), maxBackoff)
			s.logger.Error("fire due schedules", "error", err, "retry_in", backoff)
			wait = backoff
		default:
			backoff = 0
		}
		timer.Reset(wait)
	}
}

// Waits between passes.
const (
	// minScheduleWait is the shortest wait, when a due schedule fired
	// nothing: another replica is firing it and it reads as due until
	// that replica commits.
	minScheduleWait = 20 * time.Millisecond
	// minFailureWait is the first wait after a failed pass; it doubles
	// with each failure in a row, up to maxBackoff.
	minFailureWait = 100 * time.Millisecond
	maxBackoff     = 30 * time.Second
)

// pass fires what is due and says how long to wait for the next pass: until
// the earliest next fire time, or the polling interval (jittered, so that
// replicas spread out) when that comes first or no schedule has one.
func (s *Scheduler) pass(ctx context.Context) (time.Duration, error) {
	poll := s.interval - s.interval/10 + rand.N(s.interval/5+1)
	next, ok, err := s.store.NextScheduleFire(ctx)
	switch {
	case err != nil:
		return 0, err
	case !ok:
		return poll, nil
	case next > 0:
		return min(next, poll), nil
	}
	fired, err := s.fire(ctx)
	switch {
	case err != nil:
		return 0, err
	case fired == 0:
		// Another replica holds what is due.
		s.contended = min(max(2*s.contended, minScheduleWait), poll)
		return s.contended, nil
	}
	s.contended = 0
	return 0, nil
}

// Tick fires every schedule that is due now, in batches, and logs a
// failure.
func (s *Scheduler) Tick(ctx context.Context) {
	if _, err := s.fire(ctx); err != nil && ctx.Err() == nil {
		s.logger.Error("fire due schedules", "error", err)
	}
}

// fire fires every schedule that is due now, in batches, and says how many
// schedules it fired.
func (s *Scheduler) fire(ctx context.Context) (int, error) {
	total := 0
	for ctx.Err() == nil {
		f, err := s.store.FireDueSchedules(ctx, scheduleBatch)
		if err != nil {
			return total, err
		}
		total += f.Schedules
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
			break
		}
	}
	return total, nil
}
