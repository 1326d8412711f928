package distributor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kagzi/kagzi/distributor"
	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/postgres"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

const ns = "default"

// countingStore counts the claim statements the distributor sends, and can
// hold a claim until the test lets it go.
type countingStore struct {
	*postgres.Store
	claims atomic.Int64
	// gate, when set, is received from before each claim runs.
	gate chan struct{}
	// afterClaim, when set, is called after each claim statement, before
	// the distributor has its result.
	afterClaim func(domain.ClaimResult)
}

func (s *countingStore) ClaimRuns(ctx context.Context, namespace, queue string, types, slots []string) (domain.ClaimResult, error) {
	if s.gate != nil {
		<-s.gate
	}
	defer s.claims.Add(1)
	res, err := s.Store.ClaimRuns(ctx, namespace, queue, types, slots)
	if s.afterClaim != nil {
		s.afterClaim(res)
	}
	return res, err
}

// newBareDistributor is a distributor with no listener: it hears of nothing
// but what the test tells it, and its backstop is an hour away.
func newBareDistributor(t *testing.T, pool *pgxpool.Pool) (*countingStore, *distributor.Distributor) {
	t.Helper()
	store := &countingStore{Store: postgres.NewStore(pool, time.Minute)}
	d := distributor.New(store, slog.New(slog.DiscardHandler), distributor.Options{Backstop: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return store, d
}

// server is one Kagzi replica's claiming side: a distributor fed by its own
// listener.
type server struct {
	store *countingStore
	dist  *distributor.Distributor
	lis   *postgres.Listener
	stop  context.CancelFunc
	done  chan struct{}
}

func newServer(t *testing.T, pool *pgxpool.Pool, dbURL string, lease time.Duration) *server {
	t.Helper()
	logger := slog.New(slog.DiscardHandler)
	store := &countingStore{Store: postgres.NewStore(pool, lease)}
	s := &server{
		store: store,
		dist:  distributor.New(store, logger, distributor.Options{}),
		lis:   postgres.NewListener(dbURL, logger, nil),
		done:  make(chan struct{}),
	}
	s.lis.OnQueue = s.dist.Notify
	s.lis.OnFinished = s.dist.Finished
	s.lis.OnReconnect = s.dist.NotifyAll
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = s.lis.Run(ctx) }()
	go func() { defer wg.Done(); _ = s.dist.Run(ctx) }()
	go func() { wg.Wait(); close(s.done) }()
	t.Cleanup(func() {
		cancel()
		<-s.done
	})
	waitFor(t, "listener up", func() bool { return s.lis.Ready() == nil })
	return s
}

// waitFor polls cond until it holds, failing the test after a deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type claimResult struct {
	tasks   []domain.Task
	err     error
	elapsed time.Duration
}

// claimAsync parks a claim and returns a channel with its result.
func claimAsync(ctx context.Context, d *distributor.Distributor, req domain.ClaimRequest) <-chan claimResult {
	ch := make(chan claimResult, 1)
	go func() {
		start := time.Now()
		tasks, err := d.Claim(ctx, req)
		ch <- claimResult{tasks, err, time.Since(start)}
	}()
	return ch
}

func receive(t *testing.T, ch <-chan claimResult, within time.Duration) claimResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(within):
		t.Fatalf("claim did not return within %s", within)
		return claimResult{}
	}
}

func startRuns(t *testing.T, store *postgres.Store, queue string, n int, mod func(*domain.StartRequest)) []string {
	t.Helper()
	items := make([]domain.NewRun, n)
	for i := range items {
		req := domain.StartRequest{WorkflowType: "wf", TaskQueue: queue, Input: json.RawMessage(fmt.Sprint(i))}
		if mod != nil {
			mod(&req)
		}
		nr, err := req.Validate(domain.PayloadLimits{MaxBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		items[i] = nr
	}
	res, err := store.StartRuns(context.Background(), ns, items)
	if err != nil {
		t.Fatalf("StartRuns: %v", err)
	}
	ids := make([]string, n)
	for i, r := range res {
		ids[i] = r.RunID
	}
	return ids
}

func claimReq(queue string, maxTasks int, wait time.Duration) domain.ClaimRequest {
	return domain.ClaimRequest{Namespace: ns, TaskQueue: queue, MaxTasks: maxTasks, Wait: wait}
}

func TestOneClaimStatementServesAllWaiters(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	s := newServer(t, pool, url, time.Minute)
	ctx := context.Background()

	first := claimAsync(ctx, s.dist, claimReq("q", 5, 20*time.Second))
	// The first waiter's claim finds the queue empty; later waiters arrive
	// knowing it is empty and cost no statement.
	waitFor(t, "first claim", func() bool { return s.store.claims.Load() == 1 })
	second := claimAsync(ctx, s.dist, claimReq("q", 5, 20*time.Second))
	waitFor(t, "second waiter parked", func() bool { return s.dist.Waiting(ns, "q") == 2 })
	third := claimAsync(ctx, s.dist, claimReq("q", 5, 20*time.Second))
	waitFor(t, "third waiter parked", func() bool { return s.dist.Waiting(ns, "q") == 3 })
	if got := s.store.claims.Load(); got != 1 {
		t.Fatalf("claim statements before work arrived: got %d, want 1", got)
	}

	ids := startRuns(t, s.store.Store, "q", 10, nil)
	r1, r2 := receive(t, first, 5*time.Second), receive(t, second, 5*time.Second)
	if len(r1.tasks) != 5 || len(r2.tasks) != 5 {
		t.Fatalf("got %d and %d tasks, want 5 and 5", len(r1.tasks), len(r2.tasks))
	}
	// Handed out oldest first, in arrival order.
	for i, task := range append(r1.tasks, r2.tasks...) {
		if task.RunID != ids[i] {
			t.Errorf("task %d: got run %s, want %s", i, task.RunID, ids[i])
		}
		if task.Attempt != 1 || task.LeaseID == "" {
			t.Errorf("task %d: attempt %d lease %q, want attempt 1 and a lease", i, task.Attempt, task.LeaseID)
		}
	}
	if got := s.store.claims.Load(); got != 2 {
		t.Errorf("claim statements: got %d, want 2 (one empty, one for all three waiters)", got)
	}
	if got := s.dist.Waiting(ns, "q"); got != 1 {
		t.Errorf("waiters left: got %d, want 1", got)
	}
	select {
	case r := <-third:
		t.Fatalf("third waiter answered with %d tasks; it should still wait", len(r.tasks))
	default:
	}
}

func TestOneStatementPerTypeSet(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	s := newServer(t, pool, url, time.Minute)
	ctx := context.Background()
	reqA := claimReq("q", 1, 20*time.Second)
	reqA.WorkflowTypes = []string{"a"}
	reqB := claimReq("q", 1, 20*time.Second)
	reqB.WorkflowTypes = []string{"b"}
	a := claimAsync(ctx, s.dist, reqA)
	waitFor(t, "claim for a", func() bool { return s.store.claims.Load() == 1 })
	b := claimAsync(ctx, s.dist, reqB)
	waitFor(t, "claim for b", func() bool { return s.store.claims.Load() == 2 })
	startRuns(t, s.store.Store, "q", 1, func(r *domain.StartRequest) { r.WorkflowType = "b" })
	startRuns(t, s.store.Store, "q", 1, func(r *domain.StartRequest) { r.WorkflowType = "a" })
	ra, rb := receive(t, a, 5*time.Second), receive(t, b, 5*time.Second)
	if len(ra.tasks) != 1 || ra.tasks[0].WorkflowType != "a" {
		t.Errorf("waiter for a got %+v", ra.tasks)
	}
	if len(rb.tasks) != 1 || rb.tasks[0].WorkflowType != "b" {
		t.Errorf("waiter for b got %+v", rb.tasks)
	}
}

// TestWaiterIgnoresOtherTypesTimers parks a claim for type b on a queue
// whose delayed runs of type a come due first: its runner sleeps until b's
// run comes due, and claims nothing at a's times.
func TestWaiterIgnoresOtherTypesTimers(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	store, d := newBareDistributor(t, pool)
	for _, ms := range []int64{200, 400, 600} {
		startRuns(t, store.Store, "q", 1, func(r *domain.StartRequest) { r.WorkflowType, r.StartDelayMS = "a", &ms })
	}
	bDelay := int64(1000)
	ids := startRuns(t, store.Store, "q", 1, func(r *domain.StartRequest) { r.WorkflowType, r.StartDelayMS = "b", &bDelay })
	req := claimReq("q", 1, 20*time.Second)
	req.WorkflowTypes = []string{"b"}
	r := receive(t, claimAsync(context.Background(), d, req), 10*time.Second)
	if len(r.tasks) != 1 || r.tasks[0].RunID != ids[0] {
		t.Fatalf("got %+v, want run %s", r.tasks, ids[0])
	}
	if got := store.claims.Load(); got != 2 {
		t.Errorf("claim statements: got %d, want 2 (on arrival, and when b's run came due)", got)
	}
}

func TestWakeUpByNotify(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	s := newServer(t, pool, url, time.Minute)
	ch := claimAsync(context.Background(), s.dist, claimReq("q", 1, 30*time.Second))
	waitFor(t, "parked", func() bool { return s.store.claims.Load() == 1 })
	ids := startRuns(t, s.store.Store, "q", 1, nil)
	r := receive(t, ch, 5*time.Second)
	if len(r.tasks) != 1 || r.tasks[0].RunID != ids[0] {
		t.Fatalf("got %+v, want run %s", r.tasks, ids[0])
	}
}

func TestZeroWaitClaimsOnce(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	s := newServer(t, pool, url, time.Minute)
	r := receive(t, claimAsync(context.Background(), s.dist, claimReq("q", 1, 0)), 5*time.Second)
	if len(r.tasks) != 0 {
		t.Fatalf("got %d tasks from an empty queue", len(r.tasks))
	}
	startRuns(t, s.store.Store, "q", 2, nil)
	r = receive(t, claimAsync(context.Background(), s.dist, claimReq("q", 5, 0)), 5*time.Second)
	if len(r.tasks) != 2 {
		t.Fatalf("got %d tasks, want 2", len(r.tasks))
	}
}

func TestDelayedWorkReachesParkedWaiterOnTime(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	s := newServer(t, pool, url, time.Minute)
	ch := claimAsync(context.Background(), s.dist, claimReq("q", 1, 30*time.Second))
	waitFor(t, "parked", func() bool { return s.store.claims.Load() == 1 })
	delay := int64(700)
	startRuns(t, s.store.Store, "q", 1, func(r *domain.StartRequest) { r.StartDelayMS = &delay })
	r := receive(t, ch, 10*time.Second)
	if len(r.tasks) != 1 {
		t.Fatalf("got %d tasks, want 1", len(r.tasks))
	}
	if r.elapsed < 600*time.Millisecond || r.elapsed > 5*time.Second {
		t.Errorf("delayed run arrived after %s, want about 700ms", r.elapsed)
	}
}

func TestListenerReconnectReclaims(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	s := newServer(t, pool, url, time.Minute)
	ctx := context.Background()
	ch := claimAsync(ctx, s.dist, claimReq("q", 1, 30*time.Second))
	waitFor(t, "parked", func() bool { return s.store.claims.Load() == 1 })

	var killed int
	err := pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1 AND datname = current_database()`, postgres.ListenerApplicationName).Scan(&killed)
	if err != nil || killed != 1 {
		t.Fatalf("terminate listener: killed %d, err %v", killed, err)
	}
	// Started while the listener may be down: its NOTIFY can be lost, and
	// the re-claim after the reconnect must find it.
	ids := startRuns(t, s.store.Store, "q", 1, nil)
	r := receive(t, ch, 10*time.Second)
	if len(r.tasks) != 1 || r.tasks[0].RunID != ids[0] {
		t.Fatalf("got %+v, want run %s", r.tasks, ids[0])
	}
	if r.elapsed > 8*time.Second {
		t.Errorf("run arrived after %s", r.elapsed)
	}
	waitFor(t, "listener back", func() bool { return s.lis.Ready() == nil })
}

func TestClientGoneReleasesClaimedRuns(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	s := newServer(t, pool, url, time.Minute)
	ids := startRuns(t, s.store.Store, "q", 1, nil)
	// Hold the claim statement until the client has gone.
	s.store.gate = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	ch := claimAsync(ctx, s.dist, claimReq("q", 1, 30*time.Second))
	waitFor(t, "parked", func() bool { return s.dist.Waiting(ns, "q") == 1 })
	cancel()
	r := receive(t, ch, 5*time.Second)
	if r.err == nil {
		t.Fatalf("claim of a gone client: got %d tasks and no error", len(r.tasks))
	}
	close(s.store.gate) // the claim now runs, for a waiter that is gone
	waitFor(t, "claim ran", func() bool { return s.store.claims.Load() == 1 })
	waitFor(t, "run released", func() bool {
		run, err := s.store.GetRun(context.Background(), ns, ids[0])
		return err == nil && run.Status == domain.RunPending
	})
	run, _ := s.store.GetRun(context.Background(), ns, ids[0])
	// Released without consuming an attempt: the next claim continues it.
	next := receive(t, claimAsync(context.Background(), s.dist, claimReq("q", 1, 5*time.Second)), 10*time.Second)
	if len(next.tasks) != 1 || next.tasks[0].Attempt != run.Attempt {
		t.Fatalf("next claim: got %+v, want the run at attempt %d", next.tasks, run.Attempt)
	}
}

func TestShutdownAnswersParkedClaims(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	s := newServer(t, pool, url, time.Minute)
	var chans []<-chan claimResult
	for range 5 {
		chans = append(chans, claimAsync(context.Background(), s.dist, claimReq("q", 1, 30*time.Second)))
	}
	waitFor(t, "parked", func() bool { return s.dist.Waiting(ns, "q") == 5 })
	s.stop()
	for _, ch := range chans {
		r := receive(t, ch, time.Second)
		if r.err != nil || len(r.tasks) != 0 {
			t.Errorf("at shutdown: got %d tasks, err %v; want none", len(r.tasks), r.err)
		}
	}
	<-s.done
	r := receive(t, claimAsync(context.Background(), s.dist, claimReq("q", 1, 30*time.Second)), time.Second)
	if len(r.tasks) != 0 {
		t.Errorf("claim after shutdown got %d tasks", len(r.tasks))
	}
}

// TestTwoServersClaimEachRunOnce runs 20 claim loops over two replicas,
// each with its own distributor and listener, against one database.
func TestTwoServersClaimEachRunOnce(t *testing.T) {
	t.Parallel()
	claimEachRunOnce(t, func(int) []string { return nil }, func(int) string { return "wf" })
}

// TestTwoServersTypedClaimEachRunOnce is TestTwoServersClaimEachRunOnce
// with claims for overlapping sets of types, which contend for the same
// runs through the type index.
func TestTwoServersTypedClaimEachRunOnce(t *testing.T) {
	t.Parallel()
	sets := [][]string{{"a", "b"}, {"b"}, {"a", "b", "c"}, {"c", "a"}}
	claimEachRunOnce(t, func(i int) []string { return sets[i%len(sets)] }, func(i int) string { return []string{"a", "b", "c"}[i%3] })
}

// claimEachRunOnce runs 20 claim loops, the i-th claiming types(i), over
// two replicas against one database, starts 1000 runs, the i-th of type
// runType(i), and checks that each is claimed once and all complete.
func claimEachRunOnce(t *testing.T, types func(i int) []string, runType func(i int) string) {
	claimEachRunOnceWith(t, false, types, runType)
}

// claimEachRunOnceWith is claimEachRunOnce; with handoff, both replicas
// hand runs to their parked claims, and a fifth of the runs are started
// one by one, concurrently, on both.
func claimEachRunOnceWith(t *testing.T, handoff bool, types func(i int) []string, runType func(i int) string) {
	pool, url := pgtest.NewPool(t)
	servers := []*server{newServer(t, pool, url, time.Minute), newServer(t, pool, url, time.Minute)}
	if handoff {
		for _, s := range servers {
			s.store.HandOffTo(s.dist)
		}
	}
	const total = 1000
	var (
		mu        sync.Mutex
		seen      = map[string]int{}
		completed atomic.Int64
		allDone   = make(chan struct{})
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := range 20 {
		s := servers[i%2]
		req := claimReq("q", 10, time.Second)
		req.WorkflowTypes = types(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				tasks, err := s.dist.Claim(ctx, req)
				if err != nil {
					return
				}
				for _, task := range tasks {
					mu.Lock()
					seen[task.RunID]++
					mu.Unlock()
					if _, err := s.store.CompleteRun(context.Background(), ns, task.RunID, task.LeaseID, json.RawMessage(`true`)); err != nil {
						t.Errorf("complete %s: %v", task.RunID, err)
						continue
					}
					if completed.Add(1) == total {
						close(allDone)
					}
				}
			}
		}()
	}
	batches := total / 100
	if handoff {
		batches = total * 4 / 5 / 100
		var starts sync.WaitGroup
		for i := range total / 5 {
			starts.Add(1)
			go func() {
				defer starts.Done()
				nr, err := domain.StartRequest{WorkflowType: runType(i), TaskQueue: "q"}.Validate(domain.PayloadLimits{MaxBytes: 1 << 20})
				if err == nil {
					_, _, err = servers[i%2].store.StartRun(context.Background(), ns, nr)
				}
				if err != nil {
					t.Errorf("start: %v", err)
				}
			}()
		}
		defer starts.Wait()
	}
	for range batches {
		n := 0
		startRuns(t, servers[0].store.Store, "q", 100, func(r *domain.StartRequest) { r.WorkflowType = runType(n); n++ })
	}
	select {
	case <-allDone:
	case <-time.After(60 * time.Second):
		t.Fatalf("completed %d of %d runs", completed.Load(), total)
	}
	cancel()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != total {
		t.Errorf("distinct runs claimed: got %d, want %d", len(seen), total)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("run %s claimed %d times", id, n)
		}
	}
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM workflow_runs WHERE status = 'completed'`).Scan(&n); err != nil || n != total {
		t.Errorf("completed runs in the database: got %d (err %v), want %d", n, err, total)
	}
}
