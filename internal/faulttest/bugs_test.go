//go:build faults

package faulttest_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/message"
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
