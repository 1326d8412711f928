package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/kagzi/kagzi/domain"
)

// RunOpsStore is what the run operations for people and dashboards need
// of storage.
type RunOpsStore interface {
	RetryRun(ctx context.Context, namespace, runID string) (domain.Run, error)
	TriggerSchedule(ctx context.Context, namespace, scheduleID string) (domain.Run, error)
	Stats(ctx context.Context, f domain.StatsFilter) (domain.Stats, error)
	ListWorkflowTypes(ctx context.Context, namespace string, page domain.Page) ([]domain.WorkflowTypeSummary, string, error)
	// ListNamespaces lists the namespaces in use; a nil allowed means all,
	// otherwise only those it names.
	ListNamespaces(ctx context.Context, allowed []string, page domain.Page) ([]domain.NamespaceSummary, string, error)
}

// AllowedNamespaces returns the namespaces the caller of r may see, nil
// meaning all. Authentication sets it; without it every namespace shows.
type AllowedNamespaces func(r *http.Request) []string

func (s *Server) retryWorkflow(w http.ResponseWriter, r *http.Request) error {
	if err := decode(w, r, 1<<10, &struct{}{}); err != nil {
		return err
	}
	run, err := s.RunOps.RetryRun(r.Context(), chi.URLParam(r, "namespace"), chi.URLParam(r, "run_id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, run)
	return nil
}

func (s *Server) triggerSchedule(w http.ResponseWriter, r *http.Request) error {
	if err := decode(w, r, 1<<10, &struct{}{}); err != nil {
		return err
	}
	ns := chi.URLParam(r, "namespace")
	run, err := s.RunOps.TriggerSchedule(r.Context(), ns, chi.URLParam(r, "schedule_id"))
	if err != nil {
		return err
	}
	s.metrics.runsStarted(1)
	w.Header().Set("Location", fmt.Sprintf("/v1/namespaces/%s/workflows/%s", ns, run.RunID))
	writeJSON(w, http.StatusCreated, run)
	return nil
}

func (s *Server) stats(w http.ResponseWriter, r *http.Request) error {
	q, err := newQuery(r, "window_ms", "bucket_ms", "task_queue", "workflow_type")
	if err != nil {
		return err
	}
	req := domain.StatsRequest{TaskQueue: q.get("task_queue"), WorkflowType: q.get("workflow_type")}
	maxMS := domain.MaxStatsWindow.Milliseconds()
	if req.WindowMS, err = q.int("window_ms", 3600000, 1, maxMS); err != nil {
		return err
	}
	if req.BucketMS, err = q.int("bucket_ms", 60000, 1, maxMS); err != nil {
		return err
	}
	f, err := req.Validate(chi.URLParam(r, "namespace"))
	if err != nil {
		return err
	}
	st, err := s.RunOps.Stats(r.Context(), f)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// isTypeKey reports whether key can be a workflow type, as a cursor of
// the workflow-type list holds; namespace cursors are checked like queue
// names (isQueueKey), which follow the same rule.
func isTypeKey(key string) bool { return domain.ValidateName("cursor", key) == nil }

type workflowTypesResponse struct {
	WorkflowTypes []domain.WorkflowTypeSummary `json:"workflow_types"`
	NextCursor    *string                      `json:"next_cursor"`
}

func (s *Server) listWorkflowTypes(w http.ResponseWriter, r *http.Request) error {
	q, err := newQuery(r, "limit", "cursor")
	if err != nil {
		return err
	}
	page, err := q.pageOf(domain.DefaultPageLimit, isTypeKey)
	if err != nil {
		return err
	}
	list, next, err := s.RunOps.ListWorkflowTypes(r.Context(), chi.URLParam(r, "namespace"), page)
	if err != nil {
		return err
	}
	if list == nil {
		list = []domain.WorkflowTypeSummary{}
	}
	writeJSON(w, http.StatusOK, workflowTypesResponse{WorkflowTypes: list, NextCursor: encodeCursor(next)})
	return nil
}

type namespacesResponse struct {
	Namespaces []domain.NamespaceSummary `json:"namespaces"`
	NextCursor *string                   `json:"next_cursor"`
}

func (s *Server) listNamespaces(w http.ResponseWriter, r *http.Request) error {
	q, err := newQuery(r, "limit", "cursor")
	if err != nil {
		return err
	}
	page, err := q.pageOf(domain.DefaultPageLimit, isQueueKey)
	if err != nil {
		return err
	}
	var allowed []string
	if s.AllowedNamespaces != nil {
		allowed = s.AllowedNamespaces(r)
	}
	list, next, err := s.RunOps.ListNamespaces(r.Context(), allowed, page)
	if err != nil {
		return err
	}
	if list == nil {
		list = []domain.NamespaceSummary{}
	}
	writeJSON(w, http.StatusOK, namespacesResponse{Namespaces: list, NextCursor: encodeCursor(next)})
	return nil
}
