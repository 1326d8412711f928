package api

import (
	"context"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/kagzi/kagzi/domain"
)

// Keys checks and manages API keys.
type Keys interface {
	// On reports whether requests need a key (an unavailable error before
	// the keys are known).
	On() (bool, error)
	// Check returns the usable key whose secret is secret, or an
	// unauthenticated error. It makes no query.
	Check(secret string) (domain.APIKey, error)
	Create(ctx context.Context, n domain.NewAPIKey) (domain.APIKey, string, error)
	List(ctx context.Context, p domain.Page) ([]domain.APIKey, string, error)
	Revoke(ctx context.Context, keyID string) (domain.APIKey, error)
}

// What each route needs of a request's key (see domain.Access). Every
// route declares one, with guard; TestEveryRouteDeclaresAccess checks it.
var (
	open = domain.Access{Open: true}
	// runsRead: reading runs and their steps.
	runsRead = namespaced(domain.RoleAdmin, domain.RoleClient, domain.RoleWorker, domain.RoleReader)
	// nsRead: reading queues, workers and schedules.
	nsRead = namespaced(domain.RoleAdmin, domain.RoleClient, domain.RoleReader)
	// clientWrite: starting and cancelling runs, managing schedules.
	clientWrite = namespaced(domain.RoleAdmin, domain.RoleClient)
	// work: registering, heartbeating, draining and removing workers,
	// claiming, and every lease-fenced call.
	work = namespaced(domain.RoleAdmin, domain.RoleWorker)
	// queueAdmin: pausing queues and changing their limits.
	queueAdmin = namespaced(domain.RoleAdmin)
	// keysAdmin: managing keys, auth off or not.
	keysAdmin = domain.Access{Always: true, Roles: []domain.Role{domain.RoleAdmin}}
	// namespacesRead: GET /v1/namespaces, which shows a key the namespaces
	// it covers.
	namespacesRead = domain.Access{Filtered: true, Roles: []domain.Role{domain.RoleAdmin, domain.RoleClient, domain.RoleWorker, domain.RoleReader}}
	// metricsRead: /metrics, which names every namespace and queue.
	metricsRead = domain.Access{Roles: []domain.Role{domain.RoleAdmin, domain.RoleReader}}
)

func namespaced(roles ...domain.Role) domain.Access {
	return domain.Access{Namespaced: true, Roles: roles}
}

// guarded is a route's handler behind the check of what it needs.
type guarded struct {
	s      *Server
	access domain.Access
	next   http.Handler
}

// guard returns next behind the check of access.
func (s *Server) guard(access domain.Access, next http.Handler) http.Handler {
	return &guarded{s: s, access: access, next: next}
}

// handle is guard for a handlerFunc.
func (s *Server) handle(access domain.Access, fn handlerFunc) http.Handler {
	return s.guard(access, s.h(fn))
}

// AccessOf returns what a routed handler needs of a request's key, and
// whether it declares it.
func AccessOf(h http.Handler) (domain.Access, bool) {
	g, ok := h.(*guarded)
	if !ok {
		return domain.Access{}, false
	}
	return g.access, true
}

// ServeHTTP decides 401 and 403 before the handler runs, so before the
// body is read and before anything changes.
func (g *guarded) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key, keyed, err := g.s.authorize(r, g.access)
	if err != nil {
		if r.ContentLength != 0 {
			// Answer without reading the body: net/http would otherwise
			// read what is left of it first, to keep the connection.
			w.Header().Set("Connection", "close")
		}
		g.s.writeError(w, r, err)
		return
	}
	if g.access.Filtered && keyed {
		r = r.WithContext(context.WithValue(r.Context(), keyContext{}, &key))
	}
	g.next.ServeHTTP(w, r)
}

// keyContext holds the key of a request to a Filtered route.
type keyContext struct{}

// allowedNamespaces is the namespaces the key of a request to a Filtered
// route covers; nil (all) when it covers every one or auth is off.
func allowedNamespaces(r *http.Request) []string {
	key, ok := r.Context().Value(keyContext{}).(*domain.APIKey)
	if !ok || key.CoversAll() {
		return nil
	}
	return key.Namespaces
}

// authorize returns the key of the request when the route needs one and
// it may use the route (keyed false when the route needs none), or why not.
func (s *Server) authorize(r *http.Request, a domain.Access) (key domain.APIKey, keyed bool, err error) {
	if a.Open {
		return key, false, nil
	}
	if s.Keys == nil {
		if a.Always {
			return key, false, domain.Errorf(domain.CodeUnavailable, "this server manages no API keys")
		}
		return key, false, nil
	}
	if !a.Always {
		on, err := s.Keys.On()
		if err != nil || !on {
			return key, false, err
		}
	}
	header := r.Header.Get("Authorization")
	if header == "" {
		return key, false, domain.Errorf(domain.CodeUnauthenticated, "this route needs an API key: send the header Authorization: Bearer <key>")
	}
	secret, ok := bearerSecret(header)
	if !ok {
		return key, false, domain.Errorf(domain.CodeUnauthenticated, "the Authorization header must be Bearer <key>")
	}
	if key, err = s.Keys.Check(secret); err != nil {
		return key, false, err
	}
	if err := domain.Authorize(key, a, chi.URLParam(r, "namespace")); err != nil {
		return key, false, err
	}
	return key, true, nil
}

// bearerSecret returns the key an Authorization header value names:
// "Bearer <key>", the scheme in any case.
func bearerSecret(header string) (string, bool) {
	scheme, secret, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	secret = strings.TrimSpace(secret)
	return secret, secret != ""
}

// authState is /v1/info's "auth": "keys" while requests need a key.
func (s *Server) authState() string {
	if s.Keys != nil {
		if on, _ := s.Keys.On(); on {
			return "keys"
		}
	}
	return "off"
}

// createAPIKey validates the request (Keys.Create does, before it writes)
// and answers the record with its secret, shown this once.

// keyBodyLimit caps the body of a key's creation: a name, a role and at
// most domain.MaxKeyNamespaces names fit in far less.
const keyBodyLimit = 64 << 10

type createdKey struct {
	domain.APIKey
	Secret string `json:"secret"`
}

func (s *Server) createAPIKey(w http.ResponseWriter, r *http.Request) error {
	var n domain.NewAPIKey
	if err := decode(w, r, keyBodyLimit, &n); err != nil {
		return err
	}
	key, secret, err := s.Keys.Create(r.Context(), n)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, createdKey{APIKey: key, Secret: secret})
	return nil
}

type apiKeyPage struct {
	APIKeys    []domain.APIKey `json:"api_keys"`
	NextCursor *string         `json:"next_cursor"`
}

func (s *Server) listAPIKeys(w http.ResponseWriter, r *http.Request) error {
	q, err := newQuery(r, "limit", "cursor")
	if err != nil {
		return err
	}
	p, err := q.page()
	if err != nil {
		return err
	}
	keys, next, err := s.Keys.List(r.Context(), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiKeyPage{APIKeys: keys, NextCursor: encodeCursor(next)})
	return nil
}

func (s *Server) revokeAPIKey(w http.ResponseWriter, r *http.Request) error {
	if err := noQuery(r); err != nil {
		return err
	}
	key, err := s.Keys.Revoke(r.Context(), chi.URLParam(r, "key_id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, key)
	return nil
}
