// Package client is the Go SDK of Kagzi, a durable workflow engine served
// as a REST/JSON API over PostgreSQL. It depends on the standard library
// only, so a program can use it without pulling in the server.
//
// # Clients
//
// A [Client] starts runs, waits for them, lists, cancels and inspects
// them. Create one per process; it is safe for concurrent use and keeps
// its connections alive.
//
//	c := client.New("http://localhost:8080", client.WithNamespace("shop"))
//	started, err := c.Start(ctx, client.StartRequest{
//		WorkflowType: "order",
//		Input:        Order{ID: "o-1", AmountCents: 1999},
//		ExternalID:   "order-o-1", // idempotent: a second start returns the same run
//	})
//	run, err := c.Wait(ctx, started.Run.RunID)
//	var receipt Receipt
//	err = run.Result(&receipt) // a *RunError when the run failed or was cancelled
//
// Errors the server answers are *[Error] values carrying the problem's
// code: test them with errors.Is against the sentinels ([ErrNotFound],
// [ErrConflict], [ErrPayloadTooLarge], …) and read Status, Detail and Field
// through errors.As. Idempotent calls — GETs, Cancel, a Start or
// StartBatch whose runs all have an ExternalID, and the worker's
// lease-fenced calls — are retried with jittered, bounded backoff after a
// 503 or a connection error; other calls are retried only when no
// connection could be made (see [CallRetry]).
//
// # Workers
//
// A [Worker] executes runs of the workflow types registered with it:
//
//	w := client.NewWorker(c, "orders", client.WithMaxConcurrent(50))
//	client.Register(w, "order", ProcessOrder) // func(*client.WorkflowContext, Order) (Receipt, error)
//	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
//	defer stop()
//	err := w.Run(ctx) // drains on SIGTERM, then returns
//
// It registers with the server, long-polls its task queue for as many
// runs as it has free slots, runs each in a goroutine, and heartbeats at
// the interval the server sets, naming the runs it executes: that keeps
// their leases, and only theirs, so a run the worker gave up on is retried
// once its lease expires. Heartbeats keep their cadence however slow other
// calls are, and a step function does not start once the run's lease has
// passed by the worker's clock (a paused worker may have lost the run).
// When Run's context ends, [Worker.Stop] is called or the server asks it
// to drain, it stops claiming, lets running workflows finish for a grace
// period ([WithGracePeriod]), then cancels the rest and gives their runs
// back to the server, which hands them to another worker without counting
// a new attempt.
//
// # Workflows, steps and sleeps
//
// A workflow is a function of a [WorkflowContext] and a JSON-decoded input.
// Its work with side effects happens in steps:
//
//	func ProcessOrder(ctx *client.WorkflowContext, o Order) (Receipt, error) {
//		res, err := client.Step(ctx, "reserve", func(ctx context.Context) (string, error) {
//			return inventory.Reserve(ctx, o.Items)
//		})
//		if err != nil {
//			return Receipt{}, err
//		}
//		if err := client.Sleep(ctx, time.Hour); err != nil {
//			return Receipt{}, err
//		}
//		...
//	}
//
// [Step] runs its function once to completion and records its result.
// When the run is executed again — after a durable [Sleep], after a step
// failed and its retry came due, after a crash of the worker — the
// workflow function starts over from the top, and each step that already
// completed returns its recorded result without running again (replay).
// So the function resumes where it left off.
//
// A sleep, and a failed step whose retry policy allows another attempt,
// end the run's lease: the worker lets go of the run until it is due.
// Step, Sleep and SleepUntil then return [ErrSuspended], and the workflow
// function must return; returning the error as it is, as above, is
// enough. The worker records nothing for that execution.
//
// The workflow's context is cancelled when the run is cancelled, when its
// lease is lost (the worker learns both from any call or from its
// heartbeat), when it is suspended, and when a stopping worker releases
// it; [context.Cause] says which. The worker then moves on without
// reporting anything. A workflow function that returns an error fails
// the attempt (retried by the run's policy unless marked [NonRetryable]
// or of a type the policy lists, see [ErrorType]); one that panics fails
// it with the panic's message, and the worker keeps serving.
//
// # Determinism
//
// Because a run is replayed from the top, the code outside steps must
// take the same path with the same step names every time it runs, given
// the same input and the same step results. Outside steps:
//
//   - do no I/O: no network calls, files, databases or clocks reached
//     other than through a step;
//   - do not read time.Now, random numbers, environment variables,
//     or anything else that may differ between executions — get such
//     values from a step, so that they are recorded once;
//   - do not iterate over a map to decide the order of steps;
//   - branch only on the input and on the results of steps;
//   - give every step a name of its own, the same on every execution.
//
// Goroutines that run steps concurrently are allowed, as long as every
// step keeps its name; name the sleeps they take ([WithSleepName]).
//
// This is wrong: time.Now differs on every execution, so a replay may take
// the other branch than the execution before it, and the ID changes on
// every replay.
//
//	if time.Now().After(o.Deadline) { // non-deterministic
//		return Receipt{}, errors.New("too late")
//	}
//	id := uuid.NewString() // a new ID on every replay
//
// This is right: the clock and the random ID are read inside steps, and
// recorded, so every replay sees the same values.
//
//	now, err := client.Step(ctx, "now", func(context.Context) (time.Time, error) {
//		return time.Now(), nil
//	})
//	if err != nil {
//		return Receipt{}, err
//	}
//	if now.After(o.Deadline) {
//		return Receipt{}, client.NonRetryable(errors.New("too late"))
//	}
//	id, err := client.Step(ctx, "payment-id", func(context.Context) (string, error) {
//		return uuid.NewString(), nil
//	})
//
// Step functions themselves may do anything. They run at least once: a
// worker that crashes after a step's effect but before recording it runs
// the step again, so make steps idempotent where it matters (pass the
// payment ID to the payment service, say). [StepInfoFrom] tells a step
// function which attempt it runs.
package client
