package postgres

import (
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kagzi/kagzi/domain"
)

// A completion that still deadlocks after its retries is worth retrying
// (503), never a 500; an output the database refuses is the request's
// fault (400 on output).
func TestBatchItemError(t *testing.T) {
	for _, c := range []struct {
		code  string
		want  domain.Code
		field string
	}{
		{"40P01", domain.CodeUnavailable, ""},
		{"22021", domain.CodeInvalidArgument, "output"},
		{"22P02", domain.CodeInvalidArgument, "output"},
	} {
		var de *domain.Error
		err := batchItemError(&pgconn.PgError{Code: c.code, Message: "m"})
		if !errors.As(err, &de) || de.Code != c.want || de.Field != c.field {
			t.Errorf("batchItemError(%s) = %v, want code %s field %q", c.code, err, c.want, c.field)
		}
	}
}
