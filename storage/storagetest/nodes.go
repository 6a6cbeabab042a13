package storagetest

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
)

// testNodeRegistry checks storage.NodeRegistry: a heartbeat records a node
// with every field, a second one renews it, Nodes lists the recorded ones
// and RemoveNode forgets one; long names are cut, not refused.
func testNodeRegistry[TTx any](t *testing.T, e *env[TTx]) {
	r, ok := e.s.(storage.NodeRegistry)
	if !ok {
		t.Skip("the storage does not implement storage.NodeRegistry")
	}
	prefix := "storagetest-" + e.uniq() + "/"
	// Kept to the millisecond at least (BSON dates).
	started := time.Now().UTC().Add(-time.Minute).Truncate(time.Millisecond)
	a := storage.Node{ID: prefix + "a", Name: "orders-é", Host: "host-a", Version: "v1.2.3", Started: started}
	long := storage.Node{ID: prefix + "b", Name: strings.Repeat("n", 300), Host: strings.Repeat("h", 300),
		Version: strings.Repeat("v", 100), Started: started}
	mine := func(within time.Duration) map[string]storage.Node {
		t.Helper()
		ns, err := r.Nodes(e.ctx, within)
		require.NoError(t, err)
		out := map[string]storage.Node{}
		for _, n := range ns {
			if strings.HasPrefix(n.ID, prefix) {
				out[n.ID] = n
			}
		}
		return out
	}

	require.Empty(t, mine(time.Hour))
	before := time.Now()
	require.NoError(t, r.Heartbeat(e.ctx, a))
	require.NoError(t, r.Heartbeat(e.ctx, long))
	after := time.Now()
	got := mine(time.Hour)
	require.Len(t, got, 2)
	ga := got[a.ID]
	require.Equal(t, a.Name, ga.Name)
	require.Equal(t, a.Host, ga.Host)
	require.Equal(t, a.Version, ga.Version)
	require.True(t, ga.Started.Equal(started), "Started %v, want %v", ga.Started, started)
	requireAround(t, ga.LastSeen, before, after, 0, "LastSeen of the first heartbeat")
	gl := got[long.ID]
	require.NotEmpty(t, gl.Name, "a long name is cut, not lost")
	require.True(t, strings.HasPrefix(long.Name, gl.Name))
	require.True(t, strings.HasPrefix(long.Host, gl.Host))
	require.True(t, gl.Started.Equal(started))

	// A second heartbeat renews the node, and may change what it says.
	a.Version = "v1.2.4"
	require.NoError(t, r.Heartbeat(e.ctx, a))
	ga2 := mine(time.Hour)[a.ID]
	require.Equal(t, "v1.2.4", ga2.Version)
	require.False(t, ga2.LastSeen.Before(ga.LastSeen), "LastSeen does not go back")

	require.NoError(t, r.RemoveNode(e.ctx, a.ID))
	require.NoError(t, r.RemoveNode(e.ctx, a.ID), "removing a node not recorded is not an error")
	got = mine(time.Hour)
	require.Len(t, got, 1)
	require.Contains(t, got, long.ID)
	require.NoError(t, r.RemoveNode(e.ctx, long.ID))
	require.Empty(t, mine(time.Hour))
}
