package kagzi

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/kagzi/kagzi/api"
	"github.com/kagzi/kagzi/auth"
	"github.com/kagzi/kagzi/distributor"
	"github.com/kagzi/kagzi/maintenance"
	"github.com/kagzi/kagzi/migrations"
	"github.com/kagzi/kagzi/postgres"
	"github.com/kagzi/kagzi/scheduler"
	"github.com/kagzi/kagzi/ui"
)

// Config is what a Kagzi server is assembled from.
type Config struct {
	// DatabaseURL is the database; the LISTEN connection dials it.
	DatabaseURL string
	// Pool is the connection pool the store uses.
	Pool *pgxpool.Pool
	// Limits are the API's limits; LeaseDuration and HeartbeatInterval
	// also drive the store and the maintainer.
	Limits api.Limits
	// Timeouts bound slow clients on HTTPServer; zero fields take
	// DefaultTimeouts.
	Timeouts api.Timeouts
	// Retention is how long finished runs are kept; 0 keeps them.
	Retention time.Duration
	// WorkerRetention is how long offline workers are kept; 0 keeps them.
	WorkerRetention time.Duration
	// MaintainerInterval is the shortest pause of the rescuer, the worker
	// reaper and retention (see maintenance.Options.Interval). Default 1s.
	MaintainerInterval time.Duration
	// NoMaintainer leaves the maintainer out of Run, for tests that call
	// Maintainer.Tick themselves.
	NoMaintainer bool
	// SchedulerInterval is how often the cron scheduler looks for due
	// schedules. Default 1s.
	SchedulerInterval time.Duration
	// NoScheduler leaves the scheduler out of Run, for tests that call
	// Scheduler.Tick themselves.
	NoScheduler bool
	// Distributor tunes the distributor; its Metrics are set by New.
	Distributor distributor.Options
	Version     string
	Logger      *slog.Logger
	// Registry receives every metric; New makes one when nil.
	Registry *prometheus.Registry
	// Auth is the authentication mode (KAGZI_AUTH); "" is auth.ModeAuto.
	Auth auth.Mode
	// SeparateMetrics leaves /metrics off the API: MetricsHandler serves
	// it elsewhere (KAGZI_METRICS_ADDR).
	SeparateMetrics bool
}

// Server is one Kagzi replica, assembled: the HTTP API over the store, the
// distributor fed by the LISTEN connection, and the background maintainer.
type Server struct {
	API         *api.Server
	Store       *postgres.Store
	Listener    *postgres.Listener
	Distributor *distributor.Distributor
	Maintainer  *maintenance.Maintainer
	Scheduler   *scheduler.Scheduler
	Keys        *auth.Keyring
	Registry    *prometheus.Registry
	metrics     http.Handler
	cfg         Config
}

// NewServer assembles a server. It does no I/O: Run starts it.
func NewServer(cfg Config) *Server {
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if cfg.MaintainerInterval <= 0 {
		cfg.MaintainerInterval = time.Second
	}
	if cfg.SchedulerInterval <= 0 {
		cfg.SchedulerInterval = time.Second
	}
	cfg.Timeouts = withTimeoutDefaults(cfg.Timeouts)
	logger := cfg.Logger
	store := postgres.NewStore(cfg.Pool, cfg.Limits.LeaseDuration)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		api.NewDepthCollector(store))
	opts := cfg.Distributor
	opts.Metrics = distributor.NewMetrics(reg)
	dist := distributor.New(store, logger, opts)
	store.HandOffTo(dist)
	if cfg.Auth == "" {
		cfg.Auth = auth.ModeAuto
	}
	keys := auth.NewKeyring(store, cfg.Auth, logger)
	listener := postgres.NewListener(cfg.DatabaseURL, logger, reg)
	listener.OnQueue = dist.Notify
	listener.OnFinished = dist.Finished
	listener.OnKeys = keys.Refresh
	listener.OnReconnect = func() {
		dist.NotifyAll()
		keys.Refresh() // a key may have been revoked while the connection was down
	}
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	apiMetrics := metrics
	if cfg.SeparateMetrics {
		apiMetrics = nil // not routed on the API
	}
	maintainer := maintenance.New(store, logger, maintenance.Options{
		Interval:          cfg.MaintainerInterval,
		LeaseDuration:     cfg.Limits.LeaseDuration,
		HeartbeatInterval: cfg.Limits.HeartbeatInterval,
		Retention:         cfg.Retention,
		WorkerRetention:   cfg.WorkerRetention,
		Registerer:        reg,
	})
	sched := scheduler.New(store, logger, cfg.SchedulerInterval, reg)
	srv := api.New(api.Config{
		Version:    cfg.Version,
		Limits:     cfg.Limits,
		Timeouts:   cfg.Timeouts,
		Logger:     logger,
		Workflows:  store,
		Execution:  store,
		Workers:    store,
		TaskQueues: store,
		Schedules:  store,
		RunOps:     store,
		Signals:    store,
		Children:   store,
		UI:         ui.Handler(),
		Claimer:    dist,
		Watcher:    listener,
		Ready:      readyCheck(store, listener, logger),
		Keys:       keys,
		Metrics:    apiMetrics,
		RunMetrics: api.NewMetrics(reg),
		OpenAPI:    OpenAPI,
	})
	return &Server{API: srv, Store: store, Listener: listener, Distributor: dist,
		Maintainer: maintainer, Scheduler: sched, Keys: keys, Registry: reg, metrics: metrics, cfg: cfg}
}

// MetricsHandler serves the metrics in the Prometheus text format, with no
// key: for KAGZI_METRICS_ADDR, an address of their own.
func (s *Server) MetricsHandler() http.Handler { return s.metrics }

// Run runs the LISTEN connection, the distributor, the maintainer, the
// scheduler and the key cache until ctx ends. When it ends, parked claims are answered at once; serve HTTP
// until Run has returned so that those answers reach their clients.
// The keys are loaded before the LISTEN connection starts, so that a
// replica whose listener is ready knows its keys (until then, routes that
// need them answer 503); a failed first load is retried by the key cache.
func (s *Server) Run(ctx context.Context) error {
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if err := s.Keys.Load(lctx); err != nil && ctx.Err() == nil {
		s.cfg.Logger.Warn("load API keys; retrying", "error", err)
	}
	cancel()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.Keys.Run(ctx) })
	g.Go(func() error { return s.Listener.Run(ctx) })
	g.Go(func() error { return s.Distributor.Run(ctx) })
	if !s.cfg.NoMaintainer {
		g.Go(func() error { return s.Maintainer.Run(ctx) })
	}
	if !s.cfg.NoScheduler {
		g.Go(func() error { return s.Scheduler.Run(ctx) })
	}
	return g.Wait()
}

// readyCheck reports the database, the schema version and the LISTEN
// connection. The schema must be at least the version this binary needs:
// migrations are additive, so a newer one (even in progress) keeps older
// replicas ready, unless a migration declared that it breaks them
// (postgres.BreaksOlderMarker). What it says is public: causes are logged, not returned.
func readyCheck(store *postgres.Store, listener *postgres.Listener, logger *slog.Logger) api.ReadyCheck {
	return func(ctx context.Context) map[string]error {
		checks := map[string]error{"database": nil, "schema": nil, "listener": listener.Ready()}
		if err := store.Ping(ctx); err != nil {
			logger.Warn("readiness: database", "error", err)
			checks["database"] = fmt.Errorf("the database does not answer")
		}
		st, err := store.SchemaState(ctx)
		need := migrations.Latest()
		switch {
		case err != nil:
			logger.Warn("readiness: schema version", "error", err)
			checks["schema"] = fmt.Errorf("the schema version cannot be read")
		case st.Version < need || st.Version == need && st.Dirty:
			// A newer dirty version is a newer binary's migration in
			// progress: every version up to this binary's is applied.
			checks["schema"] = fmt.Errorf("schema is at version %d (dirty: %v); this binary needs %d or later", st.Version, st.Dirty, need)
		case st.BreaksOlderThan > need:
			checks["schema"] = fmt.Errorf("schema version %d does not serve binaries older than version %d; this binary is at %d", st.Version, st.BreaksOlderThan, need)
		}
		return checks
	}
}
