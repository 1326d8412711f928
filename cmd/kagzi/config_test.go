package main

import (
	"bytes"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kagzi/kagzi/api"
)

// Tests of the configuration. t.Setenv changes the process's environment,
// so none of them runs in parallel.

// vars are the variables of Config with their defaults, as
// `kagzi help` documents them.
var vars = []struct{ name, def string }{
	{"KAGZI_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kagzi?sslmode=disable"},
	{"KAGZI_HTTP_ADDR", ":8080"},
	{"KAGZI_DEBUG_ADDR", ""},
	{"KAGZI_METRICS_ADDR", ""},
	{"KAGZI_AUTH", "auto"},
	{"KAGZI_AUTO_MIGRATE", "true"},
	{"KAGZI_DB_MAX_CONNS", "20"},
	{"KAGZI_LOG_LEVEL", "info"},
	{"KAGZI_LOG_FORMAT", "json"},
	{"KAGZI_PAYLOAD_MAX_BYTES", "2097152"},
	{"KAGZI_PAYLOAD_WARN_BYTES", "1048576"},
	{"KAGZI_MAX_BATCH", "1000"},
	{"KAGZI_MAX_BATCH_BYTES", "33554432"},
	{"KAGZI_MAX_HISTORY_BYTES", "4194304"},
	{"KAGZI_MAX_BUFFERED_SIGNALS", "1000"},
	{"KAGZI_MAX_SIGNALS_PER_RUN", "10000"},
	{"KAGZI_MAX_LIVE_CHILDREN", "1000"},
	{"KAGZI_MAX_CHILD_DEPTH", "16"},
	{"KAGZI_MAX_WAIT_MS", "60000"},
	{"KAGZI_LEASE_DURATION_MS", "30000"},
	{"KAGZI_HEARTBEAT_INTERVAL_MS", "10000"},
	{"KAGZI_RETENTION", "168h"},
	{"KAGZI_WORKER_RETENTION", "24h"},
	{"KAGZI_SHUTDOWN_TIMEOUT", "15s"},
	{"KAGZI_READ_HEADER_TIMEOUT", "10s"},
	{"KAGZI_READ_BODY_TIMEOUT", "30s"},
	{"KAGZI_IDLE_TIMEOUT", "2m"},
	{"KAGZI_WRITE_TIMEOUT", "30s"},
}

// configVars returns the names of vars, after checking that they are as
// many as Config's fields, so that a new setting cannot go untested.
func configVars(t *testing.T) []string {
	t.Helper()
	if got, want := reflect.TypeFor[Config]().NumField(), len(vars); got != want {
		t.Fatalf("Config has %d fields and the test knows %d variables: add the new one to vars", got, want)
	}
	names := make([]string, len(vars))
	for i, v := range vars {
		names[i] = v.name
	}
	return names
}

// clearEnv unsets every variable of Config for the rest of t, so that the
// environment the tests run in does not leak into them. The unprefixed
// names go too: envconfig falls back to them when the prefixed one is unset.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, name := range configVars(t) {
		for _, n := range []string{name, strings.TrimPrefix(name, envPrefix+"_")} {
			t.Setenv(n, "") // restores the value when t ends
			os.Unsetenv(n)
		}
	}
}

func TestLoadConfigDefaults(t *testing.T) {
	clearEnv(t)
	got, err := loadConfig()
	if err != nil {
		t.Fatalf("loadConfig with nothing set: %v", err)
	}
	want := Config{
		DatabaseURL:         "postgres://postgres@127.0.0.1:5432/kagzi?sslmode=disable",
		HTTPAddr:            ":8080",
		DebugAddr:           "",
		Auth:                "auto",
		AutoMigrate:         true,
		DBMaxConns:          20,
		LogLevel:            "info",
		LogFormat:           "json",
		PayloadMaxBytes:     2097152,
		PayloadWarnBytes:    1048576,
		MaxBatch:            1000,
		MaxBatchBytes:       33554432,
		MaxHistoryBytes:     4194304,
		MaxBufferedSignals:  1000,
		MaxSignalsPerRun:    10000,
		MaxLiveChildren:     1000,
		MaxChildDepth:       16,
		MaxWaitMS:           60000,
		LeaseDurationMS:     30000,
		HeartbeatIntervalMS: 10000,
		Retention:           168 * time.Hour,
		WorkerRetention:     24 * time.Hour,
		ShutdownTimeout:     15 * time.Second,
		ReadHeaderTimeout:   10 * time.Second,
		ReadBodyTimeout:     30 * time.Second,
		IdleTimeout:         2 * time.Minute,
		WriteTimeout:        30 * time.Second,
	}
	if got != want {
		t.Fatalf("defaults:\ngot  %+v\nwant %+v", got, want)
	}
}

func TestLoadConfigReadsEveryVariable(t *testing.T) {
	clearEnv(t)
	set := map[string]string{
		"KAGZI_DATABASE_URL":          "postgres://kagzi@db:5433/k",
		"KAGZI_HTTP_ADDR":             "127.0.0.1:9000",
		"KAGZI_DEBUG_ADDR":            "127.0.0.1:6060",
		"KAGZI_METRICS_ADDR":          "127.0.0.1:9090",
		"KAGZI_AUTH":                  "required",
		"KAGZI_AUTO_MIGRATE":          "false",
		"KAGZI_DB_MAX_CONNS":          "7",
		"KAGZI_LOG_LEVEL":             "debug",
		"KAGZI_LOG_FORMAT":            "text",
		"KAGZI_PAYLOAD_MAX_BYTES":     "4096",
		"KAGZI_PAYLOAD_WARN_BYTES":    "4096", // equal to the limit is allowed
		"KAGZI_MAX_BATCH":             "3",
		"KAGZI_MAX_BATCH_BYTES":       "4096", // as is the limit's size
		"KAGZI_MAX_HISTORY_BYTES":     "5000",
		"KAGZI_MAX_BUFFERED_SIGNALS":  "5",
		"KAGZI_MAX_SIGNALS_PER_RUN":   "6",
		"KAGZI_MAX_LIVE_CHILDREN":     "7",
		"KAGZI_MAX_CHILD_DEPTH":       "3",
		"KAGZI_MAX_WAIT_MS":           "0",
		"KAGZI_LEASE_DURATION_MS":     "1500",
		"KAGZI_HEARTBEAT_INTERVAL_MS": "500",
		"KAGZI_RETENTION":             "0", // keep forever
		"KAGZI_WORKER_RETENTION":      "1h",
		"KAGZI_SHUTDOWN_TIMEOUT":      "2m",
		"KAGZI_READ_HEADER_TIMEOUT":   "1s",
		"KAGZI_READ_BODY_TIMEOUT":     "2s",
		"KAGZI_IDLE_TIMEOUT":          "3s",
		"KAGZI_WRITE_TIMEOUT":         "4s",
	}
	for _, name := range configVars(t) {
		if _, ok := set[name]; !ok {
			t.Fatalf("the test sets no value for %s", name)
		}
	}
	for k, v := range set {
		t.Setenv(k, v)
	}
	got, err := loadConfig()
	if err != nil {
		t.Fatalf("loadConfig: %v", err)
	}
	want := Config{
		DatabaseURL:         "postgres://kagzi@db:5433/k",
		HTTPAddr:            "127.0.0.1:9000",
		DebugAddr:           "127.0.0.1:6060",
		MetricsAddr:         "127.0.0.1:9090",
		Auth:                "required",
		AutoMigrate:         false,
		DBMaxConns:          7,
		LogLevel:            "debug",
		LogFormat:           "text",
		PayloadMaxBytes:     4096,
		PayloadWarnBytes:    4096,
		MaxBatch:            3,
		MaxBatchBytes:       4096,
		MaxHistoryBytes:     5000,
		MaxBufferedSignals:  5,
		MaxSignalsPerRun:    6,
		MaxLiveChildren:     7,
		MaxChildDepth:       3,
		MaxWaitMS:           0,
		LeaseDurationMS:     1500,
		HeartbeatIntervalMS: 500,
		Retention:           0,
		WorkerRetention:     time.Hour,
		ShutdownTimeout:     2 * time.Minute,
		ReadHeaderTimeout:   time.Second,
		ReadBodyTimeout:     2 * time.Second,
		IdleTimeout:         3 * time.Second,
		WriteTimeout:        4 * time.Second,
	}
	if got != want {
		t.Fatalf("config:\ngot  %+v\nwant %+v", got, want)
	}
	l := got.limits()
	if l.Payload.MaxBytes != 4096 || l.Payload.WarnBytes != 4096 || l.MaxBatch != 3 || l.MaxBatchBytes != 4096 || l.MaxHistoryBytes != 5000 ||
		l.MaxWait != 0 || l.LeaseDuration != 1500*time.Millisecond || l.HeartbeatInterval != 500*time.Millisecond ||
		l.Signals.MaxBuffered != 5 || l.Signals.MaxPerRun != 6 || l.Children.MaxLive != 7 || l.Children.MaxDepth != 3 {
		t.Fatalf("limits: got %+v, want those of the variables set", l)
	}
	if to, want := got.timeouts(), (api.Timeouts{ReadHeader: time.Second, ReadBody: 2 * time.Second, Idle: 3 * time.Second, Write: 4 * time.Second}); to != want {
		t.Fatalf("timeouts: got %+v, want %+v", to, want)
	}
}

func TestLoadConfigRejectsBadValues(t *testing.T) {
	for _, tc := range []struct {
		name, value string
	}{
		{"KAGZI_MAX_BATCH", "abc"},
		{"KAGZI_MAX_BATCH", "0"},
		{"KAGZI_MAX_BATCH", "-3"},
		{"KAGZI_AUTO_MIGRATE", "maybe"},
		{"KAGZI_DB_MAX_CONNS", "0"},
		{"KAGZI_DB_MAX_CONNS", "4294967296"}, // over int32
		{"KAGZI_PAYLOAD_MAX_BYTES", "0"},
		{"KAGZI_PAYLOAD_MAX_BYTES", "2MB"},
		{"KAGZI_PAYLOAD_WARN_BYTES", "2097153"}, // over the default limit
		{"KAGZI_PAYLOAD_WARN_BYTES", "-1"},
		{"KAGZI_MAX_BATCH_BYTES", "0"},
		{"KAGZI_MAX_HISTORY_BYTES", "0"},
		{"KAGZI_MAX_BUFFERED_SIGNALS", "0"},
		{"KAGZI_MAX_SIGNALS_PER_RUN", "-1"},
		{"KAGZI_MAX_LIVE_CHILDREN", "0"},
		{"KAGZI_MAX_LIVE_CHILDREN", "many"},
		{"KAGZI_MAX_CHILD_DEPTH", "0"},
		{"KAGZI_MAX_CHILD_DEPTH", "-2"},
		{"KAGZI_MAX_BATCH_BYTES", "2097151"}, // under the payload limit
		{"KAGZI_MAX_WAIT_MS", "-1"},
		{"KAGZI_MAX_WAIT_MS", "1m"},
		{"KAGZI_LEASE_DURATION_MS", "0"},
		{"KAGZI_HEARTBEAT_INTERVAL_MS", "-10"},
		{"KAGZI_HEARTBEAT_INTERVAL_MS", "15000"},               // half the default lease
		{"KAGZI_HEARTBEAT_INTERVAL_MS", "9223372036854775807"}, // 2x overflows
		{"KAGZI_LEASE_DURATION_MS", "20000"},                   // twice the default heartbeat
		{"KAGZI_RETENTION", "-1h"},
		{"KAGZI_RETENTION", "a week"},
		{"KAGZI_SHUTDOWN_TIMEOUT", "0s"},
		{"KAGZI_SHUTDOWN_TIMEOUT", "15"},
		{"KAGZI_READ_HEADER_TIMEOUT", "0s"},
		{"KAGZI_READ_BODY_TIMEOUT", "-1s"},
		{"KAGZI_IDLE_TIMEOUT", "0s"},
		{"KAGZI_WRITE_TIMEOUT", "soon"},
		{"KAGZI_LOG_LEVEL", "loud"},
		{"KAGZI_LOG_FORMAT", "xml"},
		{"KAGZI_AUTH", "on"},
	} {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			clearEnv(t)
			t.Setenv(tc.name, tc.value)
			_, err := loadConfig()
			if err == nil {
				t.Fatalf("loadConfig with %s=%q: no error", tc.name, tc.value)
			}
			if !strings.Contains(err.Error(), tc.name) {
				t.Fatalf("loadConfig with %s=%q: error %q does not name %s", tc.name, tc.value, err, tc.name)
			}
			if msg := err.Error(); strings.ContainsAny(msg, "\n:") || strings.Contains(msg, "envconfig") || strings.Contains(msg, "strconv") {
				t.Fatalf("loadConfig with %s=%q: error %q is not one plain sentence", tc.name, tc.value, msg)
			}
		})
	}
}

func TestUsageListsEveryVariable(t *testing.T) {
	var buf bytes.Buffer
	usage(&buf)
	lines := map[string]string{} // variable: rest of its line
	for line := range strings.SplitSeq(buf.String(), "\n") {
		if strings.HasPrefix(line, envPrefix+"_") {
			name, rest, _ := strings.Cut(line, " ")
			lines[name] = strings.TrimSpace(rest)
		}
	}
	names := configVars(t)
	for _, v := range vars {
		rest, ok := lines[v.name]
		switch {
		case !ok:
			t.Errorf("usage does not list %s:\n%s", v.name, buf.String())
		case v.def != "" && !strings.HasPrefix(rest, v.def+" "):
			t.Errorf("usage line of %s: got %q, want its default %q first", v.name, rest, v.def)
		case rest == "":
			t.Errorf("usage line of %s has no description", v.name)
		}
	}
	if len(lines) != len(names) {
		t.Errorf("usage lists %d variables, want the %d of Config:\n%s", len(lines), len(names), buf.String())
	}
}

func TestConfigErrorsSayWhatTheVariableTakes(t *testing.T) {
	for _, tc := range []struct{ name, value, want string }{
		{"KAGZI_MAX_WAIT_MS", "abc", `KAGZI_MAX_WAIT_MS must be a whole number of milliseconds, not "abc"`},
		{"KAGZI_PAYLOAD_MAX_BYTES", "2MB", `KAGZI_PAYLOAD_MAX_BYTES must be a whole number of bytes, not "2MB"`},
		{"KAGZI_MAX_BATCH", "1.5", `KAGZI_MAX_BATCH must be a whole number, not "1.5"`},
		{"KAGZI_DB_MAX_CONNS", "4294967296", `KAGZI_DB_MAX_CONNS must be a whole number no larger than 2147483647, not "4294967296"`},
		{"KAGZI_AUTO_MIGRATE", "maybe", `KAGZI_AUTO_MIGRATE must be true or false, not "maybe"`},
		{"KAGZI_SHUTDOWN_TIMEOUT", "15", `KAGZI_SHUTDOWN_TIMEOUT must be a duration such as 500ms, 30s, 5m or 168h, not "15"`},
		{"KAGZI_HEARTBEAT_INTERVAL_MS", "15000", "KAGZI_HEARTBEAT_INTERVAL_MS must be less than half of KAGZI_LEASE_DURATION_MS (30000), so that a lease outlives a lost heartbeat, not 15000"},
	} {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			clearEnv(t)
			t.Setenv(tc.name, tc.value)
			if _, err := loadConfig(); err == nil || err.Error() != tc.want {
				t.Fatalf("got error %v\nwant          %s", err, tc.want)
			}
		})
	}
}
