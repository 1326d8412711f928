package api

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kagzi/kagzi/domain"
)

// Metrics are the API's Prometheus measurements. A nil *Metrics records
// nothing.
type Metrics struct {
	started   prometheus.Counter
	completed prometheus.Counter
	failed    *prometheus.CounterVec
}

// NewMetrics creates the API's metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		started: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kagzi_runs_started_total", Help: "Runs created by start and batch start.",
		}),
		completed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kagzi_runs_completed_total", Help: "Runs completed by their workers.",
		}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kagzi_runs_failed_total",
			Help: "Run attempts failed by their workers, by outcome: retry (scheduled) or failed (terminal).",
		}, []string{"outcome"}),
	}
	reg.MustRegister(m.started, m.completed, m.failed)
	return m
}

func (m *Metrics) runsStarted(n int) {
	if m != nil {
		m.started.Add(float64(n))
	}
}

func (m *Metrics) runCompleted() {
	if m != nil {
		m.completed.Inc()
	}
}

func (m *Metrics) runFailed(status domain.RunStatus) {
	if m == nil {
		return
	}
	outcome := "retry"
	if status == domain.RunFailed {
		outcome = "failed"
	}
	m.failed.WithLabelValues(outcome).Inc()
}

// DepthReader counts live runs by queue and status.
type DepthReader interface {
	QueueDepths(ctx context.Context) ([]domain.QueueDepth, error)
}

// DepthCollector exports queue depth by status, read from the database on
// each scrape.
type DepthCollector struct {
	reader DepthReader
	desc   *prometheus.Desc
}

// NewDepthCollector returns a collector over reader.
func NewDepthCollector(reader DepthReader) *DepthCollector {
	return &DepthCollector{
		reader: reader,
		desc: prometheus.NewDesc("kagzi_queue_runs", "Live runs by namespace, task queue and status.",
			[]string{"namespace", "task_queue", "status"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *DepthCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *DepthCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	depths, err := c.reader.QueueDepths(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for _, d := range depths {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(d.Count),
			d.Namespace, d.TaskQueue, string(d.Status))
	}
}
