package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/kagzi/kagzi/domain"
)

// TestDecodeBodyRefuses holds the request decoder to the contract's input
// validity: invalid UTF-8 anywhere, member names that match only if case is
// ignored, and members given twice are 400 naming the field.
func TestDecodeBodyRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		dst   func() any
		body  string
		field string
	}{
		{"upper-case member", newStart, `{"WORKFLOW_TYPE":"x"}`, "WORKFLOW_TYPE"},
		{"mixed-case member", newStart, `{"Workflow_Type":"x"}`, "Workflow_Type"},
		{"duplicate member", newStart, `{"workflow_type":"x","workflow_type":"y"}`, "workflow_type"},
		{"duplicate payload", newStart, `{"workflow_type":"x","input":1,"input":2}`, "input"},
		{"nested case", newStart, `{"workflow_type":"x","retry_policy":{"Max_Attempts":3}}`, "retry_policy.Max_Attempts"},
		{"nested duplicate", newStart, `{"workflow_type":"x","retry_policy":{"max_attempts":3,"max_attempts":4}}`, "retry_policy.max_attempts"},
		{"batch item case", newBatch, `{"workflows":[{"workflow_type":"x"},{"Workflow_type":"x"}]}`, "workflows[1].Workflow_type"},
		{"batch item duplicate", newBatch, `{"workflows":[{"workflow_type":"x","input":{},"input":{}}]}`, "workflows[0].input"},
		{"invalid UTF-8 in a name", newStart, "{\"workflow_type\":\"k-\xfe\"}", "workflow_type"},
		{"invalid UTF-8 in a payload", newStart, "{\"workflow_type\":\"x\",\"input\":{\"a\":\"\xff\"}}", "input"},
		{"invalid UTF-8 in a batch payload", newBatch, "{\"workflows\":[{\"workflow_type\":\"x\"},{\"workflow_type\":\"x\",\"input\":[\"\xc3\"]}]}", "workflows[1].input"},
		{"invalid UTF-8 in error details", newFail, "{\"lease_id\":\"x\",\"error\":{\"message\":\"m\",\"details\":\"\xed\xa0\x80\"}}", "error.details"},
		{"invalid UTF-8 in an error message", newFail, "{\"lease_id\":\"x\",\"error\":{\"message\":\"\x80\"}}", "error.message"},
		{"invalid UTF-8 in a member name", newFail, "{\"lease_id\":\"x\",\"error\":{\"mess\xffage\":\"m\"}}", "error"},
		{"duplicate label", newRegister, `{"task_queue":"q","labels":{"a":"1","a":"2"}}`, `labels["a"]`},
		{"invalid UTF-8 in a label", newRegister, "{\"task_queue\":\"q\",\"labels\":{\"a\":\"\xff\"}}", `labels["a"]`},
		{"embedded member case", newComplete, `{"LEASE_ID":"x"}`, "LEASE_ID"},
		{"optional wrapper case", newPatch, `{"retry_policy":{"MAX_ATTEMPTS":1}}`, "retry_policy.MAX_ATTEMPTS"},
		{"optional wrapper duplicate", newPatch, `{"cron":"* * * * *","cron":"* * * * *"}`, "cron"},
		{"nullable wrapper duplicate", newQueuePatch, `{"max_concurrent":1,"max_concurrent":null}`, "max_concurrent"},
		{"no member at all", newEmpty, `{"x":1}`, "x"},
		{"lone high surrogate in a name", newStart, `{"workflow_type":"\ud800"}`, "workflow_type"},
		{"lone low surrogate in a name", newStart, `{"workflow_type":"a\udc00"}`, "workflow_type"},
		{"high surrogate without its pair", newStart, `{"workflow_type":"\ud800\u0041"}`, "workflow_type"},
		{"lone surrogate in a label", newRegister, `{"task_queue":"q","labels":{"k":"\udbff"}}`, `labels["k"]`},
		{"lone surrogate in a member name", newRegister, `{"task_queue":"q","labels":{"\udbff":"v"}}`, "labels"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := decodeBody([]byte(tt.body), tt.dst())
			var de *domain.Error
			if !errors.As(err, &de) || de.Code != domain.CodeInvalidArgument || de.Field != tt.field {
				t.Fatalf("decode %q: got %v, want invalid_argument naming %q", tt.body, err, tt.field)
			}
		})
	}
}

// TestDecodeBodyAccepts checks that the strict checks leave valid bodies
// alone: escaped member names, \u0000 and any JSON inside payloads,
// duplicates inside payloads (which are any JSON), and case inside them.
func TestDecodeBodyAccepts(t *testing.T) {
	t.Parallel()
	body := `{"workflow_type":"x","input":{"a":1,"a":"\u0000","A":[{"b":{}}]},"retry_policy":{"max_attempts":2},"workflow\u005ftype":"y"}`
	var req domain.StartRequest
	err := decodeBody([]byte(body), &req)
	// An escaped member name is the same name: given twice.
	var de *domain.Error
	if !errors.As(err, &de) || de.Field != "workflow_type" {
		t.Fatalf("escaped duplicate: got %v, want workflow_type given twice", err)
	}
	body = `{"workflow_type":"x","input":{"a":1,"a":"\u0000","A":[{"b":{}}]},"retry_policy":{"max_attempts":2}}`
	if err := decodeBody([]byte(body), &req); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if got, want := string(req.Input), `{"a":1,"a":"\u0000","A":[{"b":{}}]}`; got != want {
		t.Fatalf("input: got %s, want %s", got, want)
	}
	// A surrogate pair is a character; an escaped backslash is no escape;
	// payloads keep what they were sent.
	body = `{"workflow_type":"\ud83d\ude00 \\ud800","input":"\ud800"}`
	if err := decodeBody([]byte(body), &req); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	if req.WorkflowType != "\U0001F600 \\ud800" || string(req.Input) != `"\ud800"` {
		t.Fatalf("decode %s: got %q and %s", body, req.WorkflowType, req.Input)
	}
}

func newStart() any        { return new(domain.StartRequest) }
func newBatch() any        { return new(batchRequest) }
func newFail() any         { return new(failRequest) }
func newComplete() any     { return new(completeRequest) }
func newRegister() any     { return new(domain.RegisterWorker) }
func newPatch() any        { return new(domain.SchedulePatch) }
func newQueuePatch() any   { return new(domain.TaskQueuePatch) }
func newEmpty() any        { return new(struct{}) }
func newClaim() any        { return new(claimRequest) }
func newCompleteRuns() any { return new(completeRunsRequest) }

// requestTypes are the bodies the fuzz target decodes into: every request
// shape the API reads. roundTrips is false for the PATCH bodies, whose
// "absent or null" wrappers decode but do not encode back.
var requestTypes = []struct {
	new        func() any
	roundTrips bool
}{
	{newStart, true}, {newBatch, true}, {newFail, true}, {newComplete, true}, {newRegister, true},
	{newPatch, false}, {newQueuePatch, false}, {newEmpty, true}, {newClaim, true}, {newCompleteRuns, true},
	{func() any { return new(domain.ScheduleRequest) }, true}, {func() any { return new(beginStepRequest) }, true},
	{func() any { return new(sleepRequest) }, true}, {func() any { return new(domain.WorkerHeartbeat) }, true},
}

// FuzzDecodeBody feeds any bytes to the request decoder, as every request
// type, and holds what it accepts to the contract: it never panics; it
// refuses only with invalid_argument; what it accepts is valid UTF-8 whose
// top-level member names are the type's own, exactly and once each, and
// which an independent walk with encoding/json's tokenizer finds free of
// duplicate, case-variant and unknown members and of lone surrogates in
// names at every level of the request (strictOracle); and
// the decoded value re-encodes to a body that decodes to the same value.
func FuzzDecodeBody(f *testing.F) {
	for _, s := range []string{
		`{}`, ` {"workflow_type":"x","input":{"a":[1,2,{"b":null}]}}`,
		`{"workflow_type":"x","WORKFLOW_TYPE":"y"}`, `{"workflows":[{"workflow_type":"x","input":"\u0000"}]}`,
		"{\"workflow_type\":\"\xff\"}", `{"lease_id":"x","error":{"message":"m","details":1e1000000}}`,
		`{"runs":[{"run_id":"a","lease_id":"b","output":{}}]}`, `{"retry_policy":{"max_attempts":3},"cron":null}`,
		`{"max_concurrent":null,"workflow_type_limits":{"a":1,"b":null}}`, `{"labels":{"a":"b"},"pid":2147483648}`,
		`{"start_at":"2026-01-02T15:04:05Z","start_delay_ms":9223372036855}`, `{"a":1}{}`, `[1]`, `{"x`,
	} {
		for i := range requestTypes {
			f.Add(uint8(i), []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, kind uint8, body []byte) {
		typ := requestTypes[int(kind)%len(requestTypes)]
		dst := typ.new()
		err := decodeBody(body, dst)
		if err != nil {
			var de *domain.Error
			if !errors.As(err, &de) || de.Code != domain.CodeInvalidArgument {
				t.Fatalf("decode %q: got %v, want an invalid_argument error", body, err)
			}
			return
		}
		if !utf8.Valid(body) {
			t.Fatalf("decode accepted invalid UTF-8: %q", body)
		}
		checkTopLevelMembers(t, body, reflect.TypeOf(dst).Elem())
		if err := strictOracle(body, reflect.TypeOf(dst)); err != nil {
			t.Fatalf("decode accepted %q, which %v", body, err)
		}
		if !typ.roundTrips {
			return
		}
		again, err := json.Marshal(dst)
		if err != nil {
			t.Fatalf("encode what %q decoded to: %v", body, err)
		}
		dst2 := typ.new()
		if err := decodeBody(again, dst2); err != nil {
			t.Fatalf("re-encoded body %s of %q does not decode: %v", again, body, err)
		}
		if again2, err := json.Marshal(dst2); err != nil || !bytes.Equal(again, again2) {
			t.Fatalf("round trip of %q: %s re-encodes as %s (%v)", body, again, again2, err)
		}
	})
}

// checkTopLevelMembers fails t unless the members of the object in body
// are each a JSON member name of struct type typ, exactly, and once.
func checkTopLevelMembers(t *testing.T, body []byte, typ reflect.Type) {
	t.Helper()
	names := map[string]bool{}
	for _, f := range reflect.VisibleFields(typ) {
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" && name != "-" {
			names[name] = true
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		if len(bytes.TrimSpace(body)) == 0 {
			return
		}
		t.Fatalf("accepted a body that is not an object: %q", body)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("accepted %q: %v", body, err)
		}
		name := tok.(string)
		if !names[name] || seen[name] {
			t.Fatalf("accepted member %q of %q (known %v, seen before %v)", name, body, names[name], seen[name])
		}
		seen[name] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("accepted %q: %v", body, err)
		}
	}
}

// BenchmarkDecodeBody measures the strict decoder on a start request whose
// input is a 2 MiB payload, beside encoding/json alone (what decode did
// before it checked UTF-8, member names and duplicates):
// go test -run '^$' -bench DecodeBody -benchmem ./api/
func BenchmarkDecodeBody(b *testing.B) {
	var payload strings.Builder
	payload.WriteString(`[`)
	for i := 0; payload.Len() < 2<<20-100; i++ {
		if i > 0 {
			payload.WriteString(",")
		}
		payload.WriteString(`{"id":12345,"name":"a string with ünïcode","ok":true,"tags":["x","y"]}`)
	}
	payload.WriteString(`]`)
	body := []byte(`{"workflow_type":"bench","input":` + payload.String() + `}`)
	b.Run("strict", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var req domain.StartRequest
			if err := decodeBody(body, &req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var req domain.StartRequest
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// strictOracle walks body with encoding/json's tokenizer along type t, and
// reports the first member, at any level of the request's own structs and
// maps (payloads are any JSON), that is unknown, differs in case from its
// field, is given twice, or is a string escaping half a surrogate pair.
// It is the decoder's check written another way, for the fuzz target.
func strictOracle(body []byte, t reflect.Type) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var walk func(t reflect.Type, path string) error
	walk = func(t reflect.Type, path string) error {
		for {
			if t.Kind() == reflect.Pointer {
				t = t.Elem()
			} else if w, ok := reflect.New(t).Interface().(wrapper); ok {
				t = w.JSONValueType()
			} else {
				break
			}
		}
		if _, custom := reflect.New(t).Interface().(json.Unmarshaler); custom || t == rawMessageType {
			var raw json.RawMessage
			return dec.Decode(&raw)
		}
		from := dec.InputOffset()
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				kfrom := dec.InputOffset()
				ktok, err := dec.Token()
				if err != nil {
					return err
				}
				if loneSurrogate(body[kfrom:dec.InputOffset()]) {
					return fmt.Errorf("has a lone surrogate in a member name of %s", path)
				}
				name := ktok.(string)
				elem := t.Elem
				if t.Kind() == reflect.Struct {
					f, ok := jsonFields(t)[name]
					if !ok {
						return fmt.Errorf("has the unknown member %s.%q", path, name)
					}
					elem = func() reflect.Type { return f }
				}
				if seen[name] {
					return fmt.Errorf("has %s.%q twice", path, name)
				}
				seen[name] = true
				if err := walk(elem(), path+"."+name); err != nil {
					return err
				}
			}
			_, err := dec.Token()
			return err
		case json.Delim('['):
			for i := 0; dec.More(); i++ {
				if err := walk(t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
			_, err := dec.Token()
			return err
		}
		if _, ok := tok.(string); ok && loneSurrogate(body[from:dec.InputOffset()]) {
			return fmt.Errorf("has a lone surrogate in %s", path)
		}
		return nil
	}
	return walk(t, "")
}
