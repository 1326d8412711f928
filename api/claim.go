package api

import (
	"context"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/kagzi/kagzi/domain"
)

// Claimer parks claims until work is claimed for them.
type Claimer interface {
	Claim(ctx context.Context, req domain.ClaimRequest) ([]domain.Task, error)
	// Release puts back tasks claimed for a client that cannot take them.
	Release(tasks []domain.Task)
}

type claimRequest struct {
	WorkerID      *string  `json:"worker_id"`
	WorkflowTypes []string `json:"workflow_types"`
	MaxTasks      *int     `json:"max_tasks"`
	WaitMS        *int64   `json:"wait_ms"`
}

type claimResponse struct {
	Tasks []domain.Task `json:"tasks"`
}

func (s *Server) claim(w http.ResponseWriter, r *http.Request) error {
	var body claimRequest
	if err := decode(w, r, 64<<10, &body); err != nil {
		return err
	}
	req := domain.ClaimRequest{
		Namespace:     chi.URLParam(r, "namespace"),
		TaskQueue:     chi.URLParam(r, "queue"),
		WorkflowTypes: body.WorkflowTypes,
		MaxTasks:      1,
		Wait:          domain.DefaultClaimWaitMS * time.Millisecond,
	}
	if err := domain.ValidateIdent("queue", req.TaskQueue); err != nil {
		return err
	}
	if err := domain.ValidateTypes("workflow_types", req.WorkflowTypes); err != nil {
		return err
	}
	if body.MaxTasks != nil {
		if *body.MaxTasks < 1 || *body.MaxTasks > domain.MaxClaimTasks {
			return domain.Invalid("max_tasks", "must be between 1 and %d", domain.MaxClaimTasks)
		}
		req.MaxTasks = *body.MaxTasks
	}
	if body.WaitMS != nil {
		wait, err := domain.WaitMS("wait_ms", *body.WaitMS, s.Limits.MaxWait)
		if err != nil {
			return err
		}
		req.Wait = wait
	}
	req.Wait = min(req.Wait, s.Limits.MaxWait)
	if body.WorkerID != nil {
		if err := domain.ValidateUUID("worker_id", *body.WorkerID); err != nil {
			return err
		}
		req.WorkerID = *body.WorkerID
		if err := s.Execution.CheckClaimant(r.Context(), req.Namespace, req.TaskQueue, req.WorkerID); err != nil {
			return err
		}
	}
	tasks, err := s.Claimer.Claim(r.Context(), req)
	if err != nil {
		return err
	}
	if r.Context().Err() != nil {
		// The client left as the answer came: the runs go back at once.
		s.Claimer.Release(tasks)
		return r.Context().Err()
	}
	writeJSON(w, http.StatusOK, claimResponse{Tasks: tasks})
	return nil
}
