package domain

import (
	"slices"
	"strings"
	"time"
)

// Role is what an API key may do.
type Role string

// The roles of API keys.
const (
	// RoleAdmin may do everything in its namespaces; managing keys needs
	// an admin key on every namespace.
	RoleAdmin Role = "admin"
	// RoleClient starts, reads, lists and cancels runs, manages schedules
	// and reads queues and workers.
	RoleClient Role = "client"
	// RoleWorker registers workers, claims runs, makes every lease-fenced
	// call and reads runs.
	RoleWorker Role = "worker"
	// RoleReader reads everything but the keys: dashboards.
	RoleReader Role = "reader"
)

// Roles are every role, most powerful first.
var Roles = []Role{RoleAdmin, RoleClient, RoleWorker, RoleReader}

// AllNamespaces, as a key's only namespace, covers every namespace.
const AllNamespaces = "*"

// MaxKeyNamespaces bounds the namespaces one key names.
const MaxKeyNamespaces = 100

// APIKey is an API key's record. Its secret is shown once, at creation,
// and stored only as a hash: no record carries it.
type APIKey struct {
	KeyID      string     `json:"key_id"`
	Name       string     `json:"name"`
	Role       Role       `json:"role"`
	Namespaces []string   `json:"namespaces"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at"`
	RevokedAt  *time.Time `json:"revoked_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
}

// StoredAPIKey is a key's record with the hash of its secret, as the key
// cache holds it.
type StoredAPIKey struct {
	APIKey
	SecretHash []byte
}

// Usable reports whether the key authenticates requests at now: it is
// neither revoked nor expired.
func (k APIKey) Usable(now time.Time) bool {
	return k.RevokedAt == nil && (k.ExpiresAt == nil || now.Before(*k.ExpiresAt))
}

// Covers reports whether the key may act in namespace.
func (k APIKey) Covers(namespace string) bool {
	return k.CoversAll() || slices.Contains(k.Namespaces, namespace)
}

// CoversAll reports whether the key is on every namespace (["*"]).
func (k APIKey) CoversAll() bool {
	return len(k.Namespaces) == 1 && k.Namespaces[0] == AllNamespaces
}

// NewAPIKey is what a key is created from.
type NewAPIKey struct {
	Name       string     `json:"name"`
	Role       Role       `json:"role"`
	Namespaces []string   `json:"namespaces"`
	ExpiresAt  *Timestamp `json:"expires_at"`
}

// TimestampOf returns t as a request would give it.
func TimestampOf(t time.Time) *Timestamp { return &Timestamp{t: t} }

// Validate checks a new key at now and returns its expiry (nil for none):
// a name, a known role, ["*"] or 1 to MaxKeyNamespaces distinct namespace
// names, and an expiry in the future.
func (n NewAPIKey) Validate(now time.Time) (*time.Time, error) {
	if err := ValidateName("name", n.Name); err != nil {
		return nil, err
	}
	if !slices.Contains(Roles, n.Role) {
		return nil, Invalid("role", "must be one of admin, client, worker or reader, got %q", n.Role)
	}
	switch {
	case len(n.Namespaces) == 0:
		return nil, Invalid("namespaces", `must name at least one namespace, or be ["*"] for every namespace`)
	case len(n.Namespaces) > MaxKeyNamespaces:
		return nil, Invalid("namespaces", "names %d namespaces; the limit is %d", len(n.Namespaces), MaxKeyNamespaces)
	}
	if !(len(n.Namespaces) == 1 && n.Namespaces[0] == AllNamespaces) {
		seen := map[string]bool{}
		for i, ns := range n.Namespaces {
			field := "namespaces[" + itoa(i) + "]"
			if ns == AllNamespaces {
				return nil, Invalid(field, `"*" must be the key's only namespace`)
			}
			if err := ValidateIdent(field, ns); err != nil {
				return nil, err
			}
			if seen[ns] {
				return nil, Invalid(field, "repeats %q", ns)
			}
			seen[ns] = true
		}
	}
	if n.ExpiresAt == nil {
		return nil, nil
	}
	t, err := n.ExpiresAt.Time("expires_at")
	if err != nil {
		return nil, err
	}
	if !t.After(now) {
		return nil, Invalid("expires_at", "must be in the future")
	}
	t = t.UTC()
	return &t, nil
}

// Access is what a route needs of the key a request names: one of Roles,
// and the namespace of its path (Namespaced) or, for a route that is in no
// namespace, every namespace, unless the route answers only about the
// namespaces the key covers (Filtered). Open routes need no key; routes
// that Always need a key need it even while authentication is off.
type Access struct {
	Open       bool
	Always     bool
	Namespaced bool
	Filtered   bool
	Roles      []Role
}

// Authorize decides whether key may use a route that needs a, in
// namespace (for a Namespaced route). It returns a permission_denied error
// when it may not.
func Authorize(key APIKey, a Access, namespace string) error {
	if a.Open {
		return nil
	}
	if !slices.Contains(a.Roles, key.Role) {
		names := make([]string, len(a.Roles))
		for i, r := range a.Roles {
			names[i] = string(r)
		}
		return Errorf(CodePermissionDenied, "this route needs a key with the role %s; the key's role is %s",
			strings.Join(names, " or "), key.Role)
	}
	if a.Filtered {
		return nil
	}
	if a.Namespaced {
		if !key.Covers(namespace) {
			return Errorf(CodePermissionDenied, "the key may not act in namespace %q", namespace)
		}
		return nil
	}
	if !key.CoversAll() {
		return Errorf(CodePermissionDenied, `this route needs a key on every namespace (["*"])`)
	}
	return nil
}
