package migrations

import (
	"slices"
	"testing"
)

// Previous names the version that exists before each one, across gaps in
// the numbering, so that a dirty migration is forced back to a real version.
func TestPreviousSkipsGaps(t *testing.T) {
	versions := Versions()
	if len(versions) < 2 || versions[0] != 1 {
		t.Fatalf("Versions() = %v, want 1 and more", versions)
	}
	if got := Previous(versions[0]); got != -1 {
		t.Errorf("Previous(%d) = %d, want -1", versions[0], got)
	}
	for i := 1; i < len(versions); i++ {
		if got, want := Previous(versions[i]), int(versions[i-1]); got != want {
			t.Errorf("Previous(%d) = %d, want %d", versions[i], got, want)
		}
	}
	if got, want := Latest(), slices.Max(versions); got != want {
		t.Errorf("Latest() = %d, want %d", got, want)
	}
}
