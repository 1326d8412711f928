package api

import (
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/kagzi/kagzi/domain"
)

// startResponse is a started run without its payloads.
type startResponse struct {
	domain.Run
	AlreadyExists bool `json:"already_exists"`
}

func (s *Server) startWorkflow(w http.ResponseWriter, r *http.Request) error {
	ns := chi.URLParam(r, "namespace")
	var req domain.StartRequest
	if err := decode(w, r, s.Limits.singleBodyLimit(), &req); err != nil {
		return err
	}
	n, err := req.Validate(s.Limits.Payload)
	if err != nil {
		return err
	}
	run, created, err := s.Workflows.StartRun(r.Context(), ns, n)
	if err != nil {
		return err
	}
	if created {
		s.metrics.runsStarted(1)
	}
	if created && n.LargeInput {
		s.warnLarge(r, run.RunID, "input", len(n.Input))
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		w.Header().Set("Location", fmt.Sprintf("/v1/namespaces/%s/workflows/%s", ns, run.RunID))
	}
	writeJSON(w, status, startResponse{Run: run, AlreadyExists: !created})
	return nil
}

// warnLarge logs a payload that is accepted but over the warning threshold.
func (s *Server) warnLarge(r *http.Request, runID, field string, size int) {
	s.logger.LogAttrs(r.Context(), slog.LevelWarn, "large payload",
		slog.String("run_id", runID), slog.String("field", field), slog.Int("size_bytes", size),
		slog.Int("warn_bytes", s.Limits.Payload.WarnBytes))
}

type batchRequest struct {
	Workflows []domain.StartRequest `json:"workflows"`
}

type batchResponse struct {
	Workflows []domain.StartResult `json:"workflows"`
}

func (s *Server) startWorkflows(w http.ResponseWriter, r *http.Request) error {
	ns := chi.URLParam(r, "namespace")
	var req batchRequest
	if err := decode(w, r, s.Limits.MaxBatchBytes, &req); err != nil {
		return err
	}
	if len(req.Workflows) == 0 || len(req.Workflows) > s.Limits.MaxBatch {
		return domain.Invalid("workflows", "must hold 1 to %d items, not %d", s.Limits.MaxBatch, len(req.Workflows))
	}
	items := make([]domain.NewRun, len(req.Workflows))
	for i, it := range req.Workflows {
		n, err := it.Validate(s.Limits.Payload)
		if err != nil {
			return domain.PrefixField(err, fmt.Sprintf("workflows[%d]", i))
		}
		items[i] = n
	}
	results, err := s.Workflows.StartRuns(r.Context(), ns, items)
	if err != nil {
		return err
	}
	for i, res := range results {
		if !res.AlreadyExists {
			s.metrics.runsStarted(1)
		}
		if items[i].LargeInput && !res.AlreadyExists {
			s.warnLarge(r, res.RunID, fmt.Sprintf("workflows[%d].input", i), len(items[i].Input))
		}
	}
	writeJSON(w, http.StatusOK, batchResponse{Workflows: results})
	return nil
}

func (s *Server) getWorkflow(w http.ResponseWriter, r *http.Request) error {
	ns, runID := chi.URLParam(r, "namespace"), chi.URLParam(r, "run_id")
	q, err := newQuery(r, "wait_ms")
	if err != nil {
		return err
	}
	waitMS, err := q.int("wait_ms", 0, 0, math.MaxInt64)
	if err != nil {
		return err
	}
	wait, err := domain.WaitMS("wait_ms", waitMS, s.Limits.MaxWait)
	if err != nil {
		return err
	}
	var changed <-chan struct{}
	if wait > 0 {
		// Watch before reading, so that a change between the read and the
		// wait is not missed.
		var stop func()
		changed, stop = s.Watcher.WatchRun(runID)
		defer stop()
	}
	run, err := s.Workflows.GetRun(r.Context(), ns, runID)
	if err != nil {
		return err
	}
	if wait > 0 && !run.Status.Terminal() {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-changed:
		case <-t.C:
		case <-r.Context().Done():
			return r.Context().Err()
		}
		if run, err = s.Workflows.GetRun(r.Context(), ns, runID); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, run)
	return nil
}

type listRunsResponse struct {
	Workflows  []domain.Run `json:"workflows"`
	NextCursor *string      `json:"next_cursor"`
}

func (s *Server) listWorkflows(w http.ResponseWriter, r *http.Request) error {
	q, err := newQuery(r, "limit", "cursor", "status", "task_queue", "workflow_type", "external_id", "schedule_id")
	if err != nil {
		return err
	}
	f := domain.RunFilter{
		Namespace:    chi.URLParam(r, "namespace"),
		TaskQueue:    q.get("task_queue"),
		WorkflowType: q.get("workflow_type"),
		ExternalID:   q.get("external_id"),
		ScheduleID:   q.get("schedule_id"),
	}
	if f.Page, err = q.page(); err != nil {
		return err
	}
	if v := q.get("status"); v != "" {
		for _, st := range strings.Split(v, ",") {
			status := domain.RunStatus(strings.TrimSpace(st))
			if !status.Valid() {
				return domain.Invalid("status", "%q is not a run status", st)
			}
			f.Statuses = append(f.Statuses, status)
		}
	}
	if f.TaskQueue != "" {
		if err := domain.ValidateIdent("task_queue", f.TaskQueue); err != nil {
			return err
		}
	}
	if f.ScheduleID != "" {
		if err := domain.ValidateUUID("schedule_id", f.ScheduleID); err != nil {
			return err
		}
	}
	for field, v := range map[string]string{"workflow_type": f.WorkflowType, "external_id": f.ExternalID} {
		if v != "" {
			if err := domain.ValidateName(field, v); err != nil {
				return err
			}
		}
	}
	runs, next, err := s.Workflows.ListRuns(r.Context(), f)
	if err != nil {
		return err
	}
	if runs == nil {
		runs = []domain.Run{}
	}
	writeJSON(w, http.StatusOK, listRunsResponse{Workflows: runs, NextCursor: encodeCursor(next)})
	return nil
}

func (s *Server) cancelWorkflow(w http.ResponseWriter, r *http.Request) error {
	if err := decode(w, r, 1<<10, &struct{}{}); err != nil {
		return err
	}
	run, err := s.Workflows.CancelRun(r.Context(), chi.URLParam(r, "namespace"), chi.URLParam(r, "run_id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, run)
	return nil
}

type stepsResponse struct {
	Steps      []domain.Step `json:"steps"`
	NextCursor *string       `json:"next_cursor"`
}

// isStepKey reports whether key can be a step list's key: a step's seq,
// a positive integer in decimal.
func isStepKey(key string) bool {
	n, err := strconv.ParseInt(key, 10, 64)
	return err == nil && n > 0 && strconv.FormatInt(n, 10) == key
}

func (s *Server) listSteps(w http.ResponseWriter, r *http.Request) error {
	q, err := newQuery(r, "limit", "cursor")
	if err != nil {
		return err
	}
	// Without a limit, as many as a page can hold: clients from before
	// steps were paginated read them all in one answer up to that.
	page, err := q.pageOf(domain.MaxPageLimit, isStepKey)
	if err != nil {
		return err
	}
	steps, next, err := s.Workflows.ListSteps(r.Context(), chi.URLParam(r, "namespace"), chi.URLParam(r, "run_id"), page)
	if err != nil {
		return err
	}
	if steps == nil {
		steps = []domain.Step{}
	}
	writeJSON(w, http.StatusOK, stepsResponse{Steps: steps, NextCursor: encodeCursor(next)})
	return nil
}
