package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // served on KAGZI_DEBUG_ADDR only
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/kagzi/kagzi"
	"github.com/kagzi/kagzi/auth"
	"github.com/kagzi/kagzi/postgres"
)

func openMigrator(ctx context.Context, cfg Config, logger *slog.Logger) (*postgres.Migrator, error) {
	if err := postgres.EnsureDatabase(ctx, cfg.DatabaseURL); err != nil {
		return nil, err
	}
	return postgres.NewMigrator(cfg.DatabaseURL, logger.With("component", "migrate"))
}

// migrateUp applies every pending migration.
func migrateUp(ctx context.Context, cfg Config, logger *slog.Logger) error {
	m, err := openMigrator(ctx, cfg, logger)
	if err != nil {
		return err
	}
	err = m.Up(ctx)
	if cerr := m.Close(); err == nil {
		err = cerr
	}
	return err
}

func serve(ctx context.Context, cfg Config, logger *slog.Logger) error {
	if cfg.AutoMigrate {
		if err := migrateUp(ctx, cfg, logger); err != nil {
			return err
		}
	}
	mode, _ := auth.ParseMode(cfg.Auth) // validated with the config
	pool, err := postgres.NewPool(ctx, cfg.DatabaseURL, cfg.DBMaxConns)
	if err != nil {
		return err
	}
	defer pool.Close()
	srv := kagzi.NewServer(kagzi.Config{
		DatabaseURL:     cfg.DatabaseURL,
		Pool:            pool,
		Limits:          cfg.limits(),
		Timeouts:        cfg.timeouts(),
		Retention:       cfg.Retention,
		WorkerRetention: cfg.WorkerRetention,
		Version:         version,
		Logger:          logger,
		Auth:            mode,
		SeparateMetrics: cfg.MetricsAddr != "",
	})
	if mode == auth.ModeRequired {
		if err := requireKey(ctx, srv.Store); err != nil {
			return err
		}
	}
	httpSrv := srv.HTTPServer(ctx, cfg.HTTPAddr)
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return err
	}
	logger.Info("serving", "addr", ln.Addr().String(), "version", version)

	g, gctx := errgroup.WithContext(ctx)
	if cfg.DebugAddr != "" {
		// pprof registers itself on http.DefaultServeMux; only this
		// listener serves it.
		debug := &http.Server{Addr: cfg.DebugAddr, Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			if err := debug.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			return debug.Close()
		})
	}
	if cfg.MetricsAddr != "" {
		// Open: the address is for the scraper alone.
		metrics := &http.Server{Addr: cfg.MetricsAddr, Handler: srv.MetricsHandler(), ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			if err := metrics.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			return metrics.Close()
		})
	}
	g.Go(func() error { return srv.Serve(gctx, httpSrv, ln, cfg.ShutdownTimeout) })
	return g.Wait()
}

// requireKey refuses to start under KAGZI_AUTH=required while no key can
// authenticate a request.
func requireKey(ctx context.Context, store *postgres.Store) error {
	keys, _, err := store.APIKeys(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	for _, k := range keys {
		if k.Usable(now) {
			return nil
		}
	}
	return errors.New("KAGZI_AUTH=required and no API key is usable: create one with `kagzi keys create --name admin --role admin`, or set KAGZI_AUTH=auto")
}
