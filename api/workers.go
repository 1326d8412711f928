package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/kagzi/kagzi/domain"
)

// WorkerStore is what the worker endpoints need of storage.
type WorkerStore interface {
	RegisterWorker(ctx context.Context, namespace string, w domain.Worker) (domain.Worker, error)
	GetWorker(ctx context.Context, namespace, workerID string) (domain.Worker, error)
	ListWorkers(ctx context.Context, f domain.WorkerFilter) ([]domain.Worker, string, error)
	WorkerHeartbeat(ctx context.Context, namespace, workerID string, hb domain.WorkerHeartbeat) (domain.HeartbeatResult, error)
	DrainWorker(ctx context.Context, namespace, workerID string) (domain.Worker, error)
	DeregisterWorker(ctx context.Context, namespace, workerID string) (domain.Worker, error)
}

type registerResponse struct {
	domain.Worker
	HeartbeatIntervalMS int64 `json:"heartbeat_interval_ms"`
}

func (s *Server) registerWorker(w http.ResponseWriter, r *http.Request) error {
	ns := chi.URLParam(r, "namespace")
	var req domain.RegisterWorker
	if err := decode(w, r, 64<<10, &req); err != nil {
		return err
	}
	worker, err := req.Validate()
	if err != nil {
		return err
	}
	worker, err = s.Workers.RegisterWorker(r.Context(), ns, worker)
	if err != nil {
		return err
	}
	w.Header().Set("Location", fmt.Sprintf("/v1/namespaces/%s/workers/%s", ns, worker.WorkerID))
	writeJSON(w, http.StatusCreated, registerResponse{Worker: worker, HeartbeatIntervalMS: s.Limits.HeartbeatInterval.Milliseconds()})
	return nil
}

func (s *Server) getWorker(w http.ResponseWriter, r *http.Request) error {
	if err := noQuery(r); err != nil {
		return err
	}
	worker, err := s.Workers.GetWorker(r.Context(), chi.URLParam(r, "namespace"), chi.URLParam(r, "worker_id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, worker)
	return nil
}

type listWorkersResponse struct {
	Workers    []domain.Worker `json:"workers"`
	NextCursor *string         `json:"next_cursor"`
}

func (s *Server) listWorkers(w http.ResponseWriter, r *http.Request) error {
	q, err := newQuery(r, "limit", "cursor", "task_queue", "status")
	if err != nil {
		return err
	}
	f := domain.WorkerFilter{
		Namespace: chi.URLParam(r, "namespace"),
		TaskQueue: q.get("task_queue"),
		Status:    domain.WorkerStatus(q.get("status")),
	}
	if f.Page, err = q.page(); err != nil {
		return err
	}
	if f.Status != "" && !f.Status.Valid() {
		return domain.Invalid("status", "must be online, draining or offline, not %q", f.Status)
	}
	if f.TaskQueue != "" {
		if err := domain.ValidateIdent("task_queue", f.TaskQueue); err != nil {
			return err
		}
	}
	workers, next, err := s.Workers.ListWorkers(r.Context(), f)
	if err != nil {
		return err
	}
	if workers == nil {
		workers = []domain.Worker{}
	}
	writeJSON(w, http.StatusOK, listWorkersResponse{Workers: workers, NextCursor: encodeCursor(next)})
	return nil
}

func (s *Server) workerHeartbeat(w http.ResponseWriter, r *http.Request) error {
	var hb domain.WorkerHeartbeat
	// Room for run_ids of domain.MaxHeartbeatRuns UUIDs.
	if err := decode(w, r, 512<<10, &hb); err != nil {
		return err
	}
	if err := hb.Validate(); err != nil {
		return err
	}
	res, err := s.Workers.WorkerHeartbeat(r.Context(), chi.URLParam(r, "namespace"), chi.URLParam(r, "worker_id"), hb)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *Server) drainWorker(w http.ResponseWriter, r *http.Request) error {
	if err := decode(w, r, 1<<10, &struct{}{}); err != nil {
		return err
	}
	worker, err := s.Workers.DrainWorker(r.Context(), chi.URLParam(r, "namespace"), chi.URLParam(r, "worker_id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, worker)
	return nil
}

func (s *Server) deregisterWorker(w http.ResponseWriter, r *http.Request) error {
	if err := noQuery(r); err != nil {
		return err
	}
	worker, err := s.Workers.DeregisterWorker(r.Context(), chi.URLParam(r, "namespace"), chi.URLParam(r, "worker_id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, worker)
	return nil
}
