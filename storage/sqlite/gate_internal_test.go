package sqlite

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestGateTimeout: a writer that waits longer than the gate's timeout fails
// with ErrWriteLockTimeout, and the gate works again once released.
func TestGateTimeout(t *testing.T) {
	t.Parallel()
	g := newGate(20 * time.Millisecond)
	require.NoError(t, g.acquire(t.Context()))
	require.ErrorIs(t, g.acquire(t.Context()), ErrWriteLockTimeout)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.ErrorIs(t, g.acquire(ctx), context.Canceled)
	g.release()
	require.NoError(t, g.acquire(t.Context()))
	g.release()
}
