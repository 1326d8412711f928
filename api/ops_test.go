package api_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/kagzi/kagzi"
	"github.com/kagzi/kagzi/migrations"
	"github.com/kagzi/kagzi/postgres"
)

func TestInfoReportsTimeouts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var info struct {
		TimeoutsMS map[string]int64 `json:"timeouts_ms"`
	}
	e.do(t, "GET", "/v1/info", nil).wantStatus(t, http.StatusOK).decode(t, &info)
	d := kagzi.DefaultTimeouts
	want := map[string]int64{
		"read_header": d.ReadHeader.Milliseconds(), "read_body": d.ReadBody.Milliseconds(),
		"idle": d.Idle.Milliseconds(), "write": d.Write.Milliseconds(),
	}
	if len(info.TimeoutsMS) != len(want) {
		t.Fatalf("timeouts_ms: got %v, want %v", info.TimeoutsMS, want)
	}
	for k, v := range want {
		if info.TimeoutsMS[k] != v {
			t.Errorf("timeouts_ms: got %v, want %v", info.TimeoutsMS, want)
		}
	}
}

// TestReadyzDuringRollingUpgrade: a replica stays ready while the schema is
// at least the version it needs, even while a newer migration is in
// progress (dirty), unless a migration declared that it breaks it.
func TestReadyzDuringRollingUpgrade(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	need := int64(migrations.Latest())
	for _, tc := range []struct {
		name    string
		version int64
		dirty   bool
		comment string // on schema_migrations; "" for none
		ready   bool
	}{
		{"the binary's version", need, false, "", true},
		{"a newer version", need + 1, false, "", true},
		{"a newer migration in progress", need + 1, true, "", true},
		{"the binary's migration in progress", need, true, "", false},
		{"an older version", need - 1, false, "", false},
		{"a newer version that breaks this binary", need + 1, false, postgres.BreaksOlderMarker + fmt.Sprint(need+1), false},
		{"a newer version that breaks older binaries only", need + 1, false, postgres.BreaksOlderMarker + fmt.Sprint(need), true},
	} {
		ctx := context.Background()
		comment := "COMMENT ON TABLE schema_migrations IS NULL"
		if tc.comment != "" {
			comment = "COMMENT ON TABLE schema_migrations IS '" + tc.comment + "'"
		}
		if _, err := e.pool.Exec(ctx, comment); err != nil {
			t.Fatal(err)
		}
		if _, err := e.pool.Exec(ctx, "UPDATE schema_migrations SET version = $1, dirty = $2", tc.version, tc.dirty); err != nil {
			t.Fatal(err)
		}
		var ready struct {
			Status string            `json:"status"`
			Checks map[string]string `json:"checks"`
		}
		want := http.StatusServiceUnavailable
		if tc.ready {
			want = http.StatusOK
		}
		e.do(t, "GET", "/readyz", nil).wantStatus(t, want).decode(t, &ready)
		if tc.ready != (ready.Checks["schema"] == "ok") {
			t.Errorf("%s: schema check %q", tc.name, ready.Checks["schema"])
		}
	}
}
