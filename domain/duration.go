package domain

import "time"

// DurationMS checks a duration given in milliseconds, such as
// start_delay_ms, against [0, max] before converting it, so that no value
// can overflow into a different duration.
func DurationMS(field string, ms int64, max time.Duration) (time.Duration, error) {
	if ms < 0 || ms > max.Milliseconds() {
		return 0, Invalid(field, "must be between 0 and %d", max.Milliseconds())
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// WaitMS is a wait_ms: a wish, capped at max; only a negative one is
// refused. It is capped before it is converted.
func WaitMS(field string, ms int64, max time.Duration) (time.Duration, error) {
	if ms < 0 {
		return 0, Invalid(field, "must not be negative")
	}
	return time.Duration(min(ms, max.Milliseconds())) * time.Millisecond, nil
}
