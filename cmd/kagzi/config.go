package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/kagzi/kagzi/api"
	"github.com/kagzi/kagzi/auth"
	"github.com/kagzi/kagzi/domain"
)

// envPrefix is the prefix of every variable Kagzi reads.
const envPrefix = "KAGZI"

// Config is every setting, read from KAGZI_* environment variables only.
type Config struct {
	DatabaseURL         string        `split_words:"true" default:"postgres://postgres@127.0.0.1:5432/kagzi?sslmode=disable" desc:"PostgreSQL URL; serve creates the database when it is missing and the role may"`
	HTTPAddr            string        `split_words:"true" default:":8080" desc:"address the HTTP server listens on"`
	DebugAddr           string        `split_words:"true" default:"" desc:"address for net/http/pprof (empty: off); keep it private"`
	MetricsAddr         string        `split_words:"true" default:"" desc:"address that serves /metrics, open, instead of the API's (empty: on the API, with an admin or reader key while auth is on)"`
	Auth                string        `default:"auto" desc:"API keys: auto (on once a key exists), required (on; refuse to start without a key) or off"`
	AutoMigrate         bool          `split_words:"true" default:"true" desc:"apply pending migrations when serve starts"`
	DBMaxConns          int32         `split_words:"true" default:"20" desc:"size of the connection pool"`
	LogLevel            string        `split_words:"true" default:"info" desc:"debug, info, warn or error"`
	LogFormat           string        `split_words:"true" default:"json" desc:"json or text"`
	PayloadMaxBytes     int           `split_words:"true" default:"2097152" desc:"largest input or output, in bytes"`
	PayloadWarnBytes    int           `split_words:"true" default:"1048576" desc:"payloads above this are accepted and logged"`
	MaxBatch            int           `split_words:"true" default:"1000" desc:"most runs in one batch start"`
	MaxBatchBytes       int64         `split_words:"true" default:"33554432" desc:"largest batch request body, in bytes"`
	MaxHistoryBytes     int64         `split_words:"true" default:"4194304" desc:"most bytes of step history one claim answer carries; a task over it has steps_truncated"`
	MaxBufferedSignals  int           `split_words:"true" default:"1000" desc:"most signals waiting in one run's inbox; a send over it is refused with 429"`
	MaxSignalsPerRun    int           `split_words:"true" default:"10000" desc:"most signals one run may ever receive"`
	MaxLiveChildren     int           `split_words:"true" default:"1000" desc:"most live children one run may have; a child step over it is refused with 409"`
	MaxChildDepth       int           `split_words:"true" default:"16" desc:"deepest chain of child runs (a run started by no parent is at depth 0); a child step past it is refused with 409"`
	MaxWaitMS           int64         `split_words:"true" default:"60000" desc:"longest long-poll (claim, wait for a run), in ms"`
	LeaseDurationMS     int64         `split_words:"true" default:"30000" desc:"lease a claim or heartbeat grants, in ms"`
	HeartbeatIntervalMS int64         `split_words:"true" default:"10000" desc:"interval workers are told to heartbeat at, in ms; less than half the lease"`
	Retention           time.Duration `split_words:"true" default:"168h" desc:"how long finished runs are kept (0 keeps them forever)"`
	WorkerRetention     time.Duration `split_words:"true" default:"24h" desc:"how long offline workers are kept (0 keeps them forever)"`
	ShutdownTimeout     time.Duration `split_words:"true" default:"15s" desc:"how long shutdown waits for requests in flight"`
	ReadHeaderTimeout   time.Duration `split_words:"true" default:"10s" desc:"time a client has to send a request's headers"`
	ReadBodyTimeout     time.Duration `split_words:"true" default:"30s" desc:"time a client has to send a request's body, once its headers are in"`
	IdleTimeout         time.Duration `split_words:"true" default:"2m" desc:"how long a keep-alive connection may wait for its next request"`
	WriteTimeout        time.Duration `split_words:"true" default:"30s" desc:"time a client has to take an answer, from its first byte (long polls wait before it)"`
}

// loadConfig reads the environment. A bad value is an error naming its
// variable.
func loadConfig() (Config, error) {
	var c Config
	if err := envconfig.Process(envPrefix, &c); err != nil {
		return c, plainError(err)
	}
	return c, c.validate()
}

// plainError turns envconfig's account of a value it could not parse
// into one sentence naming the variable and what it takes.
func plainError(err error) error {
	var pe *envconfig.ParseError
	if !errors.As(err, &pe) {
		return err
	}
	var takes string
	switch pe.TypeName {
	case "bool":
		takes = "true or false"
	case "time.Duration":
		takes = "a duration such as 500ms, 30s, 5m or 168h"
	default:
		takes = "a whole number"
		switch {
		case strings.HasSuffix(pe.KeyName, "_MS"):
			takes += " of milliseconds"
		case strings.HasSuffix(pe.KeyName, "_BYTES"):
			takes += " of bytes"
		}
		if errors.Is(pe.Err, strconv.ErrRange) {
			lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
			if pe.TypeName == "int32" {
				lo, hi = math.MinInt32, math.MaxInt32
			}
			if strings.HasPrefix(pe.Value, "-") {
				takes += fmt.Sprintf(" no smaller than %d", lo)
			} else {
				takes += fmt.Sprintf(" no larger than %d", hi)
			}
		}
	}
	return fmt.Errorf("%s must be %s, not %q", pe.KeyName, takes, pe.Value)
}

func (c Config) validate() error {
	positive := []struct {
		name string
		v    int64
	}{
		{"DB_MAX_CONNS", int64(c.DBMaxConns)},
		{"PAYLOAD_MAX_BYTES", int64(c.PayloadMaxBytes)},
		{"MAX_BATCH", int64(c.MaxBatch)},
		{"MAX_BATCH_BYTES", c.MaxBatchBytes},
		{"MAX_HISTORY_BYTES", c.MaxHistoryBytes},
		{"MAX_BUFFERED_SIGNALS", int64(c.MaxBufferedSignals)},
		{"MAX_SIGNALS_PER_RUN", int64(c.MaxSignalsPerRun)},
		{"MAX_LIVE_CHILDREN", int64(c.MaxLiveChildren)},
		{"MAX_CHILD_DEPTH", int64(c.MaxChildDepth)},
		{"LEASE_DURATION_MS", c.LeaseDurationMS},
		{"HEARTBEAT_INTERVAL_MS", c.HeartbeatIntervalMS},
	}
	for _, p := range positive {
		if p.v <= 0 {
			return fmt.Errorf("%s_%s must be positive, not %d", envPrefix, p.name, p.v)
		}
	}
	switch {
	case c.PayloadWarnBytes < 0 || c.PayloadWarnBytes > c.PayloadMaxBytes:
		return fmt.Errorf("%s_PAYLOAD_WARN_BYTES must be between 0 and %s_PAYLOAD_MAX_BYTES (%d), not %d", envPrefix, envPrefix, c.PayloadMaxBytes, c.PayloadWarnBytes)
	case c.MaxBatchBytes < int64(c.PayloadMaxBytes):
		return fmt.Errorf("%s_MAX_BATCH_BYTES must be at least %s_PAYLOAD_MAX_BYTES (%d), not %d", envPrefix, envPrefix, c.PayloadMaxBytes, c.MaxBatchBytes)
	case c.HeartbeatIntervalMS > (c.LeaseDurationMS-1)/2: // less than half, without overflow
		return fmt.Errorf("%s_HEARTBEAT_INTERVAL_MS must be less than half of %s_LEASE_DURATION_MS (%d), so that a lease outlives a lost heartbeat, not %d", envPrefix, envPrefix, c.LeaseDurationMS, c.HeartbeatIntervalMS)
	case c.MaxWaitMS < 0:
		return fmt.Errorf("%s_MAX_WAIT_MS must not be negative, not %d", envPrefix, c.MaxWaitMS)
	case c.Retention < 0:
		return fmt.Errorf("%s_RETENTION must not be negative, not %s", envPrefix, c.Retention)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"SHUTDOWN_TIMEOUT", c.ShutdownTimeout},
		{"READ_HEADER_TIMEOUT", c.ReadHeaderTimeout},
		{"READ_BODY_TIMEOUT", c.ReadBodyTimeout},
		{"IDLE_TIMEOUT", c.IdleTimeout},
		{"WRITE_TIMEOUT", c.WriteTimeout},
	} {
		if d.v <= 0 {
			return fmt.Errorf("%s_%s must be positive, not %s", envPrefix, d.name, d.v)
		}
	}
	if _, err := auth.ParseMode(c.Auth); err != nil {
		return fmt.Errorf("%s_AUTH %s", envPrefix, err)
	}
	if _, err := c.logLevel(); err != nil {
		return err
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		return fmt.Errorf("%s_LOG_FORMAT must be json or text, not %q", envPrefix, c.LogFormat)
	}
	return nil
}

func (c Config) logLevel() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return l, fmt.Errorf("%s_LOG_LEVEL must be debug, info, warn or error, not %q", envPrefix, c.LogLevel)
	}
	return l, nil
}

func (c Config) logger(w io.Writer) *slog.Logger {
	level, _ := c.logLevel()
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func ms(n int64) time.Duration { return time.Duration(n) * time.Millisecond }

func (c Config) limits() api.Limits {
	return api.Limits{
		Payload:           domain.PayloadLimits{MaxBytes: c.PayloadMaxBytes, WarnBytes: c.PayloadWarnBytes},
		MaxBatch:          c.MaxBatch,
		MaxBatchBytes:     c.MaxBatchBytes,
		MaxHistoryBytes:   c.MaxHistoryBytes,
		MaxWait:           ms(c.MaxWaitMS),
		LeaseDuration:     ms(c.LeaseDurationMS),
		HeartbeatInterval: ms(c.HeartbeatIntervalMS),
		Signals:           domain.SignalLimits{MaxBuffered: c.MaxBufferedSignals, MaxPerRun: c.MaxSignalsPerRun},
		Children:          domain.ChildLimits{MaxLive: c.MaxLiveChildren, MaxDepth: c.MaxChildDepth},
	}
}

func (c Config) timeouts() api.Timeouts {
	return api.Timeouts{ReadHeader: c.ReadHeaderTimeout, ReadBody: c.ReadBodyTimeout, Idle: c.IdleTimeout, Write: c.WriteTimeout}
}

// printEnvHelp lists every variable with its default and meaning.
func printEnvHelp(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tDEFAULT\tMEANING")
	_ = envconfig.Usagef(envPrefix, &Config{}, tw, "{{range .}}{{usage_key .}}\t{{usage_default .}}\t{{usage_description .}}\n{{end}}")
	tw.Flush()
}

func usage(w io.Writer) {
	fmt.Fprint(w, strings.TrimLeft(`
kagzi — a durable workflow engine on PostgreSQL

Usage:
  kagzi [serve]              serve the HTTP API (the default)
  kagzi dev [--fresh]        serve with a database found or started for you (see README)
  kagzi migrate up           apply every pending migration
  kagzi migrate down N       roll back N migrations
  kagzi migrate version      print the schema version
  kagzi migrate force V      record version V without running anything (-1: none)
  kagzi keys create --name N --role R [--namespace NS]... [--expires-in D]
                             create an API key (role admin, client, worker or reader; every
                             namespace unless --namespace is given) and print its secret alone
  kagzi keys list            list the API keys (never their secrets)
  kagzi keys revoke ID       revoke an API key, on every server within a second
  kagzi help                 this text

Configuration is read from the environment only:

`, "\n"))
	printEnvHelp(w)
	fmt.Fprint(w, clientCommands)
}
