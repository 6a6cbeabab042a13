package memory

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-cap/cap/storage"
)

// ErrTxDone reports a use of a transaction that was committed or rolled back.
var ErrTxDone = errors.New("memory: transaction has already been committed or rolled back")

// ErrForeignTx reports a transaction begun on another Storage.
var ErrForeignTx = errors.New("memory: transaction of another storage")

// Tx is a transaction of a Storage. Writes made through it
// (InsertPublishedTx, SetOutcomesTx) are buffered and become visible
// together at Commit; Rollback discards them. A Tx is safe for concurrent
// use.
type Tx struct {
	s *Storage

	mu       sync.Mutex
	state    txState
	inserts  []*row // Published rows, in their stored form
	outcomes []pendingOutcome
	onCommit []func()
}

type txState int

const (
	txOpen txState = iota
	txCommitted
	txRolledBack
)

// pendingOutcome is an outcome written in a transaction, with the time it
// was written at (a database's statement time).
type pendingOutcome struct {
	table storage.Table
	out   storage.Outcome
	at    time.Time
}

// Begin starts a transaction.
func (s *Storage) Begin(ctx context.Context) (*Tx, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return &Tx{s: s}, nil
}

// Commit commits tx; see Tx.Commit.
func (s *Storage) Commit(ctx context.Context, tx *Tx) error {
	if err := s.own(tx); err != nil {
		return err
	}
	return tx.commit(ctx)
}

// Rollback rolls tx back; see Tx.Rollback.
func (s *Storage) Rollback(ctx context.Context, tx *Tx) error {
	if err := s.own(tx); err != nil {
		return err
	}
	return tx.Rollback()
}

func (s *Storage) own(tx *Tx) error {
	if tx == nil {
		return fmt.Errorf("%w: nil", ErrForeignTx)
	}
	if tx.s != s {
		return ErrForeignTx
	}
	return nil
}

// withTx runs fn with tx locked and open, and s.mu held.
func (s *Storage) withTx(tx *Tx, fn func() error) error {
	if err := s.own(tx); err != nil {
		return err
	}
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if tx.state != txOpen {
		return ErrTxDone
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return fn()
}

// OnCommit registers f to run after tx commits, once its writes are
// visible, in the order of registration. f does not run when tx rolls back
// or its commit fails; registering on a finished tx does nothing.
func (tx *Tx) OnCommit(f func()) {
	if f == nil {
		return
	}
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if tx.state == txOpen {
		tx.onCommit = append(tx.onCommit, f)
	}
}

// Commit applies the writes of tx atomically, then runs its OnCommit
// functions. It fails with ErrTxDone after a Commit or Rollback, and when
// the writes no longer apply (a row id taken by another transaction, an
// outcome on a row that was deleted or marked Succeeded meanwhile: an error
// wrapping storage.ErrNotFound or storage.ErrStale); then nothing is applied
// and tx is rolled back.
func (tx *Tx) Commit() error { return tx.commit(context.Background()) }

func (tx *Tx) commit(ctx context.Context) error {
	tx.mu.Lock()
	if tx.state != txOpen {
		tx.mu.Unlock()
		return ErrTxDone
	}
	if err := ctx.Err(); err != nil {
		tx.mu.Unlock()
		return err
	}
	err := tx.apply()
	callbacks := tx.onCommit
	tx.state = txCommitted
	if err != nil {
		tx.state, callbacks = txRolledBack, nil
	}
	tx.inserts, tx.outcomes, tx.onCommit = nil, nil, nil
	tx.mu.Unlock()

	for _, f := range callbacks {
		f()
	}
	return err
}

// apply checks and writes the buffered changes; the caller holds tx.mu.
func (tx *Tx) apply() error {
	s := tx.s
	s.mu.Lock()
	defer s.mu.Unlock()
	published := s.tables[storage.Published]
	for _, r := range tx.inserts {
		if _, ok := published.rows[r.rec.ID]; ok {
			return fmt.Errorf("memory: commit: %w: %d", ErrDuplicateID, r.rec.ID)
		}
	}
	if err := s.checkOutcomes(tx.inserts, tx.outcomes, 0); err != nil {
		return fmt.Errorf("memory: commit: %w", err)
	}
	wake := len(tx.inserts) > 0
	for _, r := range tx.inserts {
		published.add(r)
	}
	for _, p := range tx.outcomes {
		tb := s.tables[p.table]
		applyOutcome(tb, tb.rows[p.out.ID], p.out, p.at)
		wake = wake || (p.table == storage.Published && p.out.Retry)
	}
	if wake {
		s.notifyLocked()
	}
	return nil
}

// Rollback discards the writes of tx. Rolling back a finished transaction
// is not an error.
func (tx *Tx) Rollback() error {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if tx.state == txOpen {
		tx.state = txRolledBack
		tx.inserts, tx.outcomes, tx.onCommit = nil, nil, nil
	}
	return nil
}
