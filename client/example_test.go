package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kagzi/kagzi/client"
)

// This example needs a Kagzi server (go run ./cmd/kagzi), so it is
// compiled but not run by go test; examples/hello runs the same end to
// end in its test.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c := client.New("http://localhost:8080")

	// A worker runs the "greet" workflow until ctx ends (SIGTERM), then
	// drains.
	w := client.NewWorker(c, "default")
	client.Register(w, "greet", func(ctx *client.WorkflowContext, name string) (string, error) {
		// Work with effects happens in steps: their results are recorded,
		// and a replay of the run returns them without running them again.
		greeting, err := client.Step(ctx, "compose", func(context.Context) (string, error) {
			return "Hello, " + name + "!", nil
		})
		if err != nil {
			return "", err
		}
		// A durable sleep: the run is handed out again in a second, to
		// any worker. It returns client.ErrSuspended meanwhile.
		if err := client.Sleep(ctx, time.Second); err != nil {
			return "", err
		}
		return greeting, nil
	})
	go func() {
		if err := w.Run(ctx); err != nil {
			log.Print(err)
		}
	}()

	// A client starts a run and waits for its result.
	started, err := c.Start(ctx, client.StartRequest{WorkflowType: "greet", Input: "Ada"})
	if err != nil {
		log.Fatal(err)
	}
	run, err := c.Wait(ctx, started.Run.RunID)
	if err != nil {
		log.Fatal(err)
	}
	var greeting string
	if err := run.Result(&greeting); err != nil {
		log.Fatal(err)
	}
	fmt.Println(greeting)
}

// Errors answered by the server carry the problem's code.
func ExampleError() {
	c := client.New("http://localhost:8080", client.WithNamespace("shop"))
	_, err := c.Get(context.Background(), "01a21503-615a-791c-98e6-24be6726866d")
	var apiErr *client.Error
	switch {
	case errors.Is(err, client.ErrNotFound):
		fmt.Println("no such run")
	case errors.As(err, &apiErr):
		fmt.Println(apiErr.Status, apiErr.Code, apiErr.Field, apiErr.Detail)
	case err != nil:
		fmt.Println("the server could not be reached:", err)
	}
}

// Outside steps a workflow must be deterministic: read the clock (and
// anything else that changes) in a step, so that every replay sees the
// same value, and branch only on the input and on step results.
func ExampleStep_determinism() {
	type Invoice struct {
		ID  string
		Due time.Time
	}
	remind := func(ctx *client.WorkflowContext, inv Invoice) (string, error) {
		// Not time.Now() here: a replay would see another time.
		now, err := client.Step(ctx, "now", func(context.Context) (time.Time, error) {
			return time.Now(), nil
		})
		if err != nil {
			return "", err
		}
		if now.Before(inv.Due) {
			// SleepUntil a time computed from the input is deterministic.
			if err := client.SleepUntil(ctx, inv.Due, client.WithSleepName("until-due")); err != nil {
				return "", err
			}
		}
		return client.Step(ctx, "send-reminder", func(ctx context.Context) (string, error) {
			return "reminded about " + inv.ID, nil // call the mail service here
		})
	}
	_ = remind
}

// Errors that retrying cannot fix are marked, so that neither the step
// nor the run is retried; a type lets a retry policy name them too.
func ExampleNonRetryable() {
	charge := func(ctx context.Context) (string, error) {
		if declined := true; declined {
			return "", client.NonRetryable(client.ErrorType(errors.New("card declined"), "card_declined"))
		}
		return "pay-1", nil
	}
	_ = charge
}
