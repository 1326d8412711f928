package client_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/kagzi/kagzi/api"
	"github.com/kagzi/kagzi/client"
	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/internal/testserver"
)

// A child past the server's child limits is an error the workflow can tell
// apart: it matches ErrLimitExceeded and not ErrConflict, it is asked for
// once (not retried), and returned from the workflow it fails the run
// with the type ChildLimitExceeded, which a retry policy can name.
func TestChildLimitExceeded(t *testing.T) {
	srv := testserver.New(t, testserver.WithHeartbeatInterval(testHeartbeat),
		testserver.WithLimits(func(l *api.Limits) { l.Children = domain.ChildLimits{MaxLive: 1, MaxDepth: 16} }))
	e := newEnv(t, srv)
	kids := client.ChildOptions{TaskQueue: "nobody"} // the children stay pending
	e.startWorker(t, func(w *client.Worker) {
		client.Register(w, "parent", func(ctx *client.WorkflowContext, _ any) (string, error) {
			if _, err := client.StartChild(ctx, "first", "kid", nil, kids); err != nil {
				return "", err
			}
			_, err := client.StartChild(ctx, "second", "kid", nil, kids)
			if !errors.Is(err, client.ErrLimitExceeded) || errors.Is(err, client.ErrConflict) {
				return "", client.NonRetryable(errors.New("StartChild past the cap: " + errString(err)))
			}
			_, err = client.ExecuteChild[int](ctx, "third", "kid", nil, kids)
			return "", err
		})
	})
	id := e.start(t, client.StartRequest{WorkflowType: "parent", RetryPolicy: &client.RetryPolicy{MaxAttempts: 1}})
	var runErr *client.RunError
	if err := e.wait(t, id).Result(nil); !errors.As(err, &runErr) || runErr.Info == nil ||
		runErr.Info.Type != "ChildLimitExceeded" || !strings.Contains(runErr.Info.Message, "limit_exceeded") {
		t.Fatalf("Result = %v, want a failure of type ChildLimitExceeded", err)
	}
	for _, step := range []string{"second", "third"} {
		calls := e.rec.answered(func(c call) bool {
			return c.method == "POST" && strings.HasSuffix(c.path, "/steps/"+step+"/child")
		})
		if len(calls) != 1 {
			t.Errorf("%d child calls for %s, want 1 (no retry)", len(calls), step)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}
