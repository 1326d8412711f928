package kagzi_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kagzi/kagzi/domain"
)

// Benchmarks of the step protocol's hot calls, over HTTP on the assembled
// server:
//
//	go test -run XXX -bench 'Step|Workflow' -benchtime 20000x -count 3 .

// claimAll starts n runs on queue and claims them all, 100 at a time.
func claimAll(b *testing.B, base, queue string, n int) []domain.Task {
	b.Helper()
	for i := 0; i < n; i += 1000 {
		batch := make([]map[string]any, min(1000, n-i))
		for j := range batch {
			batch[j] = map[string]any{"workflow_type": "w", "task_queue": queue}
		}
		post(b, base+"/workflows/batch", map[string]any{"workflows": batch}, nil)
	}
	var claimed []domain.Task
	for len(claimed) < n {
		var t tasks
		post(b, base+"/task-queues/"+queue+"/claim", map[string]any{"max_tasks": 100, "wait_ms": 1000}, &t)
		claimed = append(claimed, t.Tasks...)
	}
	return claimed
}

// BenchmarkStepReportBatch measures step records per second through
// POST .../steps/batch: 100 new steps of 100 runs a request, 4 clients.
func BenchmarkStepReportBatch(b *testing.B) {
	_, base := benchServer(b)
	held := claimAll(b, base, "sb", 400)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for c := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runs := held[c*100 : (c+1)*100]
			for {
				k := next.Add(100) - 100
				if k >= int64(b.N) {
					return
				}
				items := make([]map[string]any, len(runs))
				for i, t := range runs {
					items[i] = map[string]any{"run_id": t.RunID, "lease_id": t.LeaseID, "step": fmt.Sprint("s-", k),
						"outcome": "complete", "output": i}
				}
				post(b, base+"/steps/batch", map[string]any{"steps": items}, nil)
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "steps/s")
}

// BenchmarkStepCompleteWithoutBegin measures step records per second
// through POST .../steps/{step}/complete without begin, one step a
// request, 32 clients (the server group-commits them).
func BenchmarkStepCompleteWithoutBegin(b *testing.B) {
	_, base := benchServer(b)
	held := claimAll(b, base, "sc", 32)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for _, t := range held {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := next.Add(1); k <= int64(b.N); k = next.Add(1) {
				post(b, fmt.Sprintf("%s/workflows/%s/steps/s-%d/complete", base, t.RunID, k),
					map[string]any{"lease_id": t.LeaseID, "output": k}, nil)
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "steps/s")
}

// BenchmarkOneStepWorkflow measures one-step workflows per second over
// plain HTTP, as a batching worker runs them: 4 workers each claim up to
// 100 runs, record their step in one steps/batch request and complete them
// in one batch/complete request.
func BenchmarkOneStepWorkflow(b *testing.B) {
	_, base := benchServer(b)
	startBatches(b, base, "one", b.N)
	var done atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done.Load() < int64(b.N) {
				var t tasks
				post(b, base+"/task-queues/one/claim", map[string]any{"max_tasks": 100, "wait_ms": 200}, &t)
				if len(t.Tasks) == 0 {
					continue
				}
				steps := make([]map[string]any, len(t.Tasks))
				runs := make([]map[string]any, len(t.Tasks))
				for i, task := range t.Tasks {
					steps[i] = map[string]any{"run_id": task.RunID, "lease_id": task.LeaseID, "step": "s", "outcome": "complete", "output": i}
					runs[i] = map[string]any{"run_id": task.RunID, "lease_id": task.LeaseID, "output": i}
				}
				post(b, base+"/steps/batch", map[string]any{"steps": steps}, nil)
				post(b, base+"/workflows/batch/complete", map[string]any{"runs": runs}, nil)
				done.Add(int64(len(t.Tasks)))
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "runs/s")
}
