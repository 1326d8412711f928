package api

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/kagzi/kagzi/domain"
)

// ExecutionStore is what the calls of a worker running a claimed run need.
// Every method is fenced by the lease it is given.
type ExecutionStore interface {
	CheckClaimant(ctx context.Context, namespace, queue, workerID string) error
	HeartbeatRun(ctx context.Context, namespace, runID, leaseID string) (time.Time, error)
	BeginStep(ctx context.Context, namespace, runID, leaseID string, b domain.BeginStep) (bool, domain.Step, error)
	CompleteStep(ctx context.Context, namespace, runID, leaseID, name string, output json.RawMessage) (domain.Step, error)
	FailStep(ctx context.Context, namespace, runID, leaseID, name string, e *domain.ErrorInfo) (domain.Step, bool, error)
	Sleep(ctx context.Context, namespace, runID, leaseID string, req domain.SleepRequest) (domain.Run, error)
	CompleteRun(ctx context.Context, namespace, runID, leaseID string, output json.RawMessage) (domain.Run, error)
	CompleteRuns(ctx context.Context, namespace string, items []domain.RunCompletion) []error
	FailRun(ctx context.Context, namespace, runID, leaseID string, e *domain.ErrorInfo) (domain.Run, error)
}

// leaseCall is the part every worker call's body has.
type leaseCall struct {
	LeaseID string `json:"lease_id"`
}

func (c leaseCall) validate() error {
	if c.LeaseID == "" {
		return domain.Invalid("lease_id", "is required")
	}
	return domain.ValidateUUID("lease_id", c.LeaseID)
}

// runCall reads a worker call's path and body, and checks the lease ID.
func (s *Server) runCall(w http.ResponseWriter, r *http.Request, body interface{ validate() error }) (namespace, runID string, err error) {
	if err := decode(w, r, s.Limits.singleBodyLimit(), body); err != nil {
		return "", "", err
	}
	if err := body.validate(); err != nil {
		return "", "", err
	}
	return chi.URLParam(r, "namespace"), chi.URLParam(r, "run_id"), nil
}

// checkPayload applies the payload limits to one payload of a run, logging
// one that is over the warning threshold.
func (s *Server) checkPayload(r *http.Request, runID, field string, raw json.RawMessage) error {
	warn, err := s.Limits.Payload.Check(field, raw)
	if warn {
		s.warnLarge(r, runID, field, len(raw))
	}
	return err
}

// orNull is raw, or JSON null when the body left it out.
func orNull(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return json.RawMessage("null")
	}
	return raw
}

type heartbeatResponse struct {
	LeaseExpiresAt time.Time `json:"lease_expires_at"`
}

func (s *Server) heartbeatRun(w http.ResponseWriter, r *http.Request) error {
	var body leaseCall
	ns, runID, err := s.runCall(w, r, &body)
	if err != nil {
		return err
	}
	expires, err := s.Execution.HeartbeatRun(r.Context(), ns, runID, body.LeaseID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, heartbeatResponse{LeaseExpiresAt: expires})
	return nil
}

type beginStepRequest struct {
	leaseCall
	Kind        domain.StepKind          `json:"kind"`
	Input       json.RawMessage          `json:"input"`
	RetryPolicy *domain.RetryPolicyInput `json:"retry_policy"`
}

func (b *beginStepRequest) validate() error {
	if b.Kind == "" {
		b.Kind = domain.StepFunction
	}
	if b.Kind != domain.StepFunction && b.Kind != domain.StepSleep {
		return domain.Invalid("kind", "must be function or sleep, not %q", b.Kind)
	}
	return b.leaseCall.validate()
}

type beginStepResponse struct {
	ShouldExecute bool            `json:"should_execute"`
	Step          domain.Step     `json:"step"`
	Output        json.RawMessage `json:"output"`
}

// stepName reads and checks the {step} path parameter, percent-decoded
// exactly once. chi routes on the escaped path (URL.RawPath) when the
// request's escaping differs from Go's default one (a name with "/"), and
// on the decoded path otherwise: the parameter is decoded here only in the
// first case, so that "50%25" is "50%" and "x%2541" is "x%41".
func stepName(r *http.Request) (string, error) {
	name := chi.URLParam(r, "step")
	if r.URL.RawPath != "" {
		var err error
		if name, err = url.PathUnescape(name); err != nil {
			return "", domain.Invalid("step", "is not a valid escaped path segment")
		}
	}
	return name, domain.ValidateName("step", name)
}

func (s *Server) beginStep(w http.ResponseWriter, r *http.Request) error {
	var body beginStepRequest
	ns, runID, err := s.runCall(w, r, &body)
	if err != nil {
		return err
	}
	name, err := stepName(r)
	if err != nil {
		return err
	}
	if err := s.checkPayload(r, runID, "input", body.Input); err != nil {
		return err
	}
	if _, err := body.RetryPolicy.Resolve("retry_policy", domain.DefaultRetryPolicy()); err != nil {
		return err
	}
	execute, step, err := s.Execution.BeginStep(r.Context(), ns, runID, body.LeaseID, domain.BeginStep{
		Name: name, Kind: body.Kind, Input: body.Input, RetryPolicy: body.RetryPolicy,
	})
	if err != nil {
		return err
	}
	res := beginStepResponse{ShouldExecute: execute, Step: step, Output: json.RawMessage("null")}
	if !execute && step.Output != nil {
		res.Output = step.Output
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

type completeRequest struct {
	leaseCall
	Output json.RawMessage `json:"output"`
}

func (s *Server) completeStep(w http.ResponseWriter, r *http.Request) error {
	var body completeRequest
	ns, runID, err := s.runCall(w, r, &body)
	if err != nil {
		return err
	}
	name, err := stepName(r)
	if err != nil {
		return err
	}
	output := orNull(body.Output)
	if err := s.checkPayload(r, runID, "output", output); err != nil {
		return err
	}
	step, err := s.Execution.CompleteStep(r.Context(), ns, runID, body.LeaseID, name, output)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, step)
	return nil
}

type failRequest struct {
	leaseCall
	Error *domain.ErrorInfo `json:"error"`
	// limits is set by the handler before validation.
	limits domain.PayloadLimits
}

func (f *failRequest) validate() error {
	if err := f.leaseCall.validate(); err != nil {
		return err
	}
	return f.Error.Validate("error", f.limits)
}

type failStepResponse struct {
	Step           domain.Step `json:"step"`
	RetryScheduled bool        `json:"retry_scheduled"`
	RetryAt        *time.Time  `json:"retry_at"`
}

func (s *Server) failStep(w http.ResponseWriter, r *http.Request) error {
	body := failRequest{limits: s.Limits.Payload}
	ns, runID, err := s.runCall(w, r, &body)
	if err != nil {
		return err
	}
	name, err := stepName(r)
	if err != nil {
		return err
	}
	step, retry, err := s.Execution.FailStep(r.Context(), ns, runID, body.LeaseID, name, body.Error)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, failStepResponse{Step: step, RetryScheduled: retry, RetryAt: step.RetryAt})
	return nil
}

type sleepRequest struct {
	leaseCall
	Step       string            `json:"step"`
	DurationMS *int64            `json:"duration_ms"`
	Until      *domain.Timestamp `json:"until"`
}

func (b *sleepRequest) validate() error {
	if err := b.leaseCall.validate(); err != nil {
		return err
	}
	if err := domain.ValidateName("step", b.Step); err != nil {
		return err
	}
	if (b.DurationMS == nil) == (b.Until == nil) {
		return domain.Invalid("duration_ms", "give exactly one of duration_ms and until")
	}
	if b.DurationMS != nil {
		if _, err := domain.DurationMS("duration_ms", *b.DurationMS, domain.MaxStartDelay); err != nil {
			return err
		}
	}
	if b.Until != nil {
		_, err := b.Until.Time("until")
		return err
	}
	return nil
}

func (s *Server) sleep(w http.ResponseWriter, r *http.Request) error {
	var body sleepRequest
	ns, runID, err := s.runCall(w, r, &body)
	if err != nil {
		return err
	}
	req := domain.SleepRequest{Step: body.Step}
	if body.Until != nil {
		until, _ := body.Until.Time("until") // checked by validate
		req.Until = &until
	}
	if body.DurationMS != nil {
		req.Duration, _ = domain.DurationMS("duration_ms", *body.DurationMS, domain.MaxStartDelay) // checked by validate
	}
	run, err := s.Execution.Sleep(r.Context(), ns, runID, body.LeaseID, req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, run)
	return nil
}

func (s *Server) completeRun(w http.ResponseWriter, r *http.Request) error {
	var body completeRequest
	ns, runID, err := s.runCall(w, r, &body)
	if err != nil {
		return err
	}
	output := orNull(body.Output)
	if err := s.checkPayload(r, runID, "output", output); err != nil {
		return err
	}
	run, err := s.Execution.CompleteRun(r.Context(), ns, runID, body.LeaseID, output)
	if err != nil {
		return err
	}
	s.metrics.runCompleted()
	writeJSON(w, http.StatusOK, run)
	return nil
}

func (s *Server) failRun(w http.ResponseWriter, r *http.Request) error {
	body := failRequest{limits: s.Limits.Payload}
	ns, runID, err := s.runCall(w, r, &body)
	if err != nil {
		return err
	}
	run, err := s.Execution.FailRun(r.Context(), ns, runID, body.LeaseID, body.Error)
	if err != nil {
		return err
	}
	s.metrics.runFailed(run.Status)
	writeJSON(w, http.StatusOK, run)
	return nil
}

type completeRunsRequest struct {
	Runs []domain.RunCompletion `json:"runs"`
}

type completeRunsResult struct {
	RunID     string   `json:"run_id"`
	Completed bool     `json:"completed"`
	Error     *Problem `json:"error"`
}

type completeRunsResponse struct {
	Runs []completeRunsResult `json:"runs"`
}

// completeRuns completes many runs in one request, each under its own
// lease: the way a busy worker reports what it finished. A malformed item
// refuses the whole request; a run its lease no longer holds is reported
// in its own result and the others complete.
func (s *Server) completeRuns(w http.ResponseWriter, r *http.Request) error {
	var req completeRunsRequest
	if err := decode(w, r, s.Limits.MaxBatchBytes, &req); err != nil {
		return err
	}
	if len(req.Runs) == 0 || len(req.Runs) > s.Limits.MaxBatch {
		return domain.Invalid("runs", "must hold 1 to %d items, not %d", s.Limits.MaxBatch, len(req.Runs))
	}
	for i := range req.Runs {
		it := &req.Runs[i]
		field := fmt.Sprintf("runs[%d]", i)
		if err := domain.ValidateUUID(field+".run_id", it.RunID); err != nil {
			return err
		}
		if err := domain.ValidateUUID(field+".lease_id", it.LeaseID); err != nil {
			return err
		}
		it.Output = orNull(it.Output)
		if err := s.checkPayload(r, it.RunID, field+".output", it.Output); err != nil {
			return err
		}
	}
	errs := s.Execution.CompleteRuns(r.Context(), chi.URLParam(r, "namespace"), req.Runs)
	res := completeRunsResponse{Runs: make([]completeRunsResult, len(req.Runs))}
	for i, err := range errs {
		res.Runs[i] = completeRunsResult{RunID: req.Runs[i].RunID, Completed: err == nil}
		if err != nil {
			// Even a server fault is this item's alone: other items may
			// have been committed, and their results must reach the
			// worker. The worker retries an item that answered 503.
			p := problemFor(err)
			if p.Status >= 500 {
				s.logger.LogAttrs(r.Context(), slog.LevelError, "complete run failed",
					slog.String("run_id", req.Runs[i].RunID), slog.Any("error", err))
			}
			res.Runs[i].Error = &p
			continue
		}
		s.metrics.runCompleted()
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}
