package engine

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/go-cap/cap/internal/telemetry"
	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/storage"
)

type job[TTx any] struct {
	rec *storage.Record
	msg *message.Message
	sub *Subscriber[TTx]
	// direct, when set, is the delivery of a row not written yet: the
	// outcome writes it (see direct.go).
	direct *direct
}

// Executor runs handlers on a bounded pool of workers, retries failures
// immediately while the policy allows, and records outcomes. It also claims
// Received rows that are due again (a retry after backoff, or a row whose
// owner crashed) and keeps the leases of running handlers alive.
type Executor[TTx any] struct {
	cfg    *Config[TTx]
	reg    *Registry[TTx]
	disp   *Dispatcher[TTx]
	jobs   chan job[TTx]
	writer *outcomeWriter[TTx]
	rows   *rowWriter[TTx]
	wake   chan struct{}

	mu       sync.Mutex
	inflight map[int64]struct{}
	// finished holds the rows that left inflight while a claim of due
	// Received rows was on its way (nil when none is): a row whose lease
	// lapsed while its handler ran can be claimed and then finish before
	// the claim returns; it must not be run again.
	finished map[int64]struct{}
	// directKeys are the messages of direct deliveries not acked yet.
	directKeys map[storage.ReceivedKey]struct{}
	// leaseMu keeps lease extensions apart from outcome writes: an
	// extension must never land after the outcome of the same row, or it
	// would make a finished row due again. Outcomes take it shared.
	leaseMu sync.RWMutex
	wg      sync.WaitGroup
	claimWG sync.WaitGroup
	stop    context.CancelFunc
	running bool
}

// NewExecutor returns an executor; Run starts it.
func NewExecutor[TTx any](cfg *Config[TTx], reg *Registry[TTx], disp *Dispatcher[TTx]) *Executor[TTx] {
	return &Executor[TTx]{cfg: cfg, reg: reg, disp: disp, jobs: make(chan job[TTx], cfg.Workers),
		wake: make(chan struct{}, 1), inflight: map[int64]struct{}{}}
}

// Run starts the workers, the retry claimer, the lease keeper and the
// outcome writer. Handlers get ctx: it ends on an abrupt stop or when a
// graceful Stop runs out of time.
func (e *Executor[TTx]) Run(ctx context.Context) {
	claimCtx, stop := context.WithCancel(ctx)
	e.mu.Lock()
	e.stop = stop
	e.running = true
	e.mu.Unlock()
	e.writer = newOutcomeWriter(e.cfg.Store, storage.Received, e.cfg.BatchSize, e.cfg.Logger, e.done)
	e.writer.lock = e.leaseMu.RLocker()
	go e.writer.run(ctx)
	e.rows = newRowWriter(e.cfg.Store, e.cfg.BatchSize, e.cfg.Logger)
	go e.rows.run(ctx)
	for range e.cfg.Workers {
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			e.work(ctx)
		}()
	}
	e.claimWG.Add(1)
	// An instance only claims Received rows of its own groups: rows of a
	// group it has no handlers for belong to another service, or to another
	// version of this one.
	if groups := e.reg.Groups(); len(groups) > 0 {
		e.claimWG.Add(1)
		go func() {
			defer e.claimWG.Done()
			e.claimLoop(claimCtx, groups)
		}()
	}
	go func() {
		defer e.claimWG.Done()
		e.keepLeases(claimCtx)
	}()
}

// Submit queues a stored delivery for execution; it blocks while every
// worker is busy, which slows the receive loop down (back-pressure).
func (e *Executor[TTx]) Submit(ctx context.Context, rec *storage.Record, msg *message.Message, sub *Subscriber[TTx]) {
	e.track(rec.ID)
	select {
	case e.jobs <- job[TTx]{rec: rec, msg: msg, sub: sub}:
	case <-ctx.Done():
		e.done([]int64{rec.ID}) // the row comes back after its lease
	}
}

// SubmitDirect queues a delivery whose row is not written yet (see
// direct.go); it blocks like Submit. When ctx ends first the delivery is
// left unacked, and the broker delivers it again.
func (e *Executor[TTx]) SubmitDirect(ctx context.Context, rec *storage.Record, msg *message.Message, sub *Subscriber[TTx], d *direct) {
	j := job[TTx]{rec: rec, msg: msg, sub: sub, direct: d}
	e.armDirect(ctx, j)
	select {
	case e.jobs <- j:
	case <-ctx.Done():
		d.take()
	}
}

// Stop stops claiming, waits for queued and running handlers and for their
// outcomes to be written, or for ctx. The caller stops the consumers first.
func (e *Executor[TTx]) Stop(ctx context.Context) error {
	e.mu.Lock()
	if !e.running {
		e.mu.Unlock()
		return nil
	}
	e.running = false
	e.stop()
	e.mu.Unlock()
	e.claimWG.Wait()
	close(e.jobs)
	// The rows of direct deliveries first: a row stored early by one of
	// them has its outcome written by the outcome writer.
	var workers sync.WaitGroup
	workers.Go(func() {
		e.wg.Wait()
		e.rows.close()
		<-e.rows.done
	})
	return drain(ctx, &workers, e.writer)
}

// Wait blocks until the workers and the writer have ended.
func (e *Executor[TTx]) Wait() { e.wg.Wait() }

// track marks rows as worked on by this instance: the lease keeper extends
// them, and the claimer leaves them out.
func (e *Executor[TTx]) track(ids ...int64) {
	if len(ids) == 0 {
		return
	}
	e.mu.Lock()
	for _, id := range ids {
		e.inflight[id] = struct{}{}
	}
	e.mu.Unlock()
}

func (e *Executor[TTx]) done(ids []int64) {
	if len(ids) == 0 {
		return
	}
	e.mu.Lock()
	for _, id := range ids {
		delete(e.inflight, id)
		if e.finished != nil {
			e.finished[id] = struct{}{}
		}
	}
	e.mu.Unlock()
}

// claimDue claims due Received rows and returns those this instance does
// not work on: a row it still runs (its lease lapsed, the claim renewed
// it), or one that finished while the claim was on its way, is left out,
// so that one message never runs twice side by side or again after its
// outcome. A row left out stays claimed for a lease; whatever its outcome
// made of it then stands. The rows returned are tracked.
func (e *Executor[TTx]) claimDue(ctx context.Context, req storage.ClaimRequest) (fresh []*storage.Record, claimed int, err error) {
	e.mu.Lock()
	e.finished = map[int64]struct{}{}
	e.mu.Unlock()
	recs, err := e.cfg.Store.Claim(ctx, storage.Received, req)
	e.mu.Lock()
	defer e.mu.Unlock()
	finished := e.finished
	e.finished = nil
	for _, r := range recs {
		_, running := e.inflight[r.ID]
		_, ended := finished[r.ID]
		if running || ended {
			continue
		}
		e.inflight[r.ID] = struct{}{}
		fresh = append(fresh, r)
	}
	return fresh, len(recs), err
}

// keepLeases extends the lease of rows whose handlers still run, so a slow
// handler is not run a second time by another instance.
func (e *Executor[TTx]) keepLeases(ctx context.Context) {
	t := time.NewTicker(e.cfg.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		e.extendLeases(ctx)
	}
}

func (e *Executor[TTx]) extendLeases(ctx context.Context) {
	e.leaseMu.Lock()
	defer e.leaseMu.Unlock()
	e.mu.Lock()
	ids := make([]int64, 0, len(e.inflight))
	for id := range e.inflight {
		ids = append(ids, id)
	}
	e.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	if err := e.cfg.Store.Reschedule(ctx, storage.Received, ids, e.cfg.Lease); err != nil && ctx.Err() == nil {
		e.cfg.Logger.WarnContext(ctx, "cap: extending leases failed", "rows", len(ids), "error", err)
	}
}

// Wake asks the retry claimer to look for due Received rows now (after a
// re-drive from the dashboard).
func (e *Executor[TTx]) Wake() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *Executor[TTx]) wakeAt(delay time.Duration) {
	time.AfterFunc(delay+5*time.Millisecond, func() {
		select {
		case e.wake <- struct{}{}:
		default:
		}
	})
}

func (e *Executor[TTx]) claimLoop(ctx context.Context, groups []string) {
	tick := time.NewTicker(e.cfg.PollInterval)
	defer tick.Stop()
	limit := min(e.cfg.BatchSize, 2*e.cfg.Workers)
	for {
		for {
			recs, n, err := e.claimDue(ctx, storage.ClaimRequest{
				Version: e.cfg.Version, Limit: limit, Lease: e.cfg.Lease, Groups: groups})
			if err != nil {
				if ctx.Err() == nil {
					e.cfg.Logger.WarnContext(ctx, "cap: claiming received rows failed", "error", err)
				}
				break
			}
			for _, r := range recs {
				e.resume(ctx, r)
			}
			if n < limit || ctx.Err() != nil {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-e.wake:
		case <-tick.C:
		}
	}
}

// resume queues a claimed Received row again (claimDue tracked it).
func (e *Executor[TTx]) resume(ctx context.Context, rec *storage.Record) {
	msg, err := message.DecodeContent(rec.Content)
	if err != nil {
		e.finalFail(ctx, job[TTx]{rec: rec, msg: &message.Message{Headers: message.Headers{}}}, excDecode, err)
		return
	}
	sub := e.reg.Find(rec.Group, rec.Name)
	if sub == nil {
		e.finalFail(ctx, job[TTx]{rec: rec, msg: msg}, excNotFound,
			fmt.Errorf("no subscriber of group %q for topic %q", rec.Group, rec.Name))
		return
	}
	e.Submit(ctx, rec, msg, sub)
}

func (e *Executor[TTx]) finalFail(ctx context.Context, j job[TTx], typ string, err error) {
	e.track(j.rec.ID)
	e.writer.put(ctx, storage.Outcome{ID: j.rec.ID, Status: storage.StatusFailed, Retries: j.rec.Retries + 1,
		Content: withException(j.msg, exception(typ, err)), ExpiresIn: e.cfg.FailedExpiry, ExpiresFromAdded: true})
	e.cfg.Logger.WarnContext(ctx, "cap: message cannot be handled; stored as Failed", "group", j.rec.Group,
		"name", j.rec.Name, "id", j.msg.ID(), "error", err)
	e.cfg.Tel.Handled(ctx, j.rec.Group, j.rec.Name, telemetry.OutcomeFailed)
	if e.cfg.OnFailed != nil {
		e.cfg.OnFailed(ctx, FailedInfo{Table: storage.Received, Message: j.msg, Err: err})
	}
}

func (e *Executor[TTx]) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return // abrupt stop: queued rows come back after their lease
		case j, ok := <-e.jobs:
			if !ok {
				return
			}
			e.execute(ctx, j)
		}
	}
}

// execute runs one message until it succeeds, fails for good, or must wait
// for a later attempt.
func (e *Executor[TTx]) execute(ctx context.Context, j job[TTx]) {
	policy := j.sub.Retry
	if policy == nil {
		policy = e.cfg.HandlerRetry
	}
	retries := j.rec.Retries
	for {
		err := e.attempt(ctx, j, retries)
		if err == nil {
			e.cfg.Tel.Handled(ctx, j.rec.Group, j.rec.Name, telemetry.OutcomeSucceeded)
			return
		}
		if errors.Is(err, storage.ErrStale) {
			// Another instance completed this row first; its effect stands.
			e.done([]int64{j.rec.ID})
			return
		}
		if ctx.Err() != nil {
			if j.direct != nil {
				if owned, dup := j.direct.take(); owned || dup {
					return // no row of this job: the broker delivers it again
				}
			}
			// Interrupted by shutdown: never Succeeded, and not a failure;
			// the row is due again at once.
			e.leaseMu.RLock()
			defer e.leaseMu.RUnlock()
			e.done([]int64{j.rec.ID})
			if rerr := e.cfg.Store.Reschedule(context.WithoutCancel(ctx), storage.Received, []int64{j.rec.ID}, 0); rerr != nil {
				e.cfg.Logger.WarnContext(ctx, "cap: releasing interrupted message failed", "group", j.rec.Group,
					"name", j.rec.Name, "id", j.msg.ID(), "error", rerr)
			}
			return
		}
		retries++
		delay, ok := policy.Next(retries)
		if IsPermanent(err) {
			ok = false
		}
		if ok && delay == 0 {
			continue
		}
		attrs := []any{"group", j.rec.Group, "name", j.rec.Name, "id", j.msg.ID(), "retries", retries, "retry", ok, "error", err}
		var pe *PanicError
		if errors.As(err, &pe) {
			attrs = append(attrs, "stack", string(pe.Stack))
		}
		e.cfg.Logger.WarnContext(ctx, "cap: handler failed", attrs...)
		e.settle(ctx, j, storage.Outcome{ID: j.rec.ID, Status: storage.StatusFailed, Retries: retries,
			Content: withException(j.msg, exception(excExecute, err)), ExpiresIn: e.cfg.FailedExpiry,
			ExpiresFromAdded: true, Retry: ok, RetryIn: delay})
		if ok {
			e.cfg.Tel.Handled(ctx, j.rec.Group, j.rec.Name, telemetry.OutcomeRetry)
			e.wakeAt(delay)
			return
		}
		e.cfg.Tel.Handled(ctx, j.rec.Group, j.rec.Name, telemetry.OutcomeFailed)
		if e.cfg.OnFailed != nil {
			e.cfg.OnFailed(ctx, FailedInfo{Table: storage.Received, Message: j.msg, Err: err})
		}
		return
	}
}

// attempt runs the handler once and records a success. A transactional
// handler, or one whose reply must be published, commits its work, the
// reply and the Received row's new status in one transaction.
func (e *Executor[TTx]) attempt(ctx context.Context, j job[TTx], retries int) (err error) {
	hctx, span := e.cfg.Tel.StartProcess(ctx, j.rec.Name, j.rec.Group, j.msg.Headers, len(j.msg.Body), retries)
	start := time.Now()
	defer func() {
		if !errors.Is(err, storage.ErrStale) {
			e.cfg.Tel.Processed(ctx, j.rec.Group, j.rec.Name, time.Since(start), err != nil)
		}
		span.End(err)
	}()
	var tx TTx
	inTx := false
	if j.sub.Tx {
		t, err := e.cfg.Store.Begin(ctx)
		if err != nil {
			return fmt.Errorf("begin transaction: %w", err)
		}
		tx, inTx = t, true
	}
	reply, err := invoke(hctx, j, tx, retries)
	if err != nil {
		if inTx {
			_ = e.cfg.Store.Rollback(context.WithoutCancel(ctx), tx)
		}
		return err
	}
	success := storage.Outcome{ID: j.rec.ID, Status: storage.StatusSucceeded, Retries: retries,
		ExpiresIn: e.cfg.SucceedExpiry}
	if reply == nil && !inTx {
		e.settle(ctx, j, success)
		return nil
	}
	if j.direct != nil {
		// The reply commits with the row's status: the row first.
		stored, err := e.storeEarly(ctx, j)
		if err != nil {
			return fmt.Errorf("store the received message: %w", err)
		}
		if !stored {
			return nil // another copy was stored first: its effect stands
		}
	}
	if !inTx {
		t, err := e.cfg.Store.Begin(ctx)
		if err != nil {
			return fmt.Errorf("begin transaction: %w", err)
		}
		tx = t
	}
	e.leaseMu.RLock()
	err = e.complete(ctx, tx, success, reply)
	if err == nil {
		e.done([]int64{j.rec.ID})
	}
	e.leaseMu.RUnlock()
	if err != nil {
		_ = e.cfg.Store.Rollback(context.WithoutCancel(ctx), tx)
		return err
	}
	if reply != nil {
		e.disp.Handover(ctx, []*storage.Record{reply.Record}, []*message.Message{reply.Message})
	}
	return nil
}

func (e *Executor[TTx]) complete(ctx context.Context, tx TTx, success storage.Outcome, reply *Reply) error {
	if reply != nil {
		if err := e.cfg.Store.InsertPublishedTx(ctx, tx, []*storage.Record{reply.Record}); err != nil {
			return fmt.Errorf("store reply: %w", err)
		}
	}
	if err := e.cfg.Store.SetOutcomesTx(ctx, tx, storage.Received, []storage.Outcome{success}); err != nil {
		return err
	}
	if err := e.cfg.Store.Commit(ctx, tx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// invoke calls the handler and turns a panic into an error.
func invoke[TTx any](ctx context.Context, j job[TTx], tx TTx, retries int) (reply *Reply, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return j.sub.Invoke(ctx, tx, j.msg, retries)
}

// PanicError is the error of a handler that panicked.
type PanicError struct {
	Value any
	Stack []byte
}

func (p *PanicError) Error() string { return fmt.Sprintf("panic: %v", p.Value) }
