package main

import (
	"context"
	"errors"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kagzi/kagzi/auth"
	"github.com/kagzi/kagzi/client"
	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/internal/testserver"
)

// The example runs end to end against a real server and database.
func TestHello(t *testing.T) {
	t.Parallel()
	srv := testserver.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out strings.Builder
	if err := run(ctx, srv.URL, "", "Ada", &out); err != nil {
		t.Fatalf("run: %v", err)
	}
	m := regexp.MustCompile(`^started run ([0-9a-f-]{36})\nHello, Ada!\n$`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("output:\n%s\nwant the run's ID and the greeting", out.String())
	}
	steps, err := client.New(srv.URL).Steps(ctx, m[1])
	if err != nil || len(steps) != 1 || steps[0].Name != "compose" || steps[0].Status != client.StepCompleted {
		t.Errorf("steps = %+v, %v; want compose, completed", steps, err)
	}
}

// With authentication on, the example works with a key, and is refused
// without one.
func TestHelloWithAuth(t *testing.T) {
	t.Parallel()
	srv := testserver.New(t, testserver.WithAuth(auth.ModeRequired))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out strings.Builder
	if err := run(ctx, srv.URL, srv.NewKey(t, domain.RoleAdmin, "default"), "Ada", &out); err != nil {
		t.Fatalf("run with a key: %v", err)
	}
	if !strings.HasSuffix(out.String(), "Hello, Ada!\n") {
		t.Errorf("output:\n%s\nwant the greeting", out.String())
	}
	if err := run(ctx, srv.URL, "", "Ada", io.Discard); !errors.Is(err, client.ErrUnauthenticated) {
		t.Errorf("run without a key: %v, want unauthenticated", err)
	}
}
