package domain

import (
	"database/sql/driver"
	"encoding/json"
	"fmt"
)

// storedErrorInfo is an ErrorInfo as the database keeps it (a jsonb
// column). Details, which are any JSON as the worker sent it, are kept as
// their JSON text in DetailsJSON: jsonb would refuse \u0000 and numbers
// beyond its numeric type, and would reorder and reformat what it keeps.
// Details is how rows written before DetailsJSON existed hold them.
type storedErrorInfo struct {
	Message      string          `json:"message"`
	Type         *string         `json:"type"`
	NonRetryable bool            `json:"non_retryable"`
	DetailsJSON  *string         `json:"details_json,omitempty"`
	Details      json.RawMessage `json:"details,omitempty"`
}

// Value is e's stored form, so that details round-trip exactly.
func (e *ErrorInfo) Value() (driver.Value, error) {
	if e == nil {
		return nil, nil
	}
	s := storedErrorInfo{Message: e.Message, Type: e.Type, NonRetryable: e.NonRetryable}
	if len(e.Details) > 0 {
		d := string(e.Details)
		s.DetailsJSON = &d
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

// Scan reads e from its stored form.
func (e *ErrorInfo) Scan(src any) error {
	var b []byte
	switch v := src.(type) {
	case nil:
		*e = ErrorInfo{}
		return nil
	case string:
		b = []byte(v)
	case []byte:
		b = v
	default:
		return fmt.Errorf("scan an error from %T", src)
	}
	var s storedErrorInfo
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("scan an error: %w", err)
	}
	*e = ErrorInfo{Message: s.Message, Type: s.Type, NonRetryable: s.NonRetryable, Details: s.Details}
	if s.DetailsJSON != nil {
		e.Details = json.RawMessage(*s.DetailsJSON)
	}
	return nil
}
