package domain

import (
	"encoding/json"
	"fmt"
)

// Default payload limits: 2 MiB maximum, a warning above 1 MiB.
const (
	DefaultPayloadMaxBytes  = 2 << 20
	DefaultPayloadWarnBytes = 1 << 20
)

// PayloadLimits bounds a single JSON payload (an input or an output),
// measured as the length of the JSON value exactly as sent.
type PayloadLimits struct {
	MaxBytes  int
	WarnBytes int
}

// Check returns a payload_too_large error naming field when raw is over the
// maximum, and reports whether it is over the warning threshold. Every
// payload goes through it before anything is written.
func (l PayloadLimits) Check(field string, raw json.RawMessage) (warn bool, err error) {
	if n := len(raw); n > l.MaxBytes {
		return false, &Error{
			Code:    CodePayloadTooLarge,
			Field:   field,
			Message: fmt.Sprintf("is %d bytes; the limit is %d", n, l.MaxBytes),
		}
	}
	return l.WarnBytes > 0 && len(raw) > l.WarnBytes, nil
}
