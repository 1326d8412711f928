package postgres

import (
	"fmt"

	"github.com/kagzi/kagzi/domain"
)

// StatsQuery is the statement Stats runs for f, with its arguments, for
// the test that checks its plan.
func StatsQuery(f domain.StatsFilter) (string, []any) {
	cond, extra := statsFilters(f, 4)
	return fmt.Sprintf(statsSQL, cond, cond), append([]any{f.Namespace, f.Bucket.Milliseconds(), f.Buckets()}, extra...)
}
