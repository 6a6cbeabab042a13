package cap_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/transport"
)

func getHealth(t *testing.T, h http.Handler, query string) (int, cap.Health) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz"+query, nil))
	var out cap.Health
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &out), rec.Body.String())
	return rec.Code, out
}

func TestHealth(t *testing.T) {
	t.Parallel()
	b := setup(t, cap.Options{ConsumerThreadCount: 2})
	require.NoError(t, cap.Subscribe(b.bus, "h", "g", func(ctx context.Context, m cap.Msg[string]) error { return nil }))
	ctx := context.Background()
	hh := b.bus.HealthHandler(time.Second)

	h := b.bus.Health(ctx)
	require.False(t, h.Running)
	require.False(t, h.Healthy, "a bus not started is not ready")
	code, _ := getHealth(t, hh, "?live")
	require.Equal(t, http.StatusServiceUnavailable, code)

	b.start(t)
	h = b.bus.Health(ctx)
	require.True(t, h.Healthy, "%+v", h)
	require.Equal(t, "SQLite", h.Storage.Name)
	require.Equal(t, "InMemory", h.Transport.Name)
	require.Equal(t, []cap.ConsumerHealth{{Group: "g.v1", Wanted: 2, Running: 2, Healthy: true}}, h.Groups)
	code, got := getHealth(t, hh, "")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, h, got)

	// The broker goes away: not ready, but alive.
	require.NoError(t, b.tr.Close())
	eventually(t, 5*time.Second, func() bool {
		h = b.bus.Health(ctx)
		return !h.Transport.Healthy && h.Groups[0].Running == 0
	}, "the closed broker is seen")
	require.False(t, h.Healthy)
	require.Contains(t, h.Transport.Error, transport.ErrClosed.Error())
	code, _ = getHealth(t, hh, "")
	require.Equal(t, http.StatusServiceUnavailable, code)
	code, _ = getHealth(t, hh, "?live")
	require.Equal(t, http.StatusOK, code, "a broker outage does not fail the liveness probe")

	// The database goes away.
	require.NoError(t, b.db.Close())
	h = b.bus.Health(ctx)
	require.False(t, h.Storage.Healthy)
	require.NotEmpty(t, h.Storage.Error)

	rec := httptest.NewRecorder()
	hh.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/healthz", nil))
	require.Equal(t, http.StatusMethodNotAllowed, rec.Code)

	require.NoError(t, b.bus.Shutdown(ctx))
	require.False(t, b.bus.Health(ctx).Running)
}

// TestHealthDuringShutdown: while Shutdown waits for a running handler,
// Health and Nodes answer at once (not running) instead of waiting for it.
func TestHealthDuringShutdown(t *testing.T) {
	t.Parallel()
	b := setup(t, cap.Options{})
	entered, release := make(chan struct{}), make(chan struct{})
	require.NoError(t, cap.Subscribe(b.bus, "slow", "g", func(ctx context.Context, m cap.Msg[string]) error {
		close(entered)
		<-release
		return nil
	}))
	b.start(t)
	ctx := context.Background()
	require.NoError(t, b.bus.Publish(ctx, "slow", "x"))
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- b.bus.Shutdown(ctx) }()
	eventually(t, 5*time.Second, func() bool { return !b.bus.Health(ctx).Running }, "Health answers while Shutdown waits")
	ns, err := b.bus.Nodes(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{b.bus.Node().ID}, nodeIDs(ns))
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned before its handler ended: %v", err)
	default:
	}
	close(release)
	require.NoError(t, <-stopped)
}
