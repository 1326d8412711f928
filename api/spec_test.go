package api_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/kagzi/kagzi"
	"github.com/kagzi/kagzi/api"
)

// notYetRouted lists the operations openapi.yaml describes that the server
// does not serve yet. TestRoutesMatchSpec fails when one of them gets
// routed, so that it is taken off this list, and when the spec describes an
// operation that is neither routed nor listed here.
var notYetRouted = []string{}

// normalizeRoute drops the trailing slash chi's r.Route("/x") + "/" leaves.
func normalizeRoute(p string) string {
	if len(p) > 1 {
		return strings.TrimSuffix(p, "/")
	}
	return p
}

func TestRoutesMatchSpec(t *testing.T) {
	t.Parallel()
	s, err := loadSpec()
	if err != nil {
		t.Fatal(err)
	}
	srv := api.New(api.Config{
		Version: testVersion,
		Limits:  defaultLimits(),
		Logger:  slog.New(slog.DiscardHandler),
		Metrics: http.NotFoundHandler(), // only its route matters here
		OpenAPI: kagzi.OpenAPI,
	})

	routed := map[string]bool{} // "METHOD /path"
	err = chi.Walk(srv.Router(), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		routed[method+" "+normalizeRoute(route)] = true
		return nil
	})
	if err != nil {
		t.Fatalf("chi.Walk: %v", err)
	}

	inSpec := map[string]string{} // "METHOD /path" -> operationId
	for path, item := range s.doc.Paths.Map() {
		for method, op := range item.Operations() {
			inSpec[method+" "+path] = op.OperationID
		}
	}

	for r := range routed {
		if _, ok := inSpec[r]; !ok {
			t.Errorf("the server routes %s, which openapi.yaml does not describe", r)
		}
	}
	pending := map[string]bool{}
	for _, id := range notYetRouted {
		pending[id] = true
	}
	seen := map[string]bool{}
	for r, id := range inSpec {
		seen[id] = true
		switch {
		case routed[r] && pending[id]:
			t.Errorf("%s (%s) is routed now: take it off notYetRouted", r, id)
		case !routed[r] && !pending[id]:
			t.Errorf("openapi.yaml describes %s (%s), which the server does not route", r, id)
		}
	}
	for _, id := range notYetRouted {
		if !seen[id] {
			t.Errorf("notYetRouted lists %s, which openapi.yaml does not describe", id)
		}
	}
	if len(routed) == 0 {
		t.Fatal("chi.Walk found no routes")
	}
}

func TestServesOpenAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.do(t, http.MethodGet, "/openapi.yaml", nil).wantStatus(t, http.StatusOK)
	if got, want := mediaType(r.header.Get("Content-Type")), "application/yaml"; got != want {
		t.Errorf("Content-Type: got %q, want %q", got, want)
	}
	if !bytes.Equal(r.body, kagzi.OpenAPI) {
		t.Errorf("GET /openapi.yaml: got %d bytes that differ from kagzi.OpenAPI (%d bytes)", len(r.body), len(kagzi.OpenAPI))
	}
}

// TestValidatorRejectsMismatches proves that the harness's validation is not
// vacuous: a valid fabricated response passes, and each way of breaking it
// fails.
func TestValidatorRejectsMismatches(t *testing.T) {
	t.Parallel()
	const runID = "01890a5d-ac96-774b-bcce-b302099a8057"
	getReq, err := http.NewRequest(http.MethodGet, "http://kagzi.test"+runPath(runID), nil)
	if err != nil {
		t.Fatal(err)
	}
	startReq, err := http.NewRequest(http.MethodPost, "http://kagzi.test"+ns+"/workflows", strings.NewReader(`{"workflow_type":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	healthReq, err := http.NewRequest(http.MethodGet, "http://kagzi.test/healthz", nil)
	if err != nil {
		t.Fatal(err)
	}
	unknownReq, err := http.NewRequest(http.MethodGet, "http://kagzi.test/v1/nope", nil)
	if err != nil {
		t.Fatal(err)
	}
	deleteReq, err := http.NewRequest(http.MethodDelete, "http://kagzi.test"+ns+"/workflows", nil)
	if err != nil {
		t.Fatal(err)
	}

	validRun := func() map[string]any {
		return map[string]any{
			"run_id": runID, "namespace": "default", "task_queue": "default", "workflow_type": "x",
			"external_id": nil, "version": nil, "status": "pending", "input": map[string]any{"a": 1},
			"output": nil, "error": nil, "attempt": 0,
			"retry_policy": map[string]any{
				"max_attempts": 5, "initial_interval_ms": 1000, "backoff_coefficient": 2.0,
				"max_interval_ms": 300000, "non_retryable_error_types": []string{},
			},
			"worker_id": nil, "lease_expires_at": nil, "available_at": "2025-01-02T03:04:05.123456Z", "waiting_for": nil, "parent_run_id": nil,
			"created_at": "2025-01-02T03:04:05.123456Z", "started_at": nil, "finished_at": nil,
		}
	}
	jsonHeader := http.Header{"Content-Type": {"application/json"}}
	problemHeader := http.Header{"Content-Type": {"application/problem+json"}}
	marshal := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	with := func(change func(m map[string]any)) []byte {
		m := validRun()
		change(m)
		return marshal(m)
	}
	validProblem := `{"type":"about:blank","title":"Not Found","status":404,"code":"not_found","detail":"no"}`

	valid := []struct {
		name   string
		req    *http.Request
		status int
		header http.Header
		body   []byte
	}{
		{"run", getReq, 200, jsonHeader, marshal(validRun())},
		{"run with charset", getReq, 200, http.Header{"Content-Type": {"application/json; charset=utf-8"}}, marshal(validRun())},
		{"not found problem", getReq, 404, problemHeader, []byte(validProblem)},
		{"health", healthReq, 200, jsonHeader, []byte(`{"status":"ok"}`)},
		{"unknown route problem", unknownReq, 404, problemHeader, []byte(validProblem)},
		{"wrong verb problem", deleteReq, 405, problemHeader,
			[]byte(`{"type":"about:blank","title":"Method Not Allowed","status":405,"code":"method_not_allowed","detail":"no"}`)},
	}
	for _, c := range valid {
		if err := validateResponse(c.req, c.status, c.header, c.body); err != nil {
			t.Errorf("%s: a valid response was rejected: %v", c.name, err)
		}
	}

	startBody := func() map[string]any {
		m := validRun()
		delete(m, "input")
		delete(m, "output")
		m["already_exists"] = false
		return m
	}
	invalid := []struct {
		name   string
		req    *http.Request
		status int
		header http.Header
		body   []byte
	}{
		{"missing required member", getReq, 200, jsonHeader, with(func(m map[string]any) { delete(m, "status") })},
		{"unknown member", getReq, 200, jsonHeader, with(func(m map[string]any) { m["extra"] = 1 })},
		{"status not in enum", getReq, 200, jsonHeader, with(func(m map[string]any) { m["status"] = "done" })},
		{"attempt as a string", getReq, 200, jsonHeader, with(func(m map[string]any) { m["attempt"] = "0" })},
		{"negative attempt", getReq, 200, jsonHeader, with(func(m map[string]any) { m["attempt"] = -1 })},
		{"null retry policy", getReq, 200, jsonHeader, with(func(m map[string]any) { m["retry_policy"] = nil })},
		{"null created_at", getReq, 200, jsonHeader, with(func(m map[string]any) { m["created_at"] = nil })},
		{"bad date-time", getReq, 200, jsonHeader, with(func(m map[string]any) { m["created_at"] = "yesterday" })},
		{"bad uuid", getReq, 200, jsonHeader, with(func(m map[string]any) { m["run_id"] = "42" })},
		{"bad nested member", getReq, 200, jsonHeader, with(func(m map[string]any) {
			m["retry_policy"].(map[string]any)["max_attempts"] = 0
		})},
		{"error of the wrong shape", getReq, 200, jsonHeader, with(func(m map[string]any) { m["error"] = "boom" })},
		{"undocumented status", getReq, 418, jsonHeader, marshal(validRun())},
		{"wrong content type", getReq, 200, http.Header{"Content-Type": {"text/plain"}}, marshal(validRun())},
		{"not JSON", getReq, 200, jsonHeader, []byte(`{"run_id":`)},
		{"problem for a success", getReq, 200, problemHeader, []byte(validProblem)},
		{"problem with the wrong status member", getReq, 404, problemHeader,
			[]byte(`{"type":"about:blank","title":"Not Found","status":400,"code":"not_found","detail":"no"}`)},
		{"problem with an unknown code", getReq, 404, problemHeader,
			[]byte(`{"type":"about:blank","title":"Not Found","status":404,"code":"nope","detail":"no"}`)},
		{"problem without detail", getReq, 404, problemHeader,
			[]byte(`{"type":"about:blank","title":"Not Found","status":404,"code":"not_found"}`)},
		{"health const", healthReq, 200, jsonHeader, []byte(`{"status":"fine"}`)},
		{"start without Location", startReq, 201, jsonHeader, marshal(startBody())},
		{"start with input", startReq, 201, http.Header{"Content-Type": {"application/json"}, "Location": {runPath(runID)}},
			func() []byte { m := startBody(); m["input"] = nil; return marshal(m) }()},
		{"unknown route answered 200", unknownReq, 200, jsonHeader, []byte(`{}`)},
		{"unknown route answered with JSON", unknownReq, 404, jsonHeader, []byte(validProblem)},
		{"unknown route with a bad problem", unknownReq, 404, problemHeader,
			[]byte(`{"type":"about:blank","title":"Not Found","status":404,"code":"not_found"}`)},
		{"wrong verb answered 404", deleteReq, 404, problemHeader, []byte(validProblem)},
	}
	for _, c := range invalid {
		if err := validateResponse(c.req, c.status, c.header, c.body); err == nil {
			t.Errorf("%s: the validator accepted a response that does not match openapi.yaml: %d %s", c.name, c.status, c.body)
		}
	}
	// The start response passes once it has its Location.
	ok := http.Header{"Content-Type": {"application/json"}, "Location": {runPath(runID)}}
	if err := validateResponse(startReq, 201, ok, marshal(startBody())); err != nil {
		t.Errorf("a valid start response was rejected: %v", err)
	}
}
