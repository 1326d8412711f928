package domain_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kagzi/kagzi/domain"
)

var limits = domain.PayloadLimits{MaxBytes: 100, WarnBytes: 50}

func wantInvalid(t *testing.T, err error, code domain.Code, field string) {
	t.Helper()
	var de *domain.Error
	if !errors.As(err, &de) || de.Code != code || de.Field != field {
		t.Fatalf("got %v, want %s naming %q", err, code, field)
	}
}

func TestScheduleRequestDefaults(t *testing.T) {
	t.Parallel()
	n, err := domain.ScheduleRequest{WorkflowType: "report", Cron: "@hourly"}.Validate(limits)
	if err != nil {
		t.Fatal(err)
	}
	if n.TaskQueue != "default" || n.Timezone != "UTC" || string(n.Input) != "null" || !n.Enabled ||
		n.MaxCatchup != 1 || n.RetryPolicy.MaxAttempts != 5 || n.Version != nil || n.LargeInput {
		t.Errorf("defaults: got %+v", n)
	}
}

func TestScheduleRequestRefuses(t *testing.T) {
	t.Parallel()
	zero, big := 0, domain.MaxCatchup+1
	long := strings.Repeat("v", domain.MaxVersionBytes+1)
	bad := 0
	for _, c := range []struct {
		req   domain.ScheduleRequest
		code  domain.Code
		field string
	}{
		{domain.ScheduleRequest{Cron: "@hourly"}, domain.CodeInvalidArgument, "workflow_type"},
		{domain.ScheduleRequest{WorkflowType: "w"}, domain.CodeInvalidArgument, "cron"},
		{domain.ScheduleRequest{WorkflowType: "w", Cron: "0 9\t* * *"}, domain.CodeInvalidArgument, "cron"},
		{domain.ScheduleRequest{WorkflowType: "w", Cron: "@hourly", TaskQueue: "no spaces"}, domain.CodeInvalidArgument, "task_queue"},
		{domain.ScheduleRequest{WorkflowType: "w", Cron: "@hourly", Timezone: "Nowhere/Else"}, domain.CodeInvalidArgument, "timezone"},
		{domain.ScheduleRequest{WorkflowType: "w", Cron: "@hourly", Timezone: "Local"}, domain.CodeInvalidArgument, "timezone"},
		{domain.ScheduleRequest{WorkflowType: "w", Cron: "@hourly", MaxCatchup: &zero}, domain.CodeInvalidArgument, "max_catchup"},
		{domain.ScheduleRequest{WorkflowType: "w", Cron: "@hourly", MaxCatchup: &big}, domain.CodeInvalidArgument, "max_catchup"},
		{domain.ScheduleRequest{WorkflowType: "w", Cron: "@hourly", Version: &long}, domain.CodeInvalidArgument, "version"},
		{domain.ScheduleRequest{WorkflowType: "w", Cron: "@hourly", RetryPolicy: &domain.RetryPolicyInput{MaxAttempts: &bad}}, domain.CodeInvalidArgument, "retry_policy.max_attempts"},
		{domain.ScheduleRequest{WorkflowType: "w", Cron: "@hourly", Input: json.RawMessage(`"` + strings.Repeat("x", 100) + `"`)}, domain.CodePayloadTooLarge, "input"},
	} {
		_, err := c.req.Validate(limits)
		wantInvalid(t, err, c.code, c.field)
	}
}

func decodePatch(t *testing.T, body string) *domain.SchedulePatch {
	t.Helper()
	var p domain.SchedulePatch
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return &p
}

func TestSchedulePatchApply(t *testing.T) {
	t.Parallel()
	v := "v1"
	base := func() domain.Schedule {
		p := domain.DefaultRetryPolicy()
		p.MaxAttempts = 9
		return domain.Schedule{
			TaskQueue: "q", WorkflowType: "w", Cron: "@hourly", Timezone: "UTC", Input: json.RawMessage(`{"a":1}`),
			RetryPolicy: p, Version: &v, Enabled: true, MaxCatchup: 2,
		}
	}
	for _, c := range []struct {
		body   string
		timing bool
		check  func(s domain.Schedule) bool
	}{
		{`{}`, false, func(s domain.Schedule) bool { return s.Cron == "@hourly" && string(s.Input) == `{"a":1}` }},
		{`{"cron":"@daily"}`, true, func(s domain.Schedule) bool { return s.Cron == "@daily" }},
		{`{"cron":"@hourly"}`, false, func(s domain.Schedule) bool { return s.Cron == "@hourly" }},
		{`{"timezone":"Asia/Tokyo"}`, true, func(s domain.Schedule) bool { return s.Timezone == "Asia/Tokyo" }},
		{`{"enabled":false}`, true, func(s domain.Schedule) bool { return !s.Enabled }},
		{`{"enabled":true}`, false, func(s domain.Schedule) bool { return s.Enabled }},
		{`{"input":null}`, false, func(s domain.Schedule) bool { return string(s.Input) == "null" }},
		{`{"version":null}`, false, func(s domain.Schedule) bool { return s.Version == nil }},
		{`{"version":"v2"}`, false, func(s domain.Schedule) bool { return *s.Version == "v2" }},
		{`{"retry_policy":{"initial_interval_ms":5}}`, false, func(s domain.Schedule) bool {
			return s.RetryPolicy.MaxAttempts == 9 && s.RetryPolicy.InitialIntervalMS == 5
		}},
		{`{"retry_policy":null}`, false, func(s domain.Schedule) bool { return s.RetryPolicy.MaxAttempts == 5 }},
		{`{"max_catchup":7,"task_queue":"other","workflow_type":"w2"}`, false, func(s domain.Schedule) bool {
			return s.MaxCatchup == 7 && s.TaskQueue == "other" && s.WorkflowType == "w2"
		}},
	} {
		p := decodePatch(t, c.body)
		if err := p.Validate(limits); err != nil {
			t.Fatalf("%s: Validate: %v", c.body, err)
		}
		s := base()
		timing, err := p.Apply(&s)
		if err != nil || timing != c.timing || !c.check(s) {
			t.Errorf("%s: got timing %v, err %v, schedule %+v; want timing %v", c.body, timing, err, s, c.timing)
		}
		if got := p.Empty(); got != (c.body == `{}`) {
			t.Errorf("%s: Empty() = %v", c.body, got)
		}
	}
}

func TestSchedulePatchRefuses(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		body  string
		code  domain.Code
		field string
	}{
		{`{"cron":null}`, domain.CodeInvalidArgument, "cron"},
		{`{"enabled":null}`, domain.CodeInvalidArgument, "enabled"},
		{`{"max_catchup":null}`, domain.CodeInvalidArgument, "max_catchup"},
		{`{"max_catchup":0}`, domain.CodeInvalidArgument, "max_catchup"},
		{`{"timezone":"Nowhere/Else"}`, domain.CodeInvalidArgument, "timezone"},
		{`{"cron":""}`, domain.CodeInvalidArgument, "cron"},
		{`{"task_queue":"a b"}`, domain.CodeInvalidArgument, "task_queue"},
		{`{"retry_policy":{"max_attempts":0}}`, domain.CodeInvalidArgument, "retry_policy.max_attempts"},
		{`{"input":"` + strings.Repeat("x", 100) + `"}`, domain.CodePayloadTooLarge, "input"},
	} {
		wantInvalid(t, decodePatch(t, c.body).Validate(limits), c.code, c.field)
	}
	// A member of the wrong type is named with its path by the decoder.
	var p domain.SchedulePatch
	err := json.Unmarshal([]byte(`{"retry_policy":{"max_attempts":"x"}}`), &p)
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) || te.Field != "retry_policy.max_attempts" {
		t.Errorf("got %v, want a type error naming retry_policy.max_attempts", err)
	}
	if err := json.Unmarshal([]byte(`{"retry_policy":{"max_attempt":1}}`), &p); err == nil {
		t.Errorf("an unknown field inside retry_policy was accepted")
	}
}

func TestScheduleRunExternalID(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 3, 9, 2, 30, 0, 0, time.FixedZone("EDT", -4*3600))
	if got, want := domain.ScheduleRunExternalID("0190", at), "schedule:0190:2026-03-09T06:30:00Z"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
