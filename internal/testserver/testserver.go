// Package testserver runs a real Kagzi server in the test process,
// assembled by kagzi.NewServer as cmd/kagzi assembles it, on an
// httptest.Server against a fresh database from pgtest, for the
// tests of the Go SDK, the examples and other tools that speak HTTP to
// Kagzi. Only tests import it.
package testserver

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kagzi/kagzi"
	"github.com/kagzi/kagzi/api"
	"github.com/kagzi/kagzi/auth"
	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/maintenance"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

// Server is a running test server.
type Server struct {
	// URL is the server's base URL, for client.New.
	URL string
	// Pool is on the server's database, for tests that look inside.
	Pool *pgxpool.Pool
	// Limits are the limits the server enforces.
	Limits api.Limits
	// Maintainer is the server's maintainer (rescue of expired leases,
	// silent workers going offline); call Tick to run a pass at once.
	Maintainer *maintenance.Maintainer

	logs *LogBuffer
	srv  *kagzi.Server
}

// Config is what New builds from; options change it.
type Config struct {
	Limits api.Limits
	// MaintainerInterval is how often the maintainer runs; 0 never (call
	// Maintainer.Tick).
	MaintainerInterval time.Duration
	// AllowErrorLogs lets the server log at ERROR level; otherwise any such
	// record fails the test.
	AllowErrorLogs bool
	// Auth is the authentication mode (KAGZI_AUTH); "" is auto.
	Auth auth.Mode
}

// Option changes the Config.
type Option func(*Config)

// WithLimits changes the server's limits.
func WithLimits(f func(*api.Limits)) Option {
	return func(c *Config) { f(&c.Limits) }
}

// WithAuth runs the server in the authentication mode m.
func WithAuth(m auth.Mode) Option {
	return func(c *Config) { c.Auth = m }
}

// WithHeartbeatInterval sets the heartbeat interval the server gives
// workers (and after three of which a silent worker goes offline).
func WithHeartbeatInterval(d time.Duration) Option {
	return func(c *Config) { c.Limits.HeartbeatInterval = d }
}

// DefaultLimits are the production defaults, with long polls capped at 5s
// so that an unanswered one ends soon after a test.
func DefaultLimits() api.Limits {
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

// New starts a server on a database of its own for t and stops it when t
// ends. It returns once the LISTEN connection is up, so that long polls
// are woken from the first request on.
func New(t testing.TB, opts ...Option) *Server {
	t.Helper()
	cfg := Config{Limits: DefaultLimits(), MaintainerInterval: time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	pool, dbURL := pgtest.NewPool(t)
	logs := &LogBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	srv := kagzi.NewServer(kagzi.Config{
		DatabaseURL:        dbURL,
		Pool:               pool,
		Limits:             cfg.Limits,
		MaintainerInterval: cfg.MaintainerInterval,
		NoMaintainer:       cfg.MaintainerInterval <= 0,
		Version:            "test",
		Logger:             logger,
		Auth:               cfg.Auth,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("testserver: Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("testserver: the background components did not stop within 10s")
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for srv.Listener.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("testserver: the listener is not ready after 10s: %v", srv.Listener.Ready())
		}
		time.Sleep(5 * time.Millisecond) // readiness offers no event to wait on
	}
	// Registered before hs.Close, so it runs after it, when every request
	// has been answered and logged.
	t.Cleanup(func() {
		if !cfg.AllowErrorLogs {
			for _, line := range logs.Lines() {
				if strings.Contains(line, "level=ERROR") {
					t.Errorf("testserver: the server logged an error: %s", line)
				}
			}
		}
		if t.Failed() {
			t.Logf("testserver: the server's log:\n%s", logs.String())
		}
	})
	hs := httptest.NewServer(srv.API)
	t.Cleanup(hs.Close)
	return &Server{URL: hs.URL, Pool: pool, Limits: cfg.Limits, Maintainer: srv.Maintainer, logs: logs, srv: srv}
}

// NewKey creates an API key of role on namespaces (every namespace when
// none), as `kagzi keys create` does, and returns its secret once the
// server knows it.
func (s *Server) NewKey(t testing.TB, role domain.Role, namespaces ...string) string {
	t.Helper()
	if len(namespaces) == 0 {
		namespaces = []string{domain.AllNamespaces}
	}
	ctx := context.Background()
	_, secret, err := auth.Create(ctx, s.srv.Store, domain.NewAPIKey{Name: "test " + string(role), Role: role, Namespaces: namespaces}, time.Now())
	if err != nil {
		t.Fatalf("testserver: create key: %v", err)
	}
	if err := s.srv.Keys.Load(ctx); err != nil {
		t.Fatalf("testserver: load keys: %v", err)
	}
	return secret
}

// Log returns what the server logged so far.
func (s *Server) Log() string { return s.logs.String() }

// LogBuffer is a goroutine-safe buffer for a test server's log.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Lines returns the log so far, a line each.
func (b *LogBuffer) Lines() []string {
	return strings.Split(strings.TrimSpace(b.String()), "\n")
}
