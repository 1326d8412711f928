package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"
)

// Code is the stable, machine-readable kind of an API error: the problem
// document's "code" member.
type Code string

// The error codes of the Kagzi API.
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
	// CodeLimitExceeded (409) refuses a child step that would pass the
	// run's most live children or the deepest chain of children (the
	// max_live_children and max_child_depth of /v1/info). It is no
	// conflict with an existing run, and retrying the call at once does
	// not help.
	CodeLimitExceeded Code = "limit_exceeded"
)

// Error is an error answered by the server: an RFC 9457 problem document.
// Compare it with the sentinels below through errors.Is, which matches on
// Code alone:
//
//	if errors.Is(err, client.ErrNotFound) { ... }
//
// and read its fields through errors.As.
type Error struct {
	// Code is the problem's "code". When the answer was not a problem
	// document (a proxy's error page, say), it is derived from Status.
	Code Code
	// Status is the HTTP status code.
	Status int
	// Title is the HTTP status text.
	Title string
	// Detail says what went wrong, for people.
	Detail string
	// Field names the input at fault, when one is ("workflows[3].input").
	Field string
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("kagzi: %s (%d)", e.Code, e.Status)
	}
	return fmt.Sprintf("kagzi: %s: %s", e.Code, e.Detail)
}

// Is reports whether target is a sentinel *Error (one with only a Code) of
// the same code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Status == 0 && t.Detail == "" && t.Field == "" && t.Code == e.Code
}

// Sentinels for errors.Is, one per code.
var (
	ErrInvalidArgument      = &Error{Code: CodeInvalidArgument}
	ErrUnauthenticated      = &Error{Code: CodeUnauthenticated}
	ErrPermissionDenied     = &Error{Code: CodePermissionDenied}
	ErrNotFound             = &Error{Code: CodeNotFound}
	ErrMethodNotAllowed     = &Error{Code: CodeMethodNotAllowed}
	ErrConflict             = &Error{Code: CodeConflict}
	ErrLeaseLost            = &Error{Code: CodeLeaseLost}
	ErrCancelled            = &Error{Code: CodeCancelled}
	ErrWorkerDraining       = &Error{Code: CodeWorkerDraining}
	ErrWorkerOffline        = &Error{Code: CodeWorkerOffline}
	ErrPayloadTooLarge      = &Error{Code: CodePayloadTooLarge}
	ErrUnsupportedMediaType = &Error{Code: CodeUnsupportedMediaType}
	ErrUnavailable          = &Error{Code: CodeUnavailable}
	ErrInternal             = &Error{Code: CodeInternal}
	ErrLimitExceeded        = &Error{Code: CodeLimitExceeded}
)

// codeOfStatus is the code assumed for an error answer that is not a
// problem document.
var codeOfStatus = map[int]Code{
	http.StatusBadRequest:            CodeInvalidArgument,
	http.StatusUnauthorized:          CodeUnauthenticated,
	http.StatusForbidden:             CodePermissionDenied,
	http.StatusNotFound:              CodeNotFound,
	http.StatusMethodNotAllowed:      CodeMethodNotAllowed,
	http.StatusConflict:              CodeConflict,
	http.StatusRequestEntityTooLarge: CodePayloadTooLarge,
	http.StatusUnsupportedMediaType:  CodeUnsupportedMediaType,
	http.StatusServiceUnavailable:    CodeUnavailable,
}

// problem is the wire form of an error answer.
type problem struct {
	Title  string `json:"title"`
	Status int    `json:"status"`
	Code   Code   `json:"code"`
	Detail string `json:"detail"`
	Field  string `json:"field"`
}

// errorFromResponse builds the *Error for an answer with status and body.
func errorFromResponse(status int, body []byte) *Error {
	e := &Error{Status: status, Title: http.StatusText(status)}
	var p problem
	if json.Unmarshal(body, &p) == nil && p.Code != "" {
		e.Code, e.Detail, e.Field = p.Code, p.Detail, p.Field
		if p.Title != "" {
			e.Title = p.Title
		}
		return e
	}
	e.Code = codeOfStatus[status]
	if e.Code == "" {
		e.Code = CodeInternal
	}
	e.Detail = strings.TrimSpace(truncate(string(body), 512))
	return e
}

// ErrorInfo is the error of a failed run or step, as the server records it.
type ErrorInfo struct {
	Message string `json:"message"`
	// Type is the error's type ("card_declined"), or "" for none. A retry
	// policy's NonRetryableErrorTypes lists types that are not retried.
	Type         string          `json:"type,omitempty"`
	NonRetryable bool            `json:"non_retryable"`
	Details      json.RawMessage `json:"details,omitempty"`
}

// RunError is the error of a run that did not complete, as Run.Result
// returns it. A cancelled run's RunError matches ErrCancelled.
type RunError struct {
	RunID  string
	Status Status
	// Info is the run's error; nil for a cancelled run.
	Info *ErrorInfo
}

func (e *RunError) Error() string {
	if e.Info == nil {
		return fmt.Sprintf("kagzi: run %s is %s", e.RunID, e.Status)
	}
	return fmt.Sprintf("kagzi: run %s %s: %s", e.RunID, e.Status, e.Info.Message)
}

// Is lets errors.Is(err, ErrCancelled) hold for a cancelled run.
func (e *RunError) Is(target error) bool {
	return e.Status == StatusCancelled && target == ErrCancelled
}

// appError is an error returned by workflow or step code, with what the
// helpers below added to it.
type appError struct {
	err          error
	typ          string
	nonRetryable bool
	details      any
}

func (e *appError) Error() string { return e.err.Error() }
func (e *appError) Unwrap() error { return e.err }

// NonRetryable marks err so that the step or run it fails is not retried,
// whatever the retry policy. It returns nil for a nil err.
func NonRetryable(err error) error {
	if err == nil {
		return nil
	}
	return &appError{err: err, nonRetryable: true}
}

// ErrorType gives err a type ("card_declined") that the server records and
// that a retry policy's NonRetryableErrorTypes can name. A type is 1 to 256
// bytes of UTF-8 without control characters. It returns nil for a nil err.
func ErrorType(err error, typ string) error {
	if err == nil {
		return nil
	}
	return &appError{err: err, typ: typ}
}

// ErrorDetails attaches details, any value that encodes to JSON, to err;
// the server records them with the error. It returns nil for a nil err.
func ErrorDetails(err error, details any) error {
	if err == nil {
		return nil
	}
	return &appError{err: err, details: details}
}

// recordedError is the error the server recorded, with its marks, so
// that reporting it again records the same.
func recordedError(info *ErrorInfo) error {
	e := &appError{err: errors.New(info.Message), typ: info.Type, nonRetryable: info.NonRetryable}
	if len(info.Details) > 0 && string(info.Details) != "null" {
		e.details = info.Details
	}
	return e
}

// maxErrorMessageBytes is the server's bound on an error message.
const maxErrorMessageBytes = 64 << 10

// maxNameBytes is the server's bound on names such as an error type.
const maxNameBytes = 256

// errorInfo turns an error returned by user code into what the server
// records. The outermost mark of each kind wins.
func errorInfo(err error) *ErrorInfo {
	info := &ErrorInfo{Message: truncate(err.Error(), maxErrorMessageBytes)}
	if info.Message == "" {
		info.Message = "error"
	}
	var details any
	var typed, detailed bool
	for e := err; e != nil; e = errors.Unwrap(e) {
		a, ok := e.(*appError)
		if !ok {
			continue
		}
		info.NonRetryable = info.NonRetryable || a.nonRetryable
		if a.typ != "" && !typed {
			info.Type, typed = validName(a.typ), true
		}
		if a.details != nil && !detailed {
			details, detailed = a.details, true
		}
	}
	if detailed {
		if b, err := json.Marshal(details); err == nil {
			info.Details = b
		} else {
			info.Details, _ = json.Marshal(map[string]string{"encode_error": err.Error()})
		}
	}
	return info
}

// validName makes s a valid name for the server: no control characters
// and at most 256 bytes.
func validName(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return -1
		}
		return r
	}, s)
	return truncate(s, maxNameBytes)
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
