package migrations

import (
	"io/fs"
	"slices"
	"strconv"
	"strings"
)

// Versions returns the migration versions in FS, in ascending order.
// Versions may have gaps.
func Versions() []uint {
	entries, err := fs.ReadDir(FS, ".")
	if err != nil {
		panic(err) // embedded at build time; cannot fail
	}
	var versions []uint
	for _, e := range entries {
		prefix, _, ok := strings.Cut(e.Name(), "_")
		if !ok {
			continue
		}
		if v, err := strconv.ParseUint(prefix, 10, 64); err == nil {
			versions = append(versions, uint(v))
		}
	}
	slices.Sort(versions)
	return slices.Compact(versions)
}

// Latest returns the highest migration version in FS: the schema version
// this binary expects.
func Latest() uint {
	versions := Versions()
	if len(versions) == 0 {
		return 0
	}
	return versions[len(versions)-1]
}

// Previous returns the version before version in FS, or -1 (no migration
// applied) when version is the first.
func Previous(version uint) int {
	prev := -1
	for _, v := range Versions() {
		if v >= version {
			break
		}
		prev = int(v)
	}
	return prev
}
