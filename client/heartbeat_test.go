package client_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kagzi/kagzi/client"
)

// hookTransport hands each request of a client to a test's hook, with the
// recorder to send it on.
type hookTransport struct {
	next http.RoundTripper
	hook func(r *http.Request, next http.RoundTripper) (*http.Response, error)
}

func (h hookTransport) RoundTrip(r *http.Request) (*http.Response, error) { return h.hook(r, h.next) }

// hook makes the workers the test starts from now on send their requests
// through f, which may hold, answer or pass them on.
func (e *env) hook(f func(r *http.Request, next http.RoundTripper) (*http.Response, error)) {
	e.wc = client.New(e.srv.URL, client.WithNamespace(e.ns),
		client.WithHTTPClient(&http.Client{Transport: hookTransport{next: e.rec, hook: f}}))
}

// hold blocks a request until release is closed or the request's context
// ends, as a slow or frozen network would.
func hold(r *http.Request, release <-chan struct{}) error {
	select {
	case <-release:
		return nil
	case <-r.Context().Done():
		return r.Context().Err()
	}
}

// problemAnswer is an error answer made up by a test.
func problemAnswer(r *http.Request, status int, code string) *http.Response {
	body := `{"type":"about:blank","title":"` + http.StatusText(status) + `","status":` + itoa(status) +
		`,"code":"` + code + `","detail":"made up by the test"}`
	return &http.Response{StatusCode: status, Status: http.StatusText(status), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/problem+json"}}, Body: io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)), Request: r}
}

// workerBeats matches the starts of the worker heartbeats of registration
// id() (evaluated at each event).
func workerBeats(id func() string) func(call) bool {
	return func(c call) bool {
		return c.started && strings.HasSuffix(c.path, "/workers/"+id()+"/heartbeat")
	}
}

// waitBeats waits for n worker heartbeats of the worker's current
// registration to start, each within five intervals of the one before.
func (e *env) waitBeats(t *testing.T, w *runningWorker, n int, what string) {
	t.Helper()
	for range n {
		mark := e.rec.mark()
		e.rec.waitFor(t, mark, 5*testHeartbeat, what, workerBeats(w.ID))
	}
}

// markOffline marks the worker offline, as the server does a silent one;
// it registers again at its next heartbeat.
func (e *env) markOffline(t *testing.T, w *runningWorker) {
	t.Helper()
	if _, err := e.srv.Pool.Exec(context.Background(), `UPDATE workers SET status = 'offline' WHERE worker_id = $1`, w.ID()); err != nil {
		t.Fatal(err)
	}
}

// A worker heartbeats without run_ids to a server that does not know the
// member (an older version), and its leases are kept.
func testHeartbeatToServerWithoutRunIDs(t *testing.T, e *env) {
	var refused atomic.Int32
	e.hook(func(r *http.Request, next http.RoundTripper) (*http.Response, error) {
		if strings.HasSuffix(r.URL.Path, "/heartbeat") && strings.Contains(r.URL.Path, "/workers/") {
			body, _ := io.ReadAll(r.Body)
			if strings.Contains(string(body), `"run_ids"`) {
				refused.Add(1)
				resp := problemAnswer(r, http.StatusBadRequest, "invalid_argument")
				resp.Body = io.NopCloser(strings.NewReader(`{"status":400,"code":"invalid_argument","field":"run_ids","detail":"run_ids is not a known field"}`))
				resp.ContentLength = -1
				return resp, nil
			}
			r.Body = io.NopCloser(strings.NewReader(string(body)))
		}
		return next.RoundTrip(r)
	})
	w := e.startWorker(t, func(w *client.Worker) {
		client.Register(w, "slow", func(ctx *client.WorkflowContext, _ any) (string, error) {
			return client.Step(ctx, "slow", func(sctx context.Context) (string, error) {
				select {
				case <-time.After(testLease + time.Second): // the work under test is time passing
					return "done", nil
				case <-sctx.Done():
					return "", context.Cause(sctx)
				}
			})
		})
	})
	e.rec.waitFor(t, 0, 10*time.Second, "a heartbeat answered 200", func(c call) bool {
		return !c.started && c.status == http.StatusOK && strings.HasSuffix(c.path, "/workers/"+w.ID()+"/heartbeat")
	})
	if run := e.wait(t, e.start(t, client.StartRequest{WorkflowType: "slow"})); run.Status != client.StatusCompleted || run.Attempt != 1 {
		t.Errorf("run = %s attempt %d, want completed on attempt 1", run.Status, run.Attempt)
	}
	if n := refused.Load(); n != 1 {
		t.Errorf("heartbeats with run_ids refused: %d, want 1", n)
	}
}

// A run whose completion failed for good (a non-503 answer) is no longer
// kept alive by the worker's heartbeats: its lease expires and it is
// retried, instead of staying running forever.
func testFailedCompletionIsRescued(t *testing.T, e *env) {
	var refused atomic.Bool
	e.hook(func(r *http.Request, next http.RoundTripper) (*http.Response, error) {
		if strings.HasSuffix(r.URL.Path, "/complete") && refused.CompareAndSwap(false, true) {
			return problemAnswer(r, http.StatusInternalServerError, "internal"), nil
		}
		return next.RoundTrip(r)
	})
	e.startWorker(t, func(w *client.Worker) {
		client.Register(w, "attempt", func(ctx *client.WorkflowContext, _ any) (int, error) { return ctx.Attempt(), nil })
	})
	id := e.start(t, client.StartRequest{WorkflowType: "attempt",
		RetryPolicy: &client.RetryPolicy{InitialInterval: time.Millisecond, BackoffCoefficient: 1}})
	run := e.wait(t, id)
	if !refused.Load() || run.Status != client.StatusCompleted || run.Attempt != 2 || string(run.Output) != "2" {
		t.Errorf("run = %s attempt %d output %s (completion refused: %v), want completed by attempt 2",
			run.Status, run.Attempt, run.Output, refused.Load())
	}
}

// Worker heartbeats keep their cadence while an earlier one waits for a
// slow answer.
func testHeartbeatCadenceWithSlowAnswer(t *testing.T, e *env) {
	release := make(chan struct{})
	defer close(release)
	held := make(chan struct{})
	var beats atomic.Int32
	e.hook(func(r *http.Request, next http.RoundTripper) (*http.Response, error) {
		if strings.HasSuffix(r.URL.Path, "/heartbeat") && strings.Contains(r.URL.Path, "/workers/") && beats.Add(1) == 2 {
			close(held)
			if err := hold(r, release); err != nil {
				return nil, err
			}
		}
		return next.RoundTrip(r)
	})
	w := e.startWorker(t, func(w *client.Worker) {
		client.Register(w, "noop", func(*client.WorkflowContext, any) (any, error) { return nil, nil })
	})
	receive(t, held, "a heartbeat to be held")
	e.waitBeats(t, w, 3, "the heartbeats after a slow one")
}

// Worker heartbeats keep their cadence while the run heartbeat of a run
// claimed under an earlier registration is slow.
func testHeartbeatCadenceWithSlowRunHeartbeat(t *testing.T, e *env) {
	release := make(chan struct{})
	defer close(release)
	held := make(chan struct{}, 1)
	e.hook(func(r *http.Request, next http.RoundTripper) (*http.Response, error) {
		if strings.HasSuffix(r.URL.Path, "/heartbeat") && strings.Contains(r.URL.Path, "/workflows/") {
			select {
			case held <- struct{}{}:
			default:
			}
			if err := hold(r, release); err != nil {
				return nil, err
			}
		}
		return next.RoundTrip(r)
	})
	b := newBlocker()
	w := e.startWorker(t, func(w *client.Worker) { client.Register(w, "block", b.workflow) },
		client.WithGracePeriod(10*time.Millisecond))
	e.start(t, client.StartRequest{WorkflowType: "block"})
	receive(t, b.started, "the step to start")
	e.markOffline(t, w)
	receive(t, held, "a run heartbeat to be held")
	e.waitBeats(t, w, 3, "the heartbeats while a run heartbeat is slow")
}

// logRecords collects the messages a worker logs.
type logRecords struct {
	slog.Handler
	mu   *sync.Mutex
	msgs *[]string
}

func (h logRecords) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	*h.msgs = append(*h.msgs, r.Message)
	h.mu.Unlock()
	return h.Handler.Handle(ctx, r)
}

func (h logRecords) WithAttrs(attrs []slog.Attr) slog.Handler {
	return logRecords{Handler: h.Handler.WithAttrs(attrs), mu: h.mu, msgs: h.msgs}
}

func (h logRecords) WithGroup(name string) slog.Handler {
	return logRecords{Handler: h.Handler.WithGroup(name), mu: h.mu, msgs: h.msgs}
}

// capturingLogger logs to t and returns the messages logged so far.
func capturingLogger(t *testing.T) (*slog.Logger, func() []string) {
	h := logRecords{Handler: testLogger(t).Handler(), mu: &sync.Mutex{}, msgs: new([]string)}
	return slog.New(h), func() []string {
		h.mu.Lock()
		defer h.mu.Unlock()
		return append([]string(nil), *h.msgs...)
	}
}

// A run heartbeat that its run's own completion cancels is no failure:
// the worker logs no warning about it.
func testNoWarningForRunHeartbeatEndedByCompletion(t *testing.T, e *env) {
	ended := make(chan error, 1)
	held := make(chan struct{}, 1)
	e.hook(func(r *http.Request, next http.RoundTripper) (*http.Response, error) {
		if strings.HasSuffix(r.URL.Path, "/heartbeat") && strings.Contains(r.URL.Path, "/workflows/") {
			select {
			case held <- struct{}{}:
			default:
			}
			err := hold(r, nil) // until the execution ends
			select {
			case ended <- err:
			default:
			}
			return nil, err
		}
		return next.RoundTrip(r)
	})
	logger, logged := capturingLogger(t)
	b := newBlocker()
	w := e.startWorker(t, func(w *client.Worker) { client.Register(w, "block", b.workflow) }, client.WithLogger(logger))
	id := e.start(t, client.StartRequest{WorkflowType: "block"})
	receive(t, b.started, "the step to start")
	e.markOffline(t, w)
	receive(t, held, "a run heartbeat")
	close(b.release)
	if run := e.wait(t, id); run.Status != client.StatusCompleted {
		t.Fatalf("run = %s, want completed", run.Status)
	}
	if err := receive(t, ended, "the run heartbeat to end"); !errors.Is(err, context.Canceled) {
		t.Fatalf("the run heartbeat ended with %v, want its context cancelled", err)
	}
	w.Stop()
	if err := w.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, msg := range logged() {
		if strings.Contains(msg, "run heartbeat failed") {
			t.Errorf("the worker logged %q for a run heartbeat its run's completion ended", msg)
		}
	}
}

// A worker frozen between a step's begin and its function (here: every
// request and answer held while the lease runs out) does not run the step
// function once it thaws: the run's lease has passed. The next attempt
// runs it.
func testFrozenWorkerRunsNoStepPastItsLease(t *testing.T, e *env) {
	thaw := make(chan struct{})
	var frozen atomic.Bool
	freezing := make(chan struct{})
	e.hook(func(r *http.Request, next http.RoundTripper) (*http.Response, error) {
		if frozen.Load() {
			if err := hold(r, thaw); err != nil {
				return nil, err
			}
		}
		resp, err := next.RoundTrip(r)
		if err == nil && strings.HasSuffix(r.URL.Path, "/steps/s/begin") && frozen.CompareAndSwap(false, true) {
			close(freezing)
		}
		if frozen.Load() {
			if herr := hold(r, thaw); herr != nil {
				if err == nil {
					resp.Body.Close()
				}
				return nil, herr
			}
		}
		return resp, err
	})
	type result struct {
		attempt int
		err     error
	}
	var stepAttempts sync.Map // attempt → true
	results := make(chan result, 4)
	e.startWorker(t, func(w *client.Worker) {
		client.Register(w, "frozen", func(ctx *client.WorkflowContext, _ any) (out string, err error) {
			defer func() { results <- result{ctx.Attempt(), err} }()
			return client.Step(ctx, "s", func(context.Context) (string, error) {
				stepAttempts.Store(ctx.Attempt(), true)
				return "done", nil
			})
		})
	})
	id := e.start(t, client.StartRequest{WorkflowType: "frozen",
		RetryPolicy: &client.RetryPolicy{InitialInterval: time.Millisecond, BackoffCoefficient: 1}})
	receive(t, freezing, "the begin of the step")
	deadline := time.Now().Add(20 * time.Second)
	for run := e.get(t, id); run.Status == client.StatusRunning && run.Attempt == 1; run = e.get(t, id) {
		if time.Now().After(deadline) {
			t.Fatalf("the frozen worker's run was not rescued: %s attempt %d", run.Status, run.Attempt)
		}
		e.srv.Maintainer.Tick(context.Background())
		time.Sleep(50 * time.Millisecond) // polling the rescue, which the lease's passing brings
	}
	// The worker's clock reads the lease from the Date header, to the
	// second: let a second more pass on it.
	time.Sleep(time.Second) // the work under test is time passing
	close(thaw)
	first := receive(t, results, "the frozen execution to return")
	if first.attempt != 1 || !errors.Is(first.err, client.ErrLeaseLost) {
		t.Errorf("frozen execution: attempt %d returned %v, want attempt 1 and ErrLeaseLost", first.attempt, first.err)
	}
	if _, ran := stepAttempts.Load(1); ran {
		t.Errorf("the step function ran in attempt 1, after the run's lease had passed")
	}
	if run := e.wait(t, id); run.Status != client.StatusCompleted || run.Attempt != 2 {
		t.Errorf("run = %s attempt %d, want completed by attempt 2", run.Status, run.Attempt)
	}
}
