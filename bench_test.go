package kagzi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kagzi/kagzi"
	"github.com/kagzi/kagzi/api"
	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

// benchServer runs a whole Kagzi server over HTTP on a fresh database.
func benchServer(b *testing.B) (*kagzi.Server, string) {
	b.Helper()
	pool, url := pgtest.NewPool(b)
	return benchServerOn(b, pool, url)
}

// benchServerOn runs a whole Kagzi server over HTTP on the database at url.
func benchServerOn(b *testing.B, pool *pgxpool.Pool, url string) (*kagzi.Server, string) {
	b.Helper()
	srv := kagzi.NewServer(kagzi.Config{
		DatabaseURL: url,
		Pool:        pool,
		Limits: api.Limits{
			Payload:           domain.PayloadLimits{MaxBytes: domain.DefaultPayloadMaxBytes, WarnBytes: domain.DefaultPayloadWarnBytes},
			MaxBatch:          1000,
			MaxBatchBytes:     32 << 20,
			MaxWait:           30 * time.Second,
			LeaseDuration:     30 * time.Second,
			HeartbeatInterval: 10 * time.Second,
		},
		Logger: slog.New(slog.DiscardHandler),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	hs := httptest.NewServer(srv.API)
	b.Cleanup(func() {
		cancel()
		<-done
		hs.Close()
	})
	for srv.Listener.Ready() != nil {
		time.Sleep(time.Millisecond)
	}
	return srv, hs.URL + "/v1/namespaces/default"
}

var benchClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}

func post(b *testing.B, url string, body, out any) {
	raw, err := json.Marshal(body)
	if err != nil {
		b.Error(err)
		return
	}
	resp, err := benchClient.Post(url, "application/json", bytes.NewReader(raw))
	if err != nil {
		b.Error(err)
		return
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		b.Errorf("POST %s: %d %s", url, resp.StatusCode, data)
		return
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			b.Error(err)
		}
	}
}

type tasks struct {
	Tasks []domain.Task `json:"tasks"`
}

// BenchmarkPickupLatency measures the time from sending a start to a
// parked HTTP claim returning that run, as an idle worker's claim is
// parked: its queue known to have nothing for it, so that the start hands
// the run to it (see distributor.Offer). Both HTTP round trips count.
func BenchmarkPickupLatency(b *testing.B) {
	srv, base := benchServer(b)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		got := make(chan tasks, 1)
		go func() {
			var t tasks
			post(b, base+"/task-queues/lat/claim", map[string]any{"wait_ms": 10000}, &t)
			got <- t
		}()
		for { // parked, and its first look found nothing
			if slot, ok := srv.Distributor.Offer("default", "lat", "w"); ok {
				slot.Cancel()
				break
			}
			time.Sleep(50 * time.Microsecond)
		}
		start := time.Now()
		post(b, base+"/workflows", map[string]any{"workflow_type": "w", "task_queue": "lat"}, nil)
		t := <-got
		lat = append(lat, time.Since(start))
		if len(t.Tasks) != 1 {
			b.Fatalf("claim got %d tasks", len(t.Tasks))
		}
		post(b, base+"/workflows/"+t.Tasks[0].RunID+"/complete", map[string]any{"lease_id": t.Tasks[0].LeaseID}, nil)
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkClaimThroughput measures runs claimed and completed per second
// over HTTP by 8 workers claiming batches of 100 and completing each run
// with its own request; the runs are started beforehand in batches.
func BenchmarkClaimThroughput(b *testing.B) {
	_, base := benchServer(b)
	startBatches(b, base, "tp", b.N)
	var done atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done.Load() < int64(b.N) {
				var t tasks
				post(b, base+"/task-queues/tp/claim", map[string]any{"max_tasks": 100, "wait_ms": 200}, &t)
				var inner sync.WaitGroup
				for _, task := range t.Tasks {
					inner.Add(1)
					go func() {
						defer inner.Done()
						post(b, fmt.Sprintf("%s/workflows/%s/complete", base, task.RunID), map[string]any{"lease_id": task.LeaseID}, nil)
						done.Add(1)
					}()
				}
				inner.Wait()
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "runs/s")
}

// startBatches starts n runs of type w on queue, in batches of 1000.
func startBatches(b *testing.B, base, queue string, n int) {
	b.Helper()
	for i := 0; i < n; i += 1000 {
		batch := make([]map[string]any, min(1000, n-i))
		for j := range batch {
			batch[j] = map[string]any{"workflow_type": "w", "task_queue": queue}
		}
		post(b, base+"/workflows/batch", map[string]any{"workflows": batch}, nil)
	}
}
