package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kagzi/kagzi/domain"
)

// A run's inbox is the signals table. Sending and waiting both lock the
// run's row first, so that a signal is either seen by the wait that parks
// the run, or delivered by its send to the parked wait step: never missed.

const signalColumns = `signal_id, run_id, name, seq, status, step, created_at`

func scanSignal(row pgx.Row, sg *domain.Signal, extra ...any) error {
	err := row.Scan(append([]any{&sg.SignalID, &sg.RunID, &sg.Name, &sg.Seq, &sg.Status, &sg.Step, &sg.CreatedAt}, extra...)...)
	utc(&sg.CreatedAt)
	return err
}

const signalByKeySQL = `SELECT ` + signalColumns + `, target, input FROM signals WHERE namespace = $1 AND idempotency_key = $2`

const lockRunByIDSQL = `
SELECT run_id, status, attempt, task_queue, workflow_type FROM workflow_runs
WHERE namespace = $1 AND run_id = $2 FOR UPDATE`

const lockRunByExternalIDSQL = `
SELECT run_id, status, attempt, task_queue, workflow_type FROM workflow_runs
WHERE namespace = $1 AND external_id = $2 AND status IN ('pending', 'sleeping', 'running') FOR UPDATE`

// The inbox statements read, in the statement after the one that locked
// the run (so that they see it as locked), its buffered signals, its last
// seq, and the wait step of its current attempt that waits for signal $3
// and has not resolved yet (NULL when none does). The run is named as the
// lock named it: by ID ($2), or as the live run holding an external ID.
const (
	inboxTailSQL = `
SELECT count(*) FILTER (WHERE s.status = 'buffered'), COALESCE(max(s.seq), 0),
	(SELECT st.name FROM workflow_steps st, r
	WHERE st.run_id = r.run_id AND st.kind = 'wait' AND st.status = 'running' AND st.run_attempt = r.attempt
		AND (st.input->'signals')::jsonb ? $3
	ORDER BY st.seq LIMIT 1)
FROM signals s WHERE s.run_id = (SELECT run_id FROM r)`
	inboxByIDSQL = `
WITH r AS (SELECT run_id, attempt FROM workflow_runs WHERE namespace = $1 AND run_id = $2)` + inboxTailSQL
	inboxByExternalIDSQL = `
WITH r AS (
	SELECT run_id, attempt FROM workflow_runs
	WHERE namespace = $1 AND external_id = $2 AND status IN ('pending', 'sleeping', 'running')
)` + inboxTailSQL
)

const insertSignalSQL = `
INSERT INTO signals (signal_id, namespace, run_id, seq, name, input, status, step, idempotency_key, target)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULLIF($9, ''), $10)
ON CONFLICT (namespace, idempotency_key) DO NOTHING
RETURNING ` + signalColumns

// resolveWaitStepSQL records a wait step's outcome.
const resolveWaitStepSQL = `
UPDATE workflow_steps SET status = 'completed', output = $3, finished_at = now()
WHERE run_id = $1 AND name = $2 AND kind = 'wait' AND status = 'running'
RETURNING ` + stepColumns

// deliverSQL records the wait step $2 of run $1 resolved with output $3,
// and makes the run, parked in that wait, claimable now, notifying its
// queue in the same transaction. A run whose deadline came first (pending
// or running again) only forgets what it waited for.
const deliverSQL = `
WITH st AS (
	UPDATE workflow_steps SET status = 'completed', output = $3, finished_at = now()
	WHERE run_id = $1 AND name = $2 AND kind = 'wait' AND status = 'running'
), r AS (
	UPDATE workflow_runs SET waiting_for = NULL,
		status = CASE WHEN status = 'sleeping' THEN 'pending' ELSE status END,
		available_at = CASE WHEN status = 'sleeping' THEN now() ELSE available_at END
	WHERE run_id = $1 AND waiting_for IS NOT NULL
	RETURNING namespace, task_queue, status
)
SELECT pg_notify('` + Channel + `', 'q:' || namespace || '/' || task_queue) FROM r WHERE status = 'pending'`

// deliverHandedOffSQL is deliverSQL ($1 the run, $6 the step, $7 its
// output) for a run parked in that wait while a claim is parked for it on
// this replica: the run is claimed for that claim, under the lease $8,
// when handoffClaimSQL's conditions hold ($2 and $3 its namespace and
// queue, $4 the claim's worker, $5 the lease in ms), and made pending, its
// queue notified, otherwise.
const deliverHandedOffSQL = `
WITH ` + handoffClaimSQL + `, st AS (
	UPDATE workflow_steps SET status = 'completed', output = $7, finished_at = now()
	WHERE run_id = $1 AND name = $6 AND kind = 'wait' AND status = 'running'
), r AS (
	UPDATE workflow_runs r SET waiting_for = NULL,
		status = CASE WHEN r.status <> 'sleeping' THEN r.status WHEN h.ok THEN 'running' ELSE 'pending' END,
		available_at = CASE WHEN r.status = 'sleeping' THEN now() ELSE r.available_at END,
		attempt = CASE WHEN r.status = 'sleeping' AND h.ok THEN r.attempt + r.new_attempt::int ELSE r.attempt END,
		new_attempt = r.new_attempt AND NOT (r.status = 'sleeping' AND h.ok),
		lease_id = CASE WHEN r.status = 'sleeping' AND h.ok THEN $8::uuid ELSE r.lease_id END,
		lease_expires_at = CASE WHEN r.status = 'sleeping' AND h.ok THEN now() + $5 * interval '1 millisecond'
			ELSE r.lease_expires_at END,
		worker_id = CASE WHEN r.status = 'sleeping' AND h.ok THEN $4::uuid ELSE r.worker_id END,
		started_at = CASE WHEN r.status = 'sleeping' AND h.ok THEN COALESCE(r.started_at, now()) ELSE r.started_at END
	FROM handoff h
	WHERE r.run_id = $1 AND r.waiting_for IS NOT NULL
	RETURNING r.namespace, r.task_queue, r.status, r.workflow_type, r.version, r.input, r.attempt, r.lease_id,
		r.lease_expires_at
)
SELECT status, workflow_type, version, input, attempt, lease_id, lease_expires_at,
	CASE WHEN status = 'pending' THEN pg_notify('` + Channel + `', 'q:' || namespace || '/' || task_queue) END
FROM r`

// handedOff is a claim parked on this replica that a transaction claimed
// (or tried to claim) a run for: it is answered once the transaction ends.
type handedOff struct {
	slot  domain.HandoffSlot
	lease domain.Lease // the lease the run is claimed under, if it is
	task  *domain.Task // the run claimed for slot, if the transaction commits
}

// finish answers the parked claim with its task when the transaction
// committed one, and gives it back otherwise; when the transaction's
// outcome is unknown (err), a run it may have claimed is released.
func (s *Store) finishHandOff(h *handedOff, err error) {
	switch {
	case h.slot == nil:
	case err == nil && h.task != nil:
		h.slot.Deliver(*h.task)
	default:
		h.slot.Cancel()
		if err != nil && h.lease.LeaseID != "" && !errors.Is(err, errKeyRaced) {
			s.releaseUncertain(h.lease)
		}
	}
	*h = handedOff{}
}

// errKeyRaced says a concurrent send committed the same idempotency key
// first: the send is looked up again.
var errKeyRaced = errors.New("idempotency key raced")

// SendSignal puts a signal in its run's inbox, or hands it straight to the
// wait step that waits for it, waking the run. A send with an idempotency
// key seen before answers the signal as it is now, with duplicate true,
// when it is the same request (target, name and input as a JSON value);
// otherwise it is refused. A refused send writes nothing. A run it wakes
// goes straight to a claim parked for it on this replica, if any
// (HandOffTo).
func (s *Store) SendSignal(ctx context.Context, namespace string, req domain.SendSignal, limits domain.SignalLimits) (sg domain.Signal, duplicate bool, err error) {
	for try := 0; ; try++ {
		var h handedOff
		err = s.inTx(ctx, "send signal "+req.Name, func(tx pgx.Tx) error {
			var e error
			sg, duplicate, e = s.sendSignal(ctx, tx, namespace, req, limits, &h)
			return e
		})
		s.finishHandOff(&h, err)
		if !errors.Is(err, errKeyRaced) || try > 2 {
			return sg, duplicate, err
		}
	}
}

// inbox is what a send reads of its run, once locked: the run, its
// inbox's counts, and the wait step the signal goes to (nil: none waits).
type inbox struct {
	runID, queue, workflowType string
	status                     domain.RunStatus
	buffered, last             int64
	step                       *string
}

// sendSignal sends within tx, in two round trips: one reads (the key's
// earlier send, the run, locked, and its inbox), the other writes (the
// signal, and its delivery to the wait step waiting for it). A run it
// wakes is claimed for a claim parked on this replica when h is not nil
// and there is one; h says which.
func (s *Store) sendSignal(ctx context.Context, tx pgx.Tx, namespace string, req domain.SendSignal, limits domain.SignalLimits, h *handedOff) (domain.Signal, bool, error) {
	var sg domain.Signal
	in, found, err := readInbox(ctx, tx, namespace, req, &sg)
	if found || err != nil {
		return sg, found, err
	}
	if in.last >= int64(limits.MaxPerRun) {
		return sg, false, domain.Errorf(domain.CodeResourceExhausted,
			"run %s has received %d signals, its most", in.runID, limits.MaxPerRun)
	}
	if in.buffered >= int64(limits.MaxBuffered) {
		return sg, false, &domain.Error{Code: domain.CodeResourceExhausted, RetryAfter: time.Second,
			Message: fmt.Sprintf("run %s has %d signals waiting in its inbox, its most", in.runID, in.buffered)}
	}

	signalID, seq := newID(), in.last+1
	insertArgs := func(st domain.SignalStatus) []any {
		return []any{signalID, namespace, in.runID, seq, req.Name, req.Input, st, in.step, req.IdempotencyKey, req.Target.Key()}
	}
	if in.step == nil {
		err = scanSignal(tx.QueryRow(ctx, insertSignalSQL, insertArgs(domain.SignalBuffered)...), &sg)
		if errors.Is(err, pgx.ErrNoRows) {
			return sg, false, errKeyRaced // rolled back; the key's first send is replayed
		}
		return sg, false, err
	}
	// The signal goes to the wait step: it is stored and delivered in one
	// round trip. Should the insert find the key taken meanwhile, the
	// delivery is rolled back with it.
	out, err := json.Marshal(domain.WaitOutput{Signal: &domain.WaitSignal{
		Name: req.Name, Input: req.Input, Seq: seq, SignalID: signalID}})
	if err != nil {
		return sg, false, err
	}
	if h != nil && s.handoff != nil && in.status == domain.RunSleeping {
		h.slot, _ = s.handoff.Offer(namespace, in.queue, in.workflowType)
	}
	writes := &pgx.Batch{}
	writes.Queue(insertSignalSQL, insertArgs(domain.SignalDelivered)...)
	handOff := h != nil && h.slot != nil
	if handOff {
		var workerID *string
		if id := h.slot.WorkerID(); id != "" {
			workerID = &id
		}
		h.lease = domain.Lease{RunID: in.runID, LeaseID: newLeaseID()}
		writes.Queue(deliverHandedOffSQL, in.runID, namespace, in.queue, workerID, s.leaseDuration.Milliseconds(),
			*in.step, out, h.lease.LeaseID)
	} else {
		writes.Queue(deliverSQL, in.runID, *in.step, out)
	}
	bw := tx.SendBatch(ctx, writes)
	defer bw.Close()
	err = scanSignal(bw.QueryRow(), &sg)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return sg, false, errKeyRaced
	case err != nil:
		return sg, false, err
	case handOff:
		err = readHandedOff(bw.QueryRow(), namespace, in, h)
	default:
		_, err = bw.Exec()
	}
	if err != nil {
		return sg, false, err
	}
	return sg, false, bw.Close()
}

// readInbox reads, in one round trip, the earlier send of the request's
// idempotency key (found: sg is its signal, or the request is refused),
// then the run, locked, and its inbox. Statements of a batch run one after
// the other, each with its own snapshot: the inbox is read once the run is
// locked.
func readInbox(ctx context.Context, tx pgx.Tx, namespace string, req domain.SendSignal, sg *domain.Signal) (in inbox, found bool, err error) {
	lockSQL, inboxSQL, target := lockRunByIDSQL, inboxByIDSQL, req.Target.RunID
	if target == "" {
		lockSQL, inboxSQL, target = lockRunByExternalIDSQL, inboxByExternalIDSQL, req.Target.ExternalID
	}
	reads := &pgx.Batch{}
	if req.IdempotencyKey != "" {
		reads.Queue(signalByKeySQL, namespace, req.IdempotencyKey)
	}
	reads.Queue(lockSQL, namespace, target)
	reads.Queue(inboxSQL, namespace, target, req.Name)
	br := tx.SendBatch(ctx, reads)
	defer br.Close()
	if req.IdempotencyKey != "" {
		if found, err = replaySignal(br.QueryRow(), req, sg); found || err != nil {
			return in, found, err
		}
	}
	var attempt int
	err = br.QueryRow().Scan(&in.runID, &in.status, &attempt, &in.queue, &in.workflowType)
	switch {
	case errors.Is(err, pgx.ErrNoRows) && req.Target.RunID != "":
		return in, false, domain.Errorf(domain.CodeNotFound, "run %s not found", req.Target.RunID)
	case errors.Is(err, pgx.ErrNoRows):
		return in, false, domain.Errorf(domain.CodeNotFound, "no live run holds external_id %q", req.Target.ExternalID)
	case err != nil:
		return in, false, err
	}
	switch in.status {
	case domain.RunCompleted, domain.RunFailed, domain.RunCancelled:
		return in, false, domain.Errorf(domain.CodeRunFinished, "run %s has finished (%s)", in.runID, in.status)
	}
	if err := br.QueryRow().Scan(&in.buffered, &in.last, &in.step); err != nil {
		return in, false, err
	}
	return in, false, br.Close()
}

// readHandedOff reads deliverHandedOffSQL's answer: when it claimed the
// run for h's parked claim, h gets the task to hand over at commit. No row:
// the run waits no more (its deadline came first).
func readHandedOff(row pgx.Row, namespace string, in inbox, h *handedOff) error {
	t := domain.Task{RunID: in.runID, Namespace: namespace, TaskQueue: in.queue}
	var status domain.RunStatus
	var leaseID *string
	var expires *time.Time
	err := row.Scan(&status, &t.WorkflowType, &t.Version, &t.Input, &t.Attempt, &leaseID, &expires, nil)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err == nil && status == domain.RunRunning && leaseID != nil {
		t.LeaseID, t.LeaseExpiresAt = *leaseID, expires.UTC()
		h.task = &t
	}
	return err
}

// replaySignal reads the lookup of the send's idempotency key (row):
// found, it fills sg when the request is the same, and refuses it
// otherwise.
func replaySignal(row pgx.Row, req domain.SendSignal, sg *domain.Signal) (bool, error) {
	var target string
	var input json.RawMessage
	err := scanSignal(row, sg, &target, &input)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if target != req.Target.Key() || sg.Name != req.Name || !sameJSON(input, req.Input) {
		return false, domain.Errorf(domain.CodeIdempotencyReused,
			"Idempotency-Key %q was used for another request", req.IdempotencyKey)
	}
	return true, nil
}

// sameJSON reports whether a and b are the same JSON value.
func sameJSON(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// resolveWait records a wait step's outcome into st.
func resolveWait(ctx context.Context, tx pgx.Tx, runID, step string, out domain.WaitOutput, st *domain.Step) error {
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	return scanStep(tx.QueryRow(ctx, resolveWaitStepSQL, runID, step, b), st)
}

const oldestBufferedSQL = `
SELECT signal_id, name, seq, input FROM signals
WHERE run_id = $1 AND status = 'buffered' AND name = ANY($2)
ORDER BY seq LIMIT 1`

const deliverSignalSQL = `UPDATE signals SET status = 'delivered', step = $2 WHERE signal_id = $1`

const deadlineSQL = `
SELECT CASE WHEN $1::timestamptz IS NOT NULL THEN $1::timestamptz
	WHEN $2::bigint IS NOT NULL THEN now() + $2 * interval '1 millisecond' END, now()`

// parkWaitSQL ends the lease and parks the run until a signal it waits
// for arrives or its deadline ($2, NULL for none) passes. The queue is
// notified when there is a deadline, so that its claims' timers learn it,
// and when the queue has concurrency limits, since a running run fewer may
// let a held-back claim take another. Otherwise the park makes nothing
// claimable: a notification would only send the queue's parked claims to
// look for nothing, and keep them from taking a hand-off meanwhile.
const parkWaitSQL = `
WITH r AS (
	UPDATE workflow_runs SET status = 'sleeping', available_at = $2, waiting_for = $3,
		lease_id = NULL, lease_expires_at = NULL, new_attempt = false
	WHERE run_id = $1 RETURNING namespace, task_queue
)
SELECT pg_notify('` + Channel + `', 'q:' || namespace || '/' || task_queue) FROM r
WHERE $2::timestamptz IS NOT NULL
	OR EXISTS (SELECT FROM task_queues tq WHERE tq.namespace = r.namespace AND tq.name = r.task_queue
		AND (tq.max_concurrent IS NOT NULL OR tq.workflow_type_limits <> '{}'))`

// Wait is a worker's wait step: it resolves with the oldest buffered
// signal it waits for, or with a timeout once its deadline has passed, or
// parks the run (the lease ends) until one of those. The first call for a
// step fixes its deadline; a resolved step answers its recorded outcome.
// A timed-out wait resolves at the replayed wait call after the deadline,
// so a signal that arrives first still wins.
func (s *Store) Wait(ctx context.Context, namespace, runID, leaseID string, req domain.WaitRequest) (res domain.WaitResult, err error) {
	err = s.inTx(ctx, "wait "+req.Step, func(tx pgx.Tx) error {
		runAttempt, _, err := fence(ctx, tx, namespace, runID, leaseID)
		if err != nil {
			return err
		}
		latest, err := currentStep(ctx, tx, runID, req.Step, domain.StepWait, runAttempt)
		switch {
		case err != nil:
			return err
		case latest.found && latest.Status == domain.StepCompleted:
			res.Resolved, res.Step = true, latest.Step
			return nil
		}
		var deadline *time.Time
		var now time.Time
		var ms *int64
		if req.Timeout != nil {
			v := req.Timeout.Milliseconds()
			ms = &v
		}
		if err := tx.QueryRow(ctx, deadlineSQL, req.Until, ms).Scan(&deadline, &now); err != nil {
			return err
		}
		if latest.found && latest.Status == domain.StepRunning {
			deadline = latest.WakeUpAt // fixed by the first call
		} else {
			input, err := json.Marshal(map[string][]string{"signals": req.Signals})
			if err != nil {
				return err
			}
			var st domain.Step
			if err := scanStep(tx.QueryRow(ctx, insertStepSQL, runID, req.Step, latest.Attempt+1,
				domain.StepWait, domain.StepRunning, input, nil, deadline, runAttempt), &st); err != nil {
				return err
			}
		}
		var sig domain.WaitSignal
		err = tx.QueryRow(ctx, oldestBufferedSQL, runID, req.Signals).Scan(&sig.SignalID, &sig.Name, &sig.Seq, &sig.Input)
		switch {
		case err == nil:
			if _, err := tx.Exec(ctx, deliverSignalSQL, sig.SignalID, req.Step); err != nil {
				return err
			}
			res.Resolved = true
			return resolveWait(ctx, tx, runID, req.Step, domain.WaitOutput{Signal: &sig}, &res.Step)
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		if deadline != nil && !deadline.After(now) {
			res.Resolved = true
			return resolveWait(ctx, tx, runID, req.Step, domain.WaitOutput{TimedOut: true}, &res.Step)
		}
		res.WakeAt = utcp(deadline)
		_, err = tx.Exec(ctx, parkWaitSQL, runID, deadline, req.Signals)
		return err
	})
	return res, err
}

const listSignalsSQL = `
SELECT ` + signalColumns + `, input FROM signals
WHERE run_id = $1 AND seq > $2 AND ($3 = '' OR status = $3) AND ($4 = '' OR name = $4)
ORDER BY seq LIMIT $5`

// ListSignals reads a page of a run's inbox, oldest first.
func (s *Store) ListSignals(ctx context.Context, namespace, runID string, f domain.SignalFilter) ([]domain.Signal, string, error) {
	var after int64
	if f.Page.After != "" {
		var err error
		if after, err = strconv.ParseInt(f.Page.After, 10, 64); err != nil {
			return nil, "", fmt.Errorf("list signals of %s: bad key %q: %w", runID, f.Page.After, err)
		}
	}
	var exists bool
	if err := s.pool.QueryRow(ctx, runExistsSQL, namespace, runID).Scan(&exists); err != nil {
		return nil, "", fmt.Errorf("list signals of %s: %w", runID, translate(err))
	}
	if !exists {
		return nil, "", fmt.Errorf("list signals of %s: %w", runID, domain.Errorf(domain.CodeNotFound, "run %s not found", runID))
	}
	rows, err := s.pool.Query(ctx, listSignalsSQL, runID, after, string(f.Status), f.Name, f.Page.Limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("list signals of %s: %w", runID, translate(err))
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.Signal, error) {
		var sg domain.Signal
		return sg, scanSignal(row, &sg, &sg.Input)
	})
	if err != nil {
		return nil, "", fmt.Errorf("list signals of %s: %w", runID, translate(err))
	}
	list, next, _ := nextPage(list, f.Page.Limit, func(sg domain.Signal) string { return strconv.FormatInt(sg.Seq, 10) })
	return slices.Clip(list), next, nil
}

const runByIDSQL = `SELECT ` + runColumns + ` FROM workflow_runs WHERE run_id = $1`

// SignalWithStart starts the run n (its external ID set) and signals it,
// or signals the live run holding the external ID, in one transaction: of
// concurrent calls, one starts the run and the others signal it. A retry
// with the same idempotency key answers the first call's run and signal
// as they are now, duplicate, and starts nothing, even after the run
// ended.
func (s *Store) SignalWithStart(ctx context.Context, namespace string, n domain.NewRun, req domain.SendSignal, limits domain.SignalLimits) (res domain.SignalWithStartResult, err error) {
	req.Target = domain.SignalTarget{ExternalID: *n.ExternalID, WithStart: true}
	for try := 0; ; try++ {
		res = domain.SignalWithStartResult{}
		err = s.inTx(ctx, "signal with start "+req.Name, func(tx pgx.Tx) error {
			if req.IdempotencyKey != "" {
				found, err := replaySignal(tx.QueryRow(ctx, signalByKeySQL, namespace, req.IdempotencyKey), req, &res.Signal)
				if err != nil {
					return err
				}
				if found {
					res.Duplicate = true
					return scanRun(tx.QueryRow(ctx, runByIDSQL, res.Signal.RunID), &res.Run)
				}
			}
			err := scanRun(tx.QueryRow(ctx, startRunSQL, newID(), namespace, n.TaskQueue, n.WorkflowType,
				n.ExternalID, n.Version, n.Input, n.RetryPolicy, n.StartAt, n.StartDelay.Milliseconds()), &res.Run, nil)
			switch {
			case err == nil:
				res.Started = true
			case errors.Is(err, pgx.ErrNoRows):
				// A live run holds the external ID: lock it. When it ended
				// meanwhile, start again.
				var status domain.RunStatus
				var attempt int
				err = tx.QueryRow(ctx, lockRunByExternalIDSQL, namespace, *n.ExternalID).Scan(&res.Run.RunID, &status, &attempt, nil, nil)
				if errors.Is(err, pgx.ErrNoRows) {
					return errKeyRaced
				}
			}
			if err != nil {
				return err
			}
			sendReq := req
			sendReq.Target.RunID = res.Run.RunID
			res.Signal, res.Duplicate, err = s.sendSignal(ctx, tx, namespace, sendReq, limits, nil)
			if err != nil {
				return err
			}
			if res.Duplicate && res.Started {
				return errKeyRaced // the key's first call committed meanwhile: replay it
			}
			return scanRun(tx.QueryRow(ctx, runByIDSQL, res.Signal.RunID), &res.Run)
		})
		if !errors.Is(err, errKeyRaced) || try > 5 {
			return res, err
		}
	}
}
