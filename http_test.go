package kagzi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kagzi/kagzi"
	"github.com/kagzi/kagzi/api"
	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

// liveServer is a whole Kagzi server as the binary runs it: kagzi.NewServer,
// its HTTPServer and Serve, on a real TCP listener.
type liveServer struct {
	*kagzi.Server
	pool   *pgxpool.Pool
	base   string // http://host:port
	addr   string // host:port
	stop   context.CancelFunc
	served chan error // Serve's result

	mu     sync.Mutex
	closed map[string]chan struct{} // client address: closed when the server closed that connection
}

// liveConfig is the configuration of a test server on the database at
// dbURL, without the maintainer and the scheduler.
func liveConfig(pool *pgxpool.Pool, dbURL string) kagzi.Config {
	return kagzi.Config{
		DatabaseURL: dbURL,
		Pool:        pool,
		Limits: api.Limits{
			Payload:           domain.PayloadLimits{MaxBytes: domain.DefaultPayloadMaxBytes, WarnBytes: domain.DefaultPayloadWarnBytes},
			MaxBatch:          1000,
			MaxBatchBytes:     32 << 20,
			MaxWait:           time.Minute,
			LeaseDuration:     30 * time.Second,
			HeartbeatInterval: 10 * time.Second,
		},
		NoMaintainer: true,
		NoScheduler:  true,
		Logger:       slog.New(slog.DiscardHandler),
	}
}

// startLive starts a server; prepare, when given, changes it before it
// serves.
func startLive(t *testing.T, timeouts api.Timeouts, shutdownTimeout time.Duration, prepare ...func(*kagzi.Server)) *liveServer {
	t.Helper()
	pool, dbURL := pgtest.NewPool(t)
	cfg := liveConfig(pool, dbURL)
	cfg.Timeouts = timeouts
	srv := kagzi.NewServer(cfg)
	for _, p := range prepare {
		p(srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &liveServer{Server: srv, pool: pool, addr: ln.Addr().String(), base: "http://" + ln.Addr().String(),
		stop: cancel, served: make(chan error, 1), closed: map[string]chan struct{}{}}
	hs := srv.HTTPServer(ctx, s.addr)
	hs.ConnState = func(c net.Conn, state http.ConnState) {
		if state == http.StateClosed {
			close(s.closedCh(c.RemoteAddr().String()))
		}
	}
	go func() { s.served <- srv.Serve(ctx, hs, ln, shutdownTimeout) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.served:
		case <-time.After(shutdownTimeout + 5*time.Second):
			t.Errorf("Serve did not return")
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for srv.Listener.Ready() != nil { // no event to wait on
		if time.Now().After(deadline) {
			t.Fatal("the listener did not come up")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return s
}

// closedCh returns the channel closed when the server closes the
// connection from the client address addr.
func (s *liveServer) closedCh(addr string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.closed[addr]
	if !ok {
		ch = make(chan struct{})
		s.closed[addr] = ch
	}
	return ch
}

func (s *liveServer) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startRun starts a run of type wf with input and returns its ID.
func (s *liveServer) startRun(t *testing.T, input string) string {
	t.Helper()
	body := `{"workflow_type":"wf","input":` + input + `}`
	resp, err := http.Post(s.base+"/v1/namespaces/default/workflows", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var run struct {
		RunID string `json:"run_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&run); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("start: status %d, %v", resp.StatusCode, err)
	}
	return run.RunID
}

// hangGuard bounds the waits for the server to close a connection: only a
// guard against a hang, since a loaded machine (-race, every package at
// once) can take seconds to fill socket buffers.
const hangGuard = 30 * time.Second

func expectClosed(t *testing.T, s *liveServer, c net.Conn, within time.Duration, what string) {
	t.Helper()
	select {
	case <-s.closedCh(c.LocalAddr().String()):
	case <-time.After(within):
		t.Fatalf("the server still holds the connection %s after %s", what, within)
	}
}

func TestStalledBodyIsCutOff(t *testing.T) {
	t.Parallel()
	s := startLive(t, api.Timeouts{ReadBody: 300 * time.Millisecond}, 5*time.Second)
	c := s.dial(t)
	start := time.Now()
	// 1000 bytes announced, 17 sent.
	fmt.Fprint(c, "POST /v1/namespaces/default/workflows HTTP/1.1\r\nHost: k\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"workflow_type\":")
	expectClosed(t, s, c, hangGuard, "whose body stalled")
	if elapsed := time.Since(start); elapsed < 250*time.Millisecond {
		t.Errorf("cut off after %s, before the body timeout", elapsed)
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer before the close: %v", err)
	}
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("stalled body: status %d, want 400", resp.StatusCode)
	}
	var n int
	if err := s.pool.QueryRow(context.Background(), "SELECT count(*) FROM workflow_runs").Scan(&n); err != nil || n != 0 {
		t.Errorf("runs after a stalled start: %d (%v), want 0", n, err)
	}
}

func TestIdleKeepAliveIsClosed(t *testing.T) {
	t.Parallel()
	s := startLive(t, api.Timeouts{Idle: 300 * time.Millisecond}, 5*time.Second)
	c := s.dial(t)
	fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: k\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v", err)
	}
	resp.Body.Close()
	expectClosed(t, s, c, hangGuard, "idle after its answer")
}

func TestUnreadAnswerIsCutOff(t *testing.T) {
	t.Parallel()
	s := startLive(t, api.Timeouts{Write: 300 * time.Millisecond}, 5*time.Second)
	runID := s.startRun(t, `"`+strings.Repeat("x", 1<<20)+`"`)
	c := s.dial(t)
	// Ask for the 1 MiB run 40 times and read nothing: the socket buffers
	// fill and the server's writes block.
	var reqs bytes.Buffer
	for range 40 {
		fmt.Fprintf(&reqs, "GET /v1/namespaces/default/workflows/%s HTTP/1.1\r\nHost: k\r\n\r\n", runID)
	}
	if _, err := c.Write(reqs.Bytes()); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, s, c, hangGuard, "that does not read its answers")
}

// TestLongPollsOutlastBodyAndWriteTimeouts: a claim and a wait for a run
// that last longer than the body and write timeouts still answer.
func TestLongPollsOutlastBodyAndWriteTimeouts(t *testing.T) {
	t.Parallel()
	s := startLive(t, api.Timeouts{ReadBody: 200 * time.Millisecond, Write: 200 * time.Millisecond}, 5*time.Second)
	runID := s.startRun(t, `1`)
	client := &http.Client{Timeout: 10 * time.Second}
	for _, tc := range []struct {
		name, method, path, body string
	}{
		{"claim", "POST", "/v1/namespaces/default/task-queues/empty/claim", `{"wait_ms": 1000}`},
		{"wait for a run", "GET", "/v1/namespaces/default/workflows/" + runID + "?wait_ms=1000", ""},
	} {
		for i := range 2 { // the second on a kept-alive connection
			start := time.Now()
			req, err := http.NewRequest(tc.method, s.base+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.body != "" {
				req.Header.Set("Content-Type", "application/json")
			} else {
				req.Body = http.NoBody
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("%s #%d: %v", tc.name, i, err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("%s #%d: status %d, %v: %s", tc.name, i, resp.StatusCode, err, b)
			}
			if elapsed := time.Since(start); elapsed < 900*time.Millisecond {
				t.Errorf("%s #%d answered after %s, before its wait", tc.name, i, elapsed)
			}
		}
	}
}

// watchSignal is the server's run watcher, telling the test when a wait
// for a run has begun.
type watchSignal struct {
	api.RunWatcher
	watching chan string
}

func (w watchSignal) WatchRun(runID string) (<-chan struct{}, func()) {
	ch, stop := w.RunWatcher.WatchRun(runID)
	w.watching <- runID
	return ch, stop
}

// TestShutdownAnswersRunWaits: at shutdown a GET ...?wait_ms answers at
// once with the run as it is, and the server stops cleanly.
func TestShutdownAnswersRunWaits(t *testing.T) {
	t.Parallel()
	watching := make(chan string, 1)
	s := startLive(t, api.Timeouts{}, 5*time.Second, func(srv *kagzi.Server) {
		srv.API.Watcher = watchSignal{RunWatcher: srv.API.Watcher, watching: watching}
	})
	runID := s.startRun(t, `1`)
	type result struct {
		status int
		run    domain.Run
		err    error
	}
	answer := make(chan result, 1)
	go func() {
		resp, err := http.Get(s.base + "/v1/namespaces/default/workflows/" + runID + "?wait_ms=60000")
		if err != nil {
			answer <- result{err: err}
			return
		}
		defer resp.Body.Close()
		var r result
		r.status = resp.StatusCode
		r.err = json.NewDecoder(resp.Body).Decode(&r.run)
		answer <- r
	}()
	select {
	case <-watching:
	case <-time.After(5 * time.Second):
		t.Fatal("the wait did not begin")
	}
	start := time.Now()
	s.stop()
	select {
	case r := <-answer:
		if r.err != nil || r.status != http.StatusOK || r.run.RunID != runID || r.run.Status != domain.RunPending {
			t.Fatalf("wait at shutdown: status %d, run %s %s, err %v; want 200 with the pending run", r.status, r.run.RunID, r.run.Status, r.err)
		}
	case <-time.After(time.Second):
		t.Fatal("the wait did not answer within 1s of shutdown")
	}
	select {
	case err := <-s.served:
		if err != nil {
			t.Fatalf("Serve after shutdown: %v", err)
		}
		s.served <- nil // for the cleanup
	case <-time.After(2 * time.Second):
		t.Fatal("Serve did not return within 2s of shutdown")
	}
	t.Logf("answered and stopped %s after shutdown began", time.Since(start))
}

// TestWorkBeforeFirstListenReachesParkedClaim: a run started while a claim
// is parked and before the LISTEN connection is first up was notified to
// nobody; the first connect makes the queue claim again, long before the
// 30s backstop.
func TestWorkBeforeFirstListenReachesParkedClaim(t *testing.T) {
	t.Parallel()
	pool, dbURL := pgtest.NewPool(t)
	srv := kagzi.NewServer(liveConfig(pool, dbURL))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	wg.Add(1)
	go func() { defer wg.Done(); _ = srv.Distributor.Run(ctx) }()

	claimed := make(chan []domain.Task, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		tasks, _ := srv.Distributor.Claim(ctx, domain.ClaimRequest{Namespace: "default", TaskQueue: "q", MaxTasks: 1, Wait: 25 * time.Second})
		claimed <- tasks
	}()
	deadline := time.Now().Add(10 * time.Second)
	for claimStatements(t, srv) < 1 { // the parked claim found nothing
		if time.Now().After(deadline) {
			t.Fatal("the parked claim sent no statement")
		}
		time.Sleep(5 * time.Millisecond)
	}
	run, err := domain.StartRequest{WorkflowType: "wf", TaskQueue: "q"}.Validate(domain.PayloadLimits{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	// Started as on another replica: not handed to the claim parked here.
	srv.Store.HandOffTo(nil)
	started, _, err := srv.Store.StartRun(ctx, "default", run)
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); _ = srv.Listener.Run(ctx) }()
	select {
	case tasks := <-claimed:
		if len(tasks) != 1 || tasks[0].RunID != started.RunID {
			t.Fatalf("claimed %+v, want run %s", tasks, started.RunID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the run did not reach the parked claim within 10s of the listener's first connect")
	}
}

// claimStatements reads the server's kagzi_claim_statements_total.
func claimStatements(t *testing.T, srv *kagzi.Server) float64 {
	t.Helper()
	families, err := srv.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "kagzi_claim_statements_total" {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}
