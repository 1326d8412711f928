package domain

import (
	"errors"
	"fmt"
	"time"
)

// Code is the stable, machine-readable kind of an error. The API maps each
// code to one HTTP status and writes it as the problem document's "code".
type Code string

// The error codes of the API contract.
const (
	CodeInvalidArgument      Code = "invalid_argument"
	CodeUnauthenticated      Code = "unauthenticated"
	CodePermissionDenied     Code = "permission_denied"
	CodeNotFound             Code = "not_found"
	CodeMethodNotAllowed     Code = "method_not_allowed"
	CodeConflict             Code = "conflict"
	CodeLeaseLost            Code = "lease_lost"
	CodeCancelled            Code = "cancelled"
	CodeWorkerDraining       Code = "worker_draining"
	CodeWorkerOffline        Code = "worker_offline"
	CodePayloadTooLarge      Code = "payload_too_large"
	CodeUnsupportedMediaType Code = "unsupported_media_type"
	CodeUnavailable          Code = "unavailable"
	CodeInternal             Code = "internal"
	CodeRunFinished          Code = "run_finished"
	CodeIdempotencyReused    Code = "idempotency_key_reused"
	CodeResourceExhausted    Code = "resource_exhausted"
	// CodeLimitExceeded refuses a request that would pass a fixed cap on
	// what a run may hold (its live children, its depth). Unlike
	// CodeResourceExhausted it is no back-pressure: retrying the same call
	// soon does not help.
	CodeLimitExceeded Code = "limit_exceeded"
)

// Error is an error the client can act on: a code, the input at fault (if
// one is) and a message safe to show. When Field is set, Message is a
// predicate about it ("is 3145728 bytes; the limit is 2097152") and the
// whole sentence reads Field + " " + Message.
type Error struct {
	Code    Code
	Field   string
	Message string
	// RetryAfter, when positive, says when the request may succeed if
	// tried again (the Retry-After header of a 429).
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Message == "" {
		return string(e.Code)
	}
	if e.Field != "" {
		return fmt.Sprintf("%s: %s %s", e.Code, e.Field, e.Message)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Is reports whether target is an *Error of the same code, so that
// errors.Is(err, ErrNotFound) holds for every not-found error.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && t.Field == "" && t.Message == ""
}

// Sentinels for errors.Is. They carry only a code.
var (
	ErrInvalidArgument = &Error{Code: CodeInvalidArgument}
	ErrNotFound        = &Error{Code: CodeNotFound}
	ErrConflict        = &Error{Code: CodeConflict}
	ErrLeaseLost       = &Error{Code: CodeLeaseLost}
	ErrCancelled       = &Error{Code: CodeCancelled}
	ErrWorkerDraining  = &Error{Code: CodeWorkerDraining}
	ErrWorkerOffline   = &Error{Code: CodeWorkerOffline}
	ErrPayloadTooLarge = &Error{Code: CodePayloadTooLarge}
	ErrUnavailable     = &Error{Code: CodeUnavailable}
)

// Errorf returns an *Error with code and a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalid returns an invalid_argument error naming field.
func Invalid(field, format string, args ...any) *Error {
	return &Error{Code: CodeInvalidArgument, Field: field, Message: fmt.Sprintf(format, args...)}
}

// PrefixField returns err with prefix put before the field it names, so
// that a batch can say which item was at fault ("workflows[3]." + "input").
// Errors that are not an *Error or name no field are returned as they are.
func PrefixField(err error, prefix string) error {
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	field := prefix
	if e.Field != "" {
		field = prefix + "." + e.Field
	}
	return &Error{Code: e.Code, Field: field, Message: e.Message}
}
