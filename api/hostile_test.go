package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/kagzi/kagzi/api"
	"github.com/kagzi/kagzi/domain"
)

// The hostile-input suite: every class of bad input, to every route that
// takes a body or a path parameter (and the query to every route). Each
// answer must be the 4xx the contract names, change nothing in the
// database, and log no ERROR (the harness fails the test on one); every
// answer is held to openapi.yaml by the harness.

// slotKind is the kind of a request member a case poisons.
type slotKind int

const (
	nameSlot    slotKind = iota // workflow type, step, external ID: 1–256 bytes, no control characters
	identSlot                   // namespace or task queue
	textSlot                    // free text: no NUL
	intSlot                     // an integer with a range
	payloadSlot                 // any JSON
	uuidSlot                    // a UUID in a body
	tzSlot                      // a time zone
)

// slot is a member of a route's body, by its path in the body ("error.message").
type slot struct {
	kind slotKind
	path string
}

// bodyRoute is what the suite knows of a route that takes a JSON body.
type bodyRoute struct {
	// base is a valid body (for batches: one valid item).
	base func(f *fixtures) map[string]any
	// wrap makes the body of an item, for batches; prefix names the item.
	wrap   func(item map[string]any) any
	prefix string
	// limit is the route's body cap, for the over-the-cap case.
	limit int
	slots []slot
}

// fixtures are the things the paths name, so that the bad input is the
// only thing wrong with a request.
type fixtures struct {
	runID, leaseID, workerID, scheduleID, keyID string
}

const hostileQueue = "hostile"

// bodyRoutes lists every route with a body, as "METHOD pattern".
var bodyRoutes = map[string]bodyRoute{
	"POST /v1/namespaces/{namespace}/workflows": {
		base: func(*fixtures) map[string]any {
			return map[string]any{"workflow_type": "w", "input": 1, "external_id": "e"}
		},
		limit: 2<<20 + 64<<10,
		slots: []slot{{nameSlot, "workflow_type"}, {nameSlot, "external_id"}, {identSlot, "task_queue"}, {payloadSlot, "input"},
			{intSlot, "start_delay_ms"}, {intSlot, "retry_policy.max_attempts"}, {textSlot, "version"}, {nameSlot, "retry_policy.non_retryable_error_types.0"}},
	},
	"POST /v1/namespaces/{namespace}/workflows/batch": {
		base: func(*fixtures) map[string]any { return map[string]any{"workflow_type": "w", "input": 1} },
		wrap: func(item map[string]any) any {
			return map[string]any{"workflows": []any{map[string]any{"workflow_type": "ok"}, item}}
		},
		prefix: "workflows[1].",
		limit:  4 << 20,
		slots:  []slot{{nameSlot, "workflow_type"}, {nameSlot, "external_id"}, {payloadSlot, "input"}, {intSlot, "start_delay_ms"}},
	},
	"POST /v1/namespaces/{namespace}/workflows/batch/complete": {
		base: func(f *fixtures) map[string]any {
			return map[string]any{"run_id": f.runID, "lease_id": f.leaseID, "output": 1}
		},
		wrap:   func(item map[string]any) any { return map[string]any{"runs": []any{item}} },
		prefix: "runs[0].",
		limit:  4 << 20,
		slots:  []slot{{uuidSlot, "run_id"}, {uuidSlot, "lease_id"}, {payloadSlot, "output"}},
	},
	"POST /v1/namespaces/{namespace}/steps/batch": {
		base: func(f *fixtures) map[string]any {
			return map[string]any{"run_id": f.runID, "lease_id": f.leaseID, "step": "s", "outcome": "complete", "output": 1}
		},
		wrap:   func(item map[string]any) any { return map[string]any{"steps": []any{item}} },
		prefix: "steps[0].",
		limit:  4 << 20,
		slots: []slot{{uuidSlot, "run_id"}, {uuidSlot, "lease_id"}, {nameSlot, "step"}, {payloadSlot, "output"},
			{payloadSlot, "input"}},
	},
	"POST /v1/namespaces/{namespace}/workflows/{run_id}/cancel": {
		base: func(*fixtures) map[string]any { return map[string]any{} }, limit: 1 << 10,
	},
	"POST /v1/namespaces/{namespace}/workflows/{run_id}/heartbeat": {
		base:  func(f *fixtures) map[string]any { return map[string]any{"lease_id": f.leaseID} },
		limit: 2<<20 + 64<<10,
		slots: []slot{{uuidSlot, "lease_id"}},
	},
	"POST /v1/namespaces/{namespace}/workflows/{run_id}/sleep": {
		base: func(f *fixtures) map[string]any {
			return map[string]any{"lease_id": f.leaseID, "step": "nap", "duration_ms": 1000}
		},
		limit: 2<<20 + 64<<10,
		slots: []slot{{uuidSlot, "lease_id"}, {nameSlot, "step"}, {intSlot, "duration_ms"}},
	},
	"POST /v1/namespaces/{namespace}/workflows/{run_id}/complete": {
		base:  func(f *fixtures) map[string]any { return map[string]any{"lease_id": f.leaseID, "output": 1} },
		limit: 2<<20 + 64<<10,
		slots: []slot{{uuidSlot, "lease_id"}, {payloadSlot, "output"}},
	},
	"POST /v1/namespaces/{namespace}/workflows/{run_id}/fail": {
		base: func(f *fixtures) map[string]any {
			return map[string]any{"lease_id": f.leaseID, "error": map[string]any{"message": "m", "type": "t", "details": 1}}
		},
		limit: 2<<20 + 64<<10,
		slots: []slot{{uuidSlot, "lease_id"}, {textSlot, "error.message"}, {textSlot, "error.type"}, {payloadSlot, "error.details"}},
	},
	"POST /v1/namespaces/{namespace}/workflows/{run_id}/steps/{step}/begin": {
		base:  func(f *fixtures) map[string]any { return map[string]any{"lease_id": f.leaseID, "input": 1} },
		limit: 2<<20 + 64<<10,
		slots: []slot{{uuidSlot, "lease_id"}, {payloadSlot, "input"}, {intSlot, "retry_policy.max_attempts"}},
	},
	"POST /v1/namespaces/{namespace}/workflows/{run_id}/steps/{step}/complete": {
		base:  func(f *fixtures) map[string]any { return map[string]any{"lease_id": f.leaseID, "output": 1} },
		limit: 2<<20 + 64<<10,
		slots: []slot{{uuidSlot, "lease_id"}, {payloadSlot, "output"}},
	},
	"POST /v1/namespaces/{namespace}/workflows/{run_id}/steps/{step}/fail": {
		base: func(f *fixtures) map[string]any {
			return map[string]any{"lease_id": f.leaseID, "error": map[string]any{"message": "m", "details": 1}}
		},
		limit: 2<<20 + 64<<10,
		slots: []slot{{uuidSlot, "lease_id"}, {textSlot, "error.message"}, {payloadSlot, "error.details"}},
	},
	"POST /v1/namespaces/{namespace}/workflows/signal-with-start": {
		base: func(*fixtures) map[string]any {
			return map[string]any{"workflow_type": "w", "external_id": "sws", "input": 1, "signal": map[string]any{"name": "go", "input": 2}}
		},
		limit: 2*(2<<20) + 64<<10,
		slots: []slot{{nameSlot, "workflow_type"}, {nameSlot, "external_id"}, {identSlot, "task_queue"}, {payloadSlot, "input"},
			{nameSlot, "signal.name"}, {payloadSlot, "signal.input"}, {intSlot, "start_delay_ms"}},
	},
	"POST /v1/namespaces/{namespace}/workflows/{run_id}/signals/{name}": {
		base:  func(*fixtures) map[string]any { return map[string]any{"input": 1} },
		limit: 2<<20 + 64<<10,
		slots: []slot{{payloadSlot, "input"}},
	},
	"POST /v1/namespaces/{namespace}/workflows/by-external-id/{external_id}/signals/{name}": {
		base:  func(*fixtures) map[string]any { return map[string]any{"input": 1} },
		limit: 2<<20 + 64<<10,
		slots: []slot{{payloadSlot, "input"}},
	},
	"POST /v1/namespaces/{namespace}/workflows/{run_id}/steps/{step}/wait": {
		base: func(f *fixtures) map[string]any {
			return map[string]any{"lease_id": f.leaseID, "signals": []any{"go"}, "timeout_ms": 1000}
		},
		limit: 2<<20 + 64<<10,
		slots: []slot{{uuidSlot, "lease_id"}, {nameSlot, "signals.0"}, {intSlot, "timeout_ms"}},
	},
	"POST /v1/namespaces/{namespace}/workflows/{run_id}/steps/{step}/child": {
		base: func(f *fixtures) map[string]any {
			return map[string]any{"lease_id": f.leaseID, "workflow_type": "c", "input": 1, "await": true, "timeout_ms": 1000}
		},
		limit: 2<<20 + 64<<10,
		slots: []slot{{uuidSlot, "lease_id"}, {nameSlot, "workflow_type"}, {identSlot, "task_queue"}, {payloadSlot, "input"},
			{nameSlot, "external_id"}, {intSlot, "timeout_ms"}, {intSlot, "retry_policy.max_attempts"}},
	},
	"PATCH /v1/namespaces/{namespace}/task-queues/{queue}": {
		base:  func(*fixtures) map[string]any { return map[string]any{"paused": false, "max_concurrent": 5} },
		limit: 64 << 10,
		slots: []slot{{intSlot, "max_concurrent"}, {intSlot, "workflow_type_limits.w"}},
	},
	"POST /v1/namespaces/{namespace}/task-queues/{queue}/claim": {
		base: func(f *fixtures) map[string]any {
			return map[string]any{"worker_id": f.workerID, "max_tasks": 1, "wait_ms": 0, "workflow_types": []any{"w"}}
		},
		limit: 64 << 10,
		slots: []slot{{uuidSlot, "worker_id"}, {intSlot, "max_tasks"}, {intSlot, "wait_ms"}, {nameSlot, "workflow_types.0"}},
	},
	"POST /v1/namespaces/{namespace}/workers": {
		base: func(*fixtures) map[string]any {
			return map[string]any{"task_queue": hostileQueue, "hostname": "h", "pid": 1, "labels": map[string]any{"k": "v"}}
		},
		limit: 64 << 10,
		slots: []slot{{identSlot, "task_queue"}, {textSlot, "hostname"}, {textSlot, "version"}, {intSlot, "pid"},
			{intSlot, "max_concurrent"}, {textSlot, "labels.k"}, {nameSlot, "workflow_types.0"}},
	},
	"POST /v1/namespaces/{namespace}/workers/{worker_id}/heartbeat": {
		base: func(*fixtures) map[string]any {
			return map[string]any{"active_count": 0, "run_ids": []any{"01900000-0000-7000-8000-000000000001"}}
		},
		limit: 512 << 10,
		slots: []slot{{intSlot, "active_count"}, {intSlot, "completed_delta"}, {intSlot, "failed_delta"}, {uuidSlot, "run_ids.0"}},
	},
	"POST /v1/namespaces/{namespace}/workers/{worker_id}/drain": {
		base: func(*fixtures) map[string]any { return map[string]any{} }, limit: 1 << 10,
	},
	"POST /v1/namespaces/{namespace}/workflows/{run_id}/retry": {
		base: func(*fixtures) map[string]any { return map[string]any{} }, limit: 1 << 10,
	},
	"POST /v1/namespaces/{namespace}/schedules/{schedule_id}/trigger": {
		base: func(*fixtures) map[string]any { return map[string]any{} }, limit: 1 << 10,
	},
	"POST /v1/namespaces/{namespace}/schedules": {
		base: func(*fixtures) map[string]any {
			return map[string]any{"workflow_type": "w", "cron": "0 0 1 1 *", "timezone": "UTC", "input": 1}
		},
		limit: 2<<20 + 64<<10,
		slots: []slot{{nameSlot, "workflow_type"}, {identSlot, "task_queue"}, {tzSlot, "timezone"}, {payloadSlot, "input"},
			{intSlot, "max_catchup"}, {textSlot, "version"}},
	},
	"POST /v1/api-keys": {
		base: func(*fixtures) map[string]any {
			return map[string]any{"name": "k", "role": "reader", "namespaces": []any{"a"}}
		},
		limit: 64 << 10,
		slots: []slot{{nameSlot, "name"}, {identSlot, "namespaces.0"}},
	},
	"PATCH /v1/namespaces/{namespace}/schedules/{schedule_id}": {
		base:  func(*fixtures) map[string]any { return map[string]any{"workflow_type": "w2", "input": 2} },
		limit: 2<<20 + 64<<10,
		slots: []slot{{nameSlot, "workflow_type"}, {tzSlot, "timezone"}, {payloadSlot, "input"}, {intSlot, "max_catchup"},
			{intSlot, "retry_policy.max_attempts"}},
	},
}

// badValue is one poisoned value of a slot kind, as JSON text.
type badValue struct {
	class, json string
	status      int
}

var badValues = map[slotKind][]badValue{
	nameSlot: {
		{"empty name", `""`, 400}, {"name over 256 bytes", `"` + strings.Repeat("n", 257) + `"`, 400},
		{"C0 control in name", `"a\u0001b"`, 400}, {"DEL in name", `"a` + "\x7f" + `"`, 400},
		{"C1 control in name", `"a\u0085"`, 400}, {"NUL in name", `"a\u0000"`, 400},
		{"invalid UTF-8 in name", "\"k-\xfe\"", 400}, {"lone surrogate in name", `"\udc00"`, 400},
		{"number for name", `5`, 400}, {"object for name", `{}`, 400},
	},
	identSlot: {
		{"space in ident", `"a b"`, 400}, {"ident starting with a dash", `"-a"`, 400},
		{"ident over 63 bytes", `"` + strings.Repeat("q", 64) + `"`, 400}, {"slash in ident", `"a/b"`, 400},
	},
	textSlot: {
		{"NUL in text", `"a\u0000b"`, 400}, {"invalid UTF-8 in text", "\"\xc3(\"", 400},
		{"array for text", `[]`, 400},
	},
	intSlot: {
		{"integer beyond int64", `9223372036854775808`, 400}, {"integer below int64", `-9223372036854775809`, 400},
		{"huge float for integer", `1e30`, 400}, {"fraction for integer", `1.5`, 400}, {"exponent for integer", `1e3`, 400},
		{"negative integer", `-1`, 400}, {"string for integer", `"5"`, 400}, {"boolean for integer", `true`, 400},
		{"integer beyond int32", `2147483648`, 400},
	},
	payloadSlot: {
		{"invalid UTF-8 in payload", "{\"s\":\"\xff\"}", 400}, {"truncated UTF-8 in payload", "[\"\xe2\x82\"]", 400},
		{"payload over the limit", `"` + strings.Repeat("p", 2<<20) + `"`, 413},
		{"nesting beyond the decoder's depth", strings.Repeat("[", 10001) + strings.Repeat("]", 10001), 400},
	},
	uuidSlot: {
		{"malformed UUID", `"not-a-uuid"`, 400}, {"UUID without dashes", `"0190a0a000007000800000000000000a"`, 400},
		{"number for UUID", `7`, 400},
	},
	tzSlot: {
		{"non-canonical time zone", `"./UTC"`, 400}, {"doubled slash in time zone", `"America//New_York"`, 400},
		{"Local time zone", `"Local"`, 400}, {"unknown time zone", `"Mars/Olympus_Mons"`, 400},
	},
}

// hostileCase is one request of the suite.
type hostileCase struct {
	class, method, path string
	body                any
	opts                []reqOption
	status              int
	field               string // "" when the suite does not insist on one
}

func (c hostileCase) code() string {
	switch c.status {
	case http.StatusRequestEntityTooLarge:
		return "payload_too_large"
	case http.StatusUnsupportedMediaType:
		return "unsupported_media_type"
	case http.StatusNotFound:
		return "not_found"
	}
	return "invalid_argument"
}

var paramRE = regexp.MustCompile(`\{([^}]+)\}`)

// fill puts the fixtures into a route pattern, with over replacing the
// parameter it names.
func (f *fixtures) fill(pattern, param, value string) string {
	return paramRE.ReplaceAllStringFunc(pattern, func(m string) string {
		name := m[1 : len(m)-1]
		if name == param {
			return value
		}
		switch name {
		case "namespace":
			return "default"
		case "run_id":
			return f.runID
		case "worker_id":
			return f.workerID
		case "schedule_id":
			return f.scheduleID
		case "key_id":
			return f.keyID
		case "queue":
			return hostileQueue
		case "step":
			return "s1"
		case "name":
			return "go"
		case "external_id":
			return "no-such-run"
		}
		panic("no fixture for " + name)
	})
}

// badParams are bad values of each path parameter, percent-encoded as sent.
var badParams = map[string][]string{
	"namespace":   {"bad%20ns", "-x", strings.Repeat("n", 64), "%C3%A9", "a%2Fb", "a%00"},
	"queue":       {"bad%20q", "_x", strings.Repeat("q", 64), "%C2%85", "a%2Fb"},
	"run_id":      {"not-a-uuid", "0190a0a0-0000-7000-8000-00000000000g", "%7B0190a0a0-0000-7000-8000-000000000000%7D", "0190a0a000007000800000000000000a"},
	"worker_id":   {"not-a-uuid", "0190a0a0-0000-7000-8000-00000000000g", "0190a0a0-0000-7000-8000-0000000000000"},
	"schedule_id": {"not-a-uuid", "0190a0a0-0000-7000-8000-00000000000g", "%20"},
	"key_id":      {"not-a-uuid", "0190a0a0-0000-7000-8000-00000000000g", "%00"},
	"step":        {"%00", "a%0Ab", "%C2%85", "%FF", "%ED%A0%80", strings.Repeat("s", 257), "a%7F"},
	"name":        {"%00", "a%0Ab", "%C2%85", "%FF", strings.Repeat("s", 257), "kagzi.x", "kagzi.child%2Fs"},
	"external_id": {"%00", "a%0Ab", "%FF", strings.Repeat("e", 257)},
}

// badQueries are query strings no route takes, or takes with these values.
var badQueries = []string{"foo=1", "WAIT_MS=1", "x"}

// listQueries are bad values of the list routes' parameters.
var listQueries = []string{"limit=0", "limit=501", "limit=abc", "limit=1e2", "cursor=garbage", "cursor=%FF", "limit=1&limit=2&foo"}

func TestHostileInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withoutMaintainer(), func(c *envConfig) { c.schedulerInterval = 0 },
		withLimits(func(l *api.Limits) { l.MaxBatchBytes = 4 << 20 }))
	f := &fixtures{}
	_, task := e.startClaimed(t, "w", map[string]any{"task_queue": hostileQueue})
	f.runID, f.leaseID = task.RunID, task.LeaseID
	f.workerID = e.register(t, hostileQueue, nil).WorkerID
	f.scheduleID = e.createSchedule(t, map[string]any{"workflow_type": "w", "cron": "0 0 1 1 *"}).ScheduleID
	e.begin(t, f.runID, "s1", lease(f.leaseID))
	// Every request carries an admin key on every namespace, which
	// /v1/api-keys needs (and which turns authentication on).
	admin := e.newKey(t, domain.RoleAdmin)
	f.keyID = e.keyID(t, admin)

	var routes []string
	if err := chi.Walk(e.api.Router(), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		routes = append(routes, method+" "+normalizeRoute(route))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sort.Strings(routes)

	var cases []hostileCase
	classes := map[string]bool{}
	add := func(c hostileCase) {
		classes[c.class] = true
		cases = append(cases, c)
	}
	for _, route := range routes {
		method, pattern, _ := strings.Cut(route, " ")
		if strings.HasPrefix(pattern, "/ui") {
			continue // the dashboard's static files, not the API
		}
		params := paramRE.FindAllStringSubmatch(pattern, -1)
		br, hasBody := bodyRoutes[route]
		if (method == http.MethodPost || method == http.MethodPatch) && !hasBody {
			t.Errorf("route %s takes a body, and the hostile suite has no cases for it: add it to bodyRoutes", route)
			continue
		}
		for _, p := range params {
			if _, ok := badParams[p[1]]; !ok {
				t.Errorf("route %s has a path parameter {%s} the hostile suite has no bad values for", route, p[1])
			}
		}
		validBody := func() any { return nil }
		if hasBody {
			validBody = func() any { return br.body(f, nil) }
		}
		path := f.fill(pattern, "", "")

		// Queries no route takes. (/metrics is Prometheus's exposition,
		// not the API: scrapers may add parameters of their own.)
		for _, q := range badQueries {
			if pattern == "/metrics" {
				break
			}
			add(hostileCase{class: "unknown query parameter", method: method, path: path + "?" + q, body: validBody(), status: 400})
		}
		if method == http.MethodGet && !strings.HasSuffix(pattern, "}") && strings.HasPrefix(pattern, "/v1/namespaces/") {
			for _, q := range listQueries {
				add(hostileCase{class: "bad list parameter", method: method, path: path + "?" + q, status: 400})
			}
		}
		if route == "GET /v1/namespaces/{namespace}/workflows/{run_id}" {
			for _, q := range []string{"wait_ms=-1", "wait_ms=abc", "wait_ms=9223372036854775808", "wait_ms=1.5"} {
				add(hostileCase{class: "bad wait_ms", method: method, path: path + "?" + q, status: 400, field: "wait_ms"})
			}
		}
		// Each path parameter, bad.
		for _, p := range params {
			for _, v := range badParams[p[1]] {
				add(hostileCase{class: "bad path parameter " + p[1], method: method, path: f.fill(pattern, p[1], v), body: validBody(), status: 400})
			}
		}
		if !hasBody {
			continue
		}
		// The body, malformed as a whole.
		valid, _ := json.Marshal(br.body(f, nil))
		for _, c := range []struct {
			class string
			body  any
			opts  []reqOption
			st    int
		}{
			{"trailing garbage", string(valid) + "x", nil, 400},
			{"two JSON values", string(valid) + "{}", nil, 400},
			{"array body", "[" + string(valid) + "]", nil, 400},
			{"null body", "null", nil, 400},
			{"string body", `"x"`, nil, 400},
			{"number body", `12`, nil, 400},
			{"truncated body", string(valid[:len(valid)-1]), nil, 400},
			{"single-quoted members", `{'a':1}`, nil, 400},
			{"comment in body", `{/* c */}`, nil, 400},
			{"NaN", `{"n":NaN}`, nil, 400},
			{"byte-order mark", "\xef\xbb\xbf" + string(valid), nil, 400},
			{"raw control character in a string", "{\"a\":\"x\x01y\"}", nil, 400},
			{"bad escape", `{"a":"\x"}`, nil, 400},
			{"unknown member", withMember(valid, `"zzz":1`), nil, 400},
			{"invalid UTF-8 member name", withMember(valid, "\"\xff\":1"), nil, 400},
			{"NUL in member name", withMember(valid, `"a\u0000":1`), nil, 400},
			{"deep nesting in an unknown member", withMember(valid, `"zzz":`+strings.Repeat("[", 20000)+strings.Repeat("]", 20000)), nil, 400},
			{"text/plain body", string(valid), []reqOption{withContentType("text/plain")}, 415},
			{"form body", string(valid), []reqOption{withContentType("application/x-www-form-urlencoded")}, 415},
			{"body without content type", string(valid), []reqOption{withContentType("")}, 415},
			{"json-ish content type", string(valid), []reqOption{withContentType("application/jsonx")}, 415},
			{"body over the route's cap", withMember(valid, `"pad":"`+strings.Repeat(" ", br.limit)+`"`), nil, 413},
		} {
			if b, ok := c.body.(string); ok && len(b) > br.limit {
				c.st = http.StatusRequestEntityTooLarge // the cap comes first
			}
			add(hostileCase{class: c.class, method: method, path: path, body: c.body, opts: c.opts, status: c.st})
		}
		// Member names: a case variant and a duplicate of the first.
		if first := firstMember(valid); first != "" {
			add(hostileCase{class: "case-variant member", method: method, path: path,
				body: strings.Replace(string(valid), `"`+first+`"`, `"`+strings.ToUpper(first)+`"`, 1), status: 400})
			add(hostileCase{class: "duplicate member", method: method, path: path,
				body: withMember(valid, string(mustJSON(first))+":"+string(memberValue(valid, first))), status: 400})
		}
		// Each member, poisoned.
		for _, s := range br.slots {
			for _, bv := range badValues[s.kind] {
				if s.kind == intSlot && bv.class == "integer beyond int32" && !int32Slot(s.path) {
					continue
				}
				if s.kind == intSlot && bv.class == "negative integer" && s.path == "start_delay_ms" {
					bv.class = "negative delay"
				}
				c := hostileCase{class: bv.class, method: method, path: path, body: br.poisoned(f, s.path, bv.json),
					status: bv.status, field: br.prefix + fieldName(s.path)}
				add(c)
			}
		}
		if strings.HasSuffix(pattern, "/workflows") || strings.HasSuffix(pattern, "/batch") || strings.HasSuffix(pattern, "/signal-with-start") {
			add(hostileCase{class: "reserved schedule: prefix", method: method, path: path,
				body: br.poisoned(f, "external_id", `"schedule:`+f.scheduleID+`:2026-01-01T00:00:00Z"`), status: 400, field: br.prefix + "external_id"})
		}
	}
	if len(classes) < 40 {
		t.Errorf("the suite sends %d classes of bad input, want at least 40", len(classes))
	}
	t.Logf("%d cases in %d classes over %d routes", len(cases), len(classes), len(routes))

	before := e.checksum(t)
	for _, c := range cases {
		r, err := e.try(c.method, c.path, c.body, append([]reqOption{withKey(admin)}, c.opts...)...)
		if err != nil {
			t.Errorf("%s: %s %s: %v", c.class, c.method, short(c.path), err)
			continue
		}
		var p problem
		_ = json.Unmarshal(r.body, &p)
		if r.status != c.status || p.Code != c.code() || (c.field != "" && p.Field != c.field) {
			t.Errorf("%s: %s %s: got %d %s field %q, want %d %s field %q\nbody: %s",
				c.class, c.method, short(c.path), r.status, p.Code, p.Field, c.status, c.code(), c.field, short(string(r.body)))
		}
		if after := e.checksum(t); after != before {
			t.Fatalf("%s: %s %s changed the database", c.class, c.method, short(c.path))
		}
	}
}

// body is the route's valid body with the item changed by change.
func (br bodyRoute) body(f *fixtures, change func(map[string]any)) any {
	item := br.base(f)
	if change != nil {
		change(item)
	}
	if br.wrap != nil {
		return br.wrap(item)
	}
	return item
}

// poisoned is the route's valid body with the member at path set to the
// JSON text raw, sent exactly as written (invalid UTF-8 included).
func (br bodyRoute) poisoned(f *fixtures, path string, raw string) []byte {
	const mark = "\x00poison\x00"
	b, err := json.Marshal(br.body(f, func(item map[string]any) { setPath(item, strings.Split(path, "."), mark) }))
	if err != nil {
		panic(err)
	}
	return bytes.Replace(b, []byte(`"\u0000poison\u0000"`), []byte(raw), 1)
}

// setPath sets the member at path in m, making objects and arrays on the
// way ("labels.k", "workflow_types.0").
func setPath(m map[string]any, path []string, v any) {
	if len(path) == 1 {
		m[path[0]] = v
		return
	}
	if path[1] == "0" {
		m[path[0]] = []any{v}
		return
	}
	next, ok := m[path[0]].(map[string]any)
	if !ok {
		next = map[string]any{}
		m[path[0]] = next
	}
	setPath(next, path[1:], v)
}

// fieldName is how the API names the member at a slot's path.
func fieldName(path string) string {
	parts := strings.Split(path, ".")
	switch {
	case len(parts) == 2 && parts[1] == "0":
		return parts[0] + "[0]"
	case len(parts) == 2 && (parts[0] == "labels" || parts[0] == "workflow_type_limits"):
		return fmt.Sprintf("%s[%q]", parts[0], parts[1])
	case len(parts) == 3 && parts[2] == "0":
		return parts[0] + "." + parts[1] + "[0]"
	}
	return path
}

// int32Slot reports whether the integer at path is stored as a PostgreSQL
// integer.
func int32Slot(path string) bool {
	return path == "pid" || path == "active_count"
}

// withMember adds a member to the JSON object body.
func withMember(body []byte, member string) string {
	s := strings.TrimSuffix(strings.TrimSpace(string(body)), "}")
	if strings.HasSuffix(s, "{") {
		return s + member + "}"
	}
	return s + "," + member + "}"
}

// firstMember is the name of the first member of a JSON object.
func firstMember(body []byte) string {
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil {
		return ""
	}
	if tok, err := dec.Token(); err == nil {
		if s, ok := tok.(string); ok {
			return s
		}
	}
	return ""
}

// memberValue is the JSON text of a top-level member of body.
func memberValue(body []byte, name string) json.RawMessage {
	var m map[string]json.RawMessage
	_ = json.Unmarshal(body, &m)
	return m[name]
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func short(s string) string {
	if len(s) > 200 {
		return s[:200] + fmt.Sprintf("...(%d bytes)", len(s))
	}
	return s
}

// checksum is a digest of every row of every table but the migrations'.
func (e *env) checksum(t testing.TB) string {
	t.Helper()
	ctx := context.Background()
	rows, err := e.pool.Query(ctx, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name <> 'schema_migrations' ORDER BY 1`)
	if err != nil {
		t.Fatalf("list tables: %v", err)
	}
	var parts []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		row := "x::text"
		if name == "api_keys" { // last_used_at records a key's use, not a change
			row = "(x.key_id, x.name, x.role, x.namespaces, x.secret_hash, x.created_at, x.expires_at, x.revoked_at)::text"
		}
		parts = append(parts, fmt.Sprintf(`(SELECT md5(coalesce(string_agg(%s, '|' ORDER BY %s), '')) FROM %q x)`, row, row, name))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var sum string
	if err := e.pool.QueryRow(ctx, `SELECT concat_ws(',', `+strings.Join(parts, ", ")+`)`).Scan(&sum); err != nil {
		t.Fatalf("checksum: %v", err)
	}
	return sum
}
