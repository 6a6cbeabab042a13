package engine

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/go-cap/cap/storage"
)

// outcomeWriter collects outcomes from many goroutines and writes them in
// batches: it takes what is waiting when it wakes, so a lone outcome is
// written at once and a burst becomes one statement.
type outcomeWriter[TTx any] struct {
	store  storage.Storage[TTx]
	table  storage.Table
	in     chan storage.Outcome
	max    int
	log    *slog.Logger
	done   chan struct{}
	onDone func(ids []int64) // called after a batch is written or given up
	// lock, when set, is held while a batch is written and onDone runs.
	lock sync.Locker
}

func newOutcomeWriter[TTx any](store storage.Storage[TTx], t storage.Table, max int, log *slog.Logger, onDone func([]int64)) *outcomeWriter[TTx] {
	return &outcomeWriter[TTx]{store: store, table: t, in: make(chan storage.Outcome, max*4), max: max, log: log,
		done: make(chan struct{}), onDone: onDone}
}

// put queues an outcome; it blocks when the writer is behind, until ctx ends.
func (w *outcomeWriter[TTx]) put(ctx context.Context, o storage.Outcome) {
	select {
	case w.in <- o:
	case <-ctx.Done():
	}
}

// close stops taking outcomes; run writes what is queued and returns.
func (w *outcomeWriter[TTx]) close() { close(w.in) }

// run writes batches until close. ctx bounds the writes: when it ends, the
// remaining outcomes are dropped and their rows come back after the lease.
func (w *outcomeWriter[TTx]) run(ctx context.Context) {
	defer close(w.done)
	batch := make([]storage.Outcome, 0, w.max)
	for {
		var o storage.Outcome
		select {
		case <-ctx.Done():
			return
		case v, ok := <-w.in:
			if !ok {
				return
			}
			o = v
		}
		batch = append(batch[:0], o)
		// Outcomes are not on a message's way to its handler: waiting a
		// little for more makes fewer, larger statements and commits.
		linger := time.NewTimer(outcomeLinger)
	fill:
		for len(batch) < w.max {
			select {
			case o, ok := <-w.in:
				if !ok {
					break fill
				}
				batch = append(batch, o)
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

func (w *outcomeWriter[TTx]) write(ctx context.Context, batch []storage.Outcome) {
	if w.lock != nil {
		w.lock.Lock()
		defer w.lock.Unlock()
	}
	ids := make([]int64, len(batch))
	for i, o := range batch {
		ids[i] = o.ID
	}
	defer func() {
		if w.onDone != nil {
			w.onDone(ids)
		}
	}()
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := w.store.SetOutcomes(ctx, w.table, batch)
		if err == nil {
			return
		}
		if ctx.Err() != nil || attempt >= 8 {
			w.log.ErrorContext(ctx, "cap: storing outcomes failed; the rows come back after their lease",
				"table", w.table.String(), "rows", len(batch), "error", err)
			return
		}
		w.log.WarnContext(ctx, "cap: storing outcomes failed, retrying", "table", w.table.String(), "error", err)
		if !sleepCtx(ctx, backoff) {
			return
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// outcomeLinger is how long a writer waits for a batch to fill before it
// writes what it has.
const outcomeLinger = 20 * time.Millisecond

// drain waits for the workers in wg to end, then for w to write the
// outcomes they left, or for ctx.
func drain[TTx any](ctx context.Context, wg *sync.WaitGroup, w *outcomeWriter[TTx]) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		w.close()
		<-w.done
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
