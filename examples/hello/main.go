// Command hello is the smallest Kagzi program: a worker that greets, and a
// client that starts a run and waits for its greeting, in one process.
//
//	go run ./examples/hello [name]
//
// It talks to the server at KAGZI_URL (default http://localhost:8080),
// with the API key KAGZI_API_KEY when the server has authentication on (a
// key that may start runs and work them: admin on the namespace default).
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/kagzi/kagzi/client"
)

func main() {
	name := "world"
	if len(os.Args) > 1 {
		name = os.Args[1]
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, serverURL(), os.Getenv("KAGZI_API_KEY"), name, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		os.Exit(1)
	}
}

func serverURL() string {
	if u := os.Getenv("KAGZI_URL"); u != "" {
		return u
	}
	return "http://localhost:8080"
}

// taskQueue is the queue the example's runs and worker use, so that it
// does not meet other workers.
const taskQueue = "hello"

// Greet is the workflow: one step that composes the greeting.
func Greet(ctx *client.WorkflowContext, name string) (string, error) {
	return client.Step(ctx, "compose", func(context.Context) (string, error) {
		return fmt.Sprintf("Hello, %s!", name), nil
	})
}

// run starts a worker, starts a run of Greet, waits for it, prints the
// greeting and stops the worker. apiKey may be empty (authentication off).
func run(ctx context.Context, baseURL, apiKey, name string, out io.Writer) error {
	c := client.New(baseURL, client.WithAPIKey(apiKey))

	w := client.NewWorker(c, taskQueue,
		client.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	client.Register(w, "greet", Greet)
	stopWorker := runWorker(ctx, w)
	defer stopWorker()

	started, err := c.Start(ctx, client.StartRequest{WorkflowType: "greet", TaskQueue: taskQueue, Input: name})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "started run %s\n", started.Run.RunID)
	done, err := c.Wait(ctx, started.Run.RunID)
	if err != nil {
		return err
	}
	var greeting string
	if err := done.Result(&greeting); err != nil {
		return err
	}
	fmt.Fprintln(out, greeting)
	return stopWorker()
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
