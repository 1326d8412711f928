package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kagzi/kagzi/client"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

// devServer is a kagzi dev running in the test process.
type devServer struct {
	url    string
	out    *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

// startDev runs d.run on a free port and waits until /readyz answers 200.
func startDev(t *testing.T, d devEnv, databaseURL string) *devServer {
	t.Helper()
	cfg, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", port)
	if databaseURL != "" {
		cfg.DatabaseURL = databaseURL
	}
	s := &devServer{url: "http://" + cfg.HTTPAddr, out: &syncBuffer{}, done: make(chan error, 1)}
	d.out = s.out
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.done <- d.run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	t.Cleanup(func() { s.stop(t) })
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(s.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		select {
		case err := <-s.done:
			s.done <- err
			t.Fatalf("kagzi dev ended before it was ready: %v\n%s", err, s.out)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz did not answer 200 within 60s: %v\n%s", err, s.out)
		}
	}
}

// stop ends kagzi dev as Ctrl-C does and returns what run returned.
func (s *devServer) stop(t *testing.T) error {
	t.Helper()
	if s.cancel == nil {
		return nil
	}
	s.cancel()
	s.cancel = nil
	select {
	case err := <-s.done:
		return err
	case <-time.After(60 * time.Second):
		t.Fatalf("kagzi dev did not stop within 60s\n%s", s.out)
		return nil
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// noServerURL is a PostgreSQL URL on a port where nothing listens.
func noServerURL(t *testing.T) string {
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", port)
}

func TestDevUsesKagziDatabaseURL(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewEmptyDatabase(t)
	// No binaries and no Docker: only the URL can make this work.
	d := devEnv{explicitURL: true, localURL: noServerURL(t), searchDirs: []string{}, dataRoot: t.TempDir()}
	s := startDev(t, d, dbURL)
	if out := s.out.String(); !strings.Contains(out, ": KAGZI_DATABASE_URL\n") || !strings.Contains(out, s.url) {
		t.Errorf("output: got %q, want it to name KAGZI_DATABASE_URL and %s", out, s.url)
	}
	if err := s.stop(t); err != nil {
		t.Errorf("stop: %v", err)
	}
}

func TestDevSaysWhatToInstall(t *testing.T) {
	t.Parallel()
	d := devEnv{localURL: noServerURL(t), searchDirs: []string{t.TempDir()}, dataRoot: t.TempDir(), out: io.Discard}
	cfg, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	err = d.run(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		t.Fatal("run: got no error, want one saying what to install")
	}
	for _, want := range []string{"no server on 127.0.0.1:5432", "apt install postgresql", "brew install", "Docker", "KAGZI_DATABASE_URL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error: got %q, want it to say %q", err, want)
		}
	}
}

// TestDevPrivateServer starts a private PostgreSQL from the machine's
// binaries (as root, the tests' user here, it runs as an unprivileged
// user), and checks that Ctrl-C stops it, that its data is kept and
// reused, and that --fresh wipes it. The subtests share one cluster: initdb
// takes seconds.
func TestDevPrivateServer(t *testing.T) {
	t.Parallel()
	// A root PostgreSQL runs as cannot enter t.TempDir(), which is 0700.
	root, err := os.MkdirTemp("", "kagzi-dev-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	// The folders below root do not exist yet: as root, kagzi dev creates
	// them so that PostgreSQL's user may pass.
	d := devEnv{localURL: noServerURL(t), searchDirs: postgresSearchDirs(), dataRoot: filepath.Join(root, "cache", "kagzi")}
	bin, ok := findPostgres(d.searchDirs)
	if !ok {
		t.Fatalf("no PostgreSQL binaries in %q: install the server package (apt install postgresql)", d.searchDirs)
	}
	dataDir := filepath.Join(d.dataRoot, fmt.Sprintf("pg%d", bin.major))
	ctx := context.Background()
	var runID string

	t.Run("first start", func(t *testing.T) {
		s := startDev(t, d, "")
		out := s.out.String()
		for _, want := range []string{"private PostgreSQL", dataDir, s.url, "Ctrl-C stops the server and its database"} {
			if !strings.Contains(out, want) {
				t.Errorf("output: got %q, want it to say %q", out, want)
			}
		}
		if os.Geteuid() == 0 && !strings.Contains(out, "running as the user") {
			t.Errorf("output: got %q, want it to name the user PostgreSQL runs as", out)
		}
		res, err := client.New(s.url).Start(ctx, client.StartRequest{WorkflowType: "kept"})
		if err != nil {
			t.Fatal(err)
		}
		runID = res.Run.RunID
		pid := postmasterPID(t, dataDir)
		if err := s.stop(t); err != nil {
			t.Fatalf("stop: %v\n%s", err, s.out)
		}
		waitGone(t, pid)
		if _, err := os.Stat(filepath.Join(dataDir, "PG_VERSION")); err != nil {
			t.Errorf("the data after the stop: %v", err)
		}
		if !strings.Contains(s.out.String(), "PostgreSQL stopped; its data stays in "+dataDir) {
			t.Errorf("output: got %q, want it to say the data stays", s.out)
		}
	})
	t.Run("second start reuses the data", func(t *testing.T) {
		s := startDev(t, d, "")
		if strings.Contains(s.out.String(), "creating a PostgreSQL") {
			t.Errorf("output: got %q, want no initdb", s.out)
		}
		if _, err := client.New(s.url).Get(ctx, runID); err != nil {
			t.Errorf("the run of the first start: %v", err)
		}
		if err := s.stop(t); err != nil {
			t.Fatalf("stop: %v", err)
		}
	})
	t.Run("fresh wipes it", func(t *testing.T) {
		fresh := d
		fresh.fresh = true
		s := startDev(t, fresh, "")
		if !strings.Contains(s.out.String(), "creating a PostgreSQL") {
			t.Errorf("output: got %q, want a new cluster", s.out)
		}
		if _, err := client.New(s.url).Get(ctx, runID); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("the run of the first start: got %v, want not found", err)
		}
		if err := s.stop(t); err != nil {
			t.Fatalf("stop: %v", err)
		}
	})
}

// waitGone waits until process pid has exited: pg_ctl stop -w returns
// once the server removed its pid file, just before it exits.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := syscall.Kill(pid, 0)
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		// "pid (comm) S …": a zombie (Z) has exited, and waits for init.
		if _, after, _ := strings.Cut(string(stat), ") "); errors.Is(err, syscall.ESRCH) || strings.HasPrefix(after, "Z") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("postgres (pid %d) still runs 10s after the stop (kill 0: %v; %s)", pid, err, stat)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// postmasterPID reads the server's process ID from its data folder.
func postmasterPID(t *testing.T, dataDir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("postmaster.pid: %v", err)
	}
	return pid
}
