// Command order runs an order workflow: reserve the items, charge the
// card, wait out a durable cooling-off period, ship. The payment gateway
// times out twice before it accepts a charge, and the step is retried
// until it does; a declined card is not retried, and the workflow
// compensates by releasing the reservation.
//
//	go run ./examples/order
//
// It talks to the server at KAGZI_URL (default http://localhost:8080),
// with the API key KAGZI_API_KEY when the server has authentication on (a
// key that may start runs and work them: admin on the namespace default),
// runs the worker and starts two orders, one with a good card and one
// with a declined card, and prints how each went, step by step.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/kagzi/kagzi/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := config{URL: serverURL(), APIKey: os.Getenv("KAGZI_API_KEY"), CoolOff: 2 * time.Second, Out: os.Stdout}
	if _, err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "order:", err)
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
const taskQueue = "orders"

// Order is the workflow's input.
type Order struct {
	ID          string   `json:"id"`
	Items       []string `json:"items"`
	AmountCents int      `json:"amount_cents"`
	Card        string   `json:"card"`
}

// Receipt is the workflow's output.
type Receipt struct {
	OrderID     string `json:"order_id"`
	Reservation string `json:"reservation"`
	PaymentID   string `json:"payment_id"`
	Tracking    string `json:"tracking"`
}

// Shop stands for the services the workflow calls: inventory, payments
// and shipping. Its methods are the side effects, so the workflow calls
// them in steps only.
type Shop struct {
	mu       sync.Mutex
	reserved map[string][]string // reservation → items
}

func (s *Shop) reserve(o Order) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := "res-" + o.ID
	s.reserved[id] = o.Items
	return id
}

func (s *Shop) release(reservation string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.reserved, reservation)
}

// ErrGatewayTimeout is the payment gateway's transient failure.
var ErrGatewayTimeout = errors.New("payment gateway timeout")

// charge charges the card. The gateway times out on the first two
// attempts of every charge (it keys on the attempt, so that the example
// runs the same way every time); a card named "declined" is declined, for
// good.
func (s *Shop) charge(o Order, attempt int) (string, error) {
	if o.Card == "declined" {
		return "", client.NonRetryable(client.ErrorType(errors.New("card declined"), "card_declined"))
	}
	if attempt <= 2 {
		return "", fmt.Errorf("%w (attempt %d)", ErrGatewayTimeout, attempt)
	}
	return "pay-" + o.ID, nil
}

func (s *Shop) ship(o Order) string { return "trk-" + o.ID }

// ProcessOrder is the workflow. Everything with an effect is a step;
// between steps it only branches on its input and on step results, so
// that it takes the same path each time it is replayed (after the
// payment's retries and after the cooling-off sleep).
func (s *Shop) ProcessOrder(coolOff time.Duration) func(*client.WorkflowContext, Order) (Receipt, error) {
	return func(ctx *client.WorkflowContext, o Order) (Receipt, error) {
		r := Receipt{OrderID: o.ID}
		var err error
		r.Reservation, err = client.Step(ctx, "reserve-inventory", func(context.Context) (string, error) {
			return s.reserve(o), nil
		})
		if err != nil {
			return r, err
		}

		r.PaymentID, err = client.Step(ctx, "charge-payment", func(sctx context.Context) (string, error) {
			info, _ := client.StepInfoFrom(sctx)
			return s.charge(o, info.Attempt)
		}, client.WithStepRetry(client.RetryPolicy{MaxAttempts: 5, InitialInterval: 200 * time.Millisecond}))
		switch {
		case errors.Is(err, client.ErrSuspended):
			return r, err // a retry is scheduled: the run resumes here later
		case err != nil:
			// The payment failed for good: undo the reservation, then fail
			// the order without retrying it.
			if _, cerr := client.Step(ctx, "release-inventory", func(context.Context) (bool, error) {
				s.release(r.Reservation)
				return true, nil
			}); cerr != nil {
				return r, cerr
			}
			return r, client.NonRetryable(fmt.Errorf("order %s not paid, reservation released: %w", o.ID, err))
		}

		// A durable cooling-off period: the worker lets go of the run, and
		// any worker picks it up again when it is over.
		if err := client.Sleep(ctx, coolOff, client.WithSleepName("cool-off")); err != nil {
			return r, err
		}

		r.Tracking, err = client.Step(ctx, "ship", func(context.Context) (string, error) {
			return s.ship(o), nil
		})
		return r, err
	}
}

// config is what run needs.
type config struct {
	URL     string
	APIKey  string // empty with authentication off
	CoolOff time.Duration
	Out     io.Writer
}

// run starts a worker for the order workflow, starts two orders, waits
// for both, prints how they went, and stops the worker. It returns the
// finished runs.
func run(ctx context.Context, cfg config) ([]*client.Run, error) {
	c := client.New(cfg.URL, client.WithAPIKey(cfg.APIKey))
	shop := &Shop{reserved: map[string][]string{}}
	w := client.NewWorker(c, taskQueue,
		client.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	client.Register(w, "order", shop.ProcessOrder(cfg.CoolOff))
	stopWorker := runWorker(ctx, w)
	defer stopWorker()

	orders := []Order{
		{ID: "o-1", Items: []string{"teapot", "cups"}, AmountCents: 4599, Card: "visa-4242"},
		{ID: "o-2", Items: []string{"kettle"}, AmountCents: 2999, Card: "declined"},
	}
	var ids []string
	for _, o := range orders {
		started, err := c.Start(ctx, client.StartRequest{
			WorkflowType: "order",
			TaskQueue:    taskQueue,
			Input:        o,
			ExternalID:   "order-" + o.ID, // starting the same order twice starts one run
		})
		if err != nil {
			return nil, err
		}
		ids = append(ids, started.Run.RunID)
	}
	var runs []*client.Run
	for i, id := range ids {
		done, err := c.Wait(ctx, id)
		if err != nil {
			return nil, err
		}
		runs = append(runs, done)
		if err := report(ctx, c, cfg.Out, orders[i], done); err != nil {
			return nil, err
		}
	}
	return runs, stopWorker()
}

// report prints a finished order and its steps.
func report(ctx context.Context, c *client.Client, out io.Writer, o Order, run *client.Run) error {
	var receipt Receipt
	if err := run.Result(&receipt); err != nil {
		why := "no error recorded"
		if run.Error != nil {
			why = run.Error.Message
		}
		fmt.Fprintf(out, "order %s %s: %s\n", o.ID, run.Status, why)
	} else {
		fmt.Fprintf(out, "order %s %s: reservation %s, payment %s, tracking %s\n",
			o.ID, run.Status, receipt.Reservation, receipt.PaymentID, receipt.Tracking)
	}
	steps, err := c.Steps(ctx, run.RunID)
	if err != nil {
		return err
	}
	var table strings.Builder
	tw := tabwriter.NewWriter(&table, 0, 4, 2, ' ', 0)
	for _, s := range steps {
		note := ""
		switch {
		case s.Error != nil:
			note = s.Error.Message
		case s.Kind == client.StepSleep:
			note = "slept until " + s.WakeUpAt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "  %s\tattempt %d\t%s\t%s\n", s.Name, s.Attempt, s.Status, note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for line := range strings.Lines(table.String()) {
		if _, err := fmt.Fprintln(out, strings.TrimRight(line, " \n")); err != nil {
			return err
		}
	}
	_, err = fmt.Fprintln(out)
	return err
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
