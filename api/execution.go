package api

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"github.com/kagzi/kagzi/domain"
)

// ExecutionStore is what the calls of a worker running a claimed run need.
// Every method is fenced by the lease it is given.
type ExecutionStore interface {
	CheckClaimant(ctx context.Context, namespace, queue, workerID string) error
	HeartbeatRun(ctx context.Context, namespace, runID, leaseID string) (time.Time, error)
	BeginStep(ctx context.Context, namespace, runID, leaseID string, b domain.BeginStep) (bool, domain.Step, error)
	ReportStep(ctx context.Context, namespace string, r domain.StepReport) (domain.StepResult, error)
	ReportSteps(ctx context.Context, namespace string, reports []domain.StepReport) []domain.StepResult
	Sleep(ctx context.Context, namespace, runID, leaseID string, req domain.SleepRequest) (domain.Run, bool, error)
	LoadHistories(ctx context.Context, tasks []domain.Task, maxBytes int64) error
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
	name, err := pathSegment(r, "step")
	if err != nil {
		return "", err
	}
	return name, domain.ValidateName("step", name)
}

// pathSegment reads the path parameter key, percent-decoded exactly once
// (see stepName).
func pathSegment(r *http.Request, key string) (string, error) {
	name := chi.URLParam(r, key)
	if r.URL.RawPath != "" {
		var err error
		if name, err = url.PathUnescape(name); err != nil {
			return "", domain.Invalid(key, "is not a valid escaped path segment")
		}
	}
	return name, nil
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

// stepReportFields are the members of a step report that say what begin
// would have said, for a worker that skipped it.
type stepReportFields struct {
	Input       json.RawMessage          `json:"input"`
	RetryPolicy *domain.RetryPolicyInput `json:"retry_policy"`
	StartedAt   *domain.Timestamp        `json:"started_at"`
}

// stepReport checks the optional members of a step report, naming its
// fields after prefix, and puts them into rep.
func (s *Server) stepReport(r *http.Request, prefix string, f stepReportFields, rep *domain.StepReport) error {
	if f.Input != nil {
		if err := s.checkPayload(r, rep.RunID, prefix+"input", f.Input); err != nil {
			return err
		}
		rep.Input = f.Input
	}
	if _, err := f.RetryPolicy.Resolve(prefix+"retry_policy", domain.DefaultRetryPolicy()); err != nil {
		return err
	}
	rep.RetryPolicy = f.RetryPolicy
	if f.StartedAt != nil {
		t, err := f.StartedAt.Time(prefix + "started_at")
		if err != nil {
			return err
		}
		rep.StartedAt = &t
	}
	return nil
}

type completeStepRequest struct {
	leaseCall
	stepReportFields
	Output json.RawMessage `json:"output"`
}

// completeStepResponse is a Step with one more member.
type completeStepResponse struct {
	domain.Step
	AlreadyCompleted bool `json:"already_completed"`
}

func (s *Server) completeStep(w http.ResponseWriter, r *http.Request) error {
	var body completeStepRequest
	ns, runID, err := s.runCall(w, r, &body)
	if err != nil {
		return err
	}
	name, err := stepName(r)
	if err != nil {
		return err
	}
	rep := domain.StepReport{RunID: runID, LeaseID: body.LeaseID, Name: name, Outcome: domain.StepOutcomeComplete,
		Output: orNull(body.Output)}
	if err := s.checkPayload(r, runID, "output", rep.Output); err != nil {
		return err
	}
	if err := s.stepReport(r, "", body.stepReportFields, &rep); err != nil {
		return err
	}
	res, err := s.Execution.ReportStep(r.Context(), ns, rep)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, completeStepResponse{Step: res.Step, AlreadyCompleted: res.AlreadyCompleted})
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

type failStepRequest struct {
	failRequest
	stepReportFields
}

type failStepResponse struct {
	Step             domain.Step `json:"step"`
	AlreadyCompleted bool        `json:"already_completed"`
	RetryScheduled   bool        `json:"retry_scheduled"`
	RetryAt          *time.Time  `json:"retry_at"`
}

func newFailStepResponse(res domain.StepResult) failStepResponse {
	out := failStepResponse{Step: res.Step, AlreadyCompleted: res.AlreadyCompleted, RetryScheduled: res.RetryScheduled}
	if res.RetryScheduled {
		out.RetryAt = res.Step.RetryAt
	}
	return out
}

func (s *Server) failStep(w http.ResponseWriter, r *http.Request) error {
	body := failStepRequest{failRequest: failRequest{limits: s.Limits.Payload}}
	ns, runID, err := s.runCall(w, r, &body)
	if err != nil {
		return err
	}
	name, err := stepName(r)
	if err != nil {
		return err
	}
	rep := domain.StepReport{RunID: runID, LeaseID: body.LeaseID, Name: name, Outcome: domain.StepOutcomeFail,
		Error: body.Error}
	if err := s.stepReport(r, "", body.stepReportFields, &rep); err != nil {
		return err
	}
	res, err := s.Execution.ReportStep(r.Context(), ns, rep)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, newFailStepResponse(res))
	return nil
}

type sleepRequest struct {
	leaseCall
	Step       string            `json:"step"`
	DurationMS *int64            `json:"duration_ms"`
	deadline   deadline          // parsed by validate
	Until      *domain.Timestamp `json:"until"`
}

func (b *sleepRequest) validate() error {
	if err := b.leaseCall.validate(); err != nil {
		return err
	}
	if err := domain.ValidateName("step", b.Step); err != nil {
		return err
	}
	var err error
	b.deadline, err = parseDeadline("duration_ms", b.DurationMS, b.Until, true)
	return err
}

// deadline is when a sleep or a wait ends: after a duration, or at a time.
type deadline struct {
	duration *time.Duration
	until    *time.Time
}

// parseDeadline reads a deadline given as milliseconds in msField or as
// until, at most one of them; required says one must be given.
func parseDeadline(msField string, ms *int64, until *domain.Timestamp, required bool) (deadline, error) {
	var d deadline
	switch {
	case ms != nil && until != nil:
		return d, domain.Invalid(msField, "give at most one of %s and until", msField)
	case required && ms == nil && until == nil:
		return d, domain.Invalid(msField, "give one of %s and until", msField)
	}
	if ms != nil {
		v, err := domain.DurationMS(msField, *ms, domain.MaxStartDelay)
		if err != nil {
			return d, err
		}
		d.duration = &v
	}
	if until != nil {
		t, err := until.Time("until")
		if err != nil {
			return d, err
		}
		d.until = &t
	}
	return d, nil
}

func (s *Server) sleep(w http.ResponseWriter, r *http.Request) error {
	var body sleepRequest
	ns, runID, err := s.runCall(w, r, &body)
	if err != nil {
		return err
	}
	req := domain.SleepRequest{Step: body.Step, Until: body.deadline.until}
	if body.deadline.duration != nil {
		req.Duration = *body.deadline.duration
	}
	run, resolved, err := s.Execution.Sleep(r.Context(), ns, runID, body.LeaseID, req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sleepResponse{Run: run, Resolved: resolved})
	return nil
}

// sleepResponse is the run with one more member: resolved says the sleep
// was already done, and the lease goes on.
type sleepResponse struct {
	domain.Run
	Resolved bool `json:"resolved"`
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

// stepReportItem is one item of a batch of step reports.
type stepReportItem struct {
	RunID   string             `json:"run_id"`
	LeaseID string             `json:"lease_id"`
	Step    string             `json:"step"`
	Outcome domain.StepOutcome `json:"outcome"`
	Output  json.RawMessage    `json:"output"`
	Error   *domain.ErrorInfo  `json:"error"`
	stepReportFields
}

type reportStepsRequest struct {
	Steps []stepReportItem `json:"steps"`
}

type reportStepsResult struct {
	RunID            string       `json:"run_id"`
	Step             *domain.Step `json:"step"`
	AlreadyCompleted bool         `json:"already_completed"`
	RetryScheduled   bool         `json:"retry_scheduled"`
	RetryAt          *time.Time   `json:"retry_at"`
	Error            *Problem     `json:"error"`
}

type reportStepsResponse struct {
	Steps []reportStepsResult `json:"steps"`
}

// batchStepReport checks one item of a batch of step reports and returns it as
// a report; field names it (steps[3]).
func (s *Server) batchStepReport(r *http.Request, field string, it stepReportItem) (domain.StepReport, error) {
	rep := domain.StepReport{RunID: it.RunID, LeaseID: it.LeaseID, Name: it.Step, Outcome: it.Outcome}
	if err := domain.ValidateUUID(field+".run_id", it.RunID); err != nil {
		return rep, err
	}
	if err := domain.ValidateUUID(field+".lease_id", it.LeaseID); err != nil {
		return rep, err
	}
	if err := domain.ValidateName(field+".step", it.Step); err != nil {
		return rep, err
	}
	// Bytes the database would refuse refuse the whole request here, so
	// that one item's fault never reaches the batch's transaction.
	for _, raw := range []struct {
		field string
		v     []byte
	}{{".output", it.Output}, {".input", it.Input}} {
		if !utf8.Valid(raw.v) {
			return rep, domain.Invalid(field+raw.field, "is not valid UTF-8")
		}
	}
	if it.Error != nil && strings.ContainsRune(it.Error.Message, 0) {
		return rep, domain.Invalid(field+".error.message", "must not contain \\u0000")
	}
	switch it.Outcome {
	case domain.StepOutcomeComplete:
		if it.Error != nil {
			return rep, domain.Invalid(field+".error", "is for outcome fail only")
		}
		rep.Output = orNull(it.Output)
		if err := s.checkPayload(r, it.RunID, field+".output", rep.Output); err != nil {
			return rep, err
		}
	case domain.StepOutcomeFail:
		if it.Output != nil && string(it.Output) != "null" {
			return rep, domain.Invalid(field+".output", "is for outcome complete only")
		}
		if err := it.Error.Validate(field+".error", s.Limits.Payload); err != nil {
			return rep, err
		}
		rep.Error = it.Error
	default:
		return rep, domain.Invalid(field+".outcome", "must be complete or fail, not %q", it.Outcome)
	}
	return rep, s.stepReport(r, field+".", it.stepReportFields, &rep)
}

// reportSteps records many step reports of runs of one namespace in one
// request, each under its own lease: the way a busy worker reports the
// steps it ran. A malformed item refuses the whole request; a report its
// lease no longer holds is refused in its own result and the others are
// recorded.
func (s *Server) reportSteps(w http.ResponseWriter, r *http.Request) error {
	var req reportStepsRequest
	if err := decode(w, r, s.Limits.MaxBatchBytes, &req); err != nil {
		return err
	}
	if len(req.Steps) == 0 || len(req.Steps) > s.Limits.MaxBatch {
		return domain.Invalid("steps", "must hold 1 to %d items, not %d", s.Limits.MaxBatch, len(req.Steps))
	}
	reports := make([]domain.StepReport, len(req.Steps))
	for i, it := range req.Steps {
		var err error
		if reports[i], err = s.batchStepReport(r, fmt.Sprintf("steps[%d]", i), it); err != nil {
			return err
		}
	}
	results := s.Execution.ReportSteps(r.Context(), chi.URLParam(r, "namespace"), reports)
	res := reportStepsResponse{Steps: make([]reportStepsResult, len(results))}
	for i, sr := range results {
		out := reportStepsResult{RunID: reports[i].RunID}
		if sr.Err != nil {
			// Even a server fault is this item's alone (see completeRuns).
			p := problemFor(sr.Err)
			if p.Status >= 500 {
				s.logger.LogAttrs(r.Context(), slog.LevelError, "step report failed",
					slog.String("run_id", reports[i].RunID), slog.Any("error", sr.Err))
			}
			out.Error = &p
		} else {
			f := newFailStepResponse(sr)
			out.Step, out.AlreadyCompleted, out.RetryScheduled, out.RetryAt = &f.Step, f.AlreadyCompleted, f.RetryScheduled, f.RetryAt
		}
		res.Steps[i] = out
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}
