package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/kagzi/kagzi/domain"
)

// statusOf is the one table from error codes to HTTP statuses.
var statusOf = map[domain.Code]int{
	domain.CodeInvalidArgument:      http.StatusBadRequest,
	domain.CodeUnauthenticated:      http.StatusUnauthorized,
	domain.CodePermissionDenied:     http.StatusForbidden,
	domain.CodeNotFound:             http.StatusNotFound,
	domain.CodeMethodNotAllowed:     http.StatusMethodNotAllowed,
	domain.CodeConflict:             http.StatusConflict,
	domain.CodeLeaseLost:            http.StatusConflict,
	domain.CodeCancelled:            http.StatusConflict,
	domain.CodeWorkerDraining:       http.StatusConflict,
	domain.CodeWorkerOffline:        http.StatusConflict,
	domain.CodePayloadTooLarge:      http.StatusRequestEntityTooLarge,
	domain.CodeUnsupportedMediaType: http.StatusUnsupportedMediaType,
	domain.CodeUnavailable:          http.StatusServiceUnavailable,
	domain.CodeInternal:             http.StatusInternalServerError,
	domain.CodeRunFinished:          http.StatusConflict,
	domain.CodeIdempotencyReused:    http.StatusConflict,
	domain.CodeResourceExhausted:    http.StatusTooManyRequests,
	domain.CodeLimitExceeded:        http.StatusConflict,
}

// Problem is an RFC 9457 problem document.
type Problem struct {
	Type   string      `json:"type"`
	Title  string      `json:"title"`
	Status int         `json:"status"`
	Code   domain.Code `json:"code"`
	Detail string      `json:"detail"`
	Field  string      `json:"field,omitempty"`
}

// problemFor turns any error into the problem the client sees. Errors that
// are not a *domain.Error are bugs: their text never reaches the client.
func problemFor(err error) Problem {
	var e *domain.Error
	if !errors.As(err, &e) {
		e = &domain.Error{Code: domain.CodeInternal, Message: "internal error"}
	}
	status, ok := statusOf[e.Code]
	if !ok {
		status = http.StatusInternalServerError
	}
	detail := e.Message
	switch {
	case e.Code == domain.CodeInternal:
		detail = "internal error"
	case e.Code == domain.CodeUnavailable:
		detail = "the service is unavailable; try again"
	case e.Field != "":
		detail = e.Field + " " + e.Message
	case detail == "":
		detail = http.StatusText(status)
	}
	title := http.StatusText(status)
	if status == http.StatusRequestEntityTooLarge {
		title = "Payload Too Large" // the contract's name; Go uses RFC 7231's
	}
	return Problem{
		Type:   "about:blank",
		Title:  title,
		Status: status,
		Code:   e.Code,
		Detail: detail,
		Field:  e.Field,
	}
}

// writeError writes err as a problem document, and logs what the client
// cannot see: server faults with their cause.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	p := problemFor(err)
	if p.Status >= 500 {
		if r.Context().Err() != nil && errors.Is(err, context.Canceled) {
			return // the client is gone; nobody reads the answer
		}
		s.logger.LogAttrs(r.Context(), slog.LevelError, "request failed",
			slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Any("error", err))
	}
	if p.Code == domain.CodeUnauthenticated {
		w.Header().Set("WWW-Authenticate", `Bearer realm="kagzi"`)
	}
	var de *domain.Error
	if errors.As(err, &de) && de.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(int64((de.RetryAfter+time.Second-1)/time.Second), 10))
	}
	w.Header().Set("Content-Type", "application/problem+json")
	writeBody(w, p.Status, p)
}
