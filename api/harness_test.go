package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kagzi/kagzi"
	"github.com/kagzi/kagzi/api"
	"github.com/kagzi/kagzi/auth"
	"github.com/kagzi/kagzi/distributor"
	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/internal/testserver"
	"github.com/kagzi/kagzi/maintenance"
	"github.com/kagzi/kagzi/postgres"
	"github.com/kagzi/kagzi/postgres/pgtest"
	"github.com/kagzi/kagzi/scheduler"
)

// testVersion is the server version the harness reports in /v1/info.
const testVersion = "test"

// defaultLimits are the limits of a test server: the production payload
// limits, so that boundary tests use the real numbers, and a short MaxWait so
// that a long-poll that is never woken ends quickly.
func defaultLimits() api.Limits {
	return api.Limits{
		Payload: domain.PayloadLimits{
			MaxBytes:  domain.DefaultPayloadMaxBytes,
			WarnBytes: domain.DefaultPayloadWarnBytes,
		},
		MaxBatch:          1000,
		MaxBatchBytes:     32 << 20,
		MaxWait:           5 * time.Second,
		LeaseDuration:     30 * time.Second,
		HeartbeatInterval: 10 * time.Second,
	}
}

// envConfig is what newEnv builds from; options change it.
type envConfig struct {
	limits api.Limits
	// storePool, when set, makes the pool the store (and the readiness check)
	// uses instead of the test database's; the harness's own pool stays on the
	// test database so that tests can still inspect and change it.
	storePool func(t *testing.T, dbURL string) *pgxpool.Pool
	// allowErrorLogs lets the server log at ERROR level during the test;
	// otherwise any such record fails the test when it ends.
	allowErrorLogs bool
	// maintainer configures the maintainer (rescue of expired leases,
	// silent workers going offline, retention). Interval 0 runs it never, so
	// that a test calls e.maintainer.Tick itself; HeartbeatInterval 0 takes
	// the limits'.
	maintainer maintenance.Options
	// schedulerInterval is how often the scheduler looks for due schedules;
	// 0 runs it never.
	schedulerInterval time.Duration
	// auth is the authentication mode (KAGZI_AUTH); "" is auto.
	auth auth.Mode
	// separateMetrics leaves /metrics off the API (KAGZI_METRICS_ADDR).
	separateMetrics bool
}

// envOption changes how newEnv builds the environment.
type envOption func(*envConfig)

// withLimits lets a test change the server's limits.
func withLimits(f func(*api.Limits)) envOption {
	return func(c *envConfig) { f(&c.limits) }
}

// withClosedStorePool gives the store a pool on the test database that is
// closed before the first request, as at shutdown.
func withClosedStorePool() envOption {
	return func(c *envConfig) {
		c.allowErrorLogs = true
		c.storePool = func(t *testing.T, dbURL string) *pgxpool.Pool {
			t.Helper()
			pool, err := postgres.NewPool(context.Background(), dbURL, 2)
			if err != nil {
				t.Fatalf("open store pool: %v", err)
			}
			pool.Close()
			return pool
		}
	}
}

// withUnreachableDatabase gives the store a pool on an address where no
// database listens, as when the database is down.
func withUnreachableDatabase() envOption {
	return func(c *envConfig) {
		c.allowErrorLogs = true
		c.storePool = func(t *testing.T, _ string) *pgxpool.Pool {
			t.Helper()
			// Port 1 on the loopback: connections are refused at once.
			pool, err := postgres.NewPool(context.Background(),
				"postgres://postgres@127.0.0.1:1/kagzi?sslmode=disable&connect_timeout=2", 2)
			if err != nil {
				t.Fatalf("open store pool: %v", err)
			}
			t.Cleanup(pool.Close)
			return pool
		}
	}
}

// withAuth runs the server in the authentication mode m.
func withAuth(m auth.Mode) envOption {
	return func(c *envConfig) { c.auth = m }
}

// withoutMaintainer stops the background maintainer from running on its
// own: the test calls e.maintainer.Tick when it wants a pass.
func withoutMaintainer() envOption {
	return func(c *envConfig) { c.maintainer.Interval = 0 }
}

// withErrorLogs lets the server log errors without failing the test, for
// tests that provoke server faults on purpose.
func withErrorLogs() envOption {
	return func(c *envConfig) { c.allowErrorLogs = true }
}

// env is one test's server, wired as cmd/kagzi wires it: a fresh migrated
// database, the real store, listener, distributor, maintainer and
// scheduler, the real router on an httptest.Server, a metrics registry of
// its own, and the server's log.
type env struct {
	pool        *pgxpool.Pool // on the test database, for direct inspection
	dbURL       string
	store       *postgres.Store
	hooks       *hookedStore // the store the server uses: store, observed
	listener    *postgres.Listener
	distributor *distributor.Distributor
	maintainer  *maintenance.Maintainer
	scheduler   *scheduler.Scheduler
	registry    *prometheus.Registry
	keys        *auth.Keyring
	server      *kagzi.Server
	api         *api.Server
	srv         *httptest.Server
	client      *http.Client
	logs        *logBuffer
	limits      api.Limits
}

// newEnv builds an environment for t and tears it down when t ends. It
// returns once the listener's LISTEN connection is up, so that long-polls are
// woken by notifications from the first request on.
func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	// Background loops at production cadence; finished runs are kept
	// (no retention), so that tests can look at them.
	cfg := envConfig{
		limits:            defaultLimits(),
		maintainer:        maintenance.Options{Interval: time.Second},
		schedulerInterval: time.Second,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.maintainer.HeartbeatInterval == 0 {
		cfg.maintainer.HeartbeatInterval = cfg.limits.HeartbeatInterval
	}
	pool, dbURL := pgtest.NewPool(t)
	storePool := pool
	if cfg.storePool != nil {
		storePool = cfg.storePool(t, dbURL)
	}
	logs := &logBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	// The server is assembled exactly as cmd/kagzi assembles it; only the
	// stores the API reads through are wrapped, so that tests can observe
	// the reads.
	srvCfg := kagzi.Config{
		DatabaseURL:        dbURL,
		Pool:               storePool,
		Limits:             cfg.limits,
		MaintainerInterval: cfg.maintainer.Interval,
		NoMaintainer:       cfg.maintainer.Interval <= 0,
		SchedulerInterval:  cfg.schedulerInterval,
		NoScheduler:        cfg.schedulerInterval <= 0,
		Version:            testVersion,
		Logger:             logger,
		Auth:               cfg.auth,
		SeparateMetrics:    cfg.separateMetrics,
	}
	srvCfg.Limits.HeartbeatInterval = cfg.maintainer.HeartbeatInterval
	server := kagzi.NewServer(srvCfg)
	store, listener := server.Store, server.Listener
	hooked := &hookedStore{Store: store}
	srv := server.API
	srv.Workflows, srv.Execution, srv.Workers, srv.TaskQueues, srv.Schedules = hooked, hooked, hooked, hooked, hooked

	// The background components run until the test ends; Run must return
	// once its context is cancelled.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("server.Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("the background components did not stop within 10s of their context ending")
		}
	})
	waitFor(t, 10*time.Second, "the listener to be ready", func() bool { return listener.Ready() == nil })

	if !cfg.allowErrorLogs {
		// Registered before hs.Close, so it runs after it, when every
		// request has been answered and logged.
		t.Cleanup(func() {
			for _, rec := range logs.records(t) {
				if rec["level"] == slog.LevelError.String() {
					t.Errorf("the server logged an error: %v", rec)
				}
			}
		})
	}
	hs := httptest.NewUnstartedServer(srv)
	hs.Config = server.HTTPServer(context.Background(), "") // the binary's timeouts
	hs.Start()
	t.Cleanup(hs.Close)
	e := &env{
		pool:        pool,
		dbURL:       dbURL,
		store:       store,
		hooks:       hooked,
		listener:    listener,
		distributor: server.Distributor,
		maintainer:  server.Maintainer,
		scheduler:   server.Scheduler,
		registry:    server.Registry,
		keys:        server.Keys,
		server:      server,
		api:         srv,
		srv:         hs,
		client:      hs.Client(),
		logs:        logs,
		limits:      cfg.limits,
	}
	return e
}

// hookedStore is the store with its reads observable, so that a test can
// wait for the server to have read a run (for instance before it parks a
// long-poll) instead of sleeping. It embeds *postgres.Store, so it has every
// method the store has and satisfies whatever interface the store does.
type hookedStore struct {
	*postgres.Store

	mu      sync.Mutex
	getSubs []getSub
}

type getSub struct {
	runID string
	ch    chan domain.Run
}

// GetRun reads the run and tells the subscribers of runID what it read.
func (h *hookedStore) GetRun(ctx context.Context, namespace, runID string) (domain.Run, error) {
	run, err := h.Store.GetRun(ctx, namespace, runID)
	if err == nil {
		h.mu.Lock()
		for _, s := range h.getSubs {
			if s.runID == runID {
				select {
				case s.ch <- run:
				default: // a subscriber that stopped reading misses later reads
				}
			}
		}
		h.mu.Unlock()
	}
	return run, err
}

// watchGets returns a channel that receives every run the server reads with
// GetRun for runID from now on (until t ends).
func (e *env) watchGets(t testing.TB, runID string) <-chan domain.Run {
	t.Helper()
	ch := make(chan domain.Run, 16)
	h := e.hooks
	h.mu.Lock()
	h.getSubs = append(h.getSubs, getSub{runID: runID, ch: ch})
	h.mu.Unlock()
	t.Cleanup(func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		for i, s := range h.getSubs {
			if s.ch == ch {
				h.getSubs = append(h.getSubs[:i], h.getSubs[i+1:]...)
				break
			}
		}
	})
	return ch
}

// waitFor polls cond until it holds, failing t after timeout. It is for
// conditions that offer no event to wait on (the listener's readiness).
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// logBuffer is a goroutine-safe buffer the server's JSON log goes to.
type logBuffer struct{ testserver.LogBuffer }

// records returns every log record so far, decoded.
func (b *logBuffer) records(t testing.TB) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for line := range strings.SplitSeq(b.String(), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %v: %q", err, line)
		}
		recs = append(recs, rec)
	}
	return recs
}

// find returns the records whose message is msg and whose attributes
// include every key and value of attrs.
func (b *logBuffer) find(t testing.TB, msg string, attrs map[string]any) []map[string]any {
	t.Helper()
	var found []map[string]any
next:
	for _, rec := range b.records(t) {
		if rec["msg"] != msg {
			continue
		}
		for k, v := range attrs {
			// Compared as JSON, so that 5 matches the 5 a record decodes to
			// (float64).
			got, _ := json.Marshal(rec[k])
			want, _ := json.Marshal(v)
			if !bytes.Equal(got, want) {
				continue next
			}
		}
		found = append(found, rec)
	}
	return found
}

// resp is a response obtained through the harness; it has been validated
// against openapi.yaml.
type resp struct {
	status int
	header http.Header
	body   []byte
}

// decode unmarshals the body into v. v may have only the members a test
// looks at: the body has already been held to the spec's schema.
func (r *resp) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %d response into %T: %v\nbody: %s", r.status, v, err, r.short())
	}
}

// short is the body cut to a length fit for a failure message.
func (r *resp) short() string {
	if len(r.body) > 2000 {
		return string(r.body[:2000]) + fmt.Sprintf("... (%d bytes)", len(r.body))
	}
	return string(r.body)
}

// wantStatus fails t unless the response has status.
func (r *resp) wantStatus(t testing.TB, status int) *resp {
	t.Helper()
	if r.status != status {
		t.Fatalf("status: got %d, want %d\nbody: %s", r.status, status, r.short())
	}
	return r
}

// problem is a problem document as the API writes it.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Code   string `json:"code"`
	Detail string `json:"detail"`
	Field  string `json:"field"`
}

// wantProblem fails t unless the response is a problem with status, code and
// field ("" for none), and returns it.
func (r *resp) wantProblem(t testing.TB, status int, code, field string) problem {
	t.Helper()
	r.wantStatus(t, status)
	if ct := mediaType(r.header.Get("Content-Type")); ct != "application/problem+json" {
		t.Fatalf("Content-Type: got %q, want application/problem+json", ct)
	}
	var p problem
	r.decode(t, &p)
	if p.Code != code || p.Field != field {
		t.Fatalf("problem: got code %q field %q, want code %q field %q\nbody: %s", p.Code, p.Field, code, field, r.short())
	}
	if p.Detail == "" {
		t.Fatalf("problem has an empty detail: %s", r.short())
	}
	return p
}

// reqOption changes a request before it is sent.
type reqOption func(*http.Request)

// withHeader sets a request header; an empty value removes it.
func withHeader(k, v string) reqOption {
	return func(r *http.Request) {
		if v == "" {
			r.Header.Del(k)
			return
		}
		r.Header.Set(k, v)
	}
}

// withContentType sends the body with Content-Type ct instead of
// application/json ("" sends none).
func withContentType(ct string) reqOption { return withHeader("Content-Type", ct) }

// withContentLength declares the body's length, for bodies given as an
// io.Reader (which are otherwise sent chunked).
func withContentLength(n int64) reqOption {
	return func(r *http.Request) { r.ContentLength = n }
}

// withContext sends the request under ctx.
func withContext(ctx context.Context) reqOption {
	return func(r *http.Request) { *r = *r.WithContext(ctx) }
}

// do sends a request to the test server and returns its validated response.
// body is nil (no body), a string or []byte (sent as is), an io.Reader
// (streamed), or any other value (sent as its JSON). A body goes with
// Content-Type application/json unless an option says otherwise.
func (e *env) do(t testing.TB, method, path string, body any, opts ...reqOption) *resp {
	t.Helper()
	r, err := e.try(method, path, body, opts...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// try is do for goroutines other than the test's: it returns what do would
// fail the test with, including a response that does not match the spec.
func (e *env) try(method, path string, body any, opts ...reqOption) (*resp, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	case json.RawMessage:
		rd = bytes.NewReader(b)
	case io.Reader:
		rd = b
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return nil, fmt.Errorf("encode request body: %w", err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		return nil, err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, o := range opts {
		o(req)
	}
	return e.send(req)
}

// send sends req and validates the response against openapi.yaml.
func (e *env) send(req *http.Request) (*resp, error) {
	res, err := e.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, fmt.Errorf("read response body: %w", err)
	}
	r := &resp{status: res.StatusCode, header: res.Header, body: body}
	if err := validateResponse(req, r.status, r.header, r.body); err != nil {
		return r, fmt.Errorf("the response does not match openapi.yaml: %w\nstatus %d, body: %s", err, r.status, r.short())
	}
	return r, nil
}

// spec is openapi.yaml, loaded and validated once.
type spec struct {
	doc    *openapi3.T
	router routers.Router
	opts   *openapi3filter.Options
}

var (
	specOnce   sync.Once
	loadedSpec *spec
	specErr    error
)

// loadSpec returns the parsed kagzi.OpenAPI and a router over it.
func loadSpec() (*spec, error) {
	specOnce.Do(func() { loadedSpec, specErr = parseSpec(kagzi.OpenAPI) })
	return loadedSpec, specErr
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

func parseSpec(data []byte) (*spec, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(data)
	if err != nil {
		return nil, fmt.Errorf("load openapi.yaml: %w", err)
	}
	if !doc.IsOpenAPI31OrLater() {
		return nil, fmt.Errorf("openapi.yaml is OpenAPI %s; want 3.1", doc.OpenAPI)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("validate openapi.yaml: %w", err)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("route openapi.yaml: %w", err)
	}
	// kin-openapi checks date-time by itself; uuid and uri-reference are
	// checked here so that a malformed ID or Location fails validation.
	formats := map[string]openapi3.StringFormatValidator{
		"uuid": openapi3.NewCallbackValidator(func(s string) error {
			if !uuidRE.MatchString(s) {
				return errors.New("not a UUID")
			}
			return nil
		}),
		"uri-reference": openapi3.NewCallbackValidator(func(s string) error {
			_, err := url.Parse(s)
			return err
		}),
	}
	opts := &openapi3filter.Options{
		IncludeResponseStatus: true,
		MultiError:            true,
		SchemaValidationOptions: []openapi3.SchemaValidationOption{
			openapi3.WithStringFormatValidators(formats),
		},
	}
	return &spec{doc: doc, router: router, opts: opts}, nil
}

// validateResponse checks a response to req against openapi.yaml: status,
// headers, content type and body. A request the spec has no operation for
// must have been refused with a problem document; a problem's status member
// must be the HTTP status.
func validateResponse(req *http.Request, status int, header http.Header, body []byte) error {
	s, err := loadSpec()
	if err != nil {
		return err
	}
	if mediaType(header.Get("Content-Type")) == "application/problem+json" {
		var p struct {
			Status int    `json:"status"`
			Title  string `json:"title"`
		}
		if err := json.Unmarshal(body, &p); err != nil {
			return fmt.Errorf("problem body: %w", err)
		}
		if p.Status != status || p.Title == "" {
			return fmt.Errorf("problem says status %d (title %q); the response is %d", p.Status, p.Title, status)
		}
	}
	route, params, err := s.router.FindRoute(req)
	switch {
	case errors.Is(err, routers.ErrPathNotFound) || errors.Is(err, routers.ErrMethodNotAllowed):
		// No operation in the spec: the server must have refused the request.
		return validateUnroutedResponse(s, err, status, header, body)
	case err != nil:
		return fmt.Errorf("find route: %w", err)
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request:    req,
			PathParams: params,
			Route:      route,
			Options:    s.opts,
		},
		Status:  status,
		Header:  header,
		Options: s.opts,
	}
	in.SetBodyBytes(body)
	return openapi3filter.ValidateResponse(context.Background(), in)
}

// validateUnroutedResponse checks the answer to a request that no operation
// of the spec describes: it must be a 4xx problem document that matches the
// Problem schema (404 for an unknown path, 405 for a wrong verb, or 400 when
// a path parameter the server checks first is bad).
func validateUnroutedResponse(s *spec, routeErr error, status int, header http.Header, body []byte) error {
	ct := mediaType(header.Get("Content-Type"))
	if ct != "application/problem+json" {
		return fmt.Errorf("%v in openapi.yaml, and the server answered %d %s rather than a problem document", routeErr, status, ct)
	}
	want := map[int]bool{http.StatusNotFound: true, http.StatusBadRequest: true}
	if errors.Is(routeErr, routers.ErrMethodNotAllowed) {
		want = map[int]bool{http.StatusMethodNotAllowed: true, http.StatusBadRequest: true}
	}
	if !want[status] {
		return fmt.Errorf("%v in openapi.yaml, and the server answered %d", routeErr, status)
	}
	schema := s.doc.Components.Schemas["Problem"]
	if schema == nil || schema.Value == nil {
		return errors.New("openapi.yaml has no Problem schema")
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("problem body: %w", err)
	}
	opts := append([]openapi3.SchemaValidationOption{openapi3.EnableJSONSchema2020(), openapi3.VisitAsResponse()},
		s.opts.SchemaValidationOptions...)
	if err := schema.Value.VisitJSON(v, opts...); err != nil {
		return fmt.Errorf("problem body does not match the Problem schema: %w", err)
	}
	return nil
}

func mediaType(ct string) string {
	mt, _, _ := mime.ParseMediaType(ct)
	return mt
}

// Common bodies and paths.

const ns = "/v1/namespaces/default"

func runPath(runID string) string { return ns + "/workflows/" + runID }

// runView is a run as the API shows it, every member decoded.
type runView struct {
	RunID          string          `json:"run_id"`
	Namespace      string          `json:"namespace"`
	TaskQueue      string          `json:"task_queue"`
	WorkflowType   string          `json:"workflow_type"`
	ExternalID     *string         `json:"external_id"`
	Version        *string         `json:"version"`
	Status         string          `json:"status"`
	Input          json.RawMessage `json:"input"`
	Output         json.RawMessage `json:"output"`
	Error          json.RawMessage `json:"error"`
	Attempt        int             `json:"attempt"`
	RetryPolicy    retryPolicy     `json:"retry_policy"`
	WorkerID       *string         `json:"worker_id"`
	LeaseExpiresAt *time.Time      `json:"lease_expires_at"`
	AvailableAt    time.Time       `json:"available_at"`
	CreatedAt      time.Time       `json:"created_at"`
	StartedAt      *time.Time      `json:"started_at"`
	FinishedAt     *time.Time      `json:"finished_at"`
	AlreadyExists  *bool           `json:"already_exists"`
}

type retryPolicy struct {
	MaxAttempts            int      `json:"max_attempts"`
	InitialIntervalMS      int64    `json:"initial_interval_ms"`
	BackoffCoefficient     float64  `json:"backoff_coefficient"`
	MaxIntervalMS          int64    `json:"max_interval_ms"`
	NonRetryableErrorTypes []string `json:"non_retryable_error_types"`
}

// start starts a run of workflowType with the extra request members in
// extra, wants 201, and returns it.
func (e *env) start(t testing.TB, workflowType string, extra map[string]any) runView {
	t.Helper()
	body := map[string]any{"workflow_type": workflowType}
	for k, v := range extra {
		body[k] = v
	}
	r := e.do(t, http.MethodPost, ns+"/workflows", body).wantStatus(t, http.StatusCreated)
	var run runView
	r.decode(t, &run)
	return run
}

// get fetches a run and wants 200.
func (e *env) get(t testing.TB, runID string) runView {
	t.Helper()
	var run runView
	e.do(t, http.MethodGet, runPath(runID), nil).wantStatus(t, http.StatusOK).decode(t, &run)
	return run
}

// listPage is a page of GET .../workflows.
type listPage struct {
	Workflows  []runView `json:"workflows"`
	NextCursor *string   `json:"next_cursor"`
}

// list fetches a page of runs with the query q and wants 200.
func (e *env) list(t testing.TB, q url.Values) listPage {
	t.Helper()
	path := ns + "/workflows"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var p listPage
	e.do(t, http.MethodGet, path, nil).wantStatus(t, http.StatusOK).decode(t, &p)
	return p
}

// setStatus moves a run to a status directly in the database, for states no
// endpoint of this part reaches yet.
func (e *env) setStatus(t testing.TB, runID, status string) {
	t.Helper()
	tag, err := e.pool.Exec(context.Background(),
		`UPDATE workflow_runs SET status = $2, finished_at = CASE WHEN $2 IN ('completed', 'failed', 'cancelled') THEN now() END WHERE run_id = $1`,
		runID, status)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("set run %s %s: %v (%d rows)", runID, status, err, tag.RowsAffected())
	}
}

// countRuns counts the runs in the test database.
func (e *env) countRuns(t testing.TB) int {
	t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM workflow_runs`).Scan(&n); err != nil {
		t.Fatalf("count runs: %v", err)
	}
	return n
}
