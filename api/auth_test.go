package api_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/kagzi/kagzi"
	"github.com/kagzi/kagzi/api"
	"github.com/kagzi/kagzi/auth"
	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

// newKey creates a key of role on namespaces (every namespace when none)
// straight in the database, as `kagzi keys create` does, and makes the
// server's key cache load it. It returns the secret.
func (e *env) newKey(t testing.TB, role domain.Role, namespaces ...string) string {
	t.Helper()
	if len(namespaces) == 0 {
		namespaces = []string{domain.AllNamespaces}
	}
	ctx := context.Background()
	_, secret, err := auth.Create(ctx, e.store, domain.NewAPIKey{
		Name: string(role) + " key", Role: role, Namespaces: namespaces,
	}, time.Now())
	if err != nil {
		t.Fatalf("create %s key: %v", role, err)
	}
	if err := e.keys.Load(ctx); err != nil {
		t.Fatalf("load keys: %v", err)
	}
	return secret
}

// keyID returns the ID of the key whose secret is secret.
func (e *env) keyID(t testing.TB, secret string) string {
	t.Helper()
	var id string
	if err := e.pool.QueryRow(context.Background(), `SELECT key_id FROM api_keys WHERE secret_hash = $1`, auth.Hash(secret)).Scan(&id); err != nil {
		t.Fatalf("key of a secret: %v", err)
	}
	return id
}

// withKey sends the request with the API key secret.
func withKey(secret string) reqOption {
	return withHeader("Authorization", "Bearer "+secret)
}

func (e *env) countKeys(t testing.TB) int {
	t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM api_keys`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

var (
	anyRole       = []domain.Role{domain.RoleAdmin, domain.RoleClient, domain.RoleWorker, domain.RoleReader}
	adminOnly     = []domain.Role{domain.RoleAdmin}
	adminClient   = []domain.Role{domain.RoleAdmin, domain.RoleClient}
	adminWorker   = []domain.Role{domain.RoleAdmin, domain.RoleWorker}
	adminReader   = []domain.Role{domain.RoleAdmin, domain.RoleReader}
	clientReaders = []domain.Role{domain.RoleAdmin, domain.RoleClient, domain.RoleReader}
)

// roleTable is API.md's Authentication section, route by route: the roles
// that may call each route (nil: open, no key needed). It is written by
// hand, apart from the server's own declarations, which it checks.
var roleTable = map[string][]domain.Role{
	"GET /healthz":       nil,
	"GET /readyz":        nil,
	"GET /openapi.yaml":  nil,
	"GET /v1/info":       nil,
	"GET /ui":            nil,     // the dashboard's files; its data comes through the API
	"GET /v1/namespaces": anyRole, // each key sees the namespaces it covers
	"GET /metrics":       adminReader,

	"POST /v1/api-keys":            adminOnly,
	"GET /v1/api-keys":             adminOnly,
	"DELETE /v1/api-keys/{key_id}": adminOnly,

	"POST " + nsRoute + "/workflows":                                adminClient,
	"GET " + nsRoute + "/workflows":                                 anyRole,
	"POST " + nsRoute + "/workflows/batch":                          adminClient,
	"POST " + nsRoute + "/workflows/batch/complete":                 adminWorker,
	"GET " + nsRoute + "/workflows/{run_id}":                        anyRole,
	"POST " + nsRoute + "/workflows/{run_id}/cancel":                adminClient,
	"GET " + nsRoute + "/workflows/{run_id}/steps":                  anyRole,
	"POST " + nsRoute + "/workflows/{run_id}/retry":                 adminClient,
	"GET " + nsRoute + "/stats":                                     clientReaders,
	"GET " + nsRoute + "/workflow-types":                            clientReaders,
	"POST " + nsRoute + "/schedules/{schedule_id}/trigger":          adminClient,
	"POST " + nsRoute + "/steps/batch":                              adminWorker,
	"POST " + nsRoute + "/workflows/{run_id}/heartbeat":             adminWorker,
	"POST " + nsRoute + "/workflows/{run_id}/sleep":                 adminWorker,
	"POST " + nsRoute + "/workflows/{run_id}/complete":              adminWorker,
	"POST " + nsRoute + "/workflows/{run_id}/fail":                  adminWorker,
	"POST " + nsRoute + "/workflows/{run_id}/steps/{step}/begin":    adminWorker,
	"POST " + nsRoute + "/workflows/{run_id}/steps/{step}/complete": adminWorker,
	"POST " + nsRoute + "/workflows/{run_id}/steps/{step}/fail":     adminWorker,
	"GET " + nsRoute + "/task-queues":                               clientReaders,
	"PATCH " + nsRoute + "/task-queues/{queue}":                     adminOnly,
	"POST " + nsRoute + "/task-queues/{queue}/claim":                adminWorker,
	"POST " + nsRoute + "/workers":                                  adminWorker,
	"GET " + nsRoute + "/workers":                                   clientReaders,
	"GET " + nsRoute + "/workers/{worker_id}":                       clientReaders,
	"DELETE " + nsRoute + "/workers/{worker_id}":                    adminWorker,
	"POST " + nsRoute + "/workers/{worker_id}/heartbeat":            adminWorker,
	"POST " + nsRoute + "/workers/{worker_id}/drain":                adminWorker,
	"POST " + nsRoute + "/schedules":                                adminClient,
	"GET " + nsRoute + "/schedules":                                 clientReaders,
	"GET " + nsRoute + "/schedules/{schedule_id}":                   clientReaders,
	"PATCH " + nsRoute + "/schedules/{schedule_id}":                 adminClient,
	"DELETE " + nsRoute + "/schedules/{schedule_id}":                adminClient,

	"POST " + nsRoute + "/workflows/signal-with-start":                           adminClient,
	"GET " + nsRoute + "/workflows/{run_id}/signals":                             anyRole,
	"POST " + nsRoute + "/workflows/{run_id}/signals/{name}":                     adminClient,
	"POST " + nsRoute + "/workflows/by-external-id/{external_id}/signals/{name}": adminClient,
	"POST " + nsRoute + "/workflows/{run_id}/steps/{step}/wait":                  adminWorker,
	"POST " + nsRoute + "/workflows/{run_id}/steps/{step}/child":                 adminWorker,
	"GET " + nsRoute + "/workflows/{run_id}/children":                            anyRole,
}

const nsRoute = "/v1/namespaces/{namespace}"

// route is one routed operation.
type route struct {
	method, pattern string
	access          domain.Access
	declared        bool
}

// isUI reports whether a route serves the dashboard's files, which are
// open and outside openapi.yaml (every method of /ui/*).
func isUI(pattern string) bool { return pattern == "/ui" || strings.HasPrefix(pattern, "/ui/") }

// apiRoutes are the routes of the API, the dashboard's files left out.
func apiRoutes(t *testing.T) []route {
	t.Helper()
	var out []route
	for _, r := range routes(t) {
		if !isUI(r.pattern) {
			out = append(out, r)
		}
	}
	return out
}

// routes walks the router of a server as kagzi.NewServer assembles it.
func routes(t *testing.T) []route {
	t.Helper()
	srv := kagzi.NewServer(kagzi.Config{Logger: slog.New(slog.DiscardHandler), Version: testVersion, Limits: defaultLimits()})
	var out []route
	err := chi.Walk(srv.API.Router(), func(method, pattern string, h http.Handler, _ ...func(http.Handler) http.Handler) error {
		a, ok := api.AccessOf(h)
		out = append(out, route{method: method, pattern: normalizeRoute(pattern), access: a, declared: ok})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("chi.Walk found no routes")
	}
	return out
}

// TestEveryRouteDeclaresAccess walks the router: every route declares what
// it needs of a key, a route is namespaced exactly when its path has a
// namespace, the declaration is the one roleTable (API.md) gives, and
// openapi.yaml says the same: open operations have no security and no 401,
// the others declare 401 and 403.
func TestEveryRouteDeclaresAccess(t *testing.T) {
	t.Parallel()
	s, err := loadSpec()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range routes(t) {
		name := r.method + " " + r.pattern
		seen[name] = true
		if !r.declared {
			t.Errorf("%s declares no access: route it through guard or handle with the roles it needs", name)
			continue
		}
		if strings.HasPrefix(r.pattern, "/ui/") {
			name = "GET /ui" // every method of the dashboard's files
		}
		want, ok := roleTable[name]
		if !ok {
			t.Errorf("%s is not in roleTable: add the roles API.md gives it", name)
			continue
		}
		switch {
		case want == nil && !r.access.Open:
			t.Errorf("%s: declared %+v, want open", name, r.access)
		case want != nil && (r.access.Open || !slices.Equal(r.access.Roles, want)):
			t.Errorf("%s: declared roles %v (open %v), want %v", name, r.access.Roles, r.access.Open, want)
		}
		if got, want := r.access.Namespaced, strings.Contains(r.pattern, "{namespace}"); got != want {
			t.Errorf("%s: namespaced %v, want %v", name, got, want)
		}
		if got, want := r.access.Always, strings.HasPrefix(r.pattern, "/v1/api-keys"); got != want {
			t.Errorf("%s: needs a key with auth off: %v, want %v", name, got, want)
		}
		if got, want := r.access.Filtered, r.pattern == "/v1/namespaces"; got != want {
			t.Errorf("%s: filtered by the key's namespaces: %v, want %v", name, got, want)
		}
		if isUI(r.pattern) {
			continue
		}
		op := s.doc.Paths.Find(r.pattern).GetOperation(r.method)
		if op == nil {
			t.Errorf("%s is not in openapi.yaml", name)
			continue
		}
		open := op.Security != nil && len(*op.Security) == 0
		has401, has403 := op.Responses.Value("401") != nil, op.Responses.Value("403") != nil
		if r.access.Open && (!open || has401 || has403) {
			t.Errorf("openapi.yaml: %s is open: want security [] and no 401/403", name)
		}
		if !r.access.Open && (open || !has401 || !has403) {
			t.Errorf("openapi.yaml: %s needs a key: want the bearer scheme and 401 and 403", name)
		}
	}
	for name := range roleTable {
		if !seen[name] {
			t.Errorf("roleTable lists %s, which is not routed", name)
		}
	}
}

// concrete fills a route pattern's parameters.
func concrete(pattern, namespace string) string {
	r := strings.NewReplacer("{namespace}", namespace, "{run_id}", uuid.NewString(), "{worker_id}", uuid.NewString(),
		"{schedule_id}", uuid.NewString(), "{key_id}", uuid.NewString(), "{queue}", "q", "{step}", "s",
		"{name}", "n", "{external_id}", "e")
	return r.Replace(pattern)
}

// probe sends the request a route gets in these tests: a claim that does
// not wait, {} for other bodies.
func (e *env) probe(t *testing.T, r route, path string, opts ...reqOption) *resp {
	t.Helper()
	var body any
	switch {
	case strings.HasSuffix(r.pattern, "/claim"):
		body = `{"wait_ms":0}`
	case r.method == http.MethodPost || r.method == http.MethodPatch:
		body = `{}`
	}
	return e.do(t, r.method, path, body, opts...)
}

// TestRoleTable sends every route a request with no key and with a key of
// each role on every namespace: no key is 401 (but on open routes), a role
// the route does not allow is 403, and an allowed one gets past
// authorization (whatever the handler then answers).
func TestRoleTable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withAuth(auth.ModeRequired))
	keys := map[domain.Role]string{}
	for _, role := range domain.Roles {
		keys[role] = e.newKey(t, role)
	}
	for _, r := range apiRoutes(t) {
		name := r.method + " " + r.pattern
		allowed := roleTable[name]
		path := concrete(r.pattern, "default")
		res := e.probe(t, r, path)
		if allowed == nil {
			if res.status == http.StatusUnauthorized || res.status == http.StatusForbidden {
				t.Errorf("%s with no key: %d, want it open", name, res.status)
			}
			continue
		}
		res.wantProblem(t, http.StatusUnauthorized, "unauthenticated", "")
		if got := res.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
			t.Errorf("%s with no key: WWW-Authenticate %q, want Bearer", name, got)
		}
		for _, role := range domain.Roles {
			res := e.probe(t, r, path, withKey(keys[role]))
			if slices.Contains(allowed, role) {
				if res.status == http.StatusUnauthorized || res.status == http.StatusForbidden {
					t.Errorf("%s with a %s key: %d %s, want it allowed", name, role, res.status, res.short())
				}
				continue
			}
			if res.status != http.StatusForbidden {
				t.Errorf("%s with a %s key: %d, want 403", name, role, res.status)
				continue
			}
			res.wantProblem(t, http.StatusForbidden, "permission_denied", "")
		}
	}
}

// TestNamespaceScoping: a key on namespace a gets 403 on every route of
// namespace b, whatever its role, and changes nothing there; it works on
// a, as does a key on ["*"]; routes in no namespace need ["*"].
func TestNamespaceScoping(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	adminA := e.newKey(t, domain.RoleAdmin, "a", "c")
	clientA := e.newKey(t, domain.RoleClient, "a")
	readerA := e.newKey(t, domain.RoleReader, "a")
	all := e.newKey(t, domain.RoleClient)
	for _, r := range apiRoutes(t) {
		if r.access.Open || r.access.Filtered {
			continue
		}
		name := r.method + " " + r.pattern
		for _, key := range []string{adminA, clientA, readerA} {
			res := e.probe(t, r, concrete(r.pattern, "b"), withKey(key))
			if res.status != http.StatusForbidden {
				t.Errorf("%s in b with a key on a: %d, want 403", name, res.status)
				continue
			}
			res.wantProblem(t, http.StatusForbidden, "permission_denied", "")
		}
	}
	// A valid start refused changes nothing.
	body := map[string]any{"workflow_type": "wf"}
	e.do(t, http.MethodPost, "/v1/namespaces/b/workflows", body, withKey(adminA)).
		wantProblem(t, http.StatusForbidden, "permission_denied", "")
	if n := e.countRuns(t); n != 0 {
		t.Fatalf("%d runs after refused starts, want 0", n)
	}
	e.do(t, http.MethodPost, "/v1/namespaces/a/workflows", body, withKey(clientA)).wantStatus(t, http.StatusCreated)
	e.do(t, http.MethodPost, "/v1/namespaces/c/workflows", body, withKey(adminA)).wantStatus(t, http.StatusCreated)
	e.do(t, http.MethodPost, "/v1/namespaces/b/workflows", body, withKey(all)).wantStatus(t, http.StatusCreated)
	var page listPage
	e.do(t, http.MethodGet, "/v1/namespaces/a/workflows", nil, withKey(readerA)).wantStatus(t, http.StatusOK).decode(t, &page)
	if len(page.Workflows) != 1 || page.Workflows[0].Namespace != "a" {
		t.Errorf("list of a with a key on a: %+v, want the one run of a", page.Workflows)
	}
	// The namespace list shows a key the namespaces it covers.
	var nss struct {
		Namespaces []struct {
			Name string `json:"name"`
		} `json:"namespaces"`
	}
	names := func(key string) []string {
		e.do(t, http.MethodGet, "/v1/namespaces", nil, withKey(key)).wantStatus(t, http.StatusOK).decode(t, &nss)
		var out []string
		for _, n := range nss.Namespaces {
			out = append(out, n.Name)
		}
		return out
	}
	if got := names(readerA); !slices.Equal(got, []string{"a"}) {
		t.Errorf("namespaces for a key on a: %v, want [a]", got)
	}
	if got := names(adminA); !slices.Equal(got, []string{"a", "c"}) {
		t.Errorf("namespaces for a key on a and c: %v, want [a c]", got)
	}
	if got := names(all); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("namespaces for a key on every namespace: %v, want [a b c]", got)
	}
	// /metrics names every namespace: a key on some of them may not read it.
	e.do(t, http.MethodGet, "/metrics", nil, withKey(adminA)).wantProblem(t, http.StatusForbidden, "permission_denied", "")
	e.do(t, http.MethodGet, "/v1/api-keys", nil, withKey(adminA)).wantProblem(t, http.StatusForbidden, "permission_denied", "")
}

type infoAuth struct {
	Auth string `json:"auth"`
}

func (e *env) authState(t testing.TB) string {
	t.Helper()
	var info infoAuth
	e.do(t, http.MethodGet, "/v1/info", nil).wantStatus(t, http.StatusOK).decode(t, &info)
	return info.Auth
}

type keyView struct {
	KeyID      string     `json:"key_id"`
	Name       string     `json:"name"`
	Role       string     `json:"role"`
	Namespaces []string   `json:"namespaces"`
	ExpiresAt  *time.Time `json:"expires_at"`
	RevokedAt  *time.Time `json:"revoked_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	Secret     string     `json:"secret"`
}

type keyPage struct {
	APIKeys    []keyView `json:"api_keys"`
	NextCursor *string   `json:"next_cursor"`
}

// TestAuthAutoMode: open until the first key, which needs the command line
// (key management needs an admin key even while auth is off); on from
// then, over HTTP management; on still once every key is revoked.
func TestAuthAutoMode(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if got := e.authState(t); got != "off" {
		t.Fatalf("auth before any key: %q, want off", got)
	}
	if recs := e.logs.find(t, "authentication is off until the first API key is created (KAGZI_AUTH=auto): anyone who reaches the port may act on every namespace; create one with `kagzi keys create --name admin --role admin`, or set KAGZI_AUTH=required", nil); len(recs) != 1 {
		t.Errorf("%d warnings that auth is off, want 1 naming KAGZI_AUTH", len(recs))
	}
	e.do(t, http.MethodGet, ns+"/workflows", nil).wantStatus(t, http.StatusOK)
	e.do(t, http.MethodGet, "/metrics", nil).wantStatus(t, http.StatusOK)
	// Nobody takes over a fresh server over HTTP.
	newKey := map[string]any{"name": "mine", "role": "admin", "namespaces": []string{"*"}}
	e.do(t, http.MethodPost, "/v1/api-keys", newKey).wantProblem(t, http.StatusUnauthorized, "unauthenticated", "")
	if n := e.countKeys(t); n != 0 {
		t.Fatalf("%d keys after a refused creation, want 0", n)
	}

	admin := e.newKey(t, domain.RoleAdmin)
	if got := e.authState(t); got != "keys" {
		t.Fatalf("auth once a key exists: %q, want keys", got)
	}
	e.do(t, http.MethodGet, ns+"/workflows", nil).wantProblem(t, http.StatusUnauthorized, "unauthenticated", "")
	e.do(t, http.MethodGet, ns+"/workflows", nil, withKey("kagzi_wrong")).wantProblem(t, http.StatusUnauthorized, "unauthenticated", "")
	e.do(t, http.MethodGet, ns+"/workflows", nil, withHeader("Authorization", "Basic "+admin)).
		wantProblem(t, http.StatusUnauthorized, "unauthenticated", "")
	e.do(t, http.MethodGet, ns+"/workflows", nil, withHeader("Authorization", "bearer "+admin)).wantStatus(t, http.StatusOK)
	e.do(t, http.MethodGet, "/healthz", nil).wantStatus(t, http.StatusOK)
	e.do(t, http.MethodGet, "/openapi.yaml", nil).wantStatus(t, http.StatusOK)

	// A worker key over HTTP: its secret is shown once, lists never show it.
	var created keyView
	e.do(t, http.MethodPost, "/v1/api-keys", map[string]any{"name": "worker 1", "role": "worker", "namespaces": []string{"default"}},
		withKey(admin)).wantStatus(t, http.StatusCreated).decode(t, &created)
	if !regexp.MustCompile(`^kagzi_[A-Za-z0-9_-]{43}$`).MatchString(created.Secret) {
		t.Fatalf("secret %q: want kagzi_ and 43 base64url characters (256 bits)", created.Secret)
	}
	var stored []byte
	if err := e.pool.QueryRow(context.Background(), `SELECT secret_hash FROM api_keys WHERE key_id = $1`, created.KeyID).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256([]byte(created.Secret)); hex.EncodeToString(stored) != hex.EncodeToString(sum[:]) {
		t.Errorf("stored %x, want the SHA-256 of the secret", stored)
	}
	e.do(t, http.MethodPost, ns+"/task-queues/q/claim", `{"wait_ms":0}`, withKey(created.Secret)).wantStatus(t, http.StatusOK)
	var page keyPage
	r := e.do(t, http.MethodGet, "/v1/api-keys?limit=1", nil, withKey(admin)).wantStatus(t, http.StatusOK)
	r.decode(t, &page)
	if len(page.APIKeys) != 1 || page.APIKeys[0].KeyID != created.KeyID || page.NextCursor == nil {
		t.Fatalf("first page: %s, want the worker key and a cursor", r.short())
	}
	if strings.Contains(string(r.body), "secret") {
		t.Errorf("a list shows secrets: %s", r.short())
	}
	e.do(t, http.MethodGet, "/v1/api-keys?limit=1&cursor="+*page.NextCursor, nil, withKey(admin)).wantStatus(t, http.StatusOK).decode(t, &page)
	if len(page.APIKeys) != 1 || page.APIKeys[0].Role != "admin" || page.NextCursor != nil {
		t.Fatalf("second page: %+v, want the admin key, last", page)
	}

	// Revoked: refused at once on this replica.
	var revoked keyView
	e.do(t, http.MethodDelete, "/v1/api-keys/"+created.KeyID, nil, withKey(admin)).wantStatus(t, http.StatusOK).decode(t, &revoked)
	if revoked.RevokedAt == nil {
		t.Fatalf("revoked key without revoked_at: %+v", revoked)
	}
	e.do(t, http.MethodPost, ns+"/task-queues/q/claim", `{"wait_ms":0}`, withKey(created.Secret)).
		wantProblem(t, http.StatusUnauthorized, "unauthenticated", "")
	e.do(t, http.MethodDelete, "/v1/api-keys/"+created.KeyID, nil, withKey(admin)).wantStatus(t, http.StatusOK)
	e.do(t, http.MethodDelete, "/v1/api-keys/"+uuid.NewString(), nil, withKey(admin)).wantProblem(t, http.StatusNotFound, "not_found", "")
	e.do(t, http.MethodDelete, "/v1/api-keys/nope", nil, withKey(admin)).wantProblem(t, http.StatusBadRequest, "invalid_argument", "key_id")

	// Every key revoked: auth stays on.
	var adminID string
	if err := e.pool.QueryRow(context.Background(), `SELECT key_id FROM api_keys WHERE role = 'admin'`).Scan(&adminID); err != nil {
		t.Fatal(err)
	}
	e.do(t, http.MethodDelete, "/v1/api-keys/"+adminID, nil, withKey(admin)).wantStatus(t, http.StatusOK)
	if got := e.authState(t); got != "keys" {
		t.Fatalf("auth once every key is revoked: %q, want keys", got)
	}
	e.do(t, http.MethodGet, ns+"/workflows", nil, withKey(admin)).wantProblem(t, http.StatusUnauthorized, "unauthenticated", "")
}

// TestAuthOffMode: with keys, every route is open but key management,
// which still needs an admin key on every namespace.
func TestAuthOffMode(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withAuth(auth.ModeOff))
	admin := e.newKey(t, domain.RoleAdmin)
	client := e.newKey(t, domain.RoleClient)
	if got := e.authState(t); got != "off" {
		t.Fatalf("auth: %q, want off", got)
	}
	if recs := e.logs.find(t, "authentication is off (KAGZI_AUTH=off): anyone who reaches the port may act on every namespace; set KAGZI_AUTH=auto or required to turn it on", nil); len(recs) != 1 {
		t.Errorf("%d warnings that auth is off, want 1 naming KAGZI_AUTH", len(recs))
	}
	e.do(t, http.MethodGet, ns+"/workflows", nil).wantStatus(t, http.StatusOK)
	e.do(t, http.MethodPatch, ns+"/task-queues/q", `{"paused":false}`).wantStatus(t, http.StatusOK)
	e.do(t, http.MethodGet, "/metrics", nil).wantStatus(t, http.StatusOK)
	e.do(t, http.MethodGet, "/v1/api-keys", nil).wantProblem(t, http.StatusUnauthorized, "unauthenticated", "")
	e.do(t, http.MethodGet, "/v1/api-keys", nil, withKey(client)).wantProblem(t, http.StatusForbidden, "permission_denied", "")
	e.do(t, http.MethodGet, "/v1/api-keys", nil, withKey(admin)).wantStatus(t, http.StatusOK)
}

// TestAuthRequiredMode: on without any key; open routes stay open.
func TestAuthRequiredMode(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withAuth(auth.ModeRequired))
	if got := e.authState(t); got != "keys" {
		t.Fatalf("auth: %q, want keys", got)
	}
	e.do(t, http.MethodGet, ns+"/workflows", nil).wantProblem(t, http.StatusUnauthorized, "unauthenticated", "")
	e.do(t, http.MethodGet, "/metrics", nil).wantProblem(t, http.StatusUnauthorized, "unauthenticated", "")
	e.do(t, http.MethodGet, "/readyz", nil).wantStatus(t, http.StatusOK)
	reader := e.newKey(t, domain.RoleReader)
	e.do(t, http.MethodGet, "/metrics", nil, withKey(reader)).wantStatus(t, http.StatusOK)
}

// TestMetricsOnTheirOwnAddress: with KAGZI_METRICS_ADDR the API does not
// serve /metrics; MetricsHandler does, with no key.
func TestMetricsOnTheirOwnAddress(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withAuth(auth.ModeRequired), func(c *envConfig) { c.separateMetrics = true })
	admin := e.newKey(t, domain.RoleAdmin)
	e.do(t, http.MethodGet, "/metrics", nil, withKey(admin)).wantProblem(t, http.StatusNotFound, "not_found", "")
	rec := httptest.NewRecorder()
	e.server.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "kagzi_") {
		t.Fatalf("MetricsHandler: %d, want 200 with kagzi metrics", rec.Code)
	}
}

// TestCreateAPIKeyRefusesBadInput: every malformed creation is a 4xx that
// creates nothing.
func TestCreateAPIKeyRefusesBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	admin := e.newKey(t, domain.RoleAdmin)
	many := make([]string, domain.MaxKeyNamespaces+1)
	for i := range many {
		many[i] = fmt.Sprintf("ns%d", i)
	}
	past := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	for _, c := range []struct {
		name   string
		body   any
		status int
		field  string
	}{
		{"no name", `{"role":"admin","namespaces":["*"]}`, 400, "name"},
		{"NUL in the name", `{"name":"a\u0000b","role":"admin","namespaces":["*"]}`, 400, "name"},
		{"newline in the name", `{"name":"a\nb","role":"admin","namespaces":["*"]}`, 400, "name"},
		{"long name", map[string]any{"name": strings.Repeat("n", 257), "role": "admin", "namespaces": []string{"*"}}, 400, "name"},
		{"bad role", `{"name":"k","role":"root","namespaces":["*"]}`, 400, "role"},
		{"no role", `{"name":"k","namespaces":["*"]}`, 400, "role"},
		{"no namespaces", `{"name":"k","role":"admin"}`, 400, "namespaces"},
		{"empty namespaces", `{"name":"k","role":"admin","namespaces":[]}`, 400, "namespaces"},
		{"star and a name", `{"name":"k","role":"admin","namespaces":["*","a"]}`, 400, "namespaces[0]"},
		{"a name and a star", `{"name":"k","role":"admin","namespaces":["a","*"]}`, 400, "namespaces[1]"},
		{"duplicate namespace", `{"name":"k","role":"admin","namespaces":["a","b","a"]}`, 400, "namespaces[2]"},
		{"bad namespace", `{"name":"k","role":"admin","namespaces":["a b"]}`, 400, "namespaces[0]"},
		{"NUL namespace", `{"name":"k","role":"admin","namespaces":["a\u0000"]}`, 400, "namespaces[0]"},
		{"empty namespace", `{"name":"k","role":"admin","namespaces":[""]}`, 400, "namespaces[0]"},
		{"too many namespaces", map[string]any{"name": "k", "role": "admin", "namespaces": many}, 400, "namespaces"},
		{"namespaces not a list", `{"name":"k","role":"admin","namespaces":"*"}`, 400, "namespaces"},
		{"expiry in the past", `{"name":"k","role":"admin","namespaces":["*"],"expires_at":"` + past + `"}`, 400, "expires_at"},
		{"malformed expiry", `{"name":"k","role":"admin","namespaces":["*"],"expires_at":"tomorrow"}`, 400, "expires_at"},
		{"unknown field", `{"name":"k","role":"admin","namespaces":["*"],"secret":"kagzi_mine"}`, 400, "secret"},
		{"not an object", `[]`, 400, ""},
		{"huge body", `{"name":"` + strings.Repeat("n", 70<<10) + `","role":"admin","namespaces":["*"]}`, 413, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(t, http.MethodPost, "/v1/api-keys", c.body, withKey(admin))
			code := "invalid_argument"
			if c.status == 413 {
				code = "payload_too_large"
			}
			r.wantProblem(t, c.status, code, c.field)
		})
	}
	e.do(t, http.MethodPost, "/v1/api-keys", `{"name":"k","role":"admin","namespaces":["*"]}`, withKey(admin), withContentType("text/plain")).
		wantProblem(t, http.StatusUnsupportedMediaType, "unsupported_media_type", "")
	e.do(t, http.MethodGet, "/v1/api-keys?limit=0", nil, withKey(admin)).wantProblem(t, http.StatusBadRequest, "invalid_argument", "limit")
	e.do(t, http.MethodGet, "/v1/api-keys?cursor=nope", nil, withKey(admin)).wantProblem(t, http.StatusBadRequest, "invalid_argument", "cursor")
	if n := e.countKeys(t); n != 1 {
		t.Fatalf("%d keys after refused creations, want the admin key alone", n)
	}
}

// TestExpiredKeyIsRefused: a key works until its expiry, and is 401 from
// then on, with no reload needed.
func TestExpiredKeyIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	admin := e.newKey(t, domain.RoleAdmin)
	var k keyView
	expires := time.Now().Add(1500 * time.Millisecond).UTC()
	e.do(t, http.MethodPost, "/v1/api-keys", map[string]any{"name": "short", "role": "reader", "namespaces": []string{"*"},
		"expires_at": expires.Format(time.RFC3339Nano)}, withKey(admin)).wantStatus(t, http.StatusCreated).decode(t, &k)
	if k.ExpiresAt == nil || !k.ExpiresAt.Equal(expires.Truncate(time.Microsecond)) {
		t.Errorf("expires_at %v, want %v", k.ExpiresAt, expires)
	}
	e.do(t, http.MethodGet, ns+"/workflows", nil, withKey(k.Secret)).wantStatus(t, http.StatusOK)
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := e.do(t, http.MethodGet, ns+"/workflows", nil, withKey(k.Secret))
		if r.status == http.StatusUnauthorized {
			if time.Now().Before(expires) {
				t.Fatalf("refused before it expired")
			}
			break
		}
		r.wantStatus(t, http.StatusOK)
		if time.Now().After(deadline) {
			t.Fatalf("the key still works %s after it expired", time.Since(expires))
		}
		time.Sleep(50 * time.Millisecond) // polling the expiry: time passing sends no event
	}
}

// TestKeyChangesReachAnotherReplica: a key created on one replica works on
// a second one (another kagzi.NewServer on the same database) within a
// second, and a revocation on the first stops it on the second within a
// second, by the LISTEN connection, not the backstop reload.
func TestKeyChangesReachAnotherReplica(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	admin := e.newKey(t, domain.RoleAdmin)
	second := e.replica(t)

	var k keyView
	e.do(t, http.MethodPost, "/v1/api-keys", map[string]any{"name": "r", "role": "reader", "namespaces": []string{"*"}},
		withKey(admin)).wantStatus(t, http.StatusCreated).decode(t, &k)
	created := time.Now()
	waitFor(t, time.Second, "the new key to work on the second replica", func() bool {
		_, err := second.Keys.Check(k.Secret)
		return err == nil
	})
	t.Logf("the new key worked on the second replica after %s", time.Since(created))

	e.do(t, http.MethodDelete, "/v1/api-keys/"+k.KeyID, nil, withKey(admin)).wantStatus(t, http.StatusOK)
	revoked := time.Now()
	waitFor(t, time.Second, "the revoked key to be refused on the second replica", func() bool {
		_, err := second.Keys.Check(k.Secret)
		return err != nil
	})
	t.Logf("the revoked key was refused on the second replica after %s", time.Since(revoked))
}

// TestFirstKeyLocksEveryReplica is the README's way from open to locked,
// restarting nothing: under KAGZI_AUTH=auto a first key made straight in
// the database (as `kagzi keys create` does) turns authentication on, on
// every replica, within a second.
func TestFirstKeyLocksEveryReplica(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	second := e.replica(t)
	e.do(t, http.MethodGet, ns+"/workflows", nil).wantStatus(t, http.StatusOK)
	if on, err := second.Keys.On(); on || err != nil {
		t.Fatalf("second replica before any key: on %v, %v; want off", on, err)
	}
	if _, _, err := auth.Create(context.Background(), e.store, domain.NewAPIKey{Name: "ops", Role: domain.RoleAdmin,
		Namespaces: []string{"*"}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	created := time.Now()
	waitFor(t, time.Second, "auth to be on on both replicas", func() bool {
		on1, _ := e.keys.On()
		on2, _ := second.Keys.On()
		return on1 && on2
	})
	t.Logf("auth was on on both replicas %s after the first key", time.Since(created))
	e.do(t, http.MethodGet, ns+"/workflows", nil).wantProblem(t, http.StatusUnauthorized, "unauthenticated", "")
	if got := e.authState(t); got != "keys" {
		t.Errorf("auth: %q, want keys", got)
	}
}

// replica runs a second server on e's database until t ends. Its key
// cache reloads only when notified: its backstop reload is an hour away.
func (e *env) replica(t *testing.T) *kagzi.Server {
	t.Helper()
	srv := kagzi.NewServer(kagzi.Config{
		DatabaseURL:  e.dbURL,
		Pool:         e.pool,
		Limits:       e.limits,
		NoMaintainer: true,
		NoScheduler:  true,
		Version:      testVersion,
		Logger:       slog.New(slog.DiscardHandler),
	})
	srv.Keys.Backstop = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("second replica: %v", err)
		}
	})
	waitFor(t, 10*time.Second, "the second replica's listener", func() bool { return srv.Listener.Ready() == nil })
	return srv
}

// TestNoSecretInLogsErrorsOrMetrics: whatever is done with keys (created,
// used, wrong, revoked), no secret, nor its hash, appears in a log line,
// an answer other than the creation's, or a metric.
func TestNoSecretInLogsErrorsOrMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	admin := e.newKey(t, domain.RoleAdmin)
	var k keyView
	e.do(t, http.MethodPost, "/v1/api-keys", map[string]any{"name": "w", "role": "worker", "namespaces": []string{"a"}},
		withKey(admin)).wantStatus(t, http.StatusCreated).decode(t, &k)
	secrets := []string{admin, k.Secret}
	wrong := k.Secret[:len(k.Secret)-1] + "A"
	if wrong == k.Secret {
		wrong = k.Secret[:len(k.Secret)-1] + "B"
	}
	var answers []string
	keep := func(r *resp) { answers = append(answers, string(r.body)+fmt.Sprint(r.header)) }
	keep(e.do(t, http.MethodGet, ns+"/workflows", nil, withKey(k.Secret)))
	keep(e.do(t, http.MethodGet, "/v1/namespaces/a/workflows", nil, withKey(k.Secret)))
	keep(e.do(t, http.MethodPost, "/v1/namespaces/a/workflows", `{"workflow_type":"x"}`, withKey(k.Secret)))
	keep(e.do(t, http.MethodGet, ns+"/workflows", nil, withKey(wrong)))
	keep(e.do(t, http.MethodGet, ns+"/workflows", nil, withHeader("Authorization", "Token "+k.Secret)))
	keep(e.do(t, http.MethodGet, "/v1/api-keys", nil, withKey(admin)))
	keep(e.do(t, http.MethodDelete, "/v1/api-keys/"+k.KeyID, nil, withKey(admin)))
	keep(e.do(t, http.MethodGet, "/v1/namespaces/a/workflows", nil, withKey(k.Secret)))
	keep(e.do(t, http.MethodGet, "/metrics", nil, withKey(admin)))
	keep(e.do(t, http.MethodGet, "/v1/info", nil))

	var forms []string
	for _, s := range append(secrets, wrong) {
		sum := sha256.Sum256([]byte(s))
		forms = append(forms, s, strings.TrimPrefix(s, auth.SecretPrefix), hex.EncodeToString(sum[:]),
			base64.StdEncoding.EncodeToString(sum[:]))
	}
	logs := e.logs.String()
	for _, f := range forms {
		if strings.Contains(logs, f) {
			t.Errorf("the log holds a secret or its hash (%.12s…)", f)
		}
		for _, a := range answers {
			if strings.Contains(a, f) {
				t.Errorf("an answer holds a secret or its hash (%.12s…): %.300s", f, a)
			}
		}
	}
	if !strings.Contains(logs, "authentication is on") {
		t.Errorf("the log never says that authentication is on: %.2000s", logs)
	}
}

// TestRefusalsDoNotReadTheBody: 401 and 403 are decided before the body is
// read, so a client that sends its headers and never its body is answered
// at once, and a refused start creates nothing.
func TestRefusalsDoNotReadTheBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withAuth(auth.ModeRequired))
	reader := e.newKey(t, domain.RoleReader)
	for _, c := range []struct {
		name   string
		header string
		status int
	}{
		{"no key", "", http.StatusUnauthorized},
		{"a reader's key", "Authorization: Bearer " + reader + "\r\n", http.StatusForbidden},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			// The headers promise a body of 1 MiB, which never comes.
			_, err = fmt.Fprintf(conn, "POST %s/workflows HTTP/1.1\r\nHost: kagzi\r\nContent-Type: application/json\r\n"+
				"Content-Length: 1048576\r\n%s\r\n", ns, c.header)
			if err != nil {
				t.Fatal(err)
			}
			res, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no answer while the body was not sent: %v", err)
			}
			defer res.Body.Close()
			if res.StatusCode != c.status {
				t.Fatalf("status %d, want %d", res.StatusCode, c.status)
			}
		})
	}
	if n := e.countRuns(t); n != 0 {
		t.Fatalf("%d runs, want 0", n)
	}
}

// BenchmarkRequestAuth is what authentication adds to a request through
// the router: the same request (refused by the handler before any query,
// so that the database plays no part) with auth off, and with auth on and
// a worker's key among 100 keys.
func BenchmarkRequestAuth(b *testing.B) {
	pool, _ := pgtest.NewPool(b)
	for _, mode := range []auth.Mode{auth.ModeOff, auth.ModeRequired} {
		b.Run(string(mode), func(b *testing.B) {
			srv := kagzi.NewServer(kagzi.Config{Pool: pool, Auth: mode, Limits: defaultLimits(), Version: testVersion,
				Logger: slog.New(slog.DiscardHandler)})
			ctx := context.Background()
			var secret string
			for range 100 {
				var err error
				if _, secret, err = auth.Create(ctx, srv.Store, domain.NewAPIKey{Name: "k", Role: domain.RoleWorker, Namespaces: []string{"default"}}, time.Now()); err != nil {
					b.Fatal(err)
				}
			}
			if err := srv.Keys.Load(ctx); err != nil {
				b.Fatal(err)
			}
			path := "/v1/namespaces/default/workflows/" + uuid.NewString() + "?unknown=1"
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				r := httptest.NewRequest(http.MethodGet, path, nil)
				r.Header.Set("Authorization", "Bearer "+secret)
				w := httptest.NewRecorder()
				srv.API.ServeHTTP(w, r)
				if w.Code != http.StatusBadRequest {
					b.Fatalf("status %d, want 400: %s", w.Code, w.Body)
				}
			}
		})
	}
}
