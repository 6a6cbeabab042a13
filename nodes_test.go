package cap_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/storage"
)

// clockSlack covers SQLite's times, kept to the millisecond.
const clockSlack = 2 * time.Millisecond

func nodeIDs(ns []storage.Node) []string {
	ids := make([]string, len(ns))
	for i, n := range ns {
		ids[i] = n.ID
	}
	return ids
}

// TestNodesHeartbeat: two buses on one database each record a heartbeat at
// Start, see each other in Nodes, and a bus that shuts down disappears at
// once.
func TestNodesHeartbeat(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := setup(t, cap.Options{InstanceID: "orders-1"})
	// Before Start the bus knows itself only, not started yet.
	ns, err := a.bus.Nodes(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{a.bus.Node().ID}, nodeIDs(ns))
	require.True(t, a.bus.Node().Started.IsZero())

	a.start(t)
	b, err := cap.New(a.store, a.tr, cap.Options{InstanceID: "orders-1", Logger: quietLogger(), WorkerID: a.opts.WorkerID})
	require.NoError(t, err)
	require.NoError(t, b.Start(ctx))
	require.NotEqual(t, a.bus.Node().ID, b.Node().ID, "two instances of one InstanceID differ")

	ns, err = a.bus.Nodes(ctx)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{a.bus.Node().ID, b.Node().ID}, nodeIDs(ns))
	for _, n := range ns {
		require.Equal(t, "orders-1", n.Name)
		require.NotEmpty(t, n.Host)
		require.NotEmpty(t, n.Version)
		require.False(t, n.Started.IsZero())
		require.False(t, n.LastSeen.Before(n.Started.Add(-clockSlack)), "last seen %v before started %v", n.LastSeen, n.Started)
	}

	require.NoError(t, b.Shutdown(ctx))
	ns, err = a.bus.Nodes(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{a.bus.Node().ID}, nodeIDs(ns), "a bus that shut down is gone at once")
}

// TestNodesWithoutHeartbeat: with the heartbeat off, Nodes gives this
// instance alone and the storage records nothing.
func TestNodesWithoutHeartbeat(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := setup(t, cap.Options{HeartbeatInterval: -1})
	a.start(t)
	ns, err := a.bus.Nodes(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{a.bus.Node().ID}, nodeIDs(ns))
	recorded, err := a.store.Nodes(ctx, 24*time.Hour)
	require.NoError(t, err)
	require.Empty(t, recorded)
}
