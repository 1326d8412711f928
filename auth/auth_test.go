package auth_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kagzi/kagzi/auth"
	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/postgres"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

// countingStore is the real store, with its writes of last_used_at
// counted.
type countingStore struct {
	*postgres.Store
	mu      sync.Mutex
	touches [][]string
	touched chan struct{}
}

func (s *countingStore) TouchAPIKeys(ctx context.Context, ids []string) error {
	err := s.Store.TouchAPIKeys(ctx, ids)
	s.mu.Lock()
	s.touches = append(s.touches, ids)
	s.mu.Unlock()
	select {
	case s.touched <- struct{}{}:
	default:
	}
	return err
}

func setup(t *testing.T, mode auth.Mode) (*countingStore, *auth.Keyring) {
	t.Helper()
	pool, _ := pgtest.NewPool(t)
	store := &countingStore{Store: postgres.NewStore(pool, 30*time.Second), touched: make(chan struct{}, 16)}
	return store, auth.NewKeyring(store, mode, slog.New(slog.DiscardHandler))
}

func create(t testing.TB, store auth.Creator, role domain.Role, namespaces ...string) (domain.APIKey, string) {
	t.Helper()
	if len(namespaces) == 0 {
		namespaces = []string{domain.AllNamespaces}
	}
	k, secret, err := auth.Create(context.Background(), store, domain.NewAPIKey{Name: "k", Role: role, Namespaces: namespaces}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return k, secret
}

func TestSecretShape(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 100 {
		s, h := auth.NewSecret()
		if !strings.HasPrefix(s, auth.SecretPrefix) || len(s) != len(auth.SecretPrefix)+43 {
			t.Fatalf("secret %q: want %s and 43 base64url characters (256 bits)", s, auth.SecretPrefix)
		}
		if string(h) != string(auth.Hash(s)) || len(h) != 32 {
			t.Fatalf("hash of %q is not its SHA-256", s)
		}
		if seen[s] {
			t.Fatalf("secret %q came twice", s)
		}
		seen[s] = true
	}
}

// TestCheckRefusesNearMisses: a key is found by the SHA-256 of what the
// request sends, and the hashes are compared (in constant time), never
// the secrets: a key that differs from a real one in one character, of the
// same prefix and length, is refused like any unknown key, and so are
// prefixes and extensions of it.
func TestCheckRefusesNearMisses(t *testing.T) {
	t.Parallel()
	store, keys := setup(t, auth.ModeAuto)
	_, secret := create(t, store, domain.RoleAdmin)
	if err := keys.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Check(secret); err != nil {
		t.Fatalf("the real key: %v", err)
	}
	flip := func(s string, i int) string {
		c := byte('A')
		if s[i] == c {
			c = 'B'
		}
		return s[:i] + string(c) + s[i+1:]
	}
	misses := []string{
		flip(secret, len(secret)-1), flip(secret, len(auth.SecretPrefix)), flip(secret, len(secret)/2),
		secret[:len(secret)-1], secret + "A", strings.ToUpper(secret), "", auth.SecretPrefix,
		strings.TrimPrefix(secret, auth.SecretPrefix), string(auth.Hash(secret)),
	}
	for _, m := range misses {
		_, err := keys.Check(m)
		if !errors.Is(err, &domain.Error{Code: domain.CodeUnauthenticated}) {
			t.Errorf("a near miss of the key was not refused as unauthenticated: %v", err)
		}
		if err != nil && strings.Contains(err.Error(), m) && m != "" {
			t.Errorf("the error repeats the key sent: %v", err)
		}
	}
}

// TestLastUsedWrittenAtMostOncePerMinute: a key used many times is
// recorded once, not once per request, and its last_used_at is set.
func TestLastUsedWrittenAtMostOncePerMinute(t *testing.T) {
	t.Parallel()
	store, keys := setup(t, auth.ModeAuto)
	k, secret := create(t, store, domain.RoleWorker)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	if err := keys.Load(ctx); err != nil {
		t.Fatal(err)
	}
	go func() { done <- keys.Run(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	defer stop()
	for range 1000 {
		if _, err := keys.Check(secret); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-store.touched:
	case <-time.After(5 * time.Second):
		t.Fatal("last_used_at was not written within 5s of the key's use")
	}
	for range 1000 {
		if _, err := keys.Check(secret); err != nil {
			t.Fatal(err)
		}
	}
	// A reload must not forget that the use was recorded.
	keys.Refresh()
	if err := keys.Load(ctx); err != nil {
		t.Fatal(err)
	}
	for range 1000 {
		if _, err := keys.Check(secret); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	store.mu.Lock()
	defer store.mu.Unlock()
	if len(store.touches) != 1 || len(store.touches[0]) != 1 || store.touches[0][0] != k.KeyID {
		t.Fatalf("last_used_at writes: %v, want one, of %s", store.touches, k.KeyID)
	}
	page, _, err := store.ListAPIKeys(context.Background(), domain.Page{Limit: 10})
	if err != nil || len(page) != 1 || page[0].LastUsedAt == nil {
		t.Fatalf("keys: %+v, %v; want last_used_at set", page, err)
	}
}

func TestModes(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		mode         auth.Mode
		keys         bool
		wantOn       bool
		errNotLoaded bool
	}{
		{auth.ModeAuto, false, false, true},
		{auth.ModeAuto, true, true, true},
		{auth.ModeRequired, false, true, false},
		{auth.ModeOff, true, false, false},
	} {
		t.Run(fmt.Sprintf("%s keys %v", c.mode, c.keys), func(t *testing.T) {
			t.Parallel()
			store, keys := setup(t, c.mode)
			if c.keys {
				create(t, store, domain.RoleReader)
			}
			if _, err := keys.On(); (err != nil) != c.errNotLoaded {
				t.Errorf("On before the first load: %v, want an error: %v", err, c.errNotLoaded)
			}
			if err := keys.Load(context.Background()); err != nil {
				t.Fatal(err)
			}
			if on, err := keys.On(); on != c.wantOn || err != nil {
				t.Errorf("On: %v, %v; want %v", on, err, c.wantOn)
			}
		})
	}
	for _, s := range []string{"", "auto", "required", "off"} {
		if _, err := auth.ParseMode(s); err != nil {
			t.Errorf("ParseMode(%q): %v", s, err)
		}
	}
	for _, s := range []string{"on", "Auto", "none"} {
		if _, err := auth.ParseMode(s); err == nil {
			t.Errorf("ParseMode(%q) accepted", s)
		}
	}
}

// BenchmarkCheck is the per-request cost of authentication: hashing the
// key a request sends and looking it up among 1000 keys, no query.
func BenchmarkCheck(b *testing.B) {
	pool, _ := pgtest.NewPool(b)
	store := postgres.NewStore(pool, 30*time.Second)
	var secret string
	for range 1000 {
		_, secret = create(b, store, domain.RoleWorker, "a", "b")
	}
	keys := auth.NewKeyring(store, auth.ModeAuto, slog.New(slog.DiscardHandler))
	if err := keys.Load(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k, err := keys.Check(secret)
			if err != nil {
				b.Fatal(err)
			}
			if err := domain.Authorize(k, domain.Access{Namespaced: true, Roles: []domain.Role{domain.RoleWorker}}, "b"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
