package domain

import (
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

var identRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// DefaultName is the usual namespace and task queue.
const DefaultName = "default"

// MaxNameBytes bounds workflow types, step names and external IDs.
const MaxNameBytes = 256

// ValidateIdent checks a namespace or task queue name.
func ValidateIdent(field, s string) error {
	if !identRE.MatchString(s) {
		return Invalid(field, "must match %s, got %q", identRE.String(), s)
	}
	return nil
}

// ValidateName checks a workflow type, step name or external ID: 1 to 256
// bytes of UTF-8 with no control characters (C0, DEL and C1).
func ValidateName(field, s string) error {
	switch {
	case s == "":
		return Invalid(field, "must not be empty")
	case len(s) > MaxNameBytes:
		return Invalid(field, "is %d bytes; the limit is %d", len(s), MaxNameBytes)
	case !utf8.ValidString(s):
		return Invalid(field, "is not valid UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return Invalid(field, "must not contain control characters")
		}
	}
	return nil
}

// ValidateText checks free text, such as an error message or a label
// value: at most max bytes of UTF-8 without NUL, which PostgreSQL cannot
// store in text. Other control characters pass, so that multi-line
// messages and stack traces do.
func ValidateText(field, s string, max int) error {
	switch {
	case len(s) > max:
		return Invalid(field, "is %d bytes; the limit is %d", len(s), max)
	case !utf8.ValidString(s):
		return Invalid(field, "is not valid UTF-8")
	case strings.IndexByte(s, 0) >= 0:
		return Invalid(field, "must not contain \\u0000")
	}
	return nil
}

// ValidateUUID checks that s is a UUID in its canonical text form.
func ValidateUUID(field, s string) error {
	if !IsUUID(s) {
		return Invalid(field, "must be a UUID, got %q", s)
	}
	return nil
}

// IsUUID reports whether s is a UUID in its canonical 8-4-4-4-12 form.
func IsUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

func itoa(n int) string { return strconv.Itoa(n) }

func isControl(r rune) bool { return unicode.IsControl(r) }

// Timestamp is an RFC 3339 time as a request gives it. Decoding never
// fails, so that validation can name the field: Time reports a malformed
// value.
type Timestamp struct {
	t   time.Time
	bad bool
}

// UnmarshalJSON records the time, or that it was not one.
func (ts *Timestamp) UnmarshalJSON(b []byte) error {
	ts.bad = ts.t.UnmarshalJSON(b) != nil
	return nil
}

// Time returns the time, or an invalid_argument error naming field.
func (ts *Timestamp) Time(field string) (time.Time, error) {
	if ts.bad {
		return time.Time{}, Invalid(field, "must be an RFC 3339 timestamp such as 2026-01-02T15:04:05Z")
	}
	return ts.t, nil
}
