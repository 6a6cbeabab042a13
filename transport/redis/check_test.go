package redis

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/transport"
)

// Check passes on a connected transport and reports ErrClosed once closed
// (the server down is checked in the restart test).
func TestCheck(t *testing.T) {
	t.Parallel()
	tr := newTransport(t, Config{})
	require.NoError(t, tr.Check(context.Background()))
	require.NoError(t, tr.Close())
	require.ErrorIs(t, tr.Check(context.Background()), transport.ErrClosed)
}
