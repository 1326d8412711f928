package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kagzi/kagzi/client"
	"github.com/kagzi/kagzi/internal/testserver"
)

// The example runs end to end against a real server and database: the
// approved expense is paid by a child run, the rejected one is not, and
// the undecided one escalates after the timeout and is approved by the
// director (whose signal waited in the inbox meanwhile).
func TestExpense(t *testing.T) {
	t.Parallel()
	srv := testserver.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out strings.Builder
	runs, err := run(ctx, config{URL: srv.URL, Timeout: 300 * time.Millisecond, Out: &out})
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Logf("output:\n%s", out.String())
	want := []Outcome{
		{ExpenseID: "e-1", Approved: true, DecidedBy: "manager", PaymentID: "pay-e-1"},
		{ExpenseID: "e-2", Approved: false, DecidedBy: "manager"},
		{ExpenseID: "e-3", Approved: true, DecidedBy: "director", Escalated: true, PaymentID: "pay-e-3"},
	}
	if len(runs) != len(want) {
		t.Fatalf("%d runs, want %d", len(runs), len(want))
	}
	c := client.New(srv.URL)
	for i, r := range runs {
		var o Outcome
		if err := r.Result(&o); err != nil || o != want[i] {
			t.Errorf("run %d: %+v (%v), want %+v", i, o, err, want[i])
		}
		if r.Status != client.StatusCompleted {
			t.Errorf("run %d is %s", i, r.Status)
		}
		steps, err := c.Steps(ctx, r.RunID)
		if err != nil {
			t.Fatal(err)
		}
		var pays int
		for _, s := range steps {
			if s.Name == "pay" {
				pays++
			}
		}
		if wantPays := map[bool]int{true: 1, false: 0}[want[i].Approved]; pays != wantPays {
			t.Errorf("run %d has %d pay steps, want %d", i, pays, wantPays)
		}
	}
	if !strings.Contains(out.String(), "approved, paid pay-e-3 by the director after escalation") {
		t.Errorf("output lacks the escalation:\n%s", out.String())
	}
}
