package distributor

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the distributor's Prometheus measurements. A nil *Metrics
// records nothing.
type Metrics struct {
	claims          prometheus.Counter
	claimedRuns     prometheus.Counter
	claimLatency    prometheus.Histogram
	parkedWaiters   prometheus.Gauge
	claimStatements prometheus.Counter
	notifications   prometheus.Counter
	releasedRuns    prometheus.Counter
	handoffs        prometheus.Counter
}

// NewMetrics creates the distributor's metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		claims: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kagzi_claims_total", Help: "Claim requests answered.",
		}),
		claimedRuns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kagzi_claimed_runs_total", Help: "Runs handed to workers by claims.",
		}),
		claimLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kagzi_claim_duration_seconds",
			Help:    "Time from a claim's arrival to its answer, including the time parked.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
		}),
		parkedWaiters: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kagzi_parked_claims", Help: "Claims parked waiting for work.",
		}),
		claimStatements: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kagzi_claim_statements_total", Help: "Claim statements sent to the database.",
		}),
		notifications: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kagzi_queue_notifications_total", Help: "Queue notifications received.",
		}),
		releasedRuns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kagzi_released_runs_total", Help: "Claimed runs put back because their claimant left.",
		}),
		handoffs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kagzi_handoffs_total", Help: "Runs claimed for a parked claim by the transaction that made them claimable.",
		}),
	}
	reg.MustRegister(m.claims, m.claimedRuns, m.claimLatency, m.parkedWaiters,
		m.claimStatements, m.notifications, m.releasedRuns, m.handoffs)
	return m
}

func (m *Metrics) claimDone(start time.Time, n int) {
	if m == nil {
		return
	}
	m.claims.Inc()
	m.claimedRuns.Add(float64(n))
	m.claimLatency.Observe(time.Since(start).Seconds())
}

func (m *Metrics) parked(delta int) {
	if m != nil {
		m.parkedWaiters.Add(float64(delta))
	}
}

func (m *Metrics) claimStatement() {
	if m != nil {
		m.claimStatements.Inc()
	}
}

func (m *Metrics) notification() {
	if m != nil {
		m.notifications.Inc()
	}
}

func (m *Metrics) released(n int) {
	if m != nil {
		m.releasedRuns.Add(float64(n))
	}
}

func (m *Metrics) handedOff() {
	if m != nil {
		m.handoffs.Inc()
	}
}
