package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/kagzi/kagzi"
	"github.com/kagzi/kagzi/api"
	"github.com/kagzi/kagzi/distributor"
	"github.com/kagzi/kagzi/migrations"
	"github.com/kagzi/kagzi/postgres"
)

func openMigrator(ctx context.Context, cfg Config, logger *slog.Logger) (*postgres.Migrator, error) {
	if err := postgres.EnsureDatabase(ctx, cfg.DatabaseURL); err != nil {
		return nil, err
	}
	return postgres.NewMigrator(cfg.DatabaseURL, logger.With("component", "migrate"))
}

func serve(ctx context.Context, cfg Config, logger *slog.Logger) error {
	if cfg.AutoMigrate {
		m, err := openMigrator(ctx, cfg, logger)
		if err != nil {
			return err
		}
		err = m.Up(ctx)
		if cerr := m.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	pool, err := postgres.NewPool(ctx, cfg.DatabaseURL, cfg.DBMaxConns)
	if err != nil {
		return err
	}
	defer pool.Close()
	store := postgres.NewStore(pool, ms(cfg.LeaseDurationMS))

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		api.NewDepthCollector(store))
	dist := distributor.New(store, logger, distributor.Options{Metrics: distributor.NewMetrics(reg)})
	listener := postgres.NewListener(cfg.DatabaseURL, logger, reg)
	listener.OnQueue = dist.Notify
	listener.OnReconnect = dist.NotifyAll
	maintainer := distributor.NewMaintainer(store, logger, time.Second, ms(cfg.HeartbeatIntervalMS), reg)

	srv := api.New(api.Config{
		Version:    version,
		Limits:     cfg.limits(),
		Logger:     logger,
		Workflows:  store,
		Execution:  store,
		Workers:    store,
		Claimer:    dist,
		Watcher:    listener,
		Ready:      readyCheck(store, listener, logger),
		Metrics:    promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		RunMetrics: api.NewMetrics(reg),
		OpenAPI:    kagzi.OpenAPI,
	})
	httpSrv := &http.Server{
		Addr:              cfg.HTTPAddr,
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return err
	}
	logger.Info("serving", "addr", ln.Addr().String(), "version", version)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return listener.Run(gctx) })
	g.Go(func() error { return dist.Run(gctx) }) // answers parked claims at shutdown
	g.Go(func() error { return maintainer.Run(gctx) })
	g.Go(func() error {
		if err := httpSrv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		logger.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		return httpSrv.Shutdown(sctx)
	})
	return g.Wait()
}

// readyCheck reports the database, the schema version and the LISTEN
// connection. What it says is public: causes are logged, not returned.
func readyCheck(store *postgres.Store, listener *postgres.Listener, logger *slog.Logger) api.ReadyCheck {
	return func(ctx context.Context) map[string]error {
		checks := map[string]error{"database": nil, "listener": listener.Ready()}
		if err := store.Ping(ctx); err != nil {
			logger.Warn("readiness: database", "error", err)
			checks["database"] = errors.New("the database does not answer")
		}
		v, dirty, err := store.SchemaVersion(ctx)
		switch {
		case err != nil:
			logger.Warn("readiness: schema version", "error", err)
			checks["schema"] = errors.New("the schema version cannot be read")
		case dirty || v != migrations.Latest():
			checks["schema"] = fmt.Errorf("schema is at version %d (dirty: %v); this binary expects %d", v, dirty, migrations.Latest())
		default:
			checks["schema"] = nil
		}
		return checks
	}
}
