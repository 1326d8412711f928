package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kagzi/kagzi/auth"
	"github.com/kagzi/kagzi/client"
	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/internal/testserver"
)

// The example runs end to end against a real server and database: the
// good order completes after two payment retries and the sleep; the
// declined one is compensated and fails without a retry.
func TestOrder(t *testing.T) {
	t.Parallel()
	srv := testserver.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out strings.Builder
	runs, err := run(ctx, config{URL: srv.URL, CoolOff: 300 * time.Millisecond, Out: &out})
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Logf("output:\n%s", out.String())
	if len(runs) != 2 {
		t.Fatalf("%d runs, want 2", len(runs))
	}
	c := client.New(srv.URL)

	paid, declined := runs[0], runs[1]
	var receipt Receipt
	if err := paid.Result(&receipt); err != nil {
		t.Fatalf("first order: %v", err)
	}
	if want := (Receipt{OrderID: "o-1", Reservation: "res-o-1", PaymentID: "pay-o-1", Tracking: "trk-o-1"}); receipt != want {
		t.Errorf("receipt = %+v, want %+v", receipt, want)
	}
	if paid.Attempt != 1 {
		t.Errorf("first order took %d attempts, want 1", paid.Attempt)
	}
	want := []string{
		"reserve-inventory 1 completed",
		"charge-payment 1 failed payment gateway timeout (attempt 1)",
		"charge-payment 2 failed payment gateway timeout (attempt 2)",
		"charge-payment 3 completed",
		"cool-off 1 completed",
		"ship 1 completed",
	}
	if got := steps(t, c, paid.RunID); !slices.Equal(got, want) {
		t.Errorf("first order's steps:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if paid.FinishedAt.Sub(paid.StartedAt) < 300*time.Millisecond {
		t.Errorf("first order took %s, less than its cooling-off", paid.FinishedAt.Sub(paid.StartedAt))
	}

	if declined.Status != client.StatusFailed || declined.Attempt != 1 || declined.Error == nil || !declined.Error.NonRetryable ||
		declined.Error.Message != `order o-2 not paid, reservation released: step "charge-payment": card declined` {
		t.Errorf("second order = %s attempt %d %+v, want failed at once with the payment's error", declined.Status, declined.Attempt, declined.Error)
	}
	want = []string{
		"reserve-inventory 1 completed",
		"charge-payment 1 failed card declined",
		"release-inventory 1 completed",
	}
	if got := steps(t, c, declined.RunID); !slices.Equal(got, want) {
		t.Errorf("second order's steps:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, line := range []string{"order o-1 completed: reservation res-o-1, payment pay-o-1, tracking trk-o-1", "order o-2 failed: order o-2 not paid"} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("the output lacks %q", line)
		}
	}
}

func steps(t *testing.T, c *client.Client, runID string) []string {
	t.Helper()
	steps, err := c.Steps(context.Background(), runID)
	if err != nil {
		t.Fatalf("Steps: %v", err)
	}
	var out []string
	for _, s := range steps {
		line := fmt.Sprintf("%s %d %s", s.Name, s.Attempt, s.Status)
		if s.Error != nil {
			line += " " + s.Error.Message
		}
		out = append(out, line)
	}
	return out
}

// With authentication on, the example works with a key.
func TestOrderWithAuth(t *testing.T) {
	t.Parallel()
	srv := testserver.New(t, testserver.WithAuth(auth.ModeRequired))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out strings.Builder
	runs, err := run(ctx, config{URL: srv.URL, APIKey: srv.NewKey(t, domain.RoleAdmin, "default"), CoolOff: 300 * time.Millisecond, Out: &out})
	if err != nil || len(runs) != 2 {
		t.Fatalf("run with a key: %d runs, %v\n%s", len(runs), err, out.String())
	}
}
