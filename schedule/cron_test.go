package schedule_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/schedule"
)

func mustParse(t *testing.T, expr, tz string) *schedule.Cron {
	t.Helper()
	c, err := schedule.Parse(expr, tz)
	if err != nil {
		t.Fatalf("Parse(%q, %q): %v", expr, tz, err)
	}
	return c
}

func utc(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v.UTC()
}

func TestParseAccepts(t *testing.T) {
	t.Parallel()
	after := utc(t, "2026-01-01T00:00:00Z")
	for _, c := range []struct {
		expr, tz, next string
	}{
		{"*/5 * * * *", "UTC", "2026-01-01T00:05:00Z"},
		{"30 * * * * *", "UTC", "2026-01-01T00:00:30Z"}, // leading seconds
		{"0 9 * * mon-fri", "UTC", "2026-01-01T09:00:00Z"},
		{"0 9 * * 1-5", "Europe/Paris", "2026-01-01T08:00:00Z"},
		{"@hourly", "UTC", "2026-01-01T01:00:00Z"},
		{"@daily", "America/New_York", "2026-01-01T05:00:00Z"},
		{"@midnight", "UTC", "2026-01-02T00:00:00Z"},
		{"@weekly", "UTC", "2026-01-04T00:00:00Z"},
		{"@monthly", "UTC", "2026-02-01T00:00:00Z"},
		{"@yearly", "UTC", "2027-01-01T00:00:00Z"},
		{"@annually", "UTC", "2027-01-01T00:00:00Z"},
		{"@every 90s", "UTC", "2026-01-01T00:01:30Z"},
		{"@every 1h30m", "Asia/Tokyo", "2026-01-01T01:30:00Z"},
		{"  0 0 * * *  ", "UTC", "2026-01-02T00:00:00Z"},
	} {
		got := mustParse(t, c.expr, c.tz).Next(after)
		if want := utc(t, c.next); !got.Equal(want) {
			t.Errorf("%q in %s: Next(%s) = %s, want %s", c.expr, c.tz, after, got, want)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		expr, tz, field string
	}{
		{"", "UTC", "cron"},
		{"   ", "UTC", "cron"},
		{"* * *", "UTC", "cron"},
		{"* * * * * * *", "UTC", "cron"},
		{"61 * * * *", "UTC", "cron"},
		{"* 24 * * *", "UTC", "cron"},
		{"@fortnightly", "UTC", "cron"},
		{"@every", "UTC", "cron"},
		{"@every 0s", "UTC", "cron"},
		{"@every -1m", "UTC", "cron"},
		{"@every 1500ms", "UTC", "cron"},
		{"@every soon", "UTC", "cron"},
		{"@every90s", "UTC", "cron"},
		{"TZ=UTC", "UTC", "cron"}, // robfig/cron panics on this one
		{"CRON_TZ=Europe/Paris 0 9 * * *", "UTC", "cron"},
		{"0 9 * * *\n", "UTC", "cron"},
		{strings.Repeat("1,", 200) + "1 * * * *", "UTC", "cron"},
		{"0 9 * * *", "Mars/Olympus", "timezone"},
		{"0 9 * * *", "Local", "timezone"},
		{"0 9 * * *", "", "timezone"},
		{"0 9 * * *", "../etc/passwd", "timezone"},
	} {
		_, err := schedule.Parse(c.expr, c.tz)
		var de *domain.Error
		if !errors.As(err, &de) || de.Code != domain.CodeInvalidArgument || de.Field != c.field {
			t.Errorf("Parse(%q, %q): got %v, want invalid_argument naming %s", c.expr, c.tz, err, c.field)
		}
	}
}

func TestNextNeverMatching(t *testing.T) {
	t.Parallel()
	c := mustParse(t, "0 0 30 2 *", "UTC") // February 30th
	if got := c.Next(utc(t, "2026-01-01T00:00:00Z")); !got.IsZero() {
		t.Errorf("Next = %s, want the zero time", got)
	}
}

// walk returns the fire times of c in [from, to), one Next after another.
func walk(c *schedule.Cron, from, to time.Time) []time.Time {
	var fires []time.Time
	for t := c.Next(from.Add(-time.Second)); !t.IsZero() && t.Before(to); t = c.Next(t) {
		fires = append(fires, t)
	}
	return fires
}

// tick simulates a scheduler that looks every step from from to to, as
// the scheduler does: it starts what Due returns and waits for the
// following fire time.
func tick(c *schedule.Cron, from, to time.Time, step time.Duration) []time.Time {
	var fires []time.Time
	next := c.Next(from)
	for now := from; now.Before(to); now = now.Add(step) {
		if next.IsZero() || next.After(now) {
			continue
		}
		var due []time.Time
		due, next = c.Due(next, now, 1)
		fires = append(fires, due...)
	}
	return fires
}

func local(ts []time.Time, loc *time.Location) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.In(loc).Format("2006-01-02 15:04 MST")
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestDaylightSaving pins down what the package documentation promises
// around the 2026 changes in America/New_York (spring forward on March 8th
// at 02:00, fall back on November 1st at 02:00) and Europe/Berlin (fall
// back on October 25th at 03:00). Each case is checked twice: walking Next,
// and simulating a scheduler that ticks every 10 seconds through Due.
func TestDaylightSaving(t *testing.T) {
	t.Parallel()
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name     string
		expr     string
		loc      *time.Location
		from, to string
		want     []string
	}{
		{
			// 02:30 does not exist on March 8th: that day is skipped.
			name: "daily 02:30 across the spring-forward",
			expr: "30 2 * * *", loc: ny, from: "2026-03-06T12:00:00Z", to: "2026-03-10T12:00:00Z",
			want: []string{"2026-03-07 02:30 EST", "2026-03-09 02:30 EDT", "2026-03-10 02:30 EDT"},
		},
		{
			// 02:30 happens once on November 1st (01:00-02:00 repeats).
			name: "daily 02:30 across the fall-back",
			expr: "30 2 * * *", loc: ny, from: "2026-10-30T12:00:00Z", to: "2026-11-03T12:00:00Z",
			want: []string{"2026-10-31 02:30 EDT", "2026-11-01 02:30 EST", "2026-11-02 02:30 EST", "2026-11-03 02:30 EST"},
		},
		{
			// 01:30 happens twice on November 1st: only the first fires.
			name: "daily 01:30 in the repeated hour",
			expr: "30 1 * * *", loc: ny, from: "2026-10-30T12:00:00Z", to: "2026-11-02T12:00:00Z",
			want: []string{"2026-10-31 01:30 EDT", "2026-11-01 01:30 EDT", "2026-11-02 01:30 EST"},
		},
		{
			// In Berlin it is 02:00-03:00 that repeats, so 02:30 would fire
			// twice with robfig/cron alone.
			name: "daily 02:30 in Berlin's repeated hour",
			expr: "30 2 * * *", loc: berlin, from: "2026-10-23T12:00:00Z", to: "2026-10-26T12:00:00Z",
			want: []string{"2026-10-24 02:30 CEST", "2026-10-25 02:30 CEST", "2026-10-26 02:30 CET"},
		},
		{
			// A seconds field and a list of hours are still fixed hours.
			name: "six fields in the repeated hour",
			expr: "15 30 1,13 * * *", loc: ny, from: "2026-11-01T00:00:00Z", to: "2026-11-02T00:00:00Z",
			want: []string{"2026-11-01 01:30 EDT", "2026-11-01 13:30 EST"},
		},
		{
			// Every hour: elapsed time counts, both 01:00s fire.
			name: "hourly across the fall-back",
			expr: "0 * * * *", loc: ny, from: "2026-11-01T04:30:00Z", to: "2026-11-01T08:30:00Z",
			want: []string{"2026-11-01 01:00 EDT", "2026-11-01 01:00 EST", "2026-11-01 02:00 EST", "2026-11-01 03:00 EST"},
		},
		{
			name: "hourly across the spring-forward",
			expr: "@hourly", loc: ny, from: "2026-03-08T05:30:00Z", to: "2026-03-08T08:30:00Z",
			want: []string{"2026-03-08 01:00 EST", "2026-03-08 03:00 EDT", "2026-03-08 04:00 EDT"},
		},
		{
			// @every counts elapsed time whatever the zone.
			name: "@every 1h across the fall-back",
			expr: "@every 1h", loc: ny, from: "2026-11-01T04:00:00Z", to: "2026-11-01T07:30:00Z",
			want: []string{"2026-11-01 01:00 EDT", "2026-11-01 01:00 EST", "2026-11-01 02:00 EST"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			cr := mustParse(t, c.expr, c.loc.String())
			from, to := utc(t, c.from), utc(t, c.to)
			if got := local(walk(cr, from, to), c.loc); !equal(got, c.want) && !strings.HasPrefix(c.expr, "@every") {
				t.Errorf("Next: got %q, want %q", got, c.want)
			}
			if got := local(tick(cr, from, to, 10*time.Second), c.loc); !equal(got, c.want) {
				t.Errorf("Due, ticking every 10s: got %q, want %q", got, c.want)
			}
		})
	}
}

func TestDaylightSavingFallBackDayFiresOnce(t *testing.T) {
	t.Parallel()
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	for _, expr := range []string{"30 2 * * *", "30 1 * * *", "0 1 * * *", "59 1 * * *", "0 0 2 * * *"} {
		cr := mustParse(t, expr, "America/New_York")
		// The whole local day of November 1st: 25 hours.
		day := time.Date(2026, 11, 1, 0, 0, 0, 0, ny)
		fires := tick(cr, day.Add(-time.Second), day.AddDate(0, 0, 1), 5*time.Second)
		if len(fires) != 1 {
			t.Errorf("%q on the fall-back day: got %d fires %q, want 1", expr, len(fires), local(fires, ny))
		}
	}
}

func TestDueCatchUp(t *testing.T) {
	t.Parallel()
	t.Run("every", func(t *testing.T) {
		c := mustParse(t, "@every 1h", "UTC")
		next := utc(t, "2026-01-01T00:00:00Z")
		now := next.Add(10*time.Hour + 30*time.Minute)
		fires, following := c.Due(next, now, 3)
		want := []string{"2026-01-01 08:00 UTC", "2026-01-01 09:00 UTC", "2026-01-01 10:00 UTC"}
		if got := local(fires, time.UTC); !equal(got, want) {
			t.Errorf("fires: got %q, want %q", got, want)
		}
		if want := utc(t, "2026-01-01T11:00:00Z"); !following.Equal(want) {
			t.Errorf("following: got %s, want %s", following, want)
		}
	})
	t.Run("every, years of downtime, costs nothing", func(t *testing.T) {
		c := mustParse(t, "@every 1s", "UTC")
		next := utc(t, "2000-01-01T00:00:00Z")
		now := utc(t, "2026-01-01T00:00:00.5Z")
		fires, following := c.Due(next, now, 2)
		want := []string{"2025-12-31T23:59:59Z", "2026-01-01T00:00:00Z"}
		if len(fires) != 2 || fires[0].Format(time.RFC3339) != want[0] || fires[1].Format(time.RFC3339) != want[1] {
			t.Errorf("fires: got %v, want %v", fires, want)
		}
		if want := utc(t, "2026-01-01T00:00:01Z"); !following.Equal(want) {
			t.Errorf("following: got %s, want %s", following, want)
		}
	})
	t.Run("spec", func(t *testing.T) {
		c := mustParse(t, "0 0 * * *", "UTC")
		next := utc(t, "2026-01-01T00:00:00Z")
		now := utc(t, "2026-01-20T12:00:00Z")
		for _, n := range []int{1, 3, 19, 20, 25} {
			fires, following := c.Due(next, now, n)
			if wantLen := min(n, 20); len(fires) != wantLen {
				t.Fatalf("max_catchup %d: got %d fires %v, want %d", n, len(fires), fires, wantLen)
			}
			if last := fires[len(fires)-1]; !last.Equal(utc(t, "2026-01-20T00:00:00Z")) {
				t.Errorf("max_catchup %d: latest fire %s, want 2026-01-20", n, last)
			}
			if first, want := fires[0], utc(t, "2026-01-20T00:00:00Z").AddDate(0, 0, 1-len(fires)); !first.Equal(want) {
				t.Errorf("max_catchup %d: earliest fire %s, want %s", n, first, want)
			}
			if want := utc(t, "2026-01-21T00:00:00Z"); !following.Equal(want) {
				t.Errorf("max_catchup %d: following %s, want %s", n, following, want)
			}
		}
	})
	t.Run("spec, next far past the horizon", func(t *testing.T) {
		c := mustParse(t, "@yearly", "UTC")
		fires, following := c.Due(utc(t, "1990-01-01T00:00:00Z"), utc(t, "2026-11-25T00:00:00Z"), 3)
		want := []string{"2024-01-01 00:00 UTC", "2025-01-01 00:00 UTC", "2026-01-01 00:00 UTC"}
		if got := local(fires, time.UTC); !equal(got, want) {
			t.Errorf("fires: got %q, want %q", got, want)
		}
		if want := utc(t, "2027-01-01T00:00:00Z"); !following.Equal(want) {
			t.Errorf("following: got %s, want %s", following, want)
		}
	})
	t.Run("on time", func(t *testing.T) {
		c := mustParse(t, "*/5 * * * * *", "UTC")
		next := utc(t, "2026-01-01T00:00:05Z")
		fires, following := c.Due(next, next.Add(time.Second), 10)
		if len(fires) != 1 || !fires[0].Equal(next) {
			t.Errorf("fires: got %v, want [%s]", fires, next)
		}
		if want := next.Add(5 * time.Second); !following.Equal(want) {
			t.Errorf("following: got %s, want %s", following, want)
		}
	})
	t.Run("not yet due", func(t *testing.T) {
		c := mustParse(t, "@hourly", "UTC")
		next := utc(t, "2026-01-01T01:00:00Z")
		fires, following := c.Due(next, next.Add(-time.Minute), 1)
		if len(fires) != 0 || !following.Equal(next) {
			t.Errorf("got %v, %s; want nothing and %s", fires, following, next)
		}
	})
}
