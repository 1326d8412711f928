package api_test

import (
	"net/http"
	"testing"

	"github.com/kagzi/kagzi"
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
