package api

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/kagzi/kagzi/domain"
)

// writeJSON writes v as the JSON response body with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	writeBody(w, status, v)
}

// writeBody encodes v without HTML escaping, so that payloads come back as
// they were sent ("<" stays "<").
func writeBody(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"type":"about:blank","title":"Internal Server Error","status":500,"code":"internal","detail":"internal error"}` + "\n")
		w.Header().Set("Content-Type", "application/problem+json")
	}
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// decode reads the request body, at most limit bytes, into dst strictly: it
// must be one JSON object of dst's shape, valid UTF-8 throughout, whose
// member names are dst's exactly (case included), each at most once. An
// empty body decodes as {} so that requests whose fields are all optional
// need none.
func decode(w http.ResponseWriter, r *http.Request, limit int64, dst any) error {
	// Requests with a body take their arguments there, never in the query.
	if err := noQuery(r); err != nil {
		return err
	}
	if r.ContentLength == 0 {
		return nil
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/json" {
		return domain.Errorf(domain.CodeUnsupportedMediaType, "the request body must be application/json")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return decodeError(err)
	}
	return decodeBody(body, dst)
}

// decodeBody is decode once the body is read.
func decodeBody(body []byte, dst any) error {
	rest := bytes.TrimLeft(body, " \t\r\n")
	if len(rest) == 0 {
		return nil
	}
	if rest[0] != '{' {
		return domain.Errorf(domain.CodeInvalidArgument, "the request body must be a JSON object")
	}
	// The members are checked first, so that invalid UTF-8 is named by its
	// field before the decoder below replaces it with U+FFFD.
	if err := checkMembers(body, reflect.TypeOf(dst)); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return domain.Errorf(domain.CodeInvalidArgument, "the request body must hold a single JSON value")
	}
	return nil
}

// checkMembers walks body along the type t it is to be decoded into, and
// refuses what encoding/json lets through: invalid UTF-8 (which it would
// replace with U+FFFD, or pass on inside a json.RawMessage), member names
// that match a field only if case is ignored, and members given twice. It
// walks every object of the request's own structs and maps; a free-form
// payload (json.RawMessage) is skipped whole, as one value. It checks the
// kind and range of every scalar too, so that errors name nested fields
// with their index ("workflows[3].start_delay_ms").
func checkMembers(body []byte, t reflect.Type) error {
	c := memberChecker{dec: json.NewDecoder(bytes.NewReader(body)), body: body, bad: -1}
	if !utf8.Valid(body) {
		c.bad = int64(invalidUTF8At(body))
	}
	c.dec.UseNumber()
	switch err := c.value(t, ""); {
	case err != nil:
		return decodeError(err)
	case c.bad >= 0:
		return domain.Errorf(domain.CodeInvalidArgument, "the request body is not valid UTF-8 (byte %d)", c.bad)
	}
	return nil
}

// invalidUTF8At returns the offset of the first byte of b that is not
// part of valid UTF-8.
func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return -1
}

type memberChecker struct {
	dec  *json.Decoder
	body []byte
	// bad is the offset of the first invalid UTF-8 byte, or -1.
	bad int64
}

var rawMessageType = reflect.TypeFor[json.RawMessage]()

// wrapper is a type, such as domain.Optional, that decodes itself into a
// value of another type: the walk goes on into that type.
type wrapper interface{ JSONValueType() reflect.Type }

// holds reports whether the invalid byte lies in [from, the decoder's
// position).
func (c *memberChecker) holds(from int64) bool {
	return c.bad >= from && c.bad < c.dec.InputOffset()
}

func (c *memberChecker) invalidUTF8(field string) error {
	if field == "" {
		return domain.Errorf(domain.CodeInvalidArgument, "the request body is not valid UTF-8 (byte %d)", c.bad)
	}
	return domain.Invalid(field, "is not valid UTF-8")
}

// loneSurrogate reports whether the string token between from and the
// decoder's position escapes half a UTF-16 surrogate pair ("\ud800"),
// which encoding/json would decode as U+FFFD: a name must be what was
// sent. (Payloads keep them: they are stored as sent.)
func (c *memberChecker) loneSurrogate(from int64) bool {
	raw := c.body[from:c.dec.InputOffset()]
	for i := 0; i+1 < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		if raw[i+1] != 'u' {
			i++ // an escaped character, such as \\
			continue
		}
		r, ok := hex4(raw[i+2:])
		switch {
		case !ok:
			continue
		case utf16.IsSurrogate(r) && r < 0xdc00:
			if len(raw) < i+12 || raw[i+6] != '\\' || raw[i+7] != 'u' {
				return true
			}
			if lo, ok := hex4(raw[i+8:]); !ok || lo < 0xdc00 || lo > 0xdfff {
				return true
			}
			i += 11
		case utf16.IsSurrogate(r):
			return true
		default:
			i += 5
		}
	}
	return false
}

// hex4 reads the four hex digits of a \u escape.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(b[:4]), 16, 32)
	return rune(n), err == nil
}

// value checks the next value of the body, to be decoded into t; field is
// its name in errors.
func (c *memberChecker) value(t reflect.Type, field string) error {
	for {
		if t.Kind() == reflect.Pointer {
			t = t.Elem()
			continue
		}
		if w, ok := reflect.New(t).Interface().(wrapper); ok {
			t = w.JSONValueType()
			continue
		}
		break
	}
	from := c.dec.InputOffset()
	_, custom := reflect.New(t).Interface().(json.Unmarshaler)
	if t == rawMessageType || custom || t.Kind() == reflect.Interface {
		// A payload, or a value that decodes itself: one value, any shape.
		var raw json.RawMessage
		if err := c.dec.Decode(&raw); err != nil {
			var syntax *json.SyntaxError
			if errors.As(err, &syntax) && field != "" {
				return domain.Invalid(field, "is not valid JSON: %v", err)
			}
			return err
		}
		if c.holds(from) {
			return c.invalidUTF8(field)
		}
		return nil
	}
	tok, err := c.dec.Token()
	if err != nil {
		return err
	}
	if _, ok := tok.(string); ok && c.loneSurrogate(from) {
		return domain.Invalid(field, "holds a \\u escape of half a UTF-16 surrogate pair, which is no character")
	}
	switch k := t.Kind(); {
	case tok == json.Delim('{') && (k == reflect.Struct || k == reflect.Map):
		return c.object(t, field)
	case tok == json.Delim('[') && (k == reflect.Slice || k == reflect.Array):
		for i := 0; c.dec.More(); i++ {
			if err := c.value(t.Elem(), fmt.Sprintf("%s[%d]", field, i)); err != nil {
				return err
			}
		}
		_, err := c.dec.Token()
		return err
	}
	if c.holds(from) {
		return c.invalidUTF8(field)
	}
	return checkKind(t, tok, field)
}

// checkKind checks that a value that is not an object or array of the
// expected type, tok, fits t: encoding/json would refuse it with an error
// that names nested fields without their index ("workflows.input").
// null always fits: it leaves the field as it is.
func checkKind(t reflect.Type, tok json.Token, field string) error {
	if tok == nil {
		return nil
	}
	switch k := t.Kind(); {
	case k == reflect.String:
		if _, ok := tok.(string); ok {
			return nil
		}
	case k == reflect.Bool:
		if _, ok := tok.(bool); ok {
			return nil
		}
	case reflect.Int <= k && k <= reflect.Int64:
		n, ok := tok.(json.Number)
		if !ok {
			break
		}
		if _, err := strconv.ParseInt(string(n), 10, t.Bits()); err != nil {
			lim := int64(1)<<(t.Bits()-1) - 1
			return domain.Invalid(field, "must be an integer between %d and %d, not %s", -lim-1, lim, n)
		}
		return nil
	case reflect.Uint <= k && k <= reflect.Uint64:
		n, ok := tok.(json.Number)
		if !ok {
			break
		}
		if _, err := strconv.ParseUint(string(n), 10, t.Bits()); err != nil {
			return domain.Invalid(field, "must be an integer between 0 and %d, not %s", uint64(1)<<t.Bits()-1, n)
		}
		return nil
	case k == reflect.Float32 || k == reflect.Float64:
		n, ok := tok.(json.Number)
		if !ok {
			break
		}
		if _, err := strconv.ParseFloat(string(n), t.Bits()); err != nil {
			return domain.Invalid(field, "must be a number within a float%d's range, not %s", t.Bits(), n)
		}
		return nil
	default:
		return nil
	}
	return domain.Invalid(field, "must be %s, not %s", jsonKind(t.Kind().String()), tokenKind(tok))
}

// tokenKind says what a JSON token is, for errors.
func tokenKind(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		if v == '{' {
			return "an object"
		}
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number:
		return "the number " + string(v)
	}
	return "null"
}

// object checks the members of an object, after its '{'.
func (c *memberChecker) object(t reflect.Type, field string) error {
	var fields map[string]reflect.Type
	if t.Kind() == reflect.Struct {
		fields = jsonFields(t)
	}
	seen := map[string]bool{}
	for c.dec.More() {
		from := c.dec.InputOffset()
		tok, err := c.dec.Token()
		if err != nil {
			return err
		}
		if c.holds(from) {
			if field == "" {
				return domain.Errorf(domain.CodeInvalidArgument, "a member name of the request body is not valid UTF-8")
			}
			return domain.Invalid(field, "has a member name that is not valid UTF-8")
		}
		name, _ := tok.(string)
		if c.loneSurrogate(from) {
			return domain.Invalid(field, "has a member name with half a UTF-16 surrogate pair")
		}
		child := name
		if field != "" {
			child = field + "." + name
		}
		elem := t
		if fields != nil {
			var ok bool
			if elem, ok = fields[name]; !ok {
				return domain.Invalid(child, "is not a known field")
			}
		} else {
			elem = t.Elem()
			child = fmt.Sprintf("%s[%q]", field, name)
		}
		if seen[name] {
			return domain.Invalid(child, "is given twice")
		}
		seen[name] = true
		if err := c.value(elem, child); err != nil {
			return err
		}
	}
	_, err := c.dec.Token()
	return err
}

var jsonFieldsCache sync.Map // reflect.Type → map[string]reflect.Type

// jsonFields maps the JSON member names of struct type t, as encoding/json
// spells them (embedded structs' members included), to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	if m, ok := jsonFieldsCache.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	m := map[string]reflect.Type{}
	for _, f := range reflect.VisibleFields(t) {
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		switch {
		case name == "-" || !f.IsExported() && !f.Anonymous:
			continue
		case f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct:
			continue // its fields are visible fields of their own
		case name == "":
			name = f.Name
		}
		if len(f.Index) > 1 {
			// A field of an embedded struct: encoding/json promotes only
			// those of exported or untagged embedded structs.
			if _, dup := m[name]; dup {
				continue
			}
		}
		m[name] = f.Type
	}
	jsonFieldsCache.Store(t, m)
	return m
}

func decodeError(err error) error {
	var (
		syntax    *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
		tooLarge  *http.MaxBytesError
		domainErr *domain.Error
	)
	switch {
	case errors.As(err, &tooLarge):
		return domain.Errorf(domain.CodePayloadTooLarge, "the request body is over %d bytes", tooLarge.Limit)
	case errors.As(err, &domainErr):
		return err
	case errors.As(err, &syntax):
		return domain.Errorf(domain.CodeInvalidArgument, "malformed JSON at byte %d: %v", syntax.Offset, err)
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return domain.Errorf(domain.CodeInvalidArgument, "the request body must be a JSON object")
		}
		return domain.Invalid(typeErr.Field, "must be %s, not %s", jsonKind(typeErr.Type.Kind().String()), typeErr.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return domain.Errorf(domain.CodeInvalidArgument, "malformed JSON: the body ends early")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return domain.Invalid(field, "is not a known field")
	}
	return domain.Errorf(domain.CodeInvalidArgument, "malformed JSON: %v", err)
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "slice", "array":
		return "an array"
	case "struct", "map":
		return "an object"
	case "float32", "float64":
		return "a number"
	}
	if strings.HasPrefix(goKind, "int") || strings.HasPrefix(goKind, "uint") {
		return "an integer"
	}
	return fmt.Sprintf("a %s", goKind)
}

// encodeCursor makes a list's next-page key opaque to clients.
func encodeCursor(key string) *string {
	if key == "" {
		return nil
	}
	c := base64.RawURLEncoding.EncodeToString([]byte(key))
	return &c
}

// decodeCursor reverses encodeCursor; keys are UUIDs.
func decodeCursor(c string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || !domain.IsUUID(string(b)) {
		return "", domain.Invalid("cursor", "is not a cursor this server issued")
	}
	return string(b), nil
}
