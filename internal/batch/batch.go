// Package batch groups concurrent calls into batches (group commit). The
// server uses it to complete many runs in one statement, and the Go SDK to
// report many completions in one request.
package batch

import "sync"

// Batcher groups concurrent calls into batches, so that many requests
// share one statement and one commit (group commit). Nothing waits to fill
// a batch: a call that finds fewer than maxInflight batches in flight runs
// at once with whatever has queued; calls that arrive while batches are in
// flight queue up and go together in the next one. Latency when idle is one
// statement; throughput under load is that of large batches.
type Batcher[Req, Res any] struct {
	exec        func([]Req) []Res // one result per request, in order
	size        func(Req) int     // bytes a request adds to a batch
	maxBatch    int               // requests in a batch
	maxBytes    int               // bytes in a batch (one request may exceed it)
	maxInflight int

	mu       sync.Mutex
	pending  []*call[Req, Res]
	inflight int
}

type call[Req, Res any] struct {
	req  Req
	res  Res
	done chan struct{}
}

// New returns a batcher that runs exec on batches of at most maxBatch
// requests or maxBytes bytes (as size counts them; a single request may
// exceed it), with at most maxInflight batches running at once. exec
// returns one result per request, in order.
func New[Req, Res any](maxBatch, maxBytes, maxInflight int, size func(Req) int, exec func([]Req) []Res) *Batcher[Req, Res] {
	return &Batcher[Req, Res]{exec: exec, size: size, maxBatch: maxBatch, maxBytes: maxBytes, maxInflight: maxInflight}
}

// Do runs req in some batch and returns its result.
func (b *Batcher[Req, Res]) Do(req Req) Res {
	c := &call[Req, Res]{req: req, done: make(chan struct{})}
	b.mu.Lock()
	b.pending = append(b.pending, c)
	if b.inflight < b.maxInflight {
		b.inflight++
		batch := b.take()
		b.mu.Unlock()
		b.run(batch)
		// Whatever queued meanwhile is drained by a goroutine of its own,
		// so that this caller is not kept serving others.
		b.mu.Lock()
		if len(b.pending) > 0 {
			go b.drain()
		} else {
			b.inflight--
		}
	}
	b.mu.Unlock()
	<-c.done
	return c.res
}

// take removes the next batch from pending. The caller holds the mutex.
func (b *Batcher[Req, Res]) take() []*call[Req, Res] {
	n, bytes := 0, 0
	for n < len(b.pending) && n < b.maxBatch {
		bytes += b.size(b.pending[n].req)
		if n > 0 && bytes > b.maxBytes {
			break
		}
		n++
	}
	batch := b.pending[:n:n]
	b.pending = b.pending[n:]
	return batch
}

// drain runs batches until nothing is pending, holding one in-flight slot.
func (b *Batcher[Req, Res]) drain() {
	for {
		b.mu.Lock()
		if len(b.pending) == 0 {
			b.inflight--
			b.mu.Unlock()
			return
		}
		batch := b.take()
		b.mu.Unlock()
		b.run(batch)
	}
}

func (b *Batcher[Req, Res]) run(batch []*call[Req, Res]) {
	reqs := make([]Req, len(batch))
	for i, c := range batch {
		reqs[i] = c.req
	}
	results := b.exec(reqs)
	for i, c := range batch {
		c.res = results[i]
		close(c.done)
	}
}

// Isolate turns exec, which runs a whole batch and may fail it as a whole,
// into an exec for New that fails each request for its own fault only:
// when exec fails with an error that splittable says a request may have
// caused (rather than the service), the batch is split in halves and each
// half run again, down to single requests, so that the others succeed and
// each culprit gets the error alone. An error not splittable, or a single
// request's, becomes that of each request of the batch through fail.
// Each culprit costs about 2·log2(batch size) more runs of exec.
func Isolate[Req, Res any](exec func([]Req) ([]Res, error), splittable func(error) bool, fail func(error) Res) func([]Req) []Res {
	var run func(reqs []Req, res []Res)
	run = func(reqs []Req, res []Res) {
		got, err := exec(reqs)
		switch {
		case err == nil:
			copy(res, got)
		case len(reqs) > 1 && splittable(err):
			h := len(reqs) / 2
			run(reqs[:h], res[:h])
			run(reqs[h:], res[h:])
		default:
			for i := range res {
				res[i] = fail(err)
			}
		}
	}
	return func(reqs []Req) []Res {
		res := make([]Res, len(reqs))
		run(reqs, res)
		return res
	}
}
