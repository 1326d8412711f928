package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/kagzi/kagzi/domain"
)

// SignalStore is what the signal endpoints need of storage.
type SignalStore interface {
	SendSignal(ctx context.Context, namespace string, req domain.SendSignal, limits domain.SignalLimits) (domain.Signal, bool, error)
	ListSignals(ctx context.Context, namespace, runID string, f domain.SignalFilter) ([]domain.Signal, string, error)
	Wait(ctx context.Context, namespace, runID, leaseID string, req domain.WaitRequest) (domain.WaitResult, error)
	SignalWithStart(ctx context.Context, namespace string, n domain.NewRun, req domain.SendSignal, limits domain.SignalLimits) (domain.SignalWithStartResult, error)
}

// signalLimits are the inbox limits, the defaults where unset.
func (l Limits) signalLimits() domain.SignalLimits {
	sl := l.Signals
	if sl.MaxBuffered <= 0 {
		sl.MaxBuffered = domain.DefaultMaxBufferedSignals
	}
	if sl.MaxPerRun <= 0 {
		sl.MaxPerRun = domain.DefaultMaxSignalsPerRun
	}
	return sl
}

// maxIdempotencyKeyBytes bounds the Idempotency-Key header.
const maxIdempotencyKeyBytes = 256

type sendSignalRequest struct {
	Input json.RawMessage `json:"input"`
}

func (b *sendSignalRequest) validate() error { return nil }

func (s *Server) sendSignal(w http.ResponseWriter, r *http.Request) error {
	return s.send(w, r, domain.SignalTarget{RunID: chi.URLParam(r, "run_id")})
}

func (s *Server) sendSignalByExternalID(w http.ResponseWriter, r *http.Request) error {
	id, err := pathSegment(r, "external_id")
	if err != nil {
		return err
	}
	if err := domain.ValidateName("external_id", id); err != nil {
		return err
	}
	return s.send(w, r, domain.SignalTarget{ExternalID: id})
}

// idempotencyKey reads the Idempotency-Key header: 1–256 bytes of UTF-8
// with no control characters, or absent.
func idempotencyKey(r *http.Request) (string, error) {
	vs, ok := r.Header["Idempotency-Key"]
	if !ok {
		return "", nil
	}
	if len(vs) != 1 {
		return "", domain.Invalid("Idempotency-Key", "must be given once")
	}
	if len(vs[0]) > maxIdempotencyKeyBytes {
		return "", domain.Invalid("Idempotency-Key", "is %d bytes; the limit is %d", len(vs[0]), maxIdempotencyKeyBytes)
	}
	return vs[0], domain.ValidateName("Idempotency-Key", vs[0])
}

func (s *Server) send(w http.ResponseWriter, r *http.Request, target domain.SignalTarget) error {
	name, err := pathSegment(r, "name")
	if err != nil {
		return err
	}
	if err := domain.ValidateSignalName("name", name); err != nil {
		return err
	}
	key, err := idempotencyKey(r)
	if err != nil {
		return err
	}
	var body sendSignalRequest
	if err := decode(w, r, s.Limits.singleBodyLimit(), &body); err != nil {
		return err
	}
	input := orNull(body.Input)
	if err := s.checkPayload(r, target.RunID, "input", input); err != nil {
		return err
	}
	sg, dup, err := s.Signals.SendSignal(r.Context(), chi.URLParam(r, "namespace"),
		domain.SendSignal{Target: target, Name: name, Input: input, IdempotencyKey: key}, s.Limits.signalLimits())
	if err != nil {
		return err
	}
	status := http.StatusAccepted
	if dup {
		status = http.StatusOK
	}
	writeJSON(w, status, signalResponse{Signal: sg, Duplicate: dup})
	return nil
}

// signalResponse is a Signal, and whether the send was a replay.
type signalResponse struct {
	domain.Signal
	Duplicate bool `json:"duplicate"`
}

type signalsResponse struct {
	Signals    []domain.Signal `json:"signals"`
	NextCursor *string         `json:"next_cursor"`
}

func (s *Server) listSignals(w http.ResponseWriter, r *http.Request) error {
	q, err := newQuery(r, "limit", "cursor", "status", "name")
	if err != nil {
		return err
	}
	page, err := q.pageOf(domain.DefaultPageLimit, isStepKey)
	if err != nil {
		return err
	}
	f := domain.SignalFilter{Page: page, Name: q.get("name"), Status: domain.SignalStatus(q.get("status"))}
	switch f.Status {
	case "", domain.SignalBuffered, domain.SignalDelivered, domain.SignalDiscarded:
	default:
		return domain.Invalid("status", "must be buffered, delivered or discarded, not %q", f.Status)
	}
	if f.Name != "" {
		if err := domain.ValidateName("name", f.Name); err != nil {
			return err
		}
	}
	list, next, err := s.Signals.ListSignals(r.Context(), chi.URLParam(r, "namespace"), chi.URLParam(r, "run_id"), f)
	if err != nil {
		return err
	}
	if list == nil {
		list = []domain.Signal{}
	}
	writeJSON(w, http.StatusOK, signalsResponse{Signals: list, NextCursor: encodeCursor(next)})
	return nil
}

type waitRequest struct {
	leaseCall
	Signals   []string          `json:"signals"`
	TimeoutMS *int64            `json:"timeout_ms"`
	Until     *domain.Timestamp `json:"until"`
	deadline  deadline          // parsed by validate
}

func (b *waitRequest) validate() error {
	if err := b.leaseCall.validate(); err != nil {
		return err
	}
	if len(b.Signals) == 0 || len(b.Signals) > domain.MaxWaitSignals {
		return domain.Invalid("signals", "must name 1 to %d signals", domain.MaxWaitSignals)
	}
	for i, n := range b.Signals {
		// A child's end signal is exempt from the name length limit: its
		// step's name is held to it.
		if err := domain.ValidateName(fmt.Sprintf("signals[%d]", i), strings.TrimPrefix(n, domain.ChildSignalPrefix)); err != nil {
			return err
		}
	}
	var err error
	b.deadline, err = parseDeadline("timeout_ms", b.TimeoutMS, b.Until, false)
	return err
}

type waitResponse struct {
	Resolved bool             `json:"resolved"`
	Step     *domain.Step     `json:"step,omitempty"`
	Output   *json.RawMessage `json:"output,omitempty"`
}

func (s *Server) wait(w http.ResponseWriter, r *http.Request) error {
	var body waitRequest
	ns, runID, err := s.runCall(w, r, &body)
	if err != nil {
		return err
	}
	name, err := stepName(r)
	if err != nil {
		return err
	}
	req := domain.WaitRequest{Step: name, Signals: body.Signals, Timeout: body.deadline.duration, Until: body.deadline.until}
	res, err := s.Signals.Wait(r.Context(), ns, runID, body.LeaseID, req)
	if err != nil {
		return err
	}
	if res.Resolved {
		out := orNull(res.Step.Output)
		writeJSON(w, http.StatusOK, waitResponse{Resolved: true, Step: &res.Step, Output: &out})
		return nil
	}
	writeJSON(w, http.StatusOK, parkedResponse{WakeAt: res.WakeAt})
	return nil
}

// parkedResponse is the answer of a wait that parked the run: wake_at is
// null for a wait without a deadline.
type parkedResponse struct {
	Resolved bool       `json:"resolved"`
	WakeAt   *time.Time `json:"wake_at"`
}

// signalWithStartRequest is a StartRequest plus the signal.
type signalWithStartRequest struct {
	domain.StartRequest
	Signal *struct {
		Name  string          `json:"name"`
		Input json.RawMessage `json:"input"`
	} `json:"signal"`
}

type signalWithStartResponse struct {
	Run       domain.Run    `json:"run"`
	Signal    domain.Signal `json:"signal"`
	Started   bool          `json:"started"`
	Duplicate bool          `json:"duplicate"`
}

func (s *Server) signalWithStart(w http.ResponseWriter, r *http.Request) error {
	ns := chi.URLParam(r, "namespace")
	key, err := idempotencyKey(r)
	if err != nil {
		return err
	}
	var body signalWithStartRequest
	if err := decode(w, r, s.Limits.singleBodyLimit()+int64(s.Limits.Payload.MaxBytes), &body); err != nil {
		return err
	}
	if body.ExternalID == nil {
		return domain.Invalid("external_id", "is required")
	}
	n, err := body.Validate(s.Limits.Payload)
	if err != nil {
		return err
	}
	if body.Signal == nil {
		return domain.Invalid("signal", "is required")
	}
	if err := domain.ValidateSignalName("signal.name", body.Signal.Name); err != nil {
		return err
	}
	input := orNull(body.Signal.Input)
	if err := s.checkPayload(r, "", "signal.input", input); err != nil {
		return err
	}
	res, err := s.Signals.SignalWithStart(r.Context(), ns, n,
		domain.SendSignal{Name: body.Signal.Name, Input: input, IdempotencyKey: key}, s.Limits.signalLimits())
	if err != nil {
		return err
	}
	status := http.StatusOK
	if res.Started {
		s.metrics.runsStarted(1)
		status = http.StatusCreated
		w.Header().Set("Location", fmt.Sprintf("/v1/namespaces/%s/workflows/%s", ns, res.Run.RunID))
	}
	writeJSON(w, status, signalWithStartResponse{Run: res.Run, Signal: res.Signal, Started: res.Started, Duplicate: res.Duplicate})
	return nil
}

// ChildStore is what the child step and listing need of storage.
type ChildStore interface {
	StartChild(ctx context.Context, namespace, runID, leaseID string, req domain.ChildRequest) (domain.WaitResult, string, error)
	ListChildren(ctx context.Context, namespace, runID string, page domain.Page) ([]domain.Run, string, error)
}

type childRequest struct {
	leaseCall
	WorkflowType      string                   `json:"workflow_type"`
	TaskQueue         string                   `json:"task_queue"`
	Input             json.RawMessage          `json:"input"`
	RetryPolicy       *domain.RetryPolicyInput `json:"retry_policy"`
	ExternalID        *string                  `json:"external_id"`
	ParentClosePolicy *string                  `json:"parent_close_policy"`
	Await             bool                     `json:"await"`
	TimeoutMS         *int64                   `json:"timeout_ms"`
}

func (b *childRequest) validate() error { return b.leaseCall.validate() }

func (s *Server) child(w http.ResponseWriter, r *http.Request) error {
	var body childRequest
	ns, runID, err := s.runCall(w, r, &body)
	if err != nil {
		return err
	}
	name, err := stepName(r)
	if err != nil {
		return err
	}
	n, err := domain.StartRequest{WorkflowType: body.WorkflowType, TaskQueue: body.TaskQueue, Input: body.Input,
		ExternalID: body.ExternalID, RetryPolicy: body.RetryPolicy}.Validate(s.Limits.Payload)
	if err != nil {
		return err
	}
	if body.TaskQueue == "" {
		n.TaskQueue = "" // the parent's
	}
	req := domain.ChildRequest{Step: name, Run: n, ParentClosePolicy: domain.ParentCloseCancel, Await: body.Await,
		Limits: s.Limits.Children.WithDefaults()}
	if p := body.ParentClosePolicy; p != nil {
		if *p != domain.ParentCloseCancel && *p != domain.ParentCloseAbandon {
			return domain.Invalid("parent_close_policy", "must be cancel or abandon, not %q", *p)
		}
		req.ParentClosePolicy = *p
	}
	if body.TimeoutMS != nil {
		d, err := domain.DurationMS("timeout_ms", *body.TimeoutMS, domain.MaxStartDelay)
		if err != nil {
			return err
		}
		req.Timeout = &d
	}
	res, _, err := s.Children.StartChild(r.Context(), ns, runID, body.LeaseID, req)
	if err != nil {
		return err
	}
	if !res.Resolved {
		writeJSON(w, http.StatusOK, parkedResponse{WakeAt: res.WakeAt})
		return nil
	}
	out := res.Output
	if out == nil {
		out = orNull(res.Step.Output)
	}
	writeJSON(w, http.StatusOK, waitResponse{Resolved: true, Step: &res.Step, Output: &out})
	return nil
}

type childrenResponse struct {
	Children   []domain.Run `json:"children"`
	NextCursor *string      `json:"next_cursor"`
}

func (s *Server) listChildren(w http.ResponseWriter, r *http.Request) error {
	q, err := newQuery(r, "limit", "cursor")
	if err != nil {
		return err
	}
	page, err := q.pageOf(domain.DefaultPageLimit, func(k string) bool { return domain.ValidateUUID("cursor", k) == nil })
	if err != nil {
		return err
	}
	list, next, err := s.Children.ListChildren(r.Context(), chi.URLParam(r, "namespace"), chi.URLParam(r, "run_id"), page)
	if err != nil {
		return err
	}
	if list == nil {
		list = []domain.Run{}
	}
	writeJSON(w, http.StatusOK, childrenResponse{Children: list, NextCursor: encodeCursor(next)})
	return nil
}
