package batch

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// within is how long a test waits for anything before it fails.
const within = 10 * time.Second

// item is a request of a test: its ID, and the bytes it adds to a batch.
type item struct{ id, size int }

// recorder is an exec for tests: it records each batch it is given, tells
// entered, holds the batch until gate is closed, and answers id*2 for
// each request.
type recorder struct {
	gate    chan struct{}
	entered chan []item

	mu      sync.Mutex
	batches [][]item

	running, maxRunning atomic.Int32
}

func newRecorder() *recorder {
	return &recorder{gate: make(chan struct{}), entered: make(chan []item, 1000)}
}

func (r *recorder) exec(reqs []item) []int {
	n := r.running.Add(1)
	for {
		m := r.maxRunning.Load()
		if n <= m || r.maxRunning.CompareAndSwap(m, n) {
			break
		}
	}
	defer r.running.Add(-1)
	batch := slices.Clone(reqs)
	r.mu.Lock()
	r.batches = append(r.batches, batch)
	r.mu.Unlock()
	r.entered <- batch
	<-r.gate
	res := make([]int, len(reqs))
	for i, q := range reqs {
		res[i] = q.id * 2
	}
	return res
}

// sizes returns the sizes of the batches exec was given, in order.
func (r *recorder) sizes() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s []int
	for _, b := range r.batches {
		s = append(s, len(b))
	}
	return s
}

// ids returns the IDs of the requests of each batch exec was given.
func (r *recorder) ids() [][]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var all [][]int
	for _, b := range r.batches {
		var ids []int
		for _, q := range b {
			ids = append(ids, q.id)
		}
		all = append(all, ids)
	}
	return all
}

func itemSize(q item) int { return q.size }

// setup is a batcher over a recorder, with the results of its calls.
type setup struct {
	b       *Batcher[item, int]
	rec     *recorder
	results chan result
}

type result struct{ id, got int }

func newSetup(maxBatch, maxBytes, maxInflight int) *setup {
	rec := newRecorder()
	return &setup{
		b:       New(maxBatch, maxBytes, maxInflight, itemSize, rec.exec),
		rec:     rec,
		results: make(chan result, 1000),
	}
}

// call calls Do from a goroutine of its own; its result goes to results.
func (s *setup) call(q item) {
	go func() { s.results <- result{q.id, s.b.Do(q)} }()
}

// pending is the number of calls queued for the next batch.
func (s *setup) pending() int {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	return len(s.b.pending)
}

// waitPending waits until n calls are queued. Queuing offers no event to
// wait on, so it polls.
func (s *setup) waitPending(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(within)
	for s.pending() != n {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %d queued calls; %d are", n, s.pending())
		}
		time.Sleep(time.Millisecond)
	}
}

// waitIdle waits until nothing is queued or in flight: every in-flight
// slot was given back, once.
func (s *setup) waitIdle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		s.b.mu.Lock()
		inflight, pending := s.b.inflight, len(s.b.pending)
		s.b.mu.Unlock()
		if inflight == 0 && pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after every call returned: %d batches in flight and %d calls queued, want none", inflight, pending)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitEntered waits for exec to be given a batch and returns it.
func (s *setup) waitEntered(t *testing.T) []item {
	t.Helper()
	select {
	case b := <-s.rec.entered:
		return b
	case <-time.After(within):
		t.Fatalf("exec was given no batch within %s", within)
		return nil
	}
}

// block starts one call and waits until exec holds it, so that the calls
// that follow queue behind it (with maxInflight 1).
func (s *setup) block(t *testing.T, q item) {
	t.Helper()
	s.call(q)
	if got := s.waitEntered(t); len(got) != 1 || got[0] != q {
		t.Fatalf("first batch: got %v, want [%v] alone", got, q)
	}
}

// collect waits for n results and fails t unless each caller got id*2.
func (s *setup) collect(t *testing.T, n int) {
	t.Helper()
	seen := map[int]bool{}
	for range n {
		select {
		case r := <-s.results:
			if r.got != r.id*2 {
				t.Errorf("caller %d got %d, want %d (its own result)", r.id, r.got, r.id*2)
			}
			if seen[r.id] {
				t.Errorf("caller %d answered twice", r.id)
			}
			seen[r.id] = true
		case <-time.After(within):
			t.Fatalf("got %d of %d results within %s", len(seen), n, within)
		}
	}
}

func TestBatcherGroupsConcurrentCalls(t *testing.T) {
	t.Parallel()
	const n = 50
	s := newSetup(100, 1<<20, 1)
	s.block(t, item{id: 0})
	for i := 1; i < n; i++ {
		s.call(item{id: i})
	}
	s.waitPending(t, n-1)
	close(s.rec.gate)
	s.collect(t, n)
	s.waitIdle(t)

	if got, want := s.rec.sizes(), []int{1, n - 1}; !slices.Equal(got, want) {
		t.Fatalf("batch sizes: got %v, want %v (the calls that queued go together)", got, want)
	}
	ids := s.rec.ids()[1]
	slices.Sort(ids)
	for i, id := range ids {
		if id != i+1 {
			t.Fatalf("second batch: got requests %v, want 1..%d once each", ids, n-1)
		}
	}
}

func TestBatcherKeepsArrivalOrder(t *testing.T) {
	t.Parallel()
	const n = 20
	s := newSetup(100, 1<<20, 1)
	s.block(t, item{id: 0})
	// One at a time, so that the order they queue in is known.
	for i := 1; i < n; i++ {
		s.call(item{id: i})
		s.waitPending(t, i)
	}
	close(s.rec.gate)
	s.collect(t, n)
	s.waitIdle(t)
	want := make([]int, n-1)
	for i := range want {
		want[i] = i + 1
	}
	if got := s.rec.ids(); len(got) != 2 || !slices.Equal(got[1], want) {
		t.Fatalf("batches: got %v, want [[0] %v]", got, want)
	}
}

func TestBatcherRespectsMaxBatch(t *testing.T) {
	t.Parallel()
	const n, maxBatch = 26, 10
	s := newSetup(maxBatch, 1<<20, 1)
	s.block(t, item{id: 0})
	for i := 1; i < n; i++ {
		s.call(item{id: i})
	}
	s.waitPending(t, n-1)
	close(s.rec.gate)
	s.collect(t, n)
	s.waitIdle(t)
	if got, want := s.rec.sizes(), []int{1, 10, 10, 5}; !slices.Equal(got, want) {
		t.Fatalf("batch sizes with maxBatch %d: got %v, want %v", maxBatch, got, want)
	}
}

func TestBatcherRespectsMaxBytes(t *testing.T) {
	t.Parallel()
	s := newSetup(100, 100, 1)
	s.block(t, item{id: 0, size: 10})
	queued := []item{{1, 40}, {2, 40}, {3, 40}, {4, 150}, {5, 10}, {6, 90}, {7, 10}}
	for i, q := range queued {
		s.call(q)
		s.waitPending(t, i+1)
	}
	close(s.rec.gate)
	s.collect(t, len(queued)+1)
	s.waitIdle(t)
	// 40+40 fit in 100 bytes and a third 40 does not; 150 is over the limit
	// but goes alone; 10+90 fill a batch exactly.
	want := [][]int{{0}, {1, 2}, {3}, {4}, {5, 6}, {7}}
	if got := s.rec.ids(); !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches with maxBytes 100: got %v, want %v", got, want)
	}
}

func TestBatcherOversizedCallAloneRunsAtOnce(t *testing.T) {
	t.Parallel()
	s := newSetup(100, 100, 1)
	close(s.rec.gate)
	s.call(item{id: 7, size: 1000})
	s.collect(t, 1)
	if got := s.rec.ids(); len(got) != 1 || !slices.Equal(got[0], []int{7}) {
		t.Fatalf("batches: got %v, want [[7]]", got)
	}
}

func TestBatcherBoundsInflight(t *testing.T) {
	t.Parallel()
	const n, maxInflight = 200, 3
	s := newSetup(5, 1<<20, maxInflight)
	for i := range n {
		s.call(item{id: i})
	}
	// maxInflight calls find a free slot and hold it in exec; all the
	// others queue behind them.
	held := 0
	for range maxInflight {
		held += len(s.waitEntered(t))
	}
	s.waitPending(t, n-held)
	select {
	case b := <-s.rec.entered:
		t.Fatalf("exec was given a batch of %d while %d were in flight (maxInflight %d)", len(b), maxInflight, maxInflight)
	default:
	}
	if got := s.rec.running.Load(); got != maxInflight {
		t.Fatalf("execs running with every call made: got %d, want %d", got, maxInflight)
	}
	close(s.rec.gate)
	s.collect(t, n)
	s.waitIdle(t)
	if got := s.rec.maxRunning.Load(); got != maxInflight {
		t.Fatalf("most execs running at once: got %d, want %d", got, maxInflight)
	}
	total := 0
	for _, size := range s.rec.sizes() {
		if size > 5 {
			t.Errorf("a batch of %d, over maxBatch 5", size)
		}
		total += size
	}
	if total != n {
		t.Fatalf("requests executed: got %d, want %d (each once)", total, n)
	}
}

func TestBatcherLoneCallRunsAtOnce(t *testing.T) {
	t.Parallel()
	s := newSetup(100, 1<<20, 1)
	close(s.rec.gate)
	// One after another: each finds nothing in flight, runs in a batch of
	// its own and gives its slot back (else the next one would wait for
	// ever).
	for i := range 5 {
		done := make(chan int, 1)
		go func() { done <- s.b.Do(item{id: i}) }()
		select {
		case got := <-done:
			if got != i*2 {
				t.Fatalf("call %d: got %d, want %d", i, got, i*2)
			}
		case <-time.After(within):
			t.Fatalf("a lone call did not return within %s", within)
		}
	}
	if got, want := s.rec.sizes(), []int{1, 1, 1, 1, 1}; !slices.Equal(got, want) {
		t.Fatalf("batch sizes: got %v, want %v", got, want)
	}
	s.waitIdle(t)
}

// Isolate fails only the requests at fault: a batch that fails for one
// request's sake is split until the culprit is alone, and the others get
// their results; an error that is nobody's fault fails the whole batch.
func TestIsolate(t *testing.T) {
	errBad := errors.New("bad request")
	errDown := errors.New("service down")
	var runs [][]int
	down := false
	exec := Isolate(func(reqs []int) ([]string, error) {
		runs = append(runs, slices.Clone(reqs))
		if down {
			return nil, errDown
		}
		res := make([]string, len(reqs))
		for i, r := range reqs {
			if r < 0 {
				return nil, errBad
			}
			res[i] = fmt.Sprint(r)
		}
		return res, nil
	}, func(err error) bool { return err == errBad }, func(err error) string { return "error: " + err.Error() })

	got := exec([]int{1, -2, 3, 4, 5, -6, 7, 8})
	want := []string{"1", "error: bad request", "3", "4", "5", "error: bad request", "7", "8"}
	if !slices.Equal(got, want) {
		t.Errorf("results = %q, want %q", got, want)
	}
	if len(runs) > 1+2*2*3 {
		t.Errorf("exec ran %d times for 2 culprits among 8, want at most %d", len(runs), 1+2*2*3)
	}

	runs, down = nil, true
	got = exec([]int{1, 2, 3})
	if want := []string{"error: service down", "error: service down", "error: service down"}; !slices.Equal(got, want) || len(runs) != 1 {
		t.Errorf("service down: results = %q after %d runs, want %q after 1", got, len(runs), want)
	}
}
