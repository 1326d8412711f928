// Command kagzi serves the Kagzi HTTP API and manages its schema.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "kagzi:", err)
		os.Exit(exitCode(err))
	}
}

func run(args []string) error {
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "runs", "queues", "workers", "schedules":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return clientCommand(ctx, cmd, args, os.Stdout, os.Getenv)
	case "dev":
		return devCommand(args)
	case "help", "-h", "--help":
		usage(os.Stdout)
		return nil
	case "serve", "migrate", "keys":
	default:
		usage(os.Stderr)
		return usagef("unknown command %q", cmd)
	}
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		usage(os.Stdout)
		return nil
	}
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	logger := cfg.logger(os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cmd == "serve" {
		if len(args) > 0 {
			return fmt.Errorf("serve takes no arguments, got %q", args)
		}
		return serve(ctx, cfg, logger)
	}
	if cmd == "keys" {
		return keysCmd(ctx, cfg, logger, args, os.Stdout, os.Stderr)
	}
	return migrateCmd(ctx, cfg, logger, args)
}

func migrateCmd(ctx context.Context, cfg Config, logger *slog.Logger, args []string) error {
	if len(args) == 0 {
		return errors.New("migrate needs one of: up, down N, version, force V")
	}
	number := func() (int, error) {
		if len(args) != 2 {
			return 0, fmt.Errorf("migrate %s needs a number", args[0])
		}
		n, err := strconv.Atoi(args[1])
		if err != nil || n < -1 || n == -1 && args[0] != "force" {
			return 0, fmt.Errorf("migrate %s: %q is not a valid number", args[0], args[1])
		}
		return n, nil
	}
	m, err := openMigrator(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer m.Close()
	switch args[0] {
	case "up":
		err = m.Up(ctx)
	case "down":
		var n int
		if n, err = number(); err == nil && n > 0 {
			err = m.Steps(ctx, -n)
		}
	case "force":
		var v int
		if v, err = number(); err == nil {
			err = m.Force(ctx, v)
		}
	case "version":
	default:
		return fmt.Errorf("unknown migrate command %q", args[0])
	}
	if err != nil {
		return err
	}
	v, dirty, err := m.Version(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("version %d (dirty: %v)\n", v, dirty)
	return nil
}
