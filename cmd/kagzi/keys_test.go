package main

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kagzi/kagzi/auth"
	"github.com/kagzi/kagzi/postgres"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

// TestKeysCommand: create prints the secret alone on stdout (so that
// KEY=$(kagzi keys create ...) works), list shows the record and never the
// secret, revoke revokes; bad arguments change nothing.
func TestKeysCommand(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	store := postgres.NewStore(pool, 30*time.Second)
	ctx := context.Background()
	keys := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := runKeys(ctx, store, args, &out, &errOut)
		return out.String(), errOut.String(), err
	}

	out, info, err := keys("create", "--name", "admin", "--role", "admin")
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if !regexp.MustCompile(`^kagzi_[A-Za-z0-9_-]{43}\n$`).MatchString(out) {
		t.Fatalf("create printed %q on stdout, want the secret alone", out)
	}
	secret := strings.TrimSpace(out)
	if strings.Contains(info, secret) || !strings.Contains(info, "created key") {
		t.Errorf("create said on stderr %q: want the record, never the secret", info)
	}
	k := auth.NewKeyring(store, auth.ModeAuto, slog.New(slog.DiscardHandler))
	if err := k.Load(ctx); err != nil {
		t.Fatal(err)
	}
	key, err := k.Check(secret)
	if err != nil || key.Role != "admin" || !key.CoversAll() {
		t.Fatalf("the created key: %+v, %v; want an admin key on every namespace", key, err)
	}

	if _, _, err := keys("create", "--name", "w", "--role", "worker", "--namespace", "a", "--namespace", "b", "--expires-in", "24h"); err != nil {
		t.Fatalf("create a worker key: %v", err)
	}
	for _, bad := range [][]string{
		{"create", "--role", "admin"},
		{"create", "--name", "x", "--role", "root"},
		{"create", "--name", "x", "--role", "admin", "--namespace", "a b"},
		{"create", "--name", "x", "--role", "admin", "--namespace", "*", "--namespace", "a"},
		{"create", "--name", "x", "--role", "admin", "--expires-in", "-1h"},
		{"create", "--name", "x", "--role", "admin", "extra"},
		{"revoke", "not-a-uuid"},
		{"revoke"},
		{"list", "x"},
		{"rotate"},
	} {
		if _, _, err := keys(bad...); err == nil {
			t.Errorf("keys %q: no error", bad)
		}
	}

	out, _, err = keys("list")
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.Contains(out, "a,b") || strings.Contains(out, secret) {
		t.Fatalf("list:\n%s\nwant a header and the two keys, no secret", out)
	}

	out, _, err = keys("revoke", key.KeyID)
	if err != nil || !strings.HasPrefix(out, "revoked "+key.KeyID) {
		t.Fatalf("revoke: %q, %v", out, err)
	}
	if err := k.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Check(secret); err == nil {
		t.Error("the revoked key still works")
	}
	if err := requireKey(ctx, store); err != nil {
		t.Errorf("requireKey with a usable worker key: %v", err)
	}
}

// TestRequireKey: KAGZI_AUTH=required refuses to start without a usable key.
func TestRequireKey(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	store := postgres.NewStore(pool, 30*time.Second)
	err := requireKey(context.Background(), store)
	if err == nil || !strings.Contains(err.Error(), "kagzi keys create") {
		t.Fatalf("requireKey with no key: %v, want advice to create one", err)
	}
}
