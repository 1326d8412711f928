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
	srv := kagzi.NewServer(kagzi.Config{
		DatabaseURL:     cfg.DatabaseURL,
		Pool:            pool,
		Limits:          cfg.limits(),
		Timeouts:        cfg.timeouts(),
		Retention:       cfg.Retention,
		WorkerRetention: cfg.WorkerRetention,
		Version:         version,
		Logger:          logger,
	})
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
	g.Go(func() error { return srv.Serve(gctx, httpSrv, ln, cfg.ShutdownTimeout) })
	return g.Wait()
}
