package scheduler_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/postgres"
	"github.com/kagzi/kagzi/postgres/pgtest"
	"github.com/kagzi/kagzi/schedule"
	"github.com/kagzi/kagzi/scheduler"
)

const scheduleNS = "sched"

// firingStore records what each pass over due schedules did.
type firingStore struct {
	*postgres.Store

	mu    sync.Mutex
	total domain.ScheduleFiring
	errs  []error
}

func (s *firingStore) FireDueSchedules(ctx context.Context, limit int) (domain.ScheduleFiring, error) {
	f, err := s.Store.FireDueSchedules(ctx, limit)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.errs = append(s.errs, err)
	}
	s.total.Schedules += f.Schedules
	s.total.Started += f.Started
	s.total.AlreadyLive += f.AlreadyLive
	s.total.Broken += f.Broken
	return f, err
}

func (s *firingStore) result(t *testing.T) domain.ScheduleFiring {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errs) > 0 {
		t.Fatalf("FireDueSchedules failed: %v", errors.Join(s.errs...))
	}
	return s.total
}

// schedSetup is one test's database with a scheduler replica on it.
type schedSetup struct {
	pool      *pgxpool.Pool
	dbURL     string
	store     *firingStore
	scheduler *scheduler.Scheduler
}

func newSchedSetup(t *testing.T) *schedSetup {
	t.Helper()
	pool, dbURL := pgtest.NewPool(t)
	return &schedSetup{pool: pool, dbURL: dbURL, store: newReplica(t, pool)}
}

// newReplica is a scheduler's store on pool, as another server replica
// would have.
func newReplica(t *testing.T, pool *pgxpool.Pool) *firingStore {
	t.Helper()
	return &firingStore{Store: postgres.NewStore(pool, 30*time.Second)}
}

func newScheduler(store *firingStore) *scheduler.Scheduler {
	return scheduler.New(store, slog.New(slog.DiscardHandler), time.Second, nil)
}

func (s *schedSetup) create(t *testing.T, req domain.ScheduleRequest) domain.Schedule {
	t.Helper()
	n, err := req.Validate(domain.PayloadLimits{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatalf("validate %+v: %v", req, err)
	}
	sc, err := s.store.CreateSchedule(context.Background(), scheduleNS, n)
	if err != nil {
		t.Fatalf("CreateSchedule: %v", err)
	}
	return sc
}

func (s *schedSetup) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := s.pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func (s *schedSetup) now(t *testing.T) time.Time {
	t.Helper()
	var now time.Time
	if err := s.pool.QueryRow(context.Background(), `SELECT now()`).Scan(&now); err != nil {
		t.Fatal(err)
	}
	return now.UTC()
}

func (s *schedSetup) get(t *testing.T, id string) domain.Schedule {
	t.Helper()
	sc, err := s.store.GetSchedule(context.Background(), scheduleNS, id)
	if err != nil {
		t.Fatalf("GetSchedule: %v", err)
	}
	return sc
}

// scheduledRun is a run a schedule started, as the database holds it.
type scheduledRun struct {
	runID      string
	externalID string
	createdAt  time.Time
}

// runsOf returns the runs of the schedule, oldest fire time first.
func (s *schedSetup) runsOf(t *testing.T, scheduleID string) []scheduledRun {
	t.Helper()
	rows, err := s.pool.Query(context.Background(),
		`SELECT run_id, external_id, created_at FROM workflow_runs WHERE external_id LIKE $1 ORDER BY external_id`,
		"schedule:"+scheduleID+":%")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var runs []scheduledRun
	for rows.Next() {
		var r scheduledRun
		if err := rows.Scan(&r.runID, &r.externalID, &r.createdAt); err != nil {
			t.Fatal(err)
		}
		runs = append(runs, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return runs
}

// fireTime is the fire time a scheduled run's external ID names.
func fireTime(t *testing.T, r scheduledRun) time.Time {
	t.Helper()
	// "schedule:" + a 36-character schedule ID + ":" + the fire time
	const prefix = len("schedule:") + 36 + 1
	if len(r.externalID) <= prefix {
		t.Fatalf("external ID %q is too short", r.externalID)
	}
	ft, err := time.Parse(time.RFC3339, r.externalID[prefix:])
	if err != nil {
		t.Fatalf("external ID %q: %v", r.externalID, err)
	}
	return ft
}

func externalIDs(runs []scheduledRun) []string {
	ids := make([]string, len(runs))
	for i, r := range runs {
		ids[i] = r.externalID
	}
	return ids
}

// TestScheduleEverySecondFiresOnTime runs the real loop: an @every 1s
// schedule starts its first run within two seconds of being created, and
// each run is created within a second and a half of its fire time. The
// test waits on the queue's notifications, not on the clock.
func TestScheduleEverySecondFiresOnTime(t *testing.T) {
	t.Parallel()
	s := newSchedSetup(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })

	notified := make(chan struct{}, 100)
	lis := postgres.NewListener(s.dbURL, slog.New(slog.DiscardHandler), nil)
	lis.OnQueue = func(namespace, queue string) {
		if namespace == scheduleNS && queue == "ticks" {
			select {
			case notified <- struct{}{}:
			default:
			}
		}
	}
	wg.Add(2)
	go func() { defer wg.Done(); _ = lis.Run(ctx) }()
	go func() {
		defer wg.Done()
		if err := newScheduler(s.store).Run(ctx); err != nil {
			t.Errorf("Scheduler.Run: %v", err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for lis.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatal("the listener did not come up")
		}
		time.Sleep(5 * time.Millisecond)
	}

	sc := s.create(t, domain.ScheduleRequest{WorkflowType: "tick", TaskQueue: "ticks", Cron: "@every 1s",
		Input: json.RawMessage(`{"n":1}`)})
	if sc.NextFireAt == nil || sc.NextFireAt.Sub(sc.CreatedAt) > time.Second || !sc.NextFireAt.After(sc.CreatedAt) {
		t.Fatalf("next_fire_at %v, want within a second after created_at %s", sc.NextFireAt, sc.CreatedAt)
	}
	var runs []scheduledRun
	timeout := time.After(2 * time.Second)
	for len(runs) == 0 {
		select {
		case <-notified:
			runs = s.runsOf(t, sc.ScheduleID)
		case <-timeout:
			t.Fatalf("no run within 2s of creating an @every 1s schedule")
		}
	}
	timeout = time.After(5 * time.Second)
	for len(runs) < 3 {
		select {
		case <-notified:
			runs = s.runsOf(t, sc.ScheduleID)
		case <-timeout:
			t.Fatalf("got %d runs within 5s more of an @every 1s schedule, want 3", len(runs))
		}
	}
	prev := time.Time{}
	for _, r := range runs {
		ft := fireTime(t, r)
		if late := r.createdAt.Sub(ft); late < 0 || late > 1500*time.Millisecond {
			t.Errorf("run %s created %s after its fire time, want within 1.5s", r.externalID, late)
		}
		if !ft.After(prev) || ft.Sub(sc.CreatedAt) < 0 {
			t.Errorf("fire time %s out of order (after %s, schedule created %s)", ft, prev, sc.CreatedAt)
		}
		prev = ft
	}
	run, err := s.store.GetRun(ctx, scheduleNS, runs[0].runID)
	if err != nil {
		t.Fatal(err)
	}
	if run.WorkflowType != "tick" || run.TaskQueue != "ticks" || string(run.Input) != `{"n":1}` ||
		run.Status != domain.RunPending || run.ExternalID == nil || *run.ExternalID != runs[0].externalID {
		t.Errorf("the started run: got %+v", run)
	}
	if got := s.store.result(t); got.AlreadyLive != 0 {
		t.Errorf("fire times already live: got %d, want 0", got.AlreadyLive)
	}
}

// TestScheduleTwoReplicasFireEachTimeOnce makes schedules due again and
// again, each time at a new fire time, and lets two replicas (two stores on
// two pools) tick at the same moment: every fire time starts exactly one
// run, and no replica even tries a fire time the other started (which the
// unique index on live external IDs would hide while the run is live, but
// not after it finished).
func TestScheduleTwoReplicasFireEachTimeOnce(t *testing.T) {
	t.Parallel()
	s := newSchedSetup(t)
	otherPool, err := postgres.NewPool(context.Background(), s.dbURL, 10)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(otherPool.Close)
	replicas := []*firingStore{s.store, newReplica(t, otherPool)}
	schedulers := []*scheduler.Scheduler{newScheduler(replicas[0]), newScheduler(replicas[1])}

	const nSchedules, rounds = 8, 40
	ids := make([]string, nSchedules)
	for i := range ids {
		ids[i] = s.create(t, domain.ScheduleRequest{WorkflowType: "w", Cron: "@every 1h"}).ScheduleID
	}
	// Within the last hour, so that exactly one fire time is due each round.
	base := s.now(t).Truncate(time.Second).Add(-50 * time.Minute)
	want := map[string]bool{}
	for round := range rounds {
		at := base.Add(time.Duration(round) * time.Second)
		s.exec(t, `UPDATE schedules SET next_fire_at = $1`, at)
		for _, id := range ids {
			want[domain.ScheduleRunExternalID(id, at)] = true
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		for _, sch := range schedulers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				sch.Tick(context.Background())
			}()
		}
		close(start)
		wg.Wait()
		// Finish the runs, as workers would: from now on only next_fire_at
		// stands between a fire time and a second run.
		s.exec(t, `UPDATE workflow_runs SET status = 'completed', finished_at = now() WHERE status = 'pending'`)
	}

	var started, alreadyLive int
	for _, r := range replicas {
		f := r.result(t)
		started += f.Started
		alreadyLive += f.AlreadyLive
	}
	if started != nSchedules*rounds || alreadyLive != 0 {
		t.Errorf("runs started: got %d (and %d fire times found already live), want %d and 0", started, alreadyLive, nSchedules*rounds)
	}
	got := map[string]int{}
	for _, id := range ids {
		for _, r := range s.runsOf(t, id) {
			got[r.externalID]++
		}
	}
	for ext, n := range got {
		if n != 1 || !want[ext] {
			t.Errorf("external ID %s: %d runs (expected fire time: %v), want 1", ext, n, want[ext])
		}
	}
	if len(got) != len(want) {
		t.Errorf("distinct fire times started: got %d, want %d", len(got), len(want))
	}
	for _, id := range ids {
		if sc := s.get(t, id); sc.NextFireAt == nil || !sc.NextFireAt.Equal(base.Add((rounds-1)*time.Second+time.Hour)) {
			t.Errorf("schedule %s: next_fire_at %v, want an hour after the last fire time", id, sc.NextFireAt)
		}
	}
}

// TestScheduleCatchUpAfterDowntime: after a long downtime a tick starts the
// latest max_catchup missed fire times only, and moves next_fire_at past
// now; a tick right after starts nothing, even once those runs finished.
func TestScheduleCatchUpAfterDowntime(t *testing.T) {
	t.Parallel()
	s := newSchedSetup(t)
	ctx := context.Background()
	catchup := 3
	version := "v7"
	attempts := 2
	every := s.create(t, domain.ScheduleRequest{WorkflowType: "report", TaskQueue: "reports", Cron: "@every 1h",
		MaxCatchup: &catchup, Input: json.RawMessage(`[1,2,3]`), Version: &version,
		RetryPolicy: &domain.RetryPolicyInput{MaxAttempts: &attempts}})
	yearly := s.create(t, domain.ScheduleRequest{WorkflowType: "report", Cron: "@yearly", MaxCatchup: &catchup})
	// Down for ten and a half hours: fire times N, N+1h ... N+10h were
	// missed. The yearly one has missed every new year since 2016.
	s.exec(t, `UPDATE schedules SET next_fire_at = date_trunc('second', now()) - interval '10 hours 30 minutes' WHERE schedule_id = $1`, every.ScheduleID)
	s.exec(t, `UPDATE schedules SET next_fire_at = '2016-01-01T00:00:00Z' WHERE schedule_id = $1`, yearly.ScheduleID)
	missedFrom := *s.get(t, every.ScheduleID).NextFireAt

	newScheduler(s.store).Tick(ctx)
	now := s.now(t)

	var wantEvery []string
	for h := 8; h <= 10; h++ {
		wantEvery = append(wantEvery, domain.ScheduleRunExternalID(every.ScheduleID, missedFrom.Add(time.Duration(h)*time.Hour)))
	}
	if got := externalIDs(s.runsOf(t, every.ScheduleID)); fmt.Sprint(got) != fmt.Sprint(wantEvery) {
		t.Errorf("@every 1h runs: got %q, want %q", got, wantEvery)
	}
	sc := s.get(t, every.ScheduleID)
	if want := missedFrom.Add(11 * time.Hour); sc.NextFireAt == nil || !sc.NextFireAt.Equal(want) || !want.After(now) {
		t.Errorf("@every 1h next_fire_at: got %v, want %s (after now, %s)", sc.NextFireAt, want, now)
	}
	if want := missedFrom.Add(10 * time.Hour); sc.LastFiredAt == nil || !sc.LastFiredAt.Equal(want) {
		t.Errorf("@every 1h last_fired_at: got %v, want %s", sc.LastFiredAt, want)
	}

	year := now.Year()
	var wantYearly []string
	for y := year - 2; y <= year; y++ {
		wantYearly = append(wantYearly, domain.ScheduleRunExternalID(yearly.ScheduleID, time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC)))
	}
	if got := externalIDs(s.runsOf(t, yearly.ScheduleID)); fmt.Sprint(got) != fmt.Sprint(wantYearly) {
		t.Errorf("@yearly runs: got %q, want %q", got, wantYearly)
	}
	if sc := s.get(t, yearly.ScheduleID); sc.NextFireAt == nil || !sc.NextFireAt.Equal(time.Date(year+1, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("@yearly next_fire_at: got %v, want %d-01-01", sc.NextFireAt, year+1)
	}

	// The runs carry what the schedule says.
	runs := s.runsOf(t, every.ScheduleID)
	run, err := s.store.GetRun(ctx, scheduleNS, runs[0].runID)
	if err != nil {
		t.Fatal(err)
	}
	if run.TaskQueue != "reports" || run.WorkflowType != "report" || string(run.Input) != `[1,2,3]` ||
		run.Version == nil || *run.Version != "v7" || run.RetryPolicy.MaxAttempts != 2 {
		t.Errorf("run: got %+v", run)
	}

	s.exec(t, `UPDATE workflow_runs SET status = 'completed', finished_at = now()`)
	newScheduler(s.store).Tick(ctx)
	if got := len(s.runsOf(t, every.ScheduleID)) + len(s.runsOf(t, yearly.ScheduleID)); got != 6 {
		t.Errorf("runs after a second tick: got %d, want still 6", got)
	}
	if f := s.store.result(t); f.Started != 6 || f.AlreadyLive != 0 {
		t.Errorf("firing: got %+v, want 6 started", f)
	}
}

// TestScheduleUpdateAndDelete: a new cron or time zone moves next_fire_at;
// a disabled schedule fires nothing and has no next fire time; enabled
// again it starts nothing for the time it was off; a deleted one fires
// nothing.
func TestScheduleUpdateAndDelete(t *testing.T) {
	t.Parallel()
	s := newSchedSetup(t)
	ctx := context.Background()
	sch := newScheduler(s.store)
	sc := s.create(t, domain.ScheduleRequest{WorkflowType: "w", Cron: "@yearly"})
	id := sc.ScheduleID
	update := func(body string) (domain.Schedule, error) {
		t.Helper()
		var p domain.SchedulePatch
		if err := json.Unmarshal([]byte(body), &p); err != nil {
			t.Fatal(err)
		}
		if err := p.Validate(domain.PayloadLimits{MaxBytes: 1 << 20}); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		return s.store.UpdateSchedule(ctx, scheduleNS, id, &p)
	}
	mustUpdate := func(body string) domain.Schedule {
		t.Helper()
		sc, err := update(body)
		if err != nil {
			t.Fatalf("UpdateSchedule %s: %v", body, err)
		}
		return sc
	}
	// nextAfter is what the scheduler's own cron code says follows the
	// database's now, give or take the moment of the update.
	nextBetween := func(expr, tz string, before, after time.Time) (time.Time, time.Time) {
		t.Helper()
		c, err := schedule.Parse(expr, tz)
		if err != nil {
			t.Fatal(err)
		}
		return c.Next(before), c.Next(after)
	}

	before := s.now(t)
	sc = mustUpdate(`{"cron": "0 12 * * *", "timezone": "Asia/Tokyo"}`)
	lo, hi := nextBetween("0 12 * * *", "Asia/Tokyo", before, s.now(t))
	if sc.NextFireAt == nil || sc.NextFireAt.Before(lo) || sc.NextFireAt.After(hi) || sc.NextFireAt.Hour() != 3 {
		t.Errorf("after a new cron and zone: next_fire_at %v, want 03:00 UTC between %s and %s", sc.NextFireAt, lo, hi)
	}
	if sc.Cron != "0 12 * * *" || sc.Timezone != "Asia/Tokyo" || !sc.UpdatedAt.After(sc.CreatedAt) {
		t.Errorf("after update: got %+v", sc)
	}

	before = s.now(t)
	sc = mustUpdate(`{"cron": "@every 1s"}`)
	if sc.NextFireAt == nil || sc.NextFireAt.Sub(before) > 2*time.Second || !sc.NextFireAt.After(before) {
		t.Errorf("after @every 1s: next_fire_at %v, want within 1s of %s", sc.NextFireAt, before)
	}
	next := *sc.NextFireAt
	if sc = mustUpdate(`{"max_catchup": 5, "input": {"x": true}}`); sc.NextFireAt == nil || !sc.NextFireAt.Equal(next) ||
		sc.MaxCatchup != 5 || string(sc.Input) != `{"x": true}` {
		t.Errorf("a change that is not about timing moved next_fire_at or was lost: %+v", sc)
	}

	// A bad cron changes nothing.
	_, err := update(`{"cron": "61 * * * *", "max_catchup": 9}`)
	var de *domain.Error
	if !errors.As(err, &de) || de.Code != domain.CodeInvalidArgument || de.Field != "cron" {
		t.Errorf("bad cron: got %v, want invalid_argument naming cron", err)
	}
	if got := s.get(t, id); got.Cron != "@every 1s" || got.MaxCatchup != 5 {
		t.Errorf("a refused update changed the schedule: %+v", got)
	}

	// Disabled: no next fire time, and nothing fires even when the row says due.
	if sc = mustUpdate(`{"enabled": false}`); sc.Enabled || sc.NextFireAt != nil {
		t.Errorf("disabled: got enabled %v, next_fire_at %v", sc.Enabled, sc.NextFireAt)
	}
	s.exec(t, `UPDATE schedules SET next_fire_at = now() - interval '1 hour' WHERE schedule_id = $1`, id)
	sch.Tick(ctx)
	if runs := s.runsOf(t, id); len(runs) != 0 {
		t.Errorf("a disabled schedule fired: %q", externalIDs(runs))
	}
	// Enabled again: next_fire_at from now on, nothing for the time it was off.
	before = s.now(t)
	if sc = mustUpdate(`{"enabled": true}`); !sc.Enabled || sc.NextFireAt == nil || !sc.NextFireAt.After(before) {
		t.Errorf("enabled again: got enabled %v, next_fire_at %v, want after %s", sc.Enabled, sc.NextFireAt, before)
	}
	sch.Tick(ctx)
	if runs := s.runsOf(t, id); len(runs) > 1 {
		t.Errorf("enabling again caught up on the time it was off: %q", externalIDs(runs))
	}

	// Deleted: gone, and nothing fires.
	s.exec(t, `UPDATE schedules SET next_fire_at = now() - interval '1 hour' WHERE schedule_id = $1`, id)
	before = s.now(t)
	if err := s.store.DeleteSchedule(ctx, scheduleNS, id); err != nil {
		t.Fatal(err)
	}
	sch.Tick(ctx)
	var late int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM workflow_runs WHERE created_at >= $1`, before).Scan(&late); err != nil {
		t.Fatal(err)
	}
	if late != 0 {
		t.Errorf("a deleted schedule started %d runs", late)
	}
	for name, err := range map[string]error{
		"get":    func() error { _, err := s.store.GetSchedule(ctx, scheduleNS, id); return err }(),
		"update": func() error { _, err := update(`{"enabled": false}`); return err }(),
		"delete": s.store.DeleteSchedule(ctx, scheduleNS, id),
	} {
		if !errors.Is(err, domain.ErrNotFound) {
			t.Errorf("%s after delete: got %v, want not found", name, err)
		}
	}
	if f := s.store.result(t); f.AlreadyLive != 0 {
		t.Errorf("firing: %+v", f)
	}
}

// TestScheduleBrokenCronStopsFiring: a stored cron that no longer parses
// (written behind the API's back, or by an older dialect) parks its
// schedule instead of failing every pass of every replica.
func TestScheduleBrokenCronStopsFiring(t *testing.T) {
	t.Parallel()
	s := newSchedSetup(t)
	good := s.create(t, domain.ScheduleRequest{WorkflowType: "w", Cron: "@hourly"})
	bad := s.create(t, domain.ScheduleRequest{WorkflowType: "w", Cron: "@hourly"})
	s.exec(t, `UPDATE schedules SET next_fire_at = now() - interval '1 second'`)
	s.exec(t, `UPDATE schedules SET cron = 'not a cron' WHERE schedule_id = $1`, bad.ScheduleID)
	newScheduler(s.store).Tick(context.Background())
	if f := s.store.result(t); f.Started != 1 || f.Broken != 1 {
		t.Errorf("firing: got %+v, want 1 started and 1 broken", f)
	}
	if sc := s.get(t, bad.ScheduleID); sc.NextFireAt != nil {
		t.Errorf("broken schedule: next_fire_at %v, want null", sc.NextFireAt)
	}
	if n := len(s.runsOf(t, good.ScheduleID)); n != 1 {
		t.Errorf("good schedule: %d runs, want 1", n)
	}
}

// TestScheduleListPages walks a namespace's schedules newest first.
func TestScheduleListPages(t *testing.T) {
	t.Parallel()
	s := newSchedSetup(t)
	ctx := context.Background()
	var ids []string
	for range 5 {
		ids = append(ids, s.create(t, domain.ScheduleRequest{WorkflowType: "w", Cron: "@daily"}).ScheduleID)
	}
	if _, err := s.store.CreateSchedule(ctx, "elsewhere", domain.NewSchedule{TaskQueue: "default", WorkflowType: "w",
		Cron: "@daily", Timezone: "UTC", Input: json.RawMessage("null"), RetryPolicy: domain.DefaultRetryPolicy(),
		Enabled: true, MaxCatchup: 1}); err != nil {
		t.Fatal(err)
	}
	var got []string
	page := domain.Page{Limit: 2}
	for {
		list, next, err := s.store.ListSchedules(ctx, scheduleNS, page)
		if err != nil {
			t.Fatal(err)
		}
		for _, sc := range list {
			if sc.Input != nil {
				t.Errorf("a listed schedule carries its input")
			}
			got = append(got, sc.ScheduleID)
		}
		if next == "" {
			break
		}
		page.After = next
	}
	var want []string
	for i := len(ids) - 1; i >= 0; i-- {
		want = append(want, ids[i])
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("pages: got %v, want %v", got, want)
	}
}

// TestNextScheduleFireNeedsAnEnabledSchedule: with no schedule, or only
// disabled ones, there is no next fire time (not "due now", which made
// every replica poll 50 times a second).
func TestNextScheduleFireNeedsAnEnabledSchedule(t *testing.T) {
	t.Parallel()
	s := newSchedSetup(t)
	ctx := context.Background()
	check := func(what string, wantOK bool, want func(time.Duration) bool) {
		t.Helper()
		wait, ok, err := s.store.NextScheduleFire(ctx)
		if err != nil || ok != wantOK || (ok && !want(wait)) {
			t.Errorf("%s: got wait %s, ok %v, err %v; want ok %v", what, wait, ok, err, wantOK)
		}
	}
	check("no schedule", false, nil)
	disabled := false
	s.create(t, domain.ScheduleRequest{WorkflowType: "w", Cron: "* * * * * *", Enabled: &disabled})
	check("a disabled schedule", false, nil)
	sc := s.create(t, domain.ScheduleRequest{WorkflowType: "w", Cron: "0 0 1 1 *"})
	check("an enabled schedule next year", true, func(d time.Duration) bool { return d > time.Hour })
	s.exec(t, `UPDATE schedules SET next_fire_at = now() - interval '1 minute' WHERE schedule_id = $1`, sc.ScheduleID)
	check("a schedule due a minute ago", true, func(d time.Duration) bool { return d <= -59*time.Second })
}

// callCountingStore counts the scheduler's statements, and can make every
// firing fail as a database outage would.
type callCountingStore struct {
	*postgres.Store
	nexts, fires atomic.Int64
	failFiring   bool
}

func (s *callCountingStore) NextScheduleFire(ctx context.Context) (time.Duration, bool, error) {
	s.nexts.Add(1)
	return s.Store.NextScheduleFire(ctx)
}

func (s *callCountingStore) FireDueSchedules(ctx context.Context, limit int) (domain.ScheduleFiring, error) {
	s.fires.Add(1)
	if s.failFiring {
		return domain.ScheduleFiring{}, errors.New("the database is down")
	}
	return s.Store.FireDueSchedules(ctx, limit)
}

// runScheduler runs a scheduler on store for d and returns the ERROR
// records it logged.
func runScheduler(t *testing.T, store scheduler.Store, interval, d time.Duration) int {
	t.Helper()
	logs := &errorCounter{}
	sch := scheduler.New(store, slog.New(logs), interval, nil)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := sch.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	return int(logs.errors.Load())
}

// errorCounter is a slog handler that counts ERROR records.
type errorCounter struct{ errors atomic.Int64 }

func (h *errorCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h *errorCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		h.errors.Add(1)
	}
	return nil
}
func (h *errorCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *errorCounter) WithGroup(string) slog.Handler      { return h }

// TestSchedulerIdlePollsOncePerInterval: with no enabled schedule, a
// scheduler reads the next fire time once per interval and fires nothing.
func TestSchedulerIdlePollsOncePerInterval(t *testing.T) {
	t.Parallel()
	s := newSchedSetup(t)
	disabled := false
	s.create(t, domain.ScheduleRequest{WorkflowType: "w", Cron: "* * * * * *", Enabled: &disabled})
	store := &callCountingStore{Store: s.store.Store}
	runScheduler(t, store, 500*time.Millisecond, 2*time.Second)
	// Passes at 0 and then every 450-550ms: 4 or 5 in 2s.
	if n, f := store.nexts.Load(), store.fires.Load(); n > 5 || f != 0 {
		t.Errorf("in 2s at a 500ms interval: %d reads of the next fire time and %d firings, want at most 5 and 0", n, f)
	}
}

// TestSchedulerBacksOffWhileFiringFails: a due schedule whose firing keeps
// failing is retried with exponential backoff, one ERROR per attempt, not
// every 20ms.
func TestSchedulerBacksOffWhileFiringFails(t *testing.T) {
	t.Parallel()
	s := newSchedSetup(t)
	s.create(t, domain.ScheduleRequest{WorkflowType: "w", Cron: "@hourly"})
	s.exec(t, `UPDATE schedules SET next_fire_at = now() - interval '1 second'`)
	store := &callCountingStore{Store: s.store.Store, failFiring: true}
	errs := runScheduler(t, store, time.Second, 2*time.Second)
	// Attempts at 0, 100ms, 300ms, 700ms and 1.5s.
	if f := store.fires.Load(); f < 2 || f > 6 {
		t.Errorf("failed firings in 2s: %d, want 2 to 6 (backing off from 100ms)", f)
	}
	if f := store.fires.Load(); int64(errs) != f {
		t.Errorf("logged %d errors for %d failed attempts, want one each", errs, f)
	}
}
