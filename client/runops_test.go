package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kagzi/kagzi/client"
)

func TestRunOperations(t *testing.T) {
	runTests(t, []namedTest{
		{"retry", func(t *testing.T, e *env) {
			ctx := context.Background()
			id := e.start(t, client.StartRequest{WorkflowType: "op"})
			if _, err := e.c.Retry(ctx, id); !errors.Is(err, client.ErrConflict) {
				t.Fatalf("Retry of a pending run: %v, want ErrConflict", err)
			}
			if _, err := e.c.Cancel(ctx, id); err != nil {
				t.Fatal(err)
			}
			run, err := e.c.Retry(ctx, id)
			if err != nil || run.Status != client.StatusPending || run.RunID != id {
				t.Fatalf("Retry of a cancelled run: %+v, %v; want it pending", run, err)
			}
		}},
		{"schedules_stats_types_namespaces", func(t *testing.T, e *env) {
			ctx := context.Background()
			var sc struct {
				ScheduleID string `json:"schedule_id"`
			}
			if code := e.raw(t, "POST", "/v1/namespaces/"+e.ns+"/schedules",
				map[string]any{"workflow_type": "nightly", "cron": "@daily"}, &sc); code != 201 {
				t.Fatalf("create schedule: %d", code)
			}
			run, err := e.c.TriggerSchedule(ctx, sc.ScheduleID)
			if err != nil || run.ExternalID != "schedule:"+sc.ScheduleID+":manual:"+run.RunID || run.ScheduleID != sc.ScheduleID {
				t.Fatalf("TriggerSchedule: %+v, %v", run, err)
			}
			page, err := e.c.ScheduleRunsPage(ctx, sc.ScheduleID, 10, "")
			if err != nil || len(page.Runs) != 1 || page.Runs[0].RunID != run.RunID || page.NextCursor != "" {
				t.Fatalf("ScheduleRunsPage: %+v, %v", page, err)
			}
			st, err := e.c.Stats(ctx, client.StatsOptions{Window: time.Hour, Bucket: 10 * time.Minute, WorkflowType: "nightly"})
			if err != nil || len(st.Buckets) != 6 || st.Buckets[5].Started != 1 || st.Now.Pending != 1 {
				t.Fatalf("Stats: %+v, %v", st, err)
			}
			if _, err := e.c.Stats(ctx, client.StatsOptions{Window: 8 * 24 * time.Hour}); !errors.Is(err, client.ErrInvalidArgument) {
				t.Fatalf("Stats over 8 days: %v, want ErrInvalidArgument", err)
			}
			types, next, err := e.c.WorkflowTypesPage(ctx, 0, "")
			if err != nil || len(types) != 1 || types[0].Name != "nightly" || types[0].Pending != 1 || next != "" {
				t.Fatalf("WorkflowTypesPage: %+v, %q, %v", types, next, err)
			}
			found := false
			for cursor := ""; ; {
				nss, next, err := e.c.NamespacesPage(ctx, 500, cursor)
				if err != nil {
					t.Fatal(err)
				}
				for _, n := range nss {
					found = found || (n.Name == e.ns && n.Pending == 1)
				}
				if cursor = next; cursor == "" {
					break
				}
			}
			if !found {
				t.Errorf("NamespacesPage did not list %s with its pending run", e.ns)
			}
		}},
	})
}
