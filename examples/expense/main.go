// Command expense runs an expense approval workflow: a manager approves or
// rejects an expense by signal; when no decision comes within the
// timeout, the expense escalates to a director, whose decision is final.
// An approved expense is paid through a child workflow.
//
//	go run ./examples/expense
//
// It talks to the server at KAGZI_URL (default http://localhost:8080),
// with the API key KAGZI_API_KEY when the server has authentication on (a
// key that may start runs, signal them and work them: admin on the
// namespace default), runs the worker, submits three expenses (one the
// manager approves, one the manager rejects, one nobody decides on in
// time), and prints how each went.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/kagzi/kagzi/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := config{URL: serverURL(), APIKey: os.Getenv("KAGZI_API_KEY"), Timeout: 2 * time.Second, Out: os.Stdout}
	if _, err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "expense:", err)
		os.Exit(1)
	}
}

func serverURL() string {
	if u := os.Getenv("KAGZI_URL"); u != "" {
		return u
	}
	return "http://localhost:8080"
}

// taskQueue is the queue of the example's runs and worker.
const taskQueue = "expenses"

// Expense is the approval workflow's input.
type Expense struct {
	ID          string `json:"id"`
	Employee    string `json:"employee"`
	AmountCents int    `json:"amount_cents"`
}

// Decision is the input of an approve or reject signal.
type Decision struct {
	By     string `json:"by"`
	Reason string `json:"reason,omitempty"`
}

// Outcome is the approval workflow's output.
type Outcome struct {
	ExpenseID string `json:"expense_id"`
	Approved  bool   `json:"approved"`
	DecidedBy string `json:"decided_by"`
	Escalated bool   `json:"escalated"`
	PaymentID string `json:"payment_id,omitempty"`
}

// Payment is the payment workflow's output.
type Payment struct {
	PaymentID string `json:"payment_id"`
}

// Approve is the approval workflow. Signals are its only input from
// outside; everything with an effect is a step, so that it takes the same
// path each time it is replayed (after each wait and after the payment).
func Approve(timeout time.Duration, notified func(string)) func(*client.WorkflowContext, Expense) (Outcome, error) {
	return func(ctx *client.WorkflowContext, e Expense) (Outcome, error) {
		out := Outcome{ExpenseID: e.ID}
		got, err := client.WaitForSignal[Decision](ctx, "manager-decision", []string{"approve", "reject"}, timeout)
		if err != nil {
			return out, err // ErrSuspended: the run parks until a decision or the timeout
		}
		if got.TimedOut {
			out.Escalated = true
			if _, err := client.Step(ctx, "escalate", func(context.Context) (bool, error) {
				notified(e.ID)
				return true, nil
			}); err != nil {
				return out, err
			}
			if got, err = client.WaitForSignal[Decision](ctx, "director-decision",
				[]string{"director-approve", "director-reject"}, 0); err != nil {
				return out, err
			}
		}
		out.DecidedBy = got.Input.By
		out.Approved = got.Name == "approve" || got.Name == "director-approve"
		if !out.Approved {
			return out, nil
		}
		paid, err := client.ExecuteChild[Payment](ctx, "pay", "payment", e, client.ChildOptions{})
		if err != nil {
			return out, err
		}
		out.PaymentID = paid.PaymentID
		return out, nil
	}
}

// Pay is the payment workflow, run as the approval's child.
func Pay(ctx *client.WorkflowContext, e Expense) (Payment, error) {
	return client.Step(ctx, "transfer", func(context.Context) (Payment, error) {
		return Payment{PaymentID: "pay-" + e.ID}, nil
	})
}

// config is what run needs.
type config struct {
	URL     string
	APIKey  string // empty with authentication off
	Timeout time.Duration
	Out     io.Writer
}

// run starts a worker for both workflows, submits three expenses, sends
// the decisions, waits for the three runs and prints how they went.
func run(ctx context.Context, cfg config) ([]*client.Run, error) {
	c := client.New(cfg.URL, client.WithAPIKey(cfg.APIKey))
	w := client.NewWorker(c, taskQueue,
		client.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	var mu sync.Mutex
	var escalated []string
	client.Register(w, "expense", Approve(cfg.Timeout, func(id string) {
		mu.Lock()
		defer mu.Unlock()
		escalated = append(escalated, id)
	}))
	client.Register(w, "payment", Pay)
	stopWorker := runWorker(ctx, w)
	defer stopWorker()

	expenses := []Expense{
		{ID: "e-1", Employee: "ada", AmountCents: 12000},
		{ID: "e-2", Employee: "bob", AmountCents: 990000},
		{ID: "e-3", Employee: "cy", AmountCents: 4500},
	}
	decisions := []struct{ name, by string }{
		{"approve", "manager"},
		{"reject", "manager"},
		{"director-approve", "director"}, // the manager never answers: it escalates
	}
	var ids []string
	for i, e := range expenses {
		started, err := c.Start(ctx, client.StartRequest{WorkflowType: "expense", TaskQueue: taskQueue, Input: e,
			ExternalID: "expense-" + e.ID})
		if err != nil {
			return nil, err
		}
		id := started.Run.RunID
		ids = append(ids, id)
		// Sent at once, maybe before the workflow waits: the inbox keeps it.
		// The key makes the send safe to retry.
		d := decisions[i]
		if _, err := c.Signal(ctx, id, d.name, Decision{By: d.by},
			client.WithIdempotencyKey(d.name+"-"+e.ID)); err != nil {
			return nil, err
		}
	}
	var runs []*client.Run
	for i, id := range ids {
		done, err := c.Wait(ctx, id)
		if err != nil {
			return nil, err
		}
		runs = append(runs, done)
		var o Outcome
		if err := done.Result(&o); err != nil {
			return nil, fmt.Errorf("expense %s: %w", expenses[i].ID, err)
		}
		verdict := "rejected"
		if o.Approved {
			verdict = "approved, paid " + o.PaymentID
		}
		how := ""
		if o.Escalated {
			how = " after escalation"
		}
		fmt.Fprintf(cfg.Out, "expense %s (%s, %d cents): %s by the %s%s\n",
			o.ExpenseID, expenses[i].Employee, expenses[i].AmountCents, verdict, o.DecidedBy, how)
	}
	if err := stopWorker(); err != nil && !errors.Is(err, context.Canceled) {
		return runs, err
	}
	return runs, nil
}

// runWorker runs w until the returned function is called, which stops
// it, waits for it to drain and returns Run's error (again on later
// calls).
func runWorker(ctx context.Context, w *client.Worker) func() error {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
}
