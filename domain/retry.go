package domain

import (
	"math"
	"time"
)

// RetryPolicy says how often and how soon a failed attempt is tried again.
type RetryPolicy struct {
	MaxAttempts            int      `json:"max_attempts"`
	InitialIntervalMS      int64    `json:"initial_interval_ms"`
	BackoffCoefficient     float64  `json:"backoff_coefficient"`
	MaxIntervalMS          int64    `json:"max_interval_ms"`
	NonRetryableErrorTypes []string `json:"non_retryable_error_types"`
}

// DefaultRetryPolicy is the policy of a run that names none.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{
		MaxAttempts:            5,
		InitialIntervalMS:      1000,
		BackoffCoefficient:     2.0,
		MaxIntervalMS:          300000,
		NonRetryableErrorTypes: []string{},
	}
}

// Bounds of a retry policy's fields.
const (
	MaxRetryAttempts   = 10000
	MaxRetryIntervalMS = 365 * 24 * 3600 * 1000
	MaxBackoff         = 100.0
)

// RetryPolicyInput is a retry policy as a request gives it: every field is
// optional and falls back to a base policy.
type RetryPolicyInput struct {
	MaxAttempts            *int     `json:"max_attempts"`
	InitialIntervalMS      *int64   `json:"initial_interval_ms"`
	BackoffCoefficient     *float64 `json:"backoff_coefficient"`
	MaxIntervalMS          *int64   `json:"max_interval_ms"`
	NonRetryableErrorTypes []string `json:"non_retryable_error_types"`
}

// Resolve validates in and fills what it leaves out from base. A nil input
// is base itself. field names the policy in errors ("retry_policy").
func (in *RetryPolicyInput) Resolve(field string, base RetryPolicy) (RetryPolicy, error) {
	p := base
	if in == nil {
		return p, nil
	}
	if in.MaxAttempts != nil {
		if *in.MaxAttempts < 1 || *in.MaxAttempts > MaxRetryAttempts {
			return p, Invalid(field+".max_attempts", "must be between 1 and %d", MaxRetryAttempts)
		}
		p.MaxAttempts = *in.MaxAttempts
	}
	if in.InitialIntervalMS != nil {
		if *in.InitialIntervalMS < 1 || *in.InitialIntervalMS > MaxRetryIntervalMS {
			return p, Invalid(field+".initial_interval_ms", "must be between 1 and %d", MaxRetryIntervalMS)
		}
		p.InitialIntervalMS = *in.InitialIntervalMS
	}
	if in.BackoffCoefficient != nil {
		c := *in.BackoffCoefficient
		if math.IsNaN(c) || c < 1 || c > MaxBackoff {
			return p, Invalid(field+".backoff_coefficient", "must be between 1 and %g", MaxBackoff)
		}
		p.BackoffCoefficient = c
	}
	if in.MaxIntervalMS != nil {
		if *in.MaxIntervalMS < 1 || *in.MaxIntervalMS > MaxRetryIntervalMS {
			return p, Invalid(field+".max_interval_ms", "must be between 1 and %d", MaxRetryIntervalMS)
		}
		p.MaxIntervalMS = *in.MaxIntervalMS
	}
	if in.NonRetryableErrorTypes != nil {
		for i, t := range in.NonRetryableErrorTypes {
			if err := ValidateName(field+".non_retryable_error_types["+itoa(i)+"]", t); err != nil {
				return p, err
			}
		}
		p.NonRetryableErrorTypes = in.NonRetryableErrorTypes
	}
	if p.NonRetryableErrorTypes == nil {
		p.NonRetryableErrorTypes = []string{}
	}
	return p, nil
}

// Delay is the wait after the n-th failed attempt (n >= 1):
// min(initial_interval * backoff_coefficient^(n-1), max_interval).
func (p RetryPolicy) Delay(n int) time.Duration {
	if n < 1 {
		n = 1
	}
	ms := float64(p.InitialIntervalMS) * math.Pow(p.BackoffCoefficient, float64(n-1))
	if math.IsInf(ms, 0) || math.IsNaN(ms) || ms > float64(p.MaxIntervalMS) {
		ms = float64(p.MaxIntervalMS)
	}
	return time.Duration(ms) * time.Millisecond
}

// Retryable reports whether the policy lets an attempt that failed with e be
// tried again at all, leaving aside the number of attempts.
func (p RetryPolicy) Retryable(e *ErrorInfo) bool {
	if e == nil {
		return true
	}
	if e.NonRetryable {
		return false
	}
	if e.Type != nil {
		for _, t := range p.NonRetryableErrorTypes {
			if t == *e.Type {
				return false
			}
		}
	}
	return true
}

// Decide is the retry decision after attempt (1-based) failed with e: whether
// another attempt follows, and after what delay.
func (p RetryPolicy) Decide(attempt int, e *ErrorInfo) (retry bool, delay time.Duration) {
	if attempt >= p.MaxAttempts || !p.Retryable(e) {
		return false, 0
	}
	return true, p.Delay(attempt)
}
