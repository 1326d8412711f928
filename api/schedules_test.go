package api_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/kagzi/kagzi/api"
)

// scheduleEnv is newEnv with the schedule endpoints backed by the store.
// (The harness does not wire Config.Schedules yet; this serves the same
// server with it set.)
func scheduleEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	e := newEnv(t, opts...)
	if e.api.Schedules == nil {
		cfg := e.api.Config
		cfg.Schedules = e.store
		hs := httptest.NewServer(api.New(cfg))
		t.Cleanup(hs.Close)
		e.srv, e.client = hs, hs.Client()
	}
	return e
}

func schedulesPath() string { return ns + "/schedules" }

func schedulePath(id string) string { return schedulesPath() + "/" + id }

// scheduleView is a schedule as the API shows it, every member decoded.
type scheduleView struct {
	ScheduleID   string          `json:"schedule_id"`
	Namespace    string          `json:"namespace"`
	TaskQueue    string          `json:"task_queue"`
	WorkflowType string          `json:"workflow_type"`
	Cron         string          `json:"cron"`
	Timezone     string          `json:"timezone"`
	Input        json.RawMessage `json:"input"`
	RetryPolicy  retryPolicy     `json:"retry_policy"`
	Version      *string         `json:"version"`
	Enabled      bool            `json:"enabled"`
	MaxCatchup   int             `json:"max_catchup"`
	NextFireAt   *time.Time      `json:"next_fire_at"`
	LastFiredAt  *time.Time      `json:"last_fired_at"`
	CreatedAt    time.Time       `json:"created_at"`
	UpdatedAt    time.Time       `json:"updated_at"`
}

type scheduleList struct {
	Schedules  []scheduleView `json:"schedules"`
	NextCursor *string        `json:"next_cursor"`
}

func (e *env) createSchedule(t *testing.T, body map[string]any) scheduleView {
	t.Helper()
	r := e.do(t, http.MethodPost, schedulesPath(), body).wantStatus(t, http.StatusCreated)
	var sc scheduleView
	r.decode(t, &sc)
	if got, want := r.header.Get("Location"), schedulePath(sc.ScheduleID); got != want {
		t.Errorf("Location: got %q, want %q", got, want)
	}
	return sc
}

func TestScheduleCreateGetPatchDelete(t *testing.T) {
	t.Parallel()
	e := scheduleEnv(t)
	sc := e.createSchedule(t, map[string]any{"workflow_type": "nightly-report", "cron": "30 2 * * *",
		"timezone": "America/New_York", "input": map[string]any{"format": "pdf"}, "version": "v3",
		"retry_policy": map[string]any{"max_attempts": 3}, "max_catchup": 4})
	if sc.Namespace != "default" || sc.TaskQueue != "default" || sc.WorkflowType != "nightly-report" ||
		sc.Cron != "30 2 * * *" || sc.Timezone != "America/New_York" || string(sc.Input) != `{"format":"pdf"}` ||
		sc.Version == nil || *sc.Version != "v3" || !sc.Enabled || sc.MaxCatchup != 4 ||
		sc.RetryPolicy.MaxAttempts != 3 || sc.RetryPolicy.InitialIntervalMS != 1000 || sc.LastFiredAt != nil {
		t.Errorf("created: got %+v", sc)
	}
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	if sc.NextFireAt == nil || sc.NextFireAt.Location() != time.UTC || sc.NextFireAt.In(ny).Format("15:04") != "02:30" ||
		!sc.NextFireAt.After(sc.CreatedAt) || sc.NextFireAt.Sub(sc.CreatedAt) > 25*time.Hour {
		t.Errorf("next_fire_at: got %v, want the next 02:30 in New York after %s, in UTC", sc.NextFireAt, sc.CreatedAt)
	}

	var got scheduleView
	e.do(t, http.MethodGet, schedulePath(sc.ScheduleID), nil).wantStatus(t, http.StatusOK).decode(t, &got)
	if got.ScheduleID != sc.ScheduleID || string(got.Input) != `{"format":"pdf"}` || !got.NextFireAt.Equal(*sc.NextFireAt) {
		t.Errorf("get: got %+v, want %+v", got, sc)
	}

	// A new cron moves next_fire_at; null clears version; the rest stays.
	var patched scheduleView
	e.do(t, http.MethodPatch, schedulePath(sc.ScheduleID), map[string]any{"cron": "@every 90s", "version": nil}).
		wantStatus(t, http.StatusOK).decode(t, &patched)
	if patched.Cron != "@every 90s" || patched.Version != nil || patched.MaxCatchup != 4 ||
		string(patched.Input) != `{"format":"pdf"}` || patched.NextFireAt == nil ||
		patched.NextFireAt.Sub(patched.UpdatedAt) > 91*time.Second || !patched.NextFireAt.After(patched.UpdatedAt.Add(88*time.Second)) {
		t.Errorf("patched: got %+v, want next_fire_at 90s after updated_at", patched)
	}
	// Disabled: no next fire time.
	e.do(t, http.MethodPatch, schedulePath(sc.ScheduleID), map[string]any{"enabled": false}).
		wantStatus(t, http.StatusOK).decode(t, &patched)
	if patched.Enabled || patched.NextFireAt != nil {
		t.Errorf("disabled: got enabled %v, next_fire_at %v", patched.Enabled, patched.NextFireAt)
	}
	// An empty patch changes nothing.
	var same scheduleView
	e.do(t, http.MethodPatch, schedulePath(sc.ScheduleID), map[string]any{}).wantStatus(t, http.StatusOK).decode(t, &same)
	if !same.UpdatedAt.Equal(patched.UpdatedAt) || same.Enabled {
		t.Errorf("empty patch: got %+v, want %+v", same, patched)
	}

	r := e.do(t, http.MethodDelete, schedulePath(sc.ScheduleID), nil).wantStatus(t, http.StatusNoContent)
	if len(r.body) != 0 {
		t.Errorf("204 with a body: %q", r.body)
	}
	e.do(t, http.MethodGet, schedulePath(sc.ScheduleID), nil).wantProblem(t, http.StatusNotFound, "not_found", "")
	e.do(t, http.MethodDelete, schedulePath(sc.ScheduleID), nil).wantProblem(t, http.StatusNotFound, "not_found", "")
}

func TestScheduleListPagination(t *testing.T) {
	t.Parallel()
	e := scheduleEnv(t)
	var ids []string
	for i := range 5 {
		ids = append(ids, e.createSchedule(t, map[string]any{"workflow_type": "w", "cron": "@daily",
			"input": strings.Repeat("x", i)}).ScheduleID)
	}
	var got []string
	q := url.Values{"limit": {"2"}}
	pages := 0
	for {
		var page scheduleList
		e.do(t, http.MethodGet, schedulesPath()+"?"+q.Encode(), nil).wantStatus(t, http.StatusOK).decode(t, &page)
		pages++
		for _, sc := range page.Schedules {
			if sc.Input != nil {
				t.Errorf("a listed schedule carries its input: %s", sc.Input)
			}
			got = append(got, sc.ScheduleID)
		}
		if page.NextCursor == nil {
			break
		}
		q.Set("cursor", *page.NextCursor)
	}
	want := []string{ids[4], ids[3], ids[2], ids[1], ids[0]}
	if strings.Join(got, ",") != strings.Join(want, ",") || pages != 3 {
		t.Errorf("pages: got %v in %d pages, want %v in 3", got, pages, want)
	}
	var empty scheduleList
	e.do(t, http.MethodGet, "/v1/namespaces/other/schedules", nil).wantStatus(t, http.StatusOK).decode(t, &empty)
	if len(empty.Schedules) != 0 || empty.Schedules == nil || empty.NextCursor != nil {
		t.Errorf("another namespace: got %+v, want an empty list", empty)
	}
	e.do(t, http.MethodGet, schedulesPath()+"?cursor=nope", nil).wantProblem(t, http.StatusBadRequest, "invalid_argument", "cursor")
	e.do(t, http.MethodGet, schedulesPath()+"?limit=0", nil).wantProblem(t, http.StatusBadRequest, "invalid_argument", "limit")
	e.do(t, http.MethodGet, schedulesPath()+"?enabled=true", nil).wantProblem(t, http.StatusBadRequest, "invalid_argument", "enabled")
}

func TestScheduleValidation(t *testing.T) {
	t.Parallel()
	e := scheduleEnv(t)
	for _, c := range []struct {
		body  any
		field string
	}{
		{map[string]any{"workflow_type": "w", "cron": "61 * * * *"}, "cron"},
		{map[string]any{"workflow_type": "w", "cron": "* * *"}, "cron"},
		{map[string]any{"workflow_type": "w", "cron": "@fortnightly"}, "cron"},
		{map[string]any{"workflow_type": "w", "cron": "@every 500ms"}, "cron"},
		{map[string]any{"workflow_type": "w", "cron": "TZ=UTC"}, "cron"},
		{map[string]any{"workflow_type": "w", "cron": "0 0 30 2 *"}, "cron"}, // never fires
		{map[string]any{"workflow_type": "w"}, "cron"},
		{map[string]any{"workflow_type": "w", "cron": "@hourly", "timezone": "Mars/Olympus"}, "timezone"},
		{map[string]any{"workflow_type": "w", "cron": "@hourly", "timezone": "Local"}, "timezone"},
		{map[string]any{"cron": "@hourly"}, "workflow_type"},
		{map[string]any{"workflow_type": "w", "cron": "@hourly", "task_queue": "a b"}, "task_queue"},
		{map[string]any{"workflow_type": "w", "cron": "@hourly", "max_catchup": 0}, "max_catchup"},
		{map[string]any{"workflow_type": "w", "cron": "@hourly", "max_catchup": "1"}, "max_catchup"},
		{map[string]any{"workflow_type": "w", "cron": "@hourly", "retry_policy": map[string]any{"max_attempts": 0}}, "retry_policy.max_attempts"},
		{map[string]any{"workflow_type": "w", "cron": "@hourly", "crontab": "x"}, "crontab"},
	} {
		e.do(t, http.MethodPost, schedulesPath(), c.body).wantProblem(t, http.StatusBadRequest, "invalid_argument", c.field)
	}
	if n := e.countSchedules(t); n != 0 {
		t.Errorf("refused creates stored %d schedules", n)
	}

	sc := e.createSchedule(t, map[string]any{"workflow_type": "w", "cron": "@hourly"})
	for _, c := range []struct {
		body  any
		field string
	}{
		{map[string]any{"cron": "@every 1"}, "cron"},
		{map[string]any{"cron": nil}, "cron"},
		{map[string]any{"timezone": "Europe/Nowhere"}, "timezone"},
		{map[string]any{"enabled": nil}, "enabled"},
		{map[string]any{"enabled": "yes"}, "enabled"},
		{map[string]any{"max_catchup": 1001}, "max_catchup"},
		{map[string]any{"schedule_id": sc.ScheduleID}, "schedule_id"},
	} {
		e.do(t, http.MethodPatch, schedulePath(sc.ScheduleID), c.body).wantProblem(t, http.StatusBadRequest, "invalid_argument", c.field)
	}
	var after scheduleView
	e.do(t, http.MethodGet, schedulePath(sc.ScheduleID), nil).wantStatus(t, http.StatusOK).decode(t, &after)
	if after.Cron != "@hourly" || after.Timezone != "UTC" || !after.UpdatedAt.Equal(sc.UpdatedAt) {
		t.Errorf("refused patches changed the schedule: %+v", after)
	}
	e.do(t, http.MethodPost, schedulesPath(), `{"workflow_type":"w","cron":"@hourly"}`, withContentType("text/plain")).
		wantProblem(t, http.StatusUnsupportedMediaType, "unsupported_media_type", "")
}

func TestScheduleNotFoundAndMalformedID(t *testing.T) {
	t.Parallel()
	e := scheduleEnv(t)
	const unknown = "01890a5d-ac96-774b-bcce-b302099a8057"
	sc := e.createSchedule(t, map[string]any{"workflow_type": "w", "cron": "@hourly"})
	e.do(t, http.MethodGet, schedulePath(unknown), nil).wantProblem(t, http.StatusNotFound, "not_found", "")
	e.do(t, http.MethodPatch, schedulePath(unknown), map[string]any{"enabled": false}).wantProblem(t, http.StatusNotFound, "not_found", "")
	e.do(t, http.MethodDelete, schedulePath(unknown), nil).wantProblem(t, http.StatusNotFound, "not_found", "")
	// A schedule belongs to its namespace.
	e.do(t, http.MethodGet, "/v1/namespaces/other/schedules/"+sc.ScheduleID, nil).wantProblem(t, http.StatusNotFound, "not_found", "")
	for _, m := range []string{http.MethodGet, http.MethodPatch, http.MethodDelete} {
		var body any
		if m == http.MethodPatch {
			body = map[string]any{}
		}
		e.do(t, m, schedulePath("not-a-uuid"), body).wantProblem(t, http.StatusBadRequest, "invalid_argument", "schedule_id")
	}
	e.do(t, http.MethodPut, schedulePath(sc.ScheduleID), map[string]any{}).wantProblem(t, http.StatusMethodNotAllowed, "method_not_allowed", "")
}

func TestScheduleInputTooLarge(t *testing.T) {
	t.Parallel()
	e := scheduleEnv(t)
	big := `"` + strings.Repeat("x", e.limits.Payload.MaxBytes) + `"` // two bytes over
	e.do(t, http.MethodPost, schedulesPath(), `{"workflow_type":"w","cron":"@hourly","input":`+big+`}`).
		wantProblem(t, http.StatusRequestEntityTooLarge, "payload_too_large", "input")
	if n := e.countSchedules(t); n != 0 {
		t.Errorf("a refused create stored %d schedules", n)
	}
	// Exactly at the limit is accepted, and logged as large.
	atLimit := `"` + strings.Repeat("x", e.limits.Payload.MaxBytes-2) + `"`
	r := e.do(t, http.MethodPost, schedulesPath(), `{"workflow_type":"w","cron":"@hourly","input":`+atLimit+`}`).
		wantStatus(t, http.StatusCreated)
	var sc scheduleView
	r.decode(t, &sc)
	if len(sc.Input) != e.limits.Payload.MaxBytes {
		t.Errorf("input: got %d bytes, want %d", len(sc.Input), e.limits.Payload.MaxBytes)
	}
	if recs := e.logs.find(t, "large payload", map[string]any{"schedule_id": sc.ScheduleID, "field": "input"}); len(recs) != 1 {
		t.Errorf("large payload warnings for the schedule: got %d, want 1", len(recs))
	}
	e.do(t, http.MethodPatch, schedulePath(sc.ScheduleID), `{"input":`+big+`}`).
		wantProblem(t, http.StatusRequestEntityTooLarge, "payload_too_large", "input")
	var after scheduleView
	e.do(t, http.MethodGet, schedulePath(sc.ScheduleID), nil).wantStatus(t, http.StatusOK).decode(t, &after)
	if string(after.Input) != atLimit {
		t.Errorf("a refused patch changed the input")
	}
	// A body over the cap is refused without being read whole.
	huge := `{"workflow_type":"w","cron":"@hourly","input":"` + strings.Repeat("x", e.limits.Payload.MaxBytes+70<<10) + `"}`
	e.do(t, http.MethodPost, schedulesPath(), huge).wantProblem(t, http.StatusRequestEntityTooLarge, "payload_too_large", "")
}

// countSchedules counts the schedules in the test database.
func (e *env) countSchedules(t testing.TB) int {
	t.Helper()
	var n int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM schedules`).Scan(&n); err != nil {
		t.Fatalf("count schedules: %v", err)
	}
	return n
}
