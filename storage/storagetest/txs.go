package storagetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
)

// openTx is a transaction held open in its own goroutine: it begins,
// inserts its rows, reports ready, and waits to be told to commit or roll
// back. A storage that serialises writers may keep it waiting in Begin
// until the transactions before it have finished.
type openTx struct {
	recs   []*storage.Record
	ready  chan struct{}
	finish chan bool // true: commit
	done   chan error
}

func (e *env[TTx]) openTxAsync(recs []*storage.Record) *openTx {
	o := &openTx{recs: recs, ready: make(chan struct{}), finish: make(chan bool, 1), done: make(chan error, 1)}
	exited := make(chan struct{})
	e.t.Cleanup(func() { <-exited })
	go func() {
		defer close(exited)
		o.done <- runOpenTx(e, o)
	}()
	return o
}

func runOpenTx[TTx any](e *env[TTx], o *openTx) error {
	tx, err := e.s.Begin(e.ctx)
	if err != nil {
		return fmt.Errorf("Begin: %w", err)
	}
	if err := e.s.InsertPublishedTx(e.ctx, tx, o.recs); err != nil {
		return errors.Join(fmt.Errorf("InsertPublishedTx: %w", err), e.s.Rollback(context.WithoutCancel(e.ctx), tx))
	}
	close(o.ready)
	select {
	case commit := <-o.finish:
		if commit {
			return e.s.Commit(e.ctx, tx)
		}
		return e.s.Rollback(e.ctx, tx)
	case <-e.ctx.Done():
		return errors.Join(e.ctx.Err(), e.s.Rollback(context.WithoutCancel(e.ctx), tx))
	}
}

// isReady reports whether the transaction has inserted its rows; it fails
// the test when the transaction failed.
func (o *openTx) isReady(t *testing.T) bool {
	t.Helper()
	select {
	case <-o.ready:
		return true
	default:
	}
	select {
	case err := <-o.done:
		require.NoError(t, err, "transaction failed before it was told to finish")
		t.Fatal("transaction ended before it was told to finish")
	default:
	}
	return false
}

// step finishes one transaction of a plan.
type step struct {
	tx     int
	commit bool
}

// drive finishes txs following plan. It prefers the plan's order, waiting
// up to patience for the next planned transaction; when that one cannot get
// ready (a storage with a single writer keeps it in Begin), it finishes the
// first ready one instead. After each step it gives the claimer a moment to
// catch up, so claims interleave with commits. It returns, per committed
// row, the time its Commit was called.
func (e *env[TTx]) drive(c *claimer[TTx], txs []*openTx, plan []step, patience time.Duration) map[int64]time.Time {
	t := e.t
	t.Helper()
	committedAt := map[int64]time.Time{}
	plan = slices.Clone(plan)
	for len(plan) > 0 {
		pick := -1
		start := time.Now()
		for pick < 0 {
			for i, s := range plan {
				if txs[s.tx].isReady(t) && (i == 0 || time.Since(start) >= patience) {
					pick = i
					break
				}
			}
			if pick < 0 {
				if time.Since(start) > waitFor {
					t.Fatalf("no transaction of %v got ready within %s", plan, waitFor)
				}
				time.Sleep(time.Millisecond)
			}
		}
		s := plan[pick]
		plan = slices.Delete(plan, pick, pick+1)
		o := txs[s.tx]
		at := time.Now()
		o.finish <- s.commit
		require.NoError(t, <-o.done, "finishing transaction %d (commit=%v)", s.tx, s.commit)
		if s.commit {
			for _, r := range o.recs {
				committedAt[r.ID] = at
			}
			c.softWaitClaimed(idsOf(o.recs))
		} else {
			c.settle()
		}
	}
	return committedAt
}

// requireClaimedOnce checks what a claimer received against what was
// committed: every committed row exactly once and not before its commit,
// and nothing else.
func requireClaimedOnce(t *testing.T, got map[int64][]time.Time, committedAt map[int64]time.Time, rolledBack []int64) {
	t.Helper()
	for _, id := range rolledBack {
		require.Empty(t, got[id], "row %d of a rolled-back transaction was claimed", id)
	}
	for id, at := range committedAt {
		require.Len(t, got[id], 1, "committed row %d claimed %d times", id, len(got[id]))
		require.False(t, got[id][0].Before(at), "row %d claimed by a Claim that returned before its transaction committed", id)
	}
	var extra []int64
	for id := range got {
		if _, ok := committedAt[id]; !ok {
			extra = append(extra, id)
		}
	}
	require.Empty(t, extra, "rows claimed that were never committed")
}
