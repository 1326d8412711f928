package migrations

import (
	"io/fs"
	"strconv"
	"strings"
)

// Latest returns the highest migration version in FS: the schema version
// this binary expects.
func Latest() uint {
	entries, err := fs.ReadDir(FS, ".")
	if err != nil {
		panic(err) // embedded at build time; cannot fail
	}
	var latest uint
	for _, e := range entries {
		prefix, _, ok := strings.Cut(e.Name(), "_")
		if !ok {
			continue
		}
		if v, err := strconv.ParseUint(prefix, 10, 64); err == nil && uint(v) > latest {
			latest = uint(v)
		}
	}
	return latest
}
