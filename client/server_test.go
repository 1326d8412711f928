package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kagzi/kagzi/client"
	"github.com/kagzi/kagzi/internal/testserver"
)

// The SDK's tests run against a real server in the test process, wired as
// `kagzi serve` wires it (postgres.NewStore, postgres.NewListener,
// distributor.New, maintenance.New and api.New with a prometheus
// registry) on an httptest.Server, against a database of the test's own
// from pgtest. The wiring lives in internal/testserver because the
// examples' tests need the same server.

// testHeartbeat is the heartbeat interval of the test servers: short, so
// that what the worker learns from heartbeats (a cancelled run, a drain)
// it learns quickly.
const testHeartbeat = 400 * time.Millisecond

// env is one test's view of a shared server: a namespace of its own, and
// a client in it whose requests are recorded.
type env struct {
	srv *testserver.Server
	ns  string
	c   *client.Client
	rec *recorder
	// wc, when set, is the client of the workers the test starts, in
	// place of c.
	wc *client.Client
}

// runTests runs each test as a parallel subtest of t, against one server
// for all of them: each gets a namespace of its own, which isolates runs,
// queues and workers. (A database per test would cost more to drop than
// most of these tests take.)
func runTests(t *testing.T, tests []namedTest, opts ...testserver.Option) {
	t.Helper()
	srv := testserver.New(t, append([]testserver.Option{testserver.WithHeartbeatInterval(testHeartbeat)}, opts...)...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.test(t, newEnv(t, srv))
		})
	}
}

type namedTest struct {
	name string
	test func(*testing.T, *env)
}

// newEnv returns an env for t on srv, in a namespace named after t.
func newEnv(t *testing.T, srv *testserver.Server) *env {
	ns := strings.NewReplacer("/", ".", " ", "_").Replace(t.Name())
	if len(ns) > 63 {
		ns = ns[len(ns)-63:]
	}
	ns = strings.TrimLeft(ns, "._-")
	rec := newRecorder()
	c := client.New(srv.URL, client.WithNamespace(ns), client.WithHTTPClient(&http.Client{Transport: rec}))
	return &env{srv: srv, ns: ns, c: c, rec: rec}
}

// runningWorker is a worker whose Run goes on in a goroutine.
type runningWorker struct {
	*client.Worker
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// startWorker creates a worker on queue "default", lets register add its
// workflows, and runs it until the test ends (or it is stopped).
func (e *env) startWorker(t *testing.T, register func(*client.Worker), opts ...client.WorkerOption) *runningWorker {
	t.Helper()
	opts = append([]client.WorkerOption{client.WithLogger(testLogger(t))}, opts...)
	wc := e.c
	if e.wc != nil {
		wc = e.wc
	}
	w := client.NewWorker(wc, "default", opts...)
	register(w)
	mark := e.rec.mark()
	ctx, cancel := context.WithCancel(context.Background())
	rw := &runningWorker{Worker: w, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(rw.done)
		rw.err = w.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		if err := rw.wait(t, 20*time.Second); err != nil {
			t.Errorf("Worker.Run: %v", err)
		}
	})
	e.waitRegistered(t, w, mark)
	return rw
}

// wait waits for Run to return and returns its error.
func (rw *runningWorker) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case <-rw.done:
		return rw.err
	case <-time.After(within):
		t.Fatalf("Worker.Run did not return within %s", within)
		return nil
	}
}

// waitRegistered waits until the worker has registered and parked its
// first claim, so that runs started from now on reach it.
func (e *env) waitRegistered(t *testing.T, w *client.Worker, mark int) {
	t.Helper()
	e.rec.waitFor(t, mark, 10*time.Second, "the worker's first claim", func(c call) bool {
		id := w.ID()
		return c.started && strings.HasSuffix(c.path, "/claim") && id != "" &&
			bytes.Contains(c.body, []byte(`"worker_id":"`+id+`"`))
	})
}

// start starts a run and returns its ID.
func (e *env) start(t *testing.T, req client.StartRequest) string {
	t.Helper()
	res, err := e.c.Start(context.Background(), req)
	if err != nil {
		t.Fatalf("Start(%s): %v", req.WorkflowType, err)
	}
	return res.Run.RunID
}

// wait waits for a run to finish.
func (e *env) wait(t *testing.T, runID string) *client.Run {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	run, err := e.c.Wait(ctx, runID)
	if err != nil {
		t.Fatalf("Wait(%s): %v", runID, err)
	}
	return run
}

// list returns the IDs of the runs of a workflow type, newest first.
func (e *env) list(t *testing.T, workflowType string) []string {
	t.Helper()
	var ids []string
	for run, err := range e.c.List(context.Background(), client.ListOptions{WorkflowType: workflowType}) {
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		ids = append(ids, run.RunID)
	}
	return ids
}

// get returns a run.
func (e *env) get(t *testing.T, runID string) *client.Run {
	t.Helper()
	run, err := e.c.Get(context.Background(), runID)
	if err != nil {
		t.Fatalf("Get(%s): %v", runID, err)
	}
	return run
}

// steps returns a run's steps as "name:attempt:status" strings.
func (e *env) steps(t *testing.T, runID string) []string {
	t.Helper()
	steps, err := e.c.Steps(context.Background(), runID)
	if err != nil {
		t.Fatalf("Steps(%s): %v", runID, err)
	}
	var out []string
	for _, s := range steps {
		out = append(out, s.Name+":"+itoa(s.Attempt)+":"+string(s.Status))
	}
	return out
}

// raw sends a request to the server directly, for what the SDK has no
// method for, and decodes the JSON answer into out.
func (e *env) raw(t *testing.T, method, path string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: decode: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// call is a request the client sent, as the recorder saw it.
type call struct {
	method string
	path   string
	body   []byte
	// started is true for the event of the request going out, false for
	// that of its answer (or failure) coming back.
	started bool
	status  int
}

// recorder is an http.RoundTripper that records every request the client
// sends, so that a test can wait for one and check what was (not) sent.
type recorder struct {
	next http.RoundTripper

	mu     sync.Mutex
	events []call
	notify chan struct{} // closed at the next event
}

func newRecorder() *recorder {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 100
	return &recorder{next: t, notify: make(chan struct{})}
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	c := call{method: req.Method, path: req.URL.Path, started: true}
	if req.Body != nil {
		c.body, _ = io.ReadAll(req.Body)
		req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(c.body))
	}
	r.publish(c)
	resp, err := r.next.RoundTrip(req)
	c.started = false
	if err == nil {
		c.status = resp.StatusCode
	}
	r.publish(c)
	return resp, err
}

func (r *recorder) publish(c call) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, c)
	close(r.notify)
	r.notify = make(chan struct{})
}

// mark returns the position of the next event, for waitFor.
func (r *recorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

// answered returns the calls answered so far that match.
func (r *recorder) answered(match func(call) bool) []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []call
	for _, c := range r.events {
		if !c.started && match(c) {
			out = append(out, c)
		}
	}
	return out
}

// waitFor waits for an event (a request going out, or its answer) that
// matches, from the mark from on.
func (r *recorder) waitFor(t *testing.T, from int, within time.Duration, what string, match func(call) bool) call {
	t.Helper()
	timeout := time.NewTimer(within)
	defer timeout.Stop()
	for {
		r.mu.Lock()
		for ; from < len(r.events); from++ {
			if c := r.events[from]; match(c) {
				r.mu.Unlock()
				return c
			}
		}
		next := r.notify
		r.mu.Unlock()
		select {
		case <-next:
		case <-timeout.C:
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
	}
}

// waitIdle waits until no request to a path ending in suffix is in
// flight.
func (r *recorder) waitIdle(t *testing.T, suffix string) {
	t.Helper()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for {
		r.mu.Lock()
		inflight := 0
		for _, c := range r.events {
			if strings.HasSuffix(c.path, suffix) {
				if c.started {
					inflight++
				} else {
					inflight--
				}
			}
		}
		next := r.notify
		r.mu.Unlock()
		if inflight == 0 {
			return
		}
		select {
		case <-next:
		case <-timeout.C:
			t.Fatalf("timed out waiting for the requests to %s to end", suffix)
		}
	}
}

// runCalls counts the answered POSTs to a run's path ending in suffix
// ("/complete", "/fail", "/steps/charge/fail").
func (r *recorder) runCalls(runID, suffix string) int {
	return len(r.answered(func(c call) bool {
		return c.method == http.MethodPost && strings.HasSuffix(c.path, "/workflows/"+runID+suffix) ||
			suffix == "/complete" && completes(c, runID)
	}))
}

// completes reports whether c is a worker's report that completes runID:
// its own complete, or a batch completion that names it.
func completes(c call, runID string) bool {
	return c.method == http.MethodPost && (strings.HasSuffix(c.path, "/workflows/"+runID+"/complete") ||
		strings.HasSuffix(c.path, "/workflows/batch/complete") && bytes.Contains(c.body, []byte(`"`+runID+`"`)))
}

// testLogger logs to t until it ends.
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.done = true
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}
