//go:build faults

package faulttest_test

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/retry"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/sqlite"
	memtr "github.com/go-cap/cap/transport/memory"
)

// Reproductions of bugs the fault harness found, kept out of TestFaults:
//
//	go test -tags=faults -run TestBug -v ./internal/faulttest/

// A bus that has no subscriber for a group (a service that only publishes,
// or one whose new version dropped a handler) shares the Received table
// with the instances that do. When a row of that group falls due again (its
// instance crashed and the lease ended, or a retry's backoff ended), such a
// bus may claim it, finds no subscriber and fails it for good
// ("SubscriberNotFoundException"): the message is never handled, although
// the group's own instances are running. The fault harness lost messages
// this way in its three-instances scenario, where producer-only processes
// claimed the consumers' rows.
func TestBugUnsubscribedInstanceFailsOtherGroupsRows(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "cap.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	store, err := sqlite.New(db, sqlite.Options{})
	require.NoError(t, err)
	tr := memtr.New()
	t.Cleanup(func() { _ = tr.Close() })
	wid := int64(3)
	publisher, err := cap.New(store, tr, cap.Options{PollInterval: 20 * time.Millisecond, WorkerID: &wid,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	require.NoError(t, publisher.Start(ctx))
	t.Cleanup(func() { _ = publisher.Shutdown(ctx) })

	// The row of a "billing" instance that crashed while handling it: its
	// lease has ended, so it is due.
	content, err := message.EncodeContent(&message.Message{Headers: message.Headers{
		message.HeaderMessageID: "42", message.HeaderMessageName: "order.created", message.HeaderGroup: "billing.v1",
	}, Body: []byte(`{"n":42}`)})
	require.NoError(t, err)
	inserted, err := store.InsertReceived(ctx, &storage.Record{ID: 42, Version: "v1", Name: "order.created",
		Group: "billing.v1", MessageID: "42", Content: content})
	require.NoError(t, err)
	require.True(t, inserted)

	require.Never(t, func() bool {
		r, err := store.Get(ctx, storage.Received, 42)
		require.NoError(t, err)
		return r.Status == storage.StatusFailed
	}, time.Second, 20*time.Millisecond,
		"a bus with no subscriber in group billing.v1 failed billing's row for good; billing's instances will never run it")
}

// outage is a storage whose database this instance cannot reach while down
// is set: claims, lease extensions and outcome writes fail, as they do for an
// instance cut off from PostgreSQL while the others still reach it.
type outage struct {
	storage.Storage[*sql.Tx]
	down atomic.Bool
}

var errOutage = errors.New("database unreachable from this instance")

func (o *outage) Claim(ctx context.Context, t storage.Table, req storage.ClaimRequest) ([]*storage.Record, error) {
	if o.down.Load() {
		return nil, errOutage
	}
	return o.Storage.Claim(ctx, t, req)
}

func (o *outage) Reschedule(ctx context.Context, t storage.Table, ids []int64, in time.Duration) error {
	if o.down.Load() {
		return errOutage
	}
	return o.Storage.Reschedule(ctx, t, ids, in)
}

func (o *outage) SetOutcomes(ctx context.Context, t storage.Table, outs []storage.Outcome) error {
	if o.down.Load() {
		return errOutage
	}
	return o.Storage.SetOutcomes(ctx, t, outs)
}

// An instance whose handler failed while it could not reach the database
// keeps retrying the write of that Failed outcome (about 5 s). Meanwhile its
// lease ends, another instance claims the row and completes it: the
// transactional handler's effect is committed and the row is Succeeded.
// When the first instance reaches the database again, its stale outcome
// overwrites Succeeded with Failed and makes the row due, so the
// transactional handler runs and commits its effect a second time. The fault
// harness saw this in its "all" scenario (inbox_duplicates=1 across a
// PostgreSQL restart). SetOutcomes, unlike SetOutcomesTx, does not refuse a
// row that is already Succeeded, and nothing fences an instance whose lease
// has ended.
func TestBugStaleOutcomeUndoesSuccess(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "cap.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	_, err = db.ExecContext(ctx, `CREATE TABLE effects (msg_id TEXT NOT NULL, instance TEXT NOT NULL)`)
	require.NoError(t, err)
	store, err := sqlite.New(db, sqlite.Options{})
	require.NoError(t, err)
	tr := memtr.New()
	t.Cleanup(func() { _ = tr.Close() })
	policy := retry.CAP{MaxRetries: 100, ImmediateAttempts: -1, Interval: 50 * time.Millisecond}
	newBus := func(s storage.Storage[*sql.Tx], name string, wid int64) *cap.Bus[*sql.Tx] {
		b, err := cap.New(s, tr, cap.Options{PollInterval: 20 * time.Millisecond, Lease: 300 * time.Millisecond,
			RetryPolicy: policy, WorkerID: &wid, InstanceID: name, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		require.NoError(t, err)
		return b
	}
	effect := func(ctx context.Context, tx *sql.Tx, instance, id string) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO effects (msg_id, instance) VALUES (?, ?)`, id, instance)
		return err
	}
	effects := func() (n int) {
		require.NoError(t, db.QueryRowContext(ctx, `SELECT count(*) FROM effects`).Scan(&n))
		return n
	}

	// Instance a receives the message; its database goes away while its
	// handler runs.
	cut := &outage{Storage: store}
	a := newBus(cut, "a", 1)
	require.NoError(t, cap.SubscribeTx(a, "pay", "ledger", func(ctx context.Context, tx *sql.Tx, m cap.Msg[int]) error {
		cut.down.Store(true)
		return errOutage
	}))
	require.NoError(t, a.Start(ctx))
	t.Cleanup(func() { _ = a.Shutdown(ctx) })
	require.NoError(t, a.Publish(ctx, "pay", 5))
	require.Eventually(t, cut.down.Load, 5*time.Second, 5*time.Millisecond, "instance a never ran its handler")

	// Instance b takes the row over when a's lease ends and completes it.
	b := newBus(store, "b", 2)
	require.NoError(t, cap.SubscribeTx(b, "pay", "ledger", func(ctx context.Context, tx *sql.Tx, m cap.Msg[int]) error {
		return effect(ctx, tx, "b", m.ID)
	}))
	require.NoError(t, b.Start(ctx))
	t.Cleanup(func() { _ = b.Shutdown(ctx) })
	require.Eventually(t, func() bool { return effects() == 1 }, 3*time.Second, 10*time.Millisecond,
		"instance b did not complete the row after a's lease ended")
	rows, _, err := store.List(ctx, storage.Received, storage.ListQuery{Group: "ledger.v1"})
	require.NoError(t, err)
	require.Len(t, rows, 1)
	require.Equal(t, storage.StatusSucceeded, rows[0].Status)

	// Instance a reaches its database again; its outcome writer still holds
	// the Failed outcome.
	cut.down.Store(false)
	require.Never(t, func() bool { return effects() > 1 }, 3*time.Second, 20*time.Millisecond,
		"instance a's late Failed outcome made the Succeeded row due again: the transactional handler's effect happened twice")
	r, err := store.Get(ctx, storage.Received, rows[0].ID)
	require.NoError(t, err)
	require.Equal(t, storage.StatusSucceeded, r.Status, "a late outcome overwrote Succeeded")
}
