package client

import (
	"github.com/kagzi/kagzi/internal/batch"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Worker runs the workflows registered with it: it registers with the
// server, long-polls its task queue for as many runs as it has free slots,
// runs each in a goroutine, heartbeats, and drains when it stops.
//
// Create it with NewWorker, add workflows with Register, then call Run.
type Worker struct {
	c      *Client
	queue  string
	opts   workerOptions
	logger *slog.Logger

	mu        sync.Mutex
	workflows map[string]workflowFunc
	running   map[*execution]struct{}
	workerID  string
	interval  time.Duration
	started   bool

	// stopClaiming ends the claim loop (set by Run).
	stopClaiming context.CancelFunc
	regMu        sync.Mutex // held while registering again

	stopOnce  sync.Once
	stopCh    chan struct{} // closed by Stop
	drainOnce sync.Once
	drainCh   chan struct{} // closed when the server asks for a drain
	changed   chan struct{} // signalled when an execution ends
	execs     sync.WaitGroup

	// unlistedHeartbeat is set when the server refused run_ids.
	unlistedHeartbeat atomic.Bool

	completed atomic.Int64 // runs completed since the last heartbeat
	failed    atomic.Int64 // attempts failed since the last heartbeat

	completer *batch.Batcher[completion, error]
}

// workflowFunc is a registered workflow with its JSON coding.
type workflowFunc func(ctx *WorkflowContext, input json.RawMessage) (json.RawMessage, error)

type workerOptions struct {
	maxConcurrent int
	grace         time.Duration
	version       string
	labels        map[string]string
	logger        *slog.Logger
}

// WorkerOption configures a Worker.
type WorkerOption func(*workerOptions)

// WithMaxConcurrent bounds the runs the worker executes at once (default
// 10, at most 10000); it claims only as many as it has free slots.
func WithMaxConcurrent(n int) WorkerOption {
	return func(o *workerOptions) { o.maxConcurrent = n }
}

// WithGracePeriod is how long a stopping worker lets running workflows
// finish (default 10s) before it gives the rest back to the server.
func WithGracePeriod(d time.Duration) WorkerOption {
	return func(o *workerOptions) { o.grace = d }
}

// WithWorkerVersion is the version the worker registers with, for
// operators (the code's build, say).
func WithWorkerVersion(v string) WorkerOption {
	return func(o *workerOptions) { o.version = v }
}

// WithLabels are labels the worker registers with, for operators.
func WithLabels(labels map[string]string) WorkerOption {
	return func(o *workerOptions) { o.labels = labels }
}

// WithLogger is where the worker logs what it cannot return: failed
// heartbeats, lost leases, runs it could not report (default
// slog.Default()).
func WithLogger(l *slog.Logger) WorkerOption {
	return func(o *workerOptions) { o.logger = l }
}

// NewWorker returns a worker for taskQueue that calls the server through
// c, in c's namespace. It does no I/O until Run.
func NewWorker(c *Client, taskQueue string, opts ...WorkerOption) *Worker {
	o := workerOptions{maxConcurrent: 10, grace: 10 * time.Second}
	for _, f := range opts {
		f(&o)
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	w := &Worker{
		c:         c,
		queue:     taskQueue,
		opts:      o,
		logger:    o.logger.With("component", "kagzi_worker", "task_queue", taskQueue),
		workflows: map[string]workflowFunc{},
		running:   map[*execution]struct{}{},
		stopCh:    make(chan struct{}),
		drainCh:   make(chan struct{}),
		changed:   make(chan struct{}, 1),
	}
	w.completer = newCompleter(w)
	return w
}

// Register adds a workflow type to the worker: fn runs each of its runs,
// with the run's input decoded from JSON into I, and its result recorded
// as the run's JSON output. A returned error fails the attempt (the run
// is retried by its policy unless the error is NonRetryable or of a type
// the policy lists); a panic fails it with the panic's message. An input
// that does not decode into I fails the run without retry.
//
// Register all workflows before Run. Registering a type twice, or after
// Run, panics.
func Register[I, O any](w *Worker, workflowType string, fn func(ctx *WorkflowContext, in I) (O, error)) {
	w.register(workflowType, func(ctx *WorkflowContext, input json.RawMessage) (json.RawMessage, error) {
		var in I
		if len(input) > 0 {
			if err := json.Unmarshal(input, &in); err != nil {
				return nil, NonRetryable(ErrorType(fmt.Errorf("decode the input as %T: %w", in, err), "invalid_input"))
			}
		}
		out, err := fn(ctx, in)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(out)
		if err != nil {
			return nil, NonRetryable(ErrorType(fmt.Errorf("encode the output: %w", err), "invalid_output"))
		}
		return b, nil
	})
}

func (w *Worker) register(workflowType string, fn workflowFunc) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.started:
		panic("kagzi: Register " + workflowType + " after Run")
	case workflowType == "":
		panic("kagzi: Register with an empty workflow type")
	case w.workflows[workflowType] != nil:
		panic("kagzi: workflow type " + workflowType + " registered twice")
	}
	w.workflows[workflowType] = fn
}

// ID returns the worker's ID at the server, or "" before it registered.
// It changes if the server took the worker offline and it registered
// again.
func (w *Worker) ID() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.workerID
}

// Stop asks Run to drain and return, as cancelling its context does. When
// it returns, the worker claims no more runs; it does not wait for the
// drain: Run's return says the worker is done.
func (w *Worker) Stop() {
	w.stopOnce.Do(func() { close(w.stopCh) })
	w.endClaims()
}

// requestDrain is Stop on the server's request.
func (w *Worker) requestDrain() {
	w.drainOnce.Do(func() { close(w.drainCh) })
	w.endClaims()
}

func (w *Worker) endClaims() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopClaiming != nil {
		w.stopClaiming()
	}
}

// Run registers the worker and executes runs until ctx is cancelled, Stop
// is called, or the server asks the worker to drain. Then it drains: it
// stops claiming, lets running workflows finish for the grace period,
// cancels the workflows still running and gives their runs back to the
// server by deregistering (their attempts are not used up), and returns
// once every workflow function has returned. Workflow functions must
// honour their context's cancellation.
//
// Run retries registration while the server is unreachable or
// unavailable. It returns nil after a clean drain, and an error when the
// registration was refused or the deregistration failed. To drain on
// SIGTERM, run it under signal.NotifyContext(ctx, syscall.SIGTERM).
func (w *Worker) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.started {
		w.mu.Unlock()
		return errors.New("kagzi: Worker.Run called twice")
	}
	w.started = true
	types := make([]string, 0, len(w.workflows))
	for t := range w.workflows {
		types = append(types, t)
	}
	w.mu.Unlock()
	if len(types) == 0 {
		return errors.New("kagzi: the worker has no registered workflows")
	}
	slices.Sort(types)

	// claimCtx ends the claim loop: at cancellation, Stop or a drain.
	// Stop cancels it before it returns, parked claim included.
	claimCtx, stopClaiming := context.WithCancel(ctx)
	defer stopClaiming()
	w.mu.Lock()
	w.stopClaiming = stopClaiming
	w.mu.Unlock()
	select {
	case <-w.stopCh:
		stopClaiming()
	case <-w.drainCh:
		stopClaiming()
	default:
	}
	if err := w.registerWorker(claimCtx, types); err != nil {
		if claimCtx.Err() != nil {
			return nil // stopped before it ever registered
		}
		return err
	}

	// Executions and heartbeats outlive ctx: they go on while draining.
	bg := context.WithoutCancel(ctx)
	execCtx, cancelExecs := context.WithCancelCause(bg)
	defer cancelExecs(ErrReleased)
	hbCtx, stopHeartbeats := context.WithCancel(bg)
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		w.heartbeatLoop(hbCtx, types)
	}()

	w.claimLoop(claimCtx, execCtx, types)
	err := w.drain(bg)
	stopHeartbeats()
	<-hbDone
	w.execs.Wait()
	return err
}

// claimLoop long-polls for runs while there are free slots, and starts
// each run it gets.
func (w *Worker) claimLoop(ctx, execCtx context.Context, types []string) {
	failures := 0
	for ctx.Err() == nil {
		free := w.opts.maxConcurrent - w.active()
		if free <= 0 {
			select {
			case <-w.changed:
			case <-ctx.Done():
			}
			continue
		}
		id := w.ID()
		tasks, clock, err := w.claim(ctx, id, types, min(free, maxClaimTasks))
		switch {
		case ctx.Err() != nil:
			// Runs claimed as the poll was abandoned are put back by the
			// server; runs that did arrive are executed while draining.
		case errors.Is(err, ErrWorkerDraining):
			w.requestDrain()
			continue
		case errors.Is(err, ErrWorkerOffline) || errors.Is(err, ErrNotFound):
			w.logger.Warn("the server does not know the worker as online; registering again", "worker_id", id, "error", err)
			if err = w.reregister(ctx, id, types); err == nil {
				continue
			}
			fallthrough
		case err != nil:
			failures++
			w.logger.Warn("claim failed", "worker_id", id, "error", err)
			_ = sleepCtx(ctx, backoff(100*time.Millisecond, 5*time.Second, failures))
			continue
		}
		failures = 0
		for _, t := range tasks {
			w.start(execCtx, t, id, clock)
		}
	}
}

// maxClaimTasks is the server's bound on max_tasks.
const maxClaimTasks = 100

// drain waits up to the grace period for running workflows, then
// releases the rest: it cancels them and deregisters, which puts their
// runs back to pending without using up an attempt.
func (w *Worker) drain(ctx context.Context) error {
	grace := time.NewTimer(w.opts.grace)
	defer grace.Stop()
wait:
	for w.active() > 0 {
		select {
		case <-w.changed:
		case <-grace.C:
			break wait
		}
	}
	// Runs claimed under an earlier registration (before the server took
	// the worker offline) are released by deregistering that one too.
	w.mu.Lock()
	ids := []string{w.workerID}
	for ex := range w.running {
		ex.abandon(ErrReleased)
		if !slices.Contains(ids, ex.workerID) {
			ids = append(ids, ex.workerID)
		}
	}
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// The counts since the last heartbeat, before going offline; best
	// effort.
	if done, failed := w.completed.Swap(0), w.failed.Swap(0); done+failed > 0 {
		body := heartbeatBody{ActiveCount: w.active(), CompletedDelta: done, FailedDelta: failed}
		if !w.unlistedHeartbeat.Load() {
			body.RunIDs = []string{} // every run was abandoned above
		}
		_, _ = w.c.do(ctx, request{method: http.MethodPost, path: w.workerPath(ids[0], "heartbeat"), body: body}, nil)
	}
	var errs []error
	for _, id := range ids {
		r := request{method: http.MethodDelete, path: w.workerPath(id), idempotent: true}
		if _, err := w.c.do(ctx, r, nil); err != nil {
			errs = append(errs, fmt.Errorf("kagzi: deregister worker %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

func (w *Worker) workerPath(id string, rest ...string) string {
	p := w.c.nsPath + "/workers/" + url.PathEscape(id)
	for _, s := range rest {
		p += "/" + s
	}
	return p
}

// active returns the number of runs executing.
func (w *Worker) active() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.running)
}

type registerBody struct {
	TaskQueue     string            `json:"task_queue"`
	WorkflowTypes []string          `json:"workflow_types"`
	Hostname      *string           `json:"hostname,omitempty"`
	PID           int               `json:"pid"`
	Version       *string           `json:"version,omitempty"`
	MaxConcurrent int               `json:"max_concurrent"`
	Labels        map[string]string `json:"labels,omitempty"`
}

// registerWorker registers the worker, retrying while the server is
// unreachable or unavailable.
func (w *Worker) registerWorker(ctx context.Context, types []string) error {
	body := registerBody{TaskQueue: w.queue, WorkflowTypes: types, PID: os.Getpid(),
		MaxConcurrent: w.opts.maxConcurrent, Labels: w.opts.labels}
	if h, err := os.Hostname(); err == nil {
		h = validName(h)
		body.Hostname = &h
	}
	if w.opts.version != "" {
		body.Version = &w.opts.version
	}
	var out struct {
		WorkerID            string `json:"worker_id"`
		HeartbeatIntervalMS int64  `json:"heartbeat_interval_ms"`
	}
	for failures := 1; ; failures++ {
		_, err := w.c.do(ctx, request{method: http.MethodPost, path: w.c.nsPath + "/workers", body: body}, &out)
		if err == nil {
			break
		}
		var apiErr *Error
		if ctx.Err() != nil || (errors.As(err, &apiErr) && apiErr.Status != http.StatusServiceUnavailable) {
			return fmt.Errorf("kagzi: register worker: %w", err)
		}
		w.logger.Warn("register failed; trying again", "error", err)
		if sleepCtx(ctx, backoff(100*time.Millisecond, 5*time.Second, failures)) != nil {
			return fmt.Errorf("kagzi: register worker: %w", err)
		}
	}
	interval := time.Duration(out.HeartbeatIntervalMS) * time.Millisecond
	if interval <= 0 {
		interval = 10 * time.Second
	}
	w.mu.Lock()
	w.workerID, w.interval = out.WorkerID, interval
	w.mu.Unlock()
	w.logger.Info("worker registered", "worker_id", out.WorkerID, "workflow_types", types,
		"max_concurrent", w.opts.maxConcurrent)
	return nil
}

// reregister registers anew when the worker's ID is still old: the
// claim loop and the heartbeat may both find it offline, and only one
// must register.
func (w *Worker) reregister(ctx context.Context, old string, types []string) error {
	w.regMu.Lock()
	defer w.regMu.Unlock()
	if w.ID() != old {
		return nil
	}
	return w.registerWorker(ctx, types)
}

type claimBody struct {
	WorkerID      string   `json:"worker_id"`
	WorkflowTypes []string `json:"workflow_types"`
	MaxTasks      int      `json:"max_tasks"`
	WaitMS        int64    `json:"wait_ms"`
}

// task is a run handed to the worker under a lease.
type task struct {
	RunID          string          `json:"run_id"`
	Namespace      string          `json:"namespace"`
	TaskQueue      string          `json:"task_queue"`
	WorkflowType   string          `json:"workflow_type"`
	Version        string          `json:"version"`
	Input          json.RawMessage `json:"input"`
	Attempt        int             `json:"attempt"`
	LeaseID        string          `json:"lease_id"`
	LeaseExpiresAt time.Time       `json:"lease_expires_at"`
}

// claimWait is how long a claim asks the server to hold it; the server
// may cap it lower.
const claimWait = 30 * time.Second

func (w *Worker) claim(ctx context.Context, id string, types []string, n int) ([]task, answerClock, error) {
	var out struct {
		Tasks []task `json:"tasks"`
	}
	var clock answerClock
	r := request{
		method: http.MethodPost,
		path:   w.c.nsPath + "/task-queues/" + url.PathEscape(w.queue) + "/claim",
		body:   claimBody{WorkerID: id, WorkflowTypes: types, MaxTasks: n, WaitMS: claimWait.Milliseconds()},
		wait:   claimWait,
		clock:  &clock,
	}
	_, err := w.c.do(ctx, r, &out)
	return out.Tasks, clock, err
}

// start executes t in a goroutine of its own.
func (w *Worker) start(ctx context.Context, t task, workerID string, clock answerClock) {
	ex := &execution{w: w, task: t, workerID: workerID, began: time.Now(), leaseEnds: clock.localTime(t.LeaseExpiresAt)}
	ex.ctx, ex.cancel = context.WithCancelCause(ctx)
	w.mu.Lock()
	fn := w.workflows[t.WorkflowType]
	w.running[ex] = struct{}{}
	w.mu.Unlock()
	w.execs.Add(1)
	go func() {
		defer w.execs.Done()
		defer w.finish(ex)
		ex.execute(fn)
	}()
}

func (w *Worker) finish(ex *execution) {
	ex.cancel(context.Canceled)
	w.mu.Lock()
	delete(w.running, ex)
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

type heartbeatBody struct {
	ActiveCount    int   `json:"active_count"`
	CompletedDelta int64 `json:"completed_delta"`
	FailedDelta    int64 `json:"failed_delta"`
	// RunIDs is never nil (null is refused), but to a server that does
	// not know the member.
	RunIDs []string `json:"run_ids,omitzero"`
}

// A worker heartbeat gives up after heartbeatTimeout intervals, the
// silence after which the server takes the worker offline (an answer
// later than that is of no use), and heartbeatTimeout of them at most are
// in flight at once when the server answers slowly.
const heartbeatTimeout = 3

// heartbeatLoop heartbeats at the server's interval until ctx ends, and
// sooner after a failure. Each heartbeat goes out on time whatever the
// ones before it and the run heartbeats (a loop of their own) are doing:
// a worker that is healthy but whose calls are slow must not be taken
// offline.
func (w *Worker) heartbeatLoop(ctx context.Context, types []string) {
	w.mu.Lock()
	interval := w.interval
	w.mu.Unlock()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { w.checkRunsLoop(ctx, interval) })

	results := make(chan bool)
	due := time.Now().Add(interval)
	next := time.NewTimer(interval)
	defer next.Stop()
	inflight, failures := 0, 0
	for {
		select {
		case <-ctx.Done():
			return
		case ok := <-results:
			inflight--
			if ok {
				failures = 0
				continue
			}
			failures++
			if retry := time.Now().Add(backoff(100*time.Millisecond, interval, failures)); retry.Before(due) {
				due = retry
				next.Reset(time.Until(due))
			}
		case <-next.C:
			due = time.Now().Add(interval)
			next.Reset(interval)
			if inflight >= heartbeatTimeout {
				continue // the oldest ends by its timeout within an interval
			}
			inflight++
			wg.Go(func() {
				ok := w.heartbeat(ctx, types, heartbeatTimeout*interval)
				select {
				case results <- ok:
				case <-ctx.Done():
				}
			})
		}
	}
}

// heartbeat reports the worker's state and the runs it executes under its
// current registration, which extends their leases, and stops those the
// server says it no longer holds or that were cancelled. It gives up
// after timeout, and reports whether the heartbeat went through.
func (w *Worker) heartbeat(ctx context.Context, types []string, timeout time.Duration) bool {
	id := w.ID()
	held := w.held(id)
	body := heartbeatBody{ActiveCount: w.active()}
	if !w.unlistedHeartbeat.Load() {
		body.RunIDs = make([]string, len(held))
		for i, ex := range held {
			body.RunIDs[i] = ex.task.RunID
		}
	}
	body.CompletedDelta, body.FailedDelta = w.completed.Swap(0), w.failed.Swap(0)
	var out struct {
		Status         string     `json:"status"`
		ShouldDrain    bool       `json:"should_drain"`
		LeaseExpiresAt *time.Time `json:"lease_expires_at"`
		Lost           []string   `json:"lost"`
		Cancelled      []string   `json:"cancelled"`
	}
	var clock answerClock
	hctx, cancel := context.WithTimeout(ctx, timeout)
	_, err := w.c.do(hctx, request{method: http.MethodPost, path: w.workerPath(id, "heartbeat"), body: body, clock: &clock}, &out)
	cancel()
	var apiErr *Error
	switch {
	case ctx.Err() != nil:
		return true
	case errors.As(err, &apiErr) && apiErr.Code == CodeInvalidArgument && apiErr.Field == "run_ids" && body.RunIDs != nil:
		// A server older than run_ids: it extends every lease the worker
		// holds, so a run the worker gave up on is rescued only when the
		// worker stops.
		w.logger.Warn("the server does not take run_ids in worker heartbeats; heartbeating without", "worker_id", id, "error", err)
		w.unlistedHeartbeat.Store(true)
		w.completed.Add(body.CompletedDelta)
		w.failed.Add(body.FailedDelta)
		return false
	case errors.Is(err, ErrWorkerOffline) || errors.Is(err, ErrNotFound):
		// Silent for too long (a pause, a partition): the server took the
		// worker offline and stopped extending its leases. Register anew;
		// runs held under the old ID are kept alive one by one by
		// checkRuns.
		w.logger.Warn("the server took the worker offline; registering again", "worker_id", id, "error", err)
		if rerr := w.reregister(ctx, id, types); rerr != nil {
			w.logger.Error("register again", "error", rerr)
			return false
		}
		return true
	case err != nil:
		w.completed.Add(body.CompletedDelta)
		w.failed.Add(body.FailedDelta)
		w.logger.Warn("heartbeat failed", "worker_id", id, "error", err)
		return false
	case out.ShouldDrain:
		w.logger.Info("the server asks the worker to drain", "worker_id", id)
		w.requestDrain()
	}
	w.applyHeartbeat(held, out.Lost, out.Cancelled, out.LeaseExpiresAt, clock)
	return true
}

// held returns the executions the worker runs under registration id that
// may still report.
func (w *Worker) held(id string) []*execution {
	w.mu.Lock()
	defer w.mu.Unlock()
	var held []*execution
	for ex := range w.running {
		if ex.workerID == id && ex.err() == nil {
			held = append(held, ex)
		}
	}
	return held
}

// applyHeartbeat stops the executions whose runs the heartbeat answered
// lost or cancelled and records the new lease end of the others. A run
// reporting its outcome is left to that call's answer: its completion may
// be why it is no longer held.
func (w *Worker) applyHeartbeat(held []*execution, lost, cancelled []string, leaseExpires *time.Time, clock answerClock) {
	for _, ex := range held {
		id := ex.task.RunID
		switch {
		case slices.Contains(cancelled, id):
			if !ex.reporting.Load() {
				ex.abandon(&Error{Code: CodeCancelled, Status: http.StatusConflict, Title: http.StatusText(http.StatusConflict),
					Detail: "the worker heartbeat says the run was cancelled"})
			}
		case slices.Contains(lost, id):
			if !ex.reporting.Load() {
				ex.abandon(&Error{Code: CodeLeaseLost, Status: http.StatusConflict, Title: http.StatusText(http.StatusConflict),
					Detail: "the worker heartbeat says the worker no longer holds the run"})
			}
		case leaseExpires != nil:
			ex.extendLease(clock.localTime(*leaseExpires))
		}
	}
}

// checkRunsLoop heartbeats, every interval, the runs claimed under an
// earlier registration of the worker (before the server took it offline),
// which the worker heartbeat of the current one does not list, until ctx
// ends. That keeps their leases, and finds cancelled runs and lost leases,
// whose contexts it then cancels. A run whose heartbeat is slow delays
// none of the others.
func (w *Worker) checkRunsLoop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, runChecks)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		id := w.ID()
		w.mu.Lock()
		for ex := range w.running {
			if ex.workerID == id || !ex.checking.CompareAndSwap(false, true) {
				continue
			}
			select {
			case sem <- struct{}{}:
			default:
				ex.checking.Store(false) // next time
				continue
			}
			wg.Go(func() {
				defer func() { <-sem; ex.checking.Store(false) }()
				w.checkRun(ex, interval)
			})
		}
		w.mu.Unlock()
	}
}

// runChecks bounds the run heartbeats in flight at once.
const runChecks = 16

// checkRun heartbeats one run, giving up after two intervals.
func (w *Worker) checkRun(ex *execution, interval time.Duration) {
	var out struct {
		LeaseExpiresAt *time.Time `json:"lease_expires_at"`
	}
	var clock answerClock
	ctx, cancel := context.WithTimeout(ex.ctx, 2*interval)
	defer cancel()
	err := ex.callCtx(ctx, leaseBody{LeaseID: ex.task.LeaseID}, &out, &clock, "heartbeat")
	switch {
	case err == nil && out.LeaseExpiresAt != nil:
		ex.extendLease(clock.localTime(*out.LeaseExpiresAt))
	case err != nil && ex.err() == nil && ex.ctx.Err() == nil:
		// (An execution that ended meanwhile cancelled the call: that is
		// no failure.)
		w.logger.Warn("run heartbeat failed", "run_id", ex.task.RunID, "error", err)
	}
}
