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
	c := memberChecker{b: body, bad: -1}
	if err := c.check(reflect.TypeOf(dst)); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) {
			if field := c.payloadAt(syntax.Offset); field != "" {
				return domain.Invalid(field, "is not valid JSON: %v", err)
			}
		}
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return domain.Errorf(domain.CodeInvalidArgument, "the request body must hold a single JSON value")
	}
	return nil
}

// memberChecker walks a body along the type it is to be decoded into, and
// refuses what encoding/json lets through: invalid UTF-8 (which it would
// replace with U+FFFD, or pass on inside a json.RawMessage), member names
// that match a field only if case is ignored, and members given twice. It
// walks every object of the request's own structs and maps, and checks
// the kind and range of every scalar, so that errors name nested fields
// with their index ("workflows[3].start_delay_ms"), which encoding/json
// does not. A free-form payload (json.RawMessage) is passed over in one
// quick scan, and its syntax left to encoding/json, which decodes the
// body once the check passed.
type memberChecker struct {
	b []byte
	i int // the position in b
	// bad is the offset of the first invalid UTF-8 byte, or -1.
	bad int
	// payloads are where the payloads are, to name one that is not JSON.
	payloads []span
}

type span struct {
	from, to int
	field    string
}

// errSyntax is a body the checker cannot walk: encoding/json says why.
var errSyntax = errors.New("malformed JSON")

// check checks the whole body as a value of type t.
func (c *memberChecker) check(t reflect.Type) error {
	if !utf8.Valid(c.b) {
		c.bad = invalidUTF8At(c.b)
	}
	err := c.value(t, "")
	if err == nil {
		c.ws()
		if c.i < len(c.b) {
			err = errSyntax
		}
	}
	switch {
	case errors.Is(err, errSyntax):
		// encoding/json words the error, and names the payload at fault.
		if jerr := json.NewDecoder(bytes.NewReader(c.b)).Decode(&skipValue{}); jerr != nil {
			var syntax *json.SyntaxError
			if errors.As(jerr, &syntax) {
				if field := c.payloadAt(syntax.Offset); field != "" {
					return domain.Invalid(field, "is not valid JSON: %v", jerr)
				}
			}
			return decodeError(jerr)
		}
		if c.i < len(c.b) {
			return domain.Errorf(domain.CodeInvalidArgument, "the request body must hold a single JSON value")
		}
		return domain.Errorf(domain.CodeInvalidArgument, "malformed JSON at byte %d", c.i)
	case err != nil:
		return err
	case c.bad >= 0:
		return domain.Errorf(domain.CodeInvalidArgument, "the request body is not valid UTF-8 (byte %d)", c.bad)
	}
	return nil
}

// payloadAt names the payload that holds offset, or "".
func (c *memberChecker) payloadAt(offset int64) string {
	for _, p := range c.payloads {
		if int64(p.from) <= offset && offset <= int64(p.to) {
			return p.field
		}
	}
	return ""
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

var rawMessageType = reflect.TypeFor[json.RawMessage]()

// skipValue decodes a JSON value into nothing.
type skipValue struct{}

func (*skipValue) UnmarshalJSON([]byte) error { return nil }

// wrapper is a type, such as domain.Optional, that decodes itself into a
// value of another type: the walk goes on into that type.
type wrapper interface{ JSONValueType() reflect.Type }

// holds reports whether the invalid byte lies in [from, the position).
func (c *memberChecker) holds(from int) bool {
	return c.bad >= from && c.bad < c.i
}

func (c *memberChecker) invalidUTF8(field string) error {
	if field == "" {
		return domain.Errorf(domain.CodeInvalidArgument, "the request body is not valid UTF-8 (byte %d)", c.bad)
	}
	return domain.Invalid(field, "is not valid UTF-8")
}

// ws skips JSON white space.
func (c *memberChecker) ws() {
	for c.i < len(c.b) {
		switch c.b[c.i] {
		case ' ', '\t', '\n', '\r':
			c.i++
		default:
			return
		}
	}
}

// str passes over the string that starts at the position, and returns it
// as written, quotes and escapes included.
func (c *memberChecker) str() ([]byte, error) {
	from := c.i
	for j := c.i + 1; j < len(c.b); j++ {
		switch c.b[j] {
		case '\\':
			j++
		case '"':
			c.i = j + 1
			return c.b[from:c.i], nil
		}
	}
	return nil, errSyntax
}

// scalar passes over the number or literal at the position and returns it.
func (c *memberChecker) scalar() []byte {
	from := c.i
	for c.i < len(c.b) {
		switch c.b[c.i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return c.b[from:c.i]
		}
		c.i++
	}
	return c.b[from:c.i]
}

// skip passes over one value of any shape, without checking its syntax.
func (c *memberChecker) skip() error {
	if c.i >= len(c.b) {
		return errSyntax
	}
	switch c.b[c.i] {
	case '"':
		_, err := c.str()
		return err
	case '{', '[':
	default:
		if len(c.scalar()) == 0 {
			return errSyntax
		}
		return nil
	}
	depth := 0
	for c.i < len(c.b) {
		switch c.b[c.i] {
		case '"':
			if _, err := c.str(); err != nil {
				return err
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				c.i++
				return nil
			}
		}
		c.i++
	}
	return errSyntax
}

// value checks the value at the position, to be decoded into t; field is
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
	c.ws()
	from := c.i
	if c.i >= len(c.b) {
		return errSyntax
	}
	_, custom := reflect.New(t).Interface().(json.Unmarshaler)
	if t == rawMessageType || custom || t.Kind() == reflect.Interface {
		// A payload, or a value that decodes itself: one value, any shape.
		if err := c.skip(); err != nil {
			return err
		}
		c.payloads = append(c.payloads, span{from, c.i, field})
		if c.holds(from) {
			return c.invalidUTF8(field)
		}
		return nil
	}
	k := t.Kind()
	switch c.b[c.i] {
	case '{':
		if k == reflect.Struct || k == reflect.Map {
			return c.object(t, field)
		}
		return kindError(t, "an object", field)
	case '[':
		if k == reflect.Slice || k == reflect.Array {
			return c.array(t, field)
		}
		return kindError(t, "an array", field)
	case '"':
		raw, err := c.str()
		if err != nil {
			return err
		}
		if c.holds(from) {
			return c.invalidUTF8(field)
		}
		if loneSurrogate(raw) {
			return domain.Invalid(field, "holds a \\u escape of half a UTF-16 surrogate pair, which is no character")
		}
		if k != reflect.String {
			return kindError(t, "a string", field)
		}
		return nil
	}
	lit := c.scalar()
	switch {
	case c.holds(from):
		return c.invalidUTF8(field)
	case string(lit) == "null":
		return nil // leaves the field as it is
	case string(lit) == "true" || string(lit) == "false":
		if k != reflect.Bool {
			return kindError(t, "a boolean", field)
		}
		return nil
	case !isJSONNumber(lit):
		return errSyntax
	}
	return checkNumber(t, string(lit), field)
}

// object checks the members of an object at the position.
func (c *memberChecker) object(t reflect.Type, field string) error {
	var fields map[string]reflect.Type
	if t.Kind() == reflect.Struct {
		fields = jsonFields(t)
	}
	seen := map[string]bool{}
	c.i++ // {
	c.ws()
	if c.i < len(c.b) && c.b[c.i] == '}' {
		c.i++
		return nil
	}
	for {
		c.ws()
		from := c.i
		if c.i >= len(c.b) || c.b[c.i] != '"' {
			return errSyntax
		}
		raw, err := c.str()
		if err != nil {
			return err
		}
		if c.holds(from) {
			if field == "" {
				return domain.Errorf(domain.CodeInvalidArgument, "a member name of the request body is not valid UTF-8")
			}
			return domain.Invalid(field, "has a member name that is not valid UTF-8")
		}
		if loneSurrogate(raw) {
			return domain.Invalid(field, "has a member name with half a UTF-16 surrogate pair")
		}
		name := string(raw[1 : len(raw)-1])
		if bytes.IndexByte(raw, '\\') >= 0 {
			if json.Unmarshal(raw, &name) != nil {
				return errSyntax
			}
		}
		child := name
		if field != "" {
			child = field + "." + name
		}
		var elem reflect.Type
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
		c.ws()
		if c.i >= len(c.b) || c.b[c.i] != ':' {
			return errSyntax
		}
		c.i++
		if err := c.value(elem, child); err != nil {
			return err
		}
		if closed, err := c.separator('}'); closed || err != nil {
			return err
		}
	}
}

// array checks the items of an array at the position.
func (c *memberChecker) array(t reflect.Type, field string) error {
	c.i++ // [
	c.ws()
	if c.i < len(c.b) && c.b[c.i] == ']' {
		c.i++
		return nil
	}
	for n := 0; ; n++ {
		if err := c.value(t.Elem(), fmt.Sprintf("%s[%d]", field, n)); err != nil {
			return err
		}
		if closed, err := c.separator(']'); closed || err != nil {
			return err
		}
	}
}

// separator consumes the comma between two items, or closing, which ends
// the object or array; it reports whether it was closing.
func (c *memberChecker) separator(closing byte) (closed bool, err error) {
	c.ws()
	if c.i >= len(c.b) {
		return false, errSyntax
	}
	switch c.b[c.i] {
	case ',':
		c.i++
		return false, nil
	case closing:
		c.i++
		return true, nil
	}
	return false, errSyntax
}

// isJSONNumber reports whether b is a number as JSON spells it.
func isJSONNumber(b []byte) bool {
	i := 0
	digits := func() int {
		n := 0
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	if i < len(b) && b[i] == '0' {
		i++
	} else if digits() == 0 {
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(b)
}

// checkNumber checks that the number n fits t, which encoding/json would
// refuse with an error that names nested fields without their index.
func checkNumber(t reflect.Type, n, field string) error {
	switch k := t.Kind(); {
	case reflect.Int <= k && k <= reflect.Int64:
		if _, err := strconv.ParseInt(n, 10, t.Bits()); err != nil {
			lim := int64(1)<<(t.Bits()-1) - 1
			return domain.Invalid(field, "must be an integer between %d and %d, not %s", -lim-1, lim, n)
		}
	case reflect.Uint <= k && k <= reflect.Uint64:
		if _, err := strconv.ParseUint(n, 10, t.Bits()); err != nil {
			return domain.Invalid(field, "must be an integer between 0 and %d, not %s", uint64(1)<<t.Bits()-1, n)
		}
	case k == reflect.Float32 || k == reflect.Float64:
		if _, err := strconv.ParseFloat(n, t.Bits()); err != nil {
			return domain.Invalid(field, "must be a number within a float%d's range, not %s", t.Bits(), n)
		}
	default:
		return kindError(t, "the number "+n, field)
	}
	return nil
}

// kindError says that field, of type t, was given what.
func kindError(t reflect.Type, what, field string) error {
	if field == "" {
		return domain.Errorf(domain.CodeInvalidArgument, "the request body must be a JSON object")
	}
	return domain.Invalid(field, "must be %s, not %s", jsonKind(t.Kind().String()), what)
}

// loneSurrogate reports whether the JSON string raw escapes half a UTF-16
// surrogate pair ("\ud800"), which encoding/json would decode as U+FFFD: a
// name must be what was sent. (Payloads keep them: PostgreSQL's json type
// stores them as sent.)
func loneSurrogate(raw []byte) bool {
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

// decodeCursor reverses encodeCursor, for a list whose keys valid accepts.
func decodeCursor(c string, valid func(string) bool) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || !valid(string(b)) {
		return "", domain.Invalid("cursor", "is not a cursor this server issued")
	}
	return string(b), nil
}
