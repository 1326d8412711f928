// Package api is Kagzi's HTTP layer: the chi router, strict JSON decoding
// through size caps, and problem+json errors from one table. Handlers are
// thin: decode, validate, call one method, encode.
package api

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/kagzi/kagzi/domain"
)

// Limits are the configurable limits the API enforces and reports.
type Limits struct {
	Payload           domain.PayloadLimits
	MaxBatch          int
	MaxBatchBytes     int64
	MaxWait           time.Duration
	LeaseDuration     time.Duration
	HeartbeatInterval time.Duration
	// MaxHistoryBytes bounds the histories of one claim answer together
	// (0: domain.DefaultMaxHistoryBytes).
	MaxHistoryBytes int64
	// Signals bound each run's inbox.
	Signals domain.SignalLimits
	// Children bound each run's live children and the depth of a chain of
	// children.
	Children domain.ChildLimits
}

func (l Limits) maxHistoryBytes() int64 {
	if l.MaxHistoryBytes <= 0 {
		return domain.DefaultMaxHistoryBytes
	}
	return l.MaxHistoryBytes
}

// singleBodyLimit is the cap on a request body that carries one payload.
func (l Limits) singleBodyLimit() int64 { return int64(l.Payload.MaxBytes) + 64<<10 }

// WorkflowStore is what the workflow endpoints need of storage.
type WorkflowStore interface {
	StartRun(ctx context.Context, namespace string, n domain.NewRun) (domain.Run, bool, error)
	StartRuns(ctx context.Context, namespace string, items []domain.NewRun) ([]domain.StartResult, error)
	GetRun(ctx context.Context, namespace, runID string) (domain.Run, error)
	ListRuns(ctx context.Context, f domain.RunFilter) ([]domain.Run, string, error)
	CancelRun(ctx context.Context, namespace, runID string) (domain.Run, error)
	ListSteps(ctx context.Context, namespace, runID string, page domain.Page) ([]domain.Step, string, error)
}

// RunWatcher tells when a run may have become terminal.
type RunWatcher interface {
	// WatchRun returns a channel that is closed when runID may have become
	// terminal, and a function that stops watching.
	WatchRun(runID string) (<-chan struct{}, func())
}

// ReadyCheck reports each dependency's state: nil when it is fine.
type ReadyCheck func(ctx context.Context) map[string]error

// Config is what the server is built from.
type Config struct {
	Version    string
	Limits     Limits
	Timeouts   Timeouts // reported in /v1/info; the http.Server enforces them
	Logger     *slog.Logger
	Workflows  WorkflowStore
	Execution  ExecutionStore
	Workers    WorkerStore
	TaskQueues TaskQueueStore
	Schedules  ScheduleStore
	Claimer    Claimer
	Watcher    RunWatcher
	Ready      ReadyCheck
	// Keys checks every request's API key and manages keys; nil leaves
	// authentication off and key management unavailable.
	Keys Keys
	// Metrics serves /metrics (not routed when nil); RunMetrics records the API's own counters.
	Metrics    http.Handler
	RunMetrics *Metrics
	OpenAPI    []byte

	// RunOps serves the run operations for people and dashboards.
	RunOps RunOpsStore
	// Signals serves run inboxes and wait steps.
	Signals SignalStore
	// Children serves child steps and the children of runs.
	Children ChildStore
	// AllowedNamespaces, when set, limits GET /v1/namespaces per caller.
	AllowedNamespaces AllowedNamespaces
	// UI, when set, serves the dashboard's files under /ui/, open: its
	// data comes through the API, with the user's key.
	UI http.Handler
}

// Server serves the Kagzi HTTP API.
type Server struct {
	Config
	logger  *slog.Logger
	metrics *Metrics
	router  chi.Router
	// routeMethods maps each route, as a pattern, to its methods, for the
	// Allow header of a 405.
	routeMethods map[*regexp.Regexp][]string
}

var paramRE = regexp.MustCompile(`\{[^}]+\}`)

func routeMethods(r chi.Routes) map[*regexp.Regexp][]string {
	byPattern := map[string][]string{}
	_ = chi.Walk(r, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		route = strings.TrimSuffix(route, "/")
		byPattern[route] = append(byPattern[route], method)
		return nil
	})
	out := map[*regexp.Regexp][]string{}
	for route, methods := range byPattern {
		parts := paramRE.Split(route, -1)
		for i := range parts {
			parts[i] = regexp.QuoteMeta(parts[i])
		}
		re := "^" + strings.Join(parts, "[^/]+") + "/?$"
		slices.Sort(methods)
		out[regexp.MustCompile(re)] = methods
	}
	return out
}

// allowed returns the methods routed for path.
func (s *Server) allowed(path string) []string {
	var methods []string
	for re, ms := range s.routeMethods {
		if re.MatchString(path) {
			methods = append(methods, ms...)
		}
	}
	slices.Sort(methods)
	return slices.Compact(methods)
}

// New returns the server for cfg.
func New(cfg Config) *Server {
	s := &Server{Config: cfg, logger: cfg.Logger.With("component", "api"), metrics: cfg.RunMetrics}
	if s.AllowedNamespaces == nil {
		s.AllowedNamespaces = allowedNamespaces
	}
	s.router = s.routes()
	s.routeMethods = routeMethods(s.router)
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.router.ServeHTTP(w, r) }

// Router returns the chi router, for tests that walk the routes.
func (s *Server) Router() chi.Routes { return s.router }

// handlerFunc is a handler that returns its error for one place to write.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

func (s *Server) h(fn handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			s.writeError(w, r, err)
		}
	}
}

func (s *Server) routes() chi.Router {
	r := chi.NewRouter()
	r.Use(s.recoverer)
	r.MethodNotAllowed(s.h(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Allow", strings.Join(s.allowed(r.URL.Path), ", "))
		return domain.Errorf(domain.CodeMethodNotAllowed, "%s is not allowed on %s", r.Method, r.URL.Path)
	}))
	r.NotFound(s.h(func(w http.ResponseWriter, r *http.Request) error {
		return domain.Errorf(domain.CodeNotFound, "no route for %s", r.URL.Path)
	}))

	r.Method(http.MethodGet, "/healthz", s.guard(open, http.HandlerFunc(s.healthz)))
	r.Method(http.MethodGet, "/readyz", s.guard(open, http.HandlerFunc(s.readyz)))
	r.Method(http.MethodGet, "/openapi.yaml", s.guard(open, http.HandlerFunc(s.openapi)))
	if s.UI != nil {
		r.Method(http.MethodGet, "/ui", s.guard(open, http.RedirectHandler("/ui/", http.StatusMovedPermanently)))
		r.Handle("/ui/*", s.guard(open, s.UI))
	}
	if s.Metrics != nil {
		r.Method(http.MethodGet, "/metrics", s.guard(metricsRead, s.Metrics))
	}
	r.Route("/v1", func(r chi.Router) {
		r.Method(http.MethodGet, "/info", s.guard(open, http.HandlerFunc(s.info)))
		r.Method(http.MethodGet, "/namespaces", s.handle(namespacesRead, s.listNamespaces))
		r.Route("/api-keys", func(r chi.Router) {
			r.Method(http.MethodPost, "/", s.handle(keysAdmin, s.createAPIKey))
			r.Method(http.MethodGet, "/", s.handle(keysAdmin, s.listAPIKeys))
			r.With(s.validUUIDParam("key_id")).Method(http.MethodDelete, "/{key_id}", s.handle(keysAdmin, s.revokeAPIKey))
		})
		r.Route("/namespaces/{namespace}", func(r chi.Router) {
			r.Use(s.validNamespace)
			r.Route("/workflows", func(r chi.Router) {
				r.Method(http.MethodPost, "/", s.handle(clientWrite, s.startWorkflow))
				r.Method(http.MethodGet, "/", s.handle(runsRead, s.listWorkflows))
				r.Method(http.MethodPost, "/batch", s.handle(clientWrite, s.startWorkflows))
				r.Method(http.MethodPost, "/batch/complete", s.handle(work, s.completeRuns))
				r.Method(http.MethodPost, "/by-external-id/{external_id}/signals/{name}", s.handle(clientWrite, s.sendSignalByExternalID))
				r.Method(http.MethodPost, "/signal-with-start", s.handle(clientWrite, s.signalWithStart))
				r.Route("/{run_id}", func(r chi.Router) {
					r.Use(s.validUUIDParam("run_id"))
					r.Method(http.MethodGet, "/", s.handle(runsRead, s.getWorkflow))
					r.Method(http.MethodPost, "/cancel", s.handle(clientWrite, s.cancelWorkflow))
					r.Method(http.MethodPost, "/retry", s.handle(clientWrite, s.retryWorkflow))
					r.Method(http.MethodGet, "/steps", s.handle(runsRead, s.listSteps))
					r.Method(http.MethodGet, "/signals", s.handle(runsRead, s.listSignals))
					r.Method(http.MethodGet, "/children", s.handle(runsRead, s.listChildren))
					r.Method(http.MethodPost, "/signals/{name}", s.handle(clientWrite, s.sendSignal))
					// A worker's calls on the run it claimed.
					r.Method(http.MethodPost, "/heartbeat", s.handle(work, s.heartbeatRun))
					r.Method(http.MethodPost, "/sleep", s.handle(work, s.sleep))
					r.Method(http.MethodPost, "/complete", s.handle(work, s.completeRun))
					r.Method(http.MethodPost, "/fail", s.handle(work, s.failRun))
					r.Method(http.MethodPost, "/steps/{step}/begin", s.handle(work, s.beginStep))
					r.Method(http.MethodPost, "/steps/{step}/complete", s.handle(work, s.completeStep))
					r.Method(http.MethodPost, "/steps/{step}/fail", s.handle(work, s.failStep))
					r.Method(http.MethodPost, "/steps/{step}/wait", s.handle(work, s.wait))
					r.Method(http.MethodPost, "/steps/{step}/child", s.handle(work, s.child))
				})
			})
			r.Method(http.MethodGet, "/stats", s.handle(nsRead, s.stats))
			r.Method(http.MethodGet, "/workflow-types", s.handle(nsRead, s.listWorkflowTypes))
			r.Method(http.MethodPost, "/steps/batch", s.handle(work, s.reportSteps))
			r.Method(http.MethodGet, "/task-queues", s.handle(nsRead, s.listTaskQueues))
			r.Method(http.MethodPatch, "/task-queues/{queue}", s.handle(queueAdmin, s.patchTaskQueue))
			// Long polls: kept out of any timeout middleware.
			r.Method(http.MethodPost, "/task-queues/{queue}/claim", s.handle(work, s.claim))
			r.Route("/workers", func(r chi.Router) {
				r.Method(http.MethodPost, "/", s.handle(work, s.registerWorker))
				r.Method(http.MethodGet, "/", s.handle(nsRead, s.listWorkers))
				r.Route("/{worker_id}", func(r chi.Router) {
					r.Use(s.validUUIDParam("worker_id"))
					r.Method(http.MethodGet, "/", s.handle(nsRead, s.getWorker))
					r.Method(http.MethodDelete, "/", s.handle(work, s.deregisterWorker))
					r.Method(http.MethodPost, "/heartbeat", s.handle(work, s.workerHeartbeat))
					r.Method(http.MethodPost, "/drain", s.handle(work, s.drainWorker))
				})
			})
			r.Route("/schedules", func(r chi.Router) {
				r.Method(http.MethodPost, "/", s.handle(clientWrite, s.createSchedule))
				r.Method(http.MethodGet, "/", s.handle(nsRead, s.listSchedules))
				r.Route("/{schedule_id}", func(r chi.Router) {
					r.Use(s.validUUIDParam("schedule_id"))
					r.Method(http.MethodGet, "/", s.handle(nsRead, s.getSchedule))
					r.Method(http.MethodPatch, "/", s.handle(clientWrite, s.updateSchedule))
					r.Method(http.MethodDelete, "/", s.handle(clientWrite, s.deleteSchedule))
					r.Method(http.MethodPost, "/trigger", s.handle(clientWrite, s.triggerSchedule))
				})
			})
		})
	})
	return r
}

func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.logger.Error("handler panic", "method", r.Method, "path", r.URL.Path, "panic", v)
				s.writeError(w, r, domain.Errorf(domain.CodeInternal, "panic"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

func (s *Server) validNamespace(next http.Handler) http.Handler {
	return s.h(func(w http.ResponseWriter, r *http.Request) error {
		if err := domain.ValidateIdent("namespace", chi.URLParam(r, "namespace")); err != nil {
			return err
		}
		next.ServeHTTP(w, r)
		return nil
	})
}

func (s *Server) validUUIDParam(name string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return s.h(func(w http.ResponseWriter, r *http.Request) error {
			if err := domain.ValidateUUID(name, chi.URLParam(r, name)); err != nil {
				return err
			}
			next.ServeHTTP(w, r)
			return nil
		})
	}
}

// query reads a request's query parameters and rejects any it does not
// know, so that a typo in a filter never passes silently.
type query struct {
	values url.Values
	known  map[string]bool
}

func newQuery(r *http.Request, known ...string) (query, error) {
	q := query{values: r.URL.Query(), known: map[string]bool{}}
	for _, k := range known {
		q.known[k] = true
	}
	for k := range q.values {
		if !q.known[k] {
			return q, domain.Invalid(k, "is not a known query parameter")
		}
	}
	return q, nil
}

// noQuery refuses every query parameter, for the routes that take none.
func noQuery(r *http.Request) error {
	_, err := newQuery(r)
	return err
}

func (q query) get(name string) string { return q.values.Get(name) }

// int reads an integer parameter within [min, max], or def when absent.
func (q query) int(name string, def, min, max int64) (int64, error) {
	v := q.values.Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < min || n > max {
		return 0, domain.Invalid(name, "must be an integer between %d and %d", min, max)
	}
	return n, nil
}

// page reads limit and cursor of a list keyed by UUIDs.
func (q query) page() (domain.Page, error) {
	return q.pageOf(domain.DefaultPageLimit, domain.IsUUID)
}

// pageOf reads limit (def when absent) and cursor of a list whose keys
// are those that valid accepts: a cursor holding anything else was not
// issued by this server for this list.
func (q query) pageOf(def int64, valid func(string) bool) (domain.Page, error) {
	limit, err := q.int("limit", def, 1, domain.MaxPageLimit)
	if err != nil {
		return domain.Page{}, err
	}
	p := domain.Page{Limit: int(limit)}
	if c := q.get("cursor"); c != "" {
		if p.After, err = decodeCursor(c, valid); err != nil {
			return p, err
		}
	}
	return p, nil
}
