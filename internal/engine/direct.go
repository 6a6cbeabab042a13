package engine

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/go-cap/cap/storage"
)

// A direct delivery is one whose plain handler (no transaction) runs before
// its Received row is written: the row is written once, with the handler's
// outcome, and the delivery is acked after that commit. It saves the update
// of a row stored only to be run. It needs a storage.ReceivedChecker: the
// consumer first looks up which deliveries are stored already, so that a
// redelivered message is still dropped before its handler runs.
//
// A handler that runs longer than directWait has its row stored as it would
// have been without the direct path (Scheduled, leased to this instance)
// and its delivery acked, so a broker's redelivery timeout (NATS's ack
// wait, Redis's claim of idle entries) never sees it as lost; its outcome
// is then an update of that row.
type direct struct {
	key    storage.ReceivedKey
	ack    func(ctx context.Context, stored bool) // acks the delivery once its row is committed
	reject func(ctx context.Context, err error)   // gives the delivery back to the broker

	mu    sync.Mutex
	state directState
	timer *time.Timer
}

type directState uint8

const (
	directPending   directState = iota // no row: the outcome writes it
	directFinished                     // the outcome is on its way into the row
	directStored                       // stored early, leased to this instance
	directDuplicate                    // another copy's row was there: the outcome is dropped
)

// directWait is how long a direct delivery waits for its handler before
// its row is stored and the delivery acked.
func directWait(lease time.Duration) time.Duration {
	return min(max(lease/6, 100*time.Millisecond), 5*time.Second)
}

// take decides how the outcome of a direct job is written: owned means the
// row does not exist yet and the caller writes it with the outcome; dup
// means the outcome is to be dropped; neither means the row was stored
// early and the outcome updates it.
func (d *direct) take() (owned, dup bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
	}
	switch d.state {
	case directPending:
		d.state = directFinished
		return true, false
	case directDuplicate:
		return false, true
	default:
		return false, false
	}
}

// storeEarly stores the row of a direct job as a row to run, leased to
// this instance, and acks its delivery, unless its outcome was taken. It
// reports whether the row is (now) stored by this job; it is safe to call
// more than once.
func (e *Executor[TTx]) storeEarly(ctx context.Context, j job[TTx]) (stored bool, err error) {
	d := j.direct
	d.mu.Lock()
	defer d.mu.Unlock()
	switch d.state {
	case directStored:
		return true, nil
	case directPending:
	default:
		return false, nil
	}
	rec := *j.rec
	rec.Status, rec.DueIn, rec.Terminal, rec.ExpiresIn = storage.StatusScheduled, e.cfg.Lease, false, 0
	e.track(rec.ID) // before the insert: the lease keeper extends it from the start
	inserted, err := e.cfg.Store.InsertReceived(ctx, &rec)
	if err != nil {
		e.done([]int64{rec.ID})
		return false, err
	}
	if !inserted {
		e.done([]int64{rec.ID})
		d.state = directDuplicate
		d.ack(ctx, false)
		return false, nil
	}
	d.state = directStored
	d.ack(ctx, true)
	return true, nil
}

// armDirect starts the timer that stores a direct job's row early.
func (e *Executor[TTx]) armDirect(ctx context.Context, j job[TTx]) {
	d := j.direct
	d.mu.Lock()
	defer d.mu.Unlock()
	d.timer = time.AfterFunc(directWait(e.cfg.Lease), func() {
		if _, err := e.storeEarly(ctx, j); err != nil && ctx.Err() == nil {
			// The outcome writes the row when the handler ends.
			e.cfg.Logger.WarnContext(ctx, "cap: storing a running message failed", "group", j.rec.Group,
				"name", j.rec.Name, "id", j.msg.ID(), "error", err)
		}
	})
}

// settle writes the outcome of an attempt: into the row, or, for a direct
// job whose row is not written yet, as the row itself.
func (e *Executor[TTx]) settle(ctx context.Context, j job[TTx], o storage.Outcome) {
	if j.direct != nil {
		owned, dup := j.direct.take()
		if dup {
			return
		}
		if owned {
			e.rows.put(ctx, directRow{rec: withOutcome(j.rec, o), d: j.direct})
			return
		}
	}
	e.writer.put(ctx, o)
}

// withOutcome returns the row to insert for rec once o is its outcome.
func withOutcome(rec *storage.Record, o storage.Outcome) *storage.Record {
	r := *rec
	r.Status, r.Retries, r.ExpiresIn = o.Status, o.Retries, o.ExpiresIn
	if o.Content != nil {
		r.Content = o.Content
	}
	r.Terminal, r.DueIn = !o.Retry, 0
	if o.Retry {
		r.DueIn = o.RetryIn
	}
	return &r
}

// directRow is the row of a direct delivery, with its outcome.
type directRow struct {
	rec *storage.Record
	d   *direct
}

// rowWriter inserts the rows of direct deliveries in batches and acks the
// deliveries after each commit.
type rowWriter[TTx any] struct {
	store storage.Storage[TTx]
	in    chan directRow
	max   int
	log   *slog.Logger
	done  chan struct{}
}

func newRowWriter[TTx any](store storage.Storage[TTx], max int, log *slog.Logger) *rowWriter[TTx] {
	return &rowWriter[TTx]{store: store, in: make(chan directRow, max*4), max: max, log: log,
		done: make(chan struct{})}
}

// put queues a row; it blocks when the writer is behind, until ctx ends
// (the delivery is then not acked, and comes again).
func (w *rowWriter[TTx]) put(ctx context.Context, r directRow) {
	select {
	case w.in <- r:
	case <-ctx.Done():
	}
}

func (w *rowWriter[TTx]) close() { close(w.in) }

// rowLinger is how long the row writer waits for a batch to fill: its rows
// hold broker deliveries unacked, so it waits less than the outcome writer.
const rowLinger = 2 * time.Millisecond

func (w *rowWriter[TTx]) run(ctx context.Context) {
	defer close(w.done)
	batch := make([]directRow, 0, w.max)
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for {
		var r directRow
		select {
		case <-ctx.Done():
			return
		case v, ok := <-w.in:
			if !ok {
				return
			}
			r = v
		}
		batch = append(batch[:0], r)
		linger.Reset(rowLinger)
	fill:
		for len(batch) < w.max {
			select {
			case r, ok := <-w.in:
				if !ok {
					break fill
				}
				batch = append(batch, r)
			case <-linger.C:
				break fill
			case <-ctx.Done():
				break fill
			}
		}
		linger.Stop()
		w.write(ctx, batch)
	}
}

// write inserts a batch and acks its deliveries. When the storage keeps
// failing, the deliveries go back to the broker: the messages come again
// (their handlers run again: at least once).
func (w *rowWriter[TTx]) write(ctx context.Context, batch []directRow) {
	recs := make([]*storage.Record, len(batch))
	for i, r := range batch {
		recs[i] = r.rec
	}
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		inserted, err := w.store.InsertReceivedBatch(ctx, recs)
		if err == nil {
			for i, r := range batch {
				r.d.ack(ctx, inserted[i])
			}
			return
		}
		if ctx.Err() != nil {
			return // abrupt stop: not acked, they come again
		}
		if errors.Is(err, storage.ErrRefused) || attempt >= 5 {
			w.oneByOne(ctx, batch, err)
			return
		}
		w.log.WarnContext(ctx, "cap: storing handled messages failed, retrying", "rows", len(batch), "error", err)
		if !sleepCtx(ctx, backoff) {
			return
		}
		backoff = min(backoff*2, time.Second)
	}
}

// oneByOne stores the rows of a batch the storage refused one at a time,
// so that one row it cannot take does not hold back the others; a row
// still refused goes back to the broker with its delivery.
func (w *rowWriter[TTx]) oneByOne(ctx context.Context, batch []directRow, cause error) {
	w.log.WarnContext(ctx, "cap: storing handled messages failed; storing them one by one", "rows", len(batch),
		"error", cause)
	for _, r := range batch {
		ok, err := w.store.InsertReceived(ctx, r.rec)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.d.reject(ctx, err)
			continue
		}
		r.d.ack(ctx, ok)
	}
}

// claimKey marks a direct delivery's message as on its way in this
// instance; it reports false when it already was (a redelivery that
// arrived while the first copy's handler runs: the first copy's outcome
// decides whether it comes again).
func (e *Executor[TTx]) claimKey(k storage.ReceivedKey) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.directKeys == nil {
		e.directKeys = map[storage.ReceivedKey]struct{}{}
	}
	if _, ok := e.directKeys[k]; ok {
		return false
	}
	e.directKeys[k] = struct{}{}
	return true
}

func (e *Executor[TTx]) releaseKey(k storage.ReceivedKey) {
	e.mu.Lock()
	delete(e.directKeys, k)
	e.mu.Unlock()
}
