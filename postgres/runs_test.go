package postgres_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/postgres"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

func TestStartAndGetRun(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	s := postgres.NewStore(pool, 0)
	ctx := context.Background()
	n, err := domain.StartRequest{WorkflowType: "hello", Input: json.RawMessage(`{"a": 1}`)}.Validate(domain.PayloadLimits{MaxBytes: 100})
	if err != nil {
		t.Fatal(err)
	}
	run, created, err := s.StartRun(ctx, "default", n)
	if err != nil || !created {
		t.Fatalf("StartRun: %v, created %v", err, created)
	}
	got, err := s.GetRun(ctx, "default", run.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Input) != `{"a": 1}` || string(got.Output) != "null" || got.Status != domain.RunPending {
		t.Fatalf("got %+v", got)
	}
}
