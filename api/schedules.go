package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/kagzi/kagzi/domain"
)

// ScheduleStore is what the schedule endpoints need of storage. It parses
// the cron expression (a bad one is an invalid_argument error naming
// "cron") and computes the next fire time by the database's clock.
type ScheduleStore interface {
	CreateSchedule(ctx context.Context, namespace string, n domain.NewSchedule) (domain.Schedule, error)
	GetSchedule(ctx context.Context, namespace, scheduleID string) (domain.Schedule, error)
	ListSchedules(ctx context.Context, namespace string, page domain.Page) ([]domain.Schedule, string, error)
	UpdateSchedule(ctx context.Context, namespace, scheduleID string, p *domain.SchedulePatch) (domain.Schedule, error)
	DeleteSchedule(ctx context.Context, namespace, scheduleID string) error
}

func (s *Server) createSchedule(w http.ResponseWriter, r *http.Request) error {
	ns := chi.URLParam(r, "namespace")
	var req domain.ScheduleRequest
	if err := decode(w, r, s.Limits.singleBodyLimit(), &req); err != nil {
		return err
	}
	n, err := req.Validate(s.Limits.Payload)
	if err != nil {
		return err
	}
	sc, err := s.Schedules.CreateSchedule(r.Context(), ns, n)
	if err != nil {
		return err
	}
	if n.LargeInput {
		s.warnLargeScheduleInput(r, sc.ScheduleID, len(n.Input))
	}
	w.Header().Set("Location", fmt.Sprintf("/v1/namespaces/%s/schedules/%s", ns, sc.ScheduleID))
	writeJSON(w, http.StatusCreated, sc)
	return nil
}

// warnLargeScheduleInput logs a schedule input that is accepted but over
// the warning threshold.
func (s *Server) warnLargeScheduleInput(r *http.Request, scheduleID string, size int) {
	s.logger.LogAttrs(r.Context(), slog.LevelWarn, "large payload",
		slog.String("schedule_id", scheduleID), slog.String("field", "input"), slog.Int("size_bytes", size),
		slog.Int("warn_bytes", s.Limits.Payload.WarnBytes))
}

func (s *Server) getSchedule(w http.ResponseWriter, r *http.Request) error {
	if err := noQuery(r); err != nil {
		return err
	}
	sc, err := s.Schedules.GetSchedule(r.Context(), chi.URLParam(r, "namespace"), chi.URLParam(r, "schedule_id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sc)
	return nil
}

type listSchedulesResponse struct {
	Schedules  []domain.Schedule `json:"schedules"`
	NextCursor *string           `json:"next_cursor"`
}

func (s *Server) listSchedules(w http.ResponseWriter, r *http.Request) error {
	q, err := newQuery(r, "limit", "cursor")
	if err != nil {
		return err
	}
	page, err := q.page()
	if err != nil {
		return err
	}
	list, next, err := s.Schedules.ListSchedules(r.Context(), chi.URLParam(r, "namespace"), page)
	if err != nil {
		return err
	}
	if list == nil {
		list = []domain.Schedule{}
	}
	writeJSON(w, http.StatusOK, listSchedulesResponse{Schedules: list, NextCursor: encodeCursor(next)})
	return nil
}

func (s *Server) updateSchedule(w http.ResponseWriter, r *http.Request) error {
	var p domain.SchedulePatch
	if err := decode(w, r, s.Limits.singleBodyLimit(), &p); err != nil {
		return err
	}
	if err := p.Validate(s.Limits.Payload); err != nil {
		return err
	}
	sc, err := s.Schedules.UpdateSchedule(r.Context(), chi.URLParam(r, "namespace"), chi.URLParam(r, "schedule_id"), &p)
	if err != nil {
		return err
	}
	if p.LargeInput {
		s.warnLargeScheduleInput(r, sc.ScheduleID, len(p.Input))
	}
	writeJSON(w, http.StatusOK, sc)
	return nil
}

func (s *Server) deleteSchedule(w http.ResponseWriter, r *http.Request) error {
	if err := noQuery(r); err != nil {
		return err
	}
	if err := s.Schedules.DeleteSchedule(r.Context(), chi.URLParam(r, "namespace"), chi.URLParam(r, "schedule_id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
