package storagetest

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
)

// testReceivedExists checks storage.ReceivedChecker: by (MessageID, Group)
// exactly, whatever the row's status, for keys of any text.
func testReceivedExists[TTx any](t *testing.T, e *env[TTx]) {
	rc, ok := e.s.(storage.ReceivedChecker)
	if !ok {
		t.Skip("the storage does not implement storage.ReceivedChecker")
	}
	got, err := rc.ReceivedExists(e.ctx, nil)
	require.NoError(t, err)
	require.Empty(t, got)

	odd := `m'"\ é 💡 %_` + e.uniq()
	a := e.received("exists.a", "g1", "m1-"+e.uniq())
	b := e.received("exists.b", "g2", odd)
	b.Status, b.Terminal, b.ExpiresIn = storage.StatusSucceeded, true, time.Hour
	e.insertReceived(a)
	e.insertReceived(b)
	keys := []storage.ReceivedKey{
		{MessageID: a.MessageID, Group: "g1"},
		{MessageID: a.MessageID, Group: "g2"},
		{MessageID: odd, Group: "g2"},
		{MessageID: "missing-" + e.uniq(), Group: "g1"},
		{MessageID: odd, Group: "g1"},
		{MessageID: a.MessageID, Group: "g1"},
	}
	got, err = rc.ReceivedExists(e.ctx, keys)
	require.NoError(t, err)
	require.Equal(t, []bool{true, false, true, false, false, true}, got)
}

// testReceivedWithOutcome: a Received row inserted with its outcome (as the
// consumer writes a plain handler's row after the handler): Succeeded and
// expiring, or Failed and due for a retry.
func testReceivedWithOutcome[TTx any](t *testing.T, e *env[TTx]) {
	ok := e.received("outcome.ok", "g", "ok-"+e.uniq())
	ok.Status, ok.Terminal, ok.Retries, ok.ExpiresIn = storage.StatusSucceeded, true, 1, time.Hour
	retry := e.received("outcome.retry", "g", "retry-"+e.uniq())
	retry.Status, retry.Retries, retry.DueIn, retry.ExpiresIn = storage.StatusFailed, 2, time.Minute, 24*time.Hour
	before := time.Now()
	inserted, err := e.s.InsertReceivedBatch(e.ctx, []*storage.Record{ok, retry})
	require.NoError(t, err)
	require.Equal(t, []bool{true, true}, inserted)
	after := time.Now()

	got, err := e.s.Get(e.ctx, storage.Received, ok.ID)
	require.NoError(t, err)
	require.Equal(t, storage.StatusSucceeded, got.Status)
	require.Equal(t, 1, got.Retries)
	require.Nil(t, got.NextAttemptAt, "a Succeeded row is not due")
	require.NotNil(t, got.ExpiresAt)
	requireAround(t, *got.ExpiresAt, before, after, time.Hour, "ExpiresAt of the Succeeded row")

	got, err = e.s.Get(e.ctx, storage.Received, retry.ID)
	require.NoError(t, err)
	require.Equal(t, storage.StatusFailed, got.Status)
	require.Equal(t, 2, got.Retries)
	require.NotNil(t, got.NextAttemptAt, "due for its retry")
	requireAround(t, *got.NextAttemptAt, before, after, time.Minute, "NextAttemptAt of the Failed row")
	require.Empty(t, e.claim(storage.Received, 10, time.Minute), "neither row is due now")
}

// uniq returns a text unique to this run.
func (e *env[TTx]) uniq() string { return strconv.FormatInt(e.ids.Next(), 10) }
