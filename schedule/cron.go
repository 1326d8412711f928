// Package schedule is Kagzi's cron dialect: parsing a schedule's cron
// expression in its time zone, the fire time after a given instant, and
// which fire times a scheduler that finds a schedule due starts.
//
// It is pure (no I/O, no clock: every function takes the instants it
// needs) and is a package of its own, not part of domain, only because it
// builds on github.com/robfig/cron/v3 and domain imports nothing but the
// standard library. Storage uses it to compute next_fire_at when a schedule
// is created or changed and when it fires; nothing else needs it.
//
// # The dialect
//
// An expression is five fields (minute hour day-of-month month
// day-of-week), six with a leading seconds field, or a descriptor:
// @yearly (@annually), @monthly, @weekly, @daily (@midnight), @hourly, or
// "@every <duration>" with a Go duration of whole seconds, at least 1s
// ("@every 90s", "@every 1h30m"). Fields and descriptors are read in the
// schedule's time zone; @every counts elapsed time from the previous fire
// time, whatever the zone. A "TZ=" or "CRON_TZ=" prefix is refused: the
// time zone is the schedule's timezone member.
//
// # Daylight-saving changes
//
// Fire times are wall-clock times in the schedule's zone, so:
//
//   - A wall-clock time that does not exist on a spring-forward day is
//     skipped that day (robfig/cron's behaviour, kept): a daily 02:30
//     schedule in America/New_York fires 2026-03-07 02:30 EST, then not on
//     2026-03-08 (02:00 jumps to 03:00), then 2026-03-09 02:30 EDT.
//   - A wall-clock time that happens twice on a fall-back day fires once,
//     at its first occurrence, when the hour field names particular hours:
//     a daily 01:30 schedule in America/New_York fires 2026-11-01 01:30
//     EDT and not 01:30 EST an hour later (robfig/cron alone fires both);
//     a daily 02:30 there fires once, at 02:30 EST, since 02:30 happens
//     once. Schedules whose hour field is every hour ("*", @hourly) count
//     elapsed time instead and fire in both occurrences of the repeated
//     hour, as Vixie cron does for wildcard jobs, so that an hourly
//     schedule never has a two-hour gap.
package schedule

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/kagzi/kagzi/domain"
)

// parser reads five fields, an optional leading seconds field, and
// descriptors.
var parser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// everyHour is the hour field of a spec that names every hour.
const everyHour = 1<<24 - 1

// Cron is a parsed cron expression bound to its time zone.
type Cron struct {
	spec  *cron.SpecSchedule // nil for @every
	every time.Duration      // > 0 for @every
	loc   *time.Location
	// fixedHours is set when the spec names particular hours, whose
	// wall-clock times fire once even when a fall-back repeats them.
	fixedHours bool
}

// Parse reads expr in the IANA time zone tz. Errors are invalid_argument
// errors naming the field at fault, "cron" or "timezone".
func Parse(expr, tz string) (*Cron, error) {
	loc, err := domain.LoadTimezone("timezone", tz)
	if err != nil {
		return nil, err
	}
	if err := domain.ValidateCronForm("cron", expr); err != nil {
		return nil, err
	}
	expr = strings.TrimSpace(expr)
	if strings.HasPrefix(expr, "TZ=") || strings.HasPrefix(expr, "CRON_TZ=") {
		// Refused before robfig/cron sees it: it panics on "TZ=x" alone.
		return nil, domain.Invalid("cron", "must not name a time zone; give it as timezone")
	}
	if rest, ok := strings.CutPrefix(expr, "@every"); ok {
		d, err := time.ParseDuration(strings.TrimSpace(rest))
		if err != nil || d < time.Second || d%time.Second != 0 || !strings.HasPrefix(rest, " ") {
			return nil, domain.Invalid("cron", "@every takes a duration of whole seconds, at least 1s, such as @every 90s, not %q", expr)
		}
		return &Cron{every: d, loc: loc}, nil
	}
	s, err := parse(expr)
	if err != nil {
		return nil, domain.Invalid("cron", "is not a cron expression (five fields, six with leading seconds, or a descriptor such as @hourly or @every 90s): %v", err)
	}
	spec, ok := s.(*cron.SpecSchedule)
	if !ok {
		return nil, domain.Invalid("cron", "is not a cron expression: %q", expr)
	}
	spec.Location = loc
	return &Cron{spec: spec, loc: loc, fixedHours: spec.Hour&everyHour != everyHour}, nil
}

// parse is the robfig/cron parser, with a panic turned into an error.
func parse(expr string) (s cron.Schedule, err error) {
	defer func() {
		if v := recover(); v != nil {
			s, err = nil, fmt.Errorf("%v", v)
		}
	}()
	return parser.Parse(expr)
}

// Next returns the first fire time strictly after t, in UTC, or the zero
// time when there is none in the next five years (a spec such as "0 0 30 2
// *" that never matches). For @every it is t plus the interval, truncated
// to the second.
func (c *Cron) Next(t time.Time) time.Time {
	if c.every > 0 {
		return t.Truncate(time.Second).Add(c.every).UTC()
	}
	for {
		t = c.spec.Next(t)
		if t.IsZero() || !c.fixedHours || !c.repeated(t) {
			return t.UTC()
		}
	}
}

// repeated reports whether the wall-clock time of t in the schedule's zone
// already happened earlier, because a fall-back turned the clocks back
// less than a day before t.
func (c *Cron) repeated(t time.Time) bool {
	local := t.In(c.loc)
	_, offset := local.Zone()
	_, earlierOffset := local.Add(-24 * time.Hour).Zone()
	if earlierOffset <= offset {
		return false
	}
	first := local.Add(-time.Duration(earlierOffset-offset) * time.Second)
	return wallClock(first) == wallClock(local)
}

func wallClock(t time.Time) string { return t.Format("2006-01-02T15:04:05") }

// lookback bounds how far before now Due looks for missed fire times of a
// spec: robfig/cron's own horizon.
const lookback = 5 * 365 * 24 * time.Hour

// Due returns the runs to start for a schedule whose next fire time next
// has come (next <= now): of its fire times from next up to now, both
// included, the latest maxCatchup, oldest first; the rest are skipped. It
// also returns the first fire time after now, zero when the cron has none.
// When next is after now, nothing is due and following is next.
func (c *Cron) Due(next, now time.Time, maxCatchup int) (fires []time.Time, following time.Time) {
	if next.After(now) {
		return nil, next
	}
	maxCatchup = max(maxCatchup, 1)
	if c.every > 0 {
		// Fire times are next + i*every: count them rather than walk them,
		// so that a long downtime costs nothing.
		n := int64(now.Sub(next) / c.every)
		for i := max(0, n-int64(maxCatchup)+1); i <= n; i++ {
			fires = append(fires, next.Add(time.Duration(i)*c.every).UTC())
		}
		return fires, next.Add(time.Duration(n+1) * c.every).UTC()
	}
	// A spec's fire times do not depend on where the walk starts, so walk
	// back from now over a window that doubles until it holds maxCatchup
	// fire times or reaches next, rather than from a next long past.
	for window := time.Minute; ; window *= 2 {
		// whole: this window reaches back to next, or to the horizon.
		whole := window >= lookback || !now.Add(-window).After(next)
		start, fromNext := now.Add(-window), false
		if whole {
			start, fromNext = next, true
			if now.Sub(next) > lookback {
				start, fromNext = now.Add(-lookback), false
			}
		}
		var found []time.Time
		if fromNext {
			found = append(found, next.UTC())
		}
		t := start
		for {
			t = c.Next(t)
			if t.IsZero() || t.After(now) {
				break
			}
			found = append(found, t)
			if len(found) > 2*maxCatchup {
				found = append(found[:0], found[len(found)-maxCatchup:]...)
			}
		}
		if len(found) >= maxCatchup || whole {
			if len(found) > maxCatchup {
				found = found[len(found)-maxCatchup:]
			}
			return found, t
		}
	}
}
