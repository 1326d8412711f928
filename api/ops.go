package api

import (
	"context"
	"net/http"
	"time"
)

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if err := noQuery(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

type readyStatus struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if err := noQuery(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	res := readyStatus{Status: "ok", Checks: map[string]string{}}
	status := http.StatusOK
	for name, err := range s.Ready(ctx) {
		res.Checks[name] = "ok"
		if err != nil {
			res.Checks[name] = err.Error()
			res.Status = "unavailable"
			status = http.StatusServiceUnavailable
		}
	}
	writeJSON(w, status, res)
}

func (s *Server) openapi(w http.ResponseWriter, r *http.Request) {
	if err := noQuery(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(s.OpenAPI)
}

type infoLimits struct {
	MaxPayloadBytes     int   `json:"max_payload_bytes"`
	WarnPayloadBytes    int   `json:"warn_payload_bytes"`
	MaxBatchSize        int   `json:"max_batch_size"`
	MaxBatchBytes       int64 `json:"max_batch_bytes"`
	MaxWaitMS           int64 `json:"max_wait_ms"`
	LeaseDurationMS     int64 `json:"lease_duration_ms"`
	HeartbeatIntervalMS int64 `json:"heartbeat_interval_ms"`
	MaxHistoryBytes     int64 `json:"max_history_bytes"`
	MaxBufferedSignals  int   `json:"max_buffered_signals"`
	MaxSignalsPerRun    int   `json:"max_signals_per_run"`
	MaxLiveChildren     int   `json:"max_live_children"`
	MaxChildDepth       int   `json:"max_child_depth"`
}

// Timeouts are the limits on slow or stalled clients, reported in
// /v1/info: to read a request's headers, to read its body once the headers
// are in, for a keep-alive connection to send its next request, and to
// write an answer from its first byte.
type Timeouts struct {
	ReadHeader, ReadBody, Idle, Write time.Duration
}

type infoTimeouts struct {
	ReadHeader int64 `json:"read_header"`
	ReadBody   int64 `json:"read_body"`
	Idle       int64 `json:"idle"`
	Write      int64 `json:"write"`
}

type infoResponse struct {
	Version    string       `json:"version"`
	APIVersion string       `json:"api_version"`
	Auth       string       `json:"auth"`
	Limits     infoLimits   `json:"limits"`
	TimeoutsMS infoTimeouts `json:"timeouts_ms"`
}

func (s *Server) info(w http.ResponseWriter, r *http.Request) {
	if err := noQuery(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	l := s.Limits
	writeJSON(w, http.StatusOK, infoResponse{
		Version:    s.Version,
		APIVersion: "v1",
		Auth:       s.authState(),
		Limits: infoLimits{
			MaxPayloadBytes:     l.Payload.MaxBytes,
			WarnPayloadBytes:    l.Payload.WarnBytes,
			MaxBatchSize:        l.MaxBatch,
			MaxBatchBytes:       l.MaxBatchBytes,
			MaxWaitMS:           l.MaxWait.Milliseconds(),
			LeaseDurationMS:     l.LeaseDuration.Milliseconds(),
			HeartbeatIntervalMS: l.HeartbeatInterval.Milliseconds(),
			MaxHistoryBytes:     l.maxHistoryBytes(),
			MaxBufferedSignals:  l.signalLimits().MaxBuffered,
			MaxSignalsPerRun:    l.signalLimits().MaxPerRun,
			MaxLiveChildren:     l.Children.WithDefaults().MaxLive,
			MaxChildDepth:       l.Children.WithDefaults().MaxDepth,
		},
		TimeoutsMS: infoTimeouts{
			ReadHeader: s.Timeouts.ReadHeader.Milliseconds(),
			ReadBody:   s.Timeouts.ReadBody.Milliseconds(),
			Idle:       s.Timeouts.Idle.Milliseconds(),
			Write:      s.Timeouts.Write.Milliseconds(),
		},
	})
}
