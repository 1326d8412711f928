package api

import (
	"context"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/kagzi/kagzi/domain"
)

// TaskQueueStore is what the task-queue endpoints need of storage.
type TaskQueueStore interface {
	ListTaskQueues(ctx context.Context, namespace string, page domain.Page) ([]domain.TaskQueue, string, error)
	PatchTaskQueue(ctx context.Context, namespace, queue string, p domain.TaskQueuePatch) (domain.TaskQueue, error)
}

type taskQueuesResponse struct {
	TaskQueues []domain.TaskQueue `json:"task_queues"`
	NextCursor *string            `json:"next_cursor"`
}

// isQueueKey reports whether key can be a task-queue list's key: a queue
// name.
func isQueueKey(key string) bool { return domain.ValidateIdent("cursor", key) == nil }

func (s *Server) listTaskQueues(w http.ResponseWriter, r *http.Request) error {
	q, err := newQuery(r, "limit", "cursor")
	if err != nil {
		return err
	}
	// Without a limit, as many as a page can hold: clients from before the
	// list was paginated read every queue in one answer up to that.
	page, err := q.pageOf(domain.MaxPageLimit, isQueueKey)
	if err != nil {
		return err
	}
	queues, next, err := s.TaskQueues.ListTaskQueues(r.Context(), chi.URLParam(r, "namespace"), page)
	if err != nil {
		return err
	}
	if queues == nil {
		queues = []domain.TaskQueue{}
	}
	writeJSON(w, http.StatusOK, taskQueuesResponse{TaskQueues: queues, NextCursor: encodeCursor(next)})
	return nil
}

func (s *Server) patchTaskQueue(w http.ResponseWriter, r *http.Request) error {
	queue := chi.URLParam(r, "queue")
	if err := domain.ValidateIdent("queue", queue); err != nil {
		return err
	}
	var p domain.TaskQueuePatch
	if err := decode(w, r, 64<<10, &p); err != nil {
		return err
	}
	if err := p.Validate(); err != nil {
		return err
	}
	q, err := s.TaskQueues.PatchTaskQueue(r.Context(), chi.URLParam(r, "namespace"), queue, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, q)
	return nil
}
