package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kagzi/kagzi/auth"
	"github.com/kagzi/kagzi/client"
	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/internal/testserver"
)

// TestWithAPIKey: a client sends its key as a bearer token; without one,
// or with a key that may not start runs, the server's refusal is a typed
// error.
func TestWithAPIKey(t *testing.T) {
	t.Parallel()
	srv := testserver.New(t, testserver.WithAuth(auth.ModeRequired))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := client.StartRequest{WorkflowType: "wf"}
	if _, err := client.New(srv.URL).Start(ctx, req); !errors.Is(err, client.ErrUnauthenticated) {
		t.Errorf("Start without a key: %v, want ErrUnauthenticated", err)
	}
	if _, err := client.New(srv.URL, client.WithAPIKey("")).Start(ctx, req); !errors.Is(err, client.ErrUnauthenticated) {
		t.Errorf("Start with an empty key: %v, want ErrUnauthenticated", err)
	}
	worker := client.New(srv.URL, client.WithAPIKey(srv.NewKey(t, domain.RoleWorker)))
	if _, err := worker.Start(ctx, req); !errors.Is(err, client.ErrPermissionDenied) {
		t.Errorf("Start with a worker key: %v, want ErrPermissionDenied", err)
	}
	c := client.New(srv.URL, client.WithAPIKey(srv.NewKey(t, domain.RoleClient, "default")))
	started, err := c.Start(ctx, req)
	if err != nil {
		t.Fatalf("Start with a client key: %v", err)
	}
	if _, err := worker.Get(ctx, started.Run.RunID); err != nil {
		t.Errorf("Get with a worker key: %v", err)
	}
}
