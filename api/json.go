package api

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

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
// must be one JSON value of dst's shape with no unknown fields. An empty
// body decodes as {} so that requests whose fields are all optional need
// none.
func decode(w http.ResponseWriter, r *http.Request, limit int64, dst any) error {
	if r.ContentLength == 0 {
		return nil
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/json" {
		return domain.Errorf(domain.CodeUnsupportedMediaType, "the request body must be application/json")
	}
	body := bufio.NewReader(http.MaxBytesReader(w, r.Body, limit))
	if first, err := firstByte(body); err == nil && first != '{' {
		return domain.Errorf(domain.CodeInvalidArgument, "the request body must be a JSON object")
	}
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return decodeError(err)
		}
		return domain.Errorf(domain.CodeInvalidArgument, "the request body must hold a single JSON value")
	}
	return nil
}

// firstByte returns the first byte of r that is not JSON white space,
// leaving it unread.
func firstByte(r *bufio.Reader) (byte, error) {
	for {
		b, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		if b != ' ' && b != '\t' && b != '\n' && b != '\r' {
			return b, r.UnreadByte()
		}
	}
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
